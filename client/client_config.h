#pragma once
// Configuration of kvhub::Client (DESIGN §6, §7): a static member list with
// optional capacity weights, deadlines, retry policy and batching limits.
// Plain value type; Validate() before use (Client::Create does).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kvhub {

// One shard of the cluster as the client sees it.
struct MemberConfig {
  std::string address;   // "host:port"; also the member's identity in rendezvous hashing
  double weight = 1.0;   // relative capacity; finite, > 0 (weighted HRW, docs/client.md)
};

// How Fetch/GetBlocks move bytes over gRPC.
enum class GetMode : uint8_t {
  kAuto = 0,    // GetStream when caller buffers average >= 4 MiB per block (measured), else
                // inline Get batches of at most max_inline_batch_bytes
  kInline = 1,  // always inline Get (a block larger than max_inline_batch_bytes goes alone)
  kStream = 2,  // always GetStream
};

// Which data plane moves block bytes (docs/transport.md, docs/client.md).
enum class TransportMode : uint8_t {
  kAuto = 0,  // per shard: UCX when its Connect succeeds over RDMA or shared memory, else gRPC
              // (over plain TCP it keeps gRPC, docs/client.md); logged once per shard
  kUcx = 1,   // UCX only: a shard without UCX fails data calls; every put uses
              // PutStart + UCX + PutCommit (inline Put is not used)
  kGrpc = 2,  // gRPC only (inline messages and streams); UCX is never initialized
};
absl::string_view TransportModeName(TransportMode mode);
// "auto" | "ucx" | "grpc"; INVALID_ARGUMENT otherwise.
absl::StatusOr<TransportMode> ParseTransportMode(absl::string_view text);

struct ClientConfig {
  // Static membership. 1..1024 members, addresses unique.
  std::vector<MemberConfig> members;

  // Deadline of small control RPCs (Lookup, PutStart, PutCommit, PutAbort, Delete,
  // Pin, Stats, Health), their retries included. Default 2 s.
  absl::Duration control_deadline = absl::Seconds(2);
  // Deadline of RPCs that move block bytes (Put, PutData, Get, GetStream), their
  // retries included. Default 30 s.
  absl::Duration data_deadline = absl::Seconds(30);

  // Attempts per RPC, first included (1..10), within its deadline. Only UNAVAILABLE
  // is retried: every other code is either final or could have had an effect. Default 3.
  int max_attempts = 3;
  // Backoff before retry k (k = 1, 2, ...): min(initial * 2^(k-1), max), with
  // +-20% jitter. Defaults 10 ms and 500 ms.
  absl::Duration initial_backoff = absl::Milliseconds(10);
  absl::Duration max_backoff = absl::Milliseconds(500);

  // Keys per RPC (Lookup, Put, PutStart, Get, Delete, Pin); 1..4096 (the API
  // limit). Larger requests are split. Default 1024.
  uint32_t max_keys_per_rpc = 1024;
  // Blocks up to this size are uploaded with inline Put batches; larger ones
  // with PutStart / PutData / PutCommit. 0 sends everything through
  // reservations. Default 4 MiB.
  uint64_t inline_put_max_block_bytes = 4ull << 20;
  // Payload bytes per inline Put or Get call (a single larger block still goes
  // alone). 1 KiB..256 MiB. Default 32 MiB.
  uint64_t max_inline_batch_bytes = 32ull << 20;
  // Bytes per PutDataChunk message on the reservation path. 4 KiB..64 MiB.
  // Default 1 MiB.
  uint64_t stream_chunk_bytes = 1ull << 20;
  GetMode get_mode = GetMode::kAuto;

  // Worker threads that run per-shard RPCs in parallel for one call (the
  // calling thread runs one share itself). 1..256. Default 8.
  int concurrency = 8;
  // TCP connections (gRPC channels) per member; calls are spread round-robin.
  // 1..64. Default 2.
  int channels_per_member = 2;
  // Whether the channels to the shards follow the proxy environment variables
  // (grpc_proxy, https_proxy, http_proxy and no_proxy), as gRPC channels do by
  // default. Default false: the client connects straight to its shards. A proxy
  // set for a host's or pod's outbound web traffic would otherwise carry every
  // block through an HTTP CONNECT tunnel, or fail every call with the proxy's
  // address in the error when it cannot reach the shards. true only where the
  // shards are really reached through such a proxy.
  bool use_proxy_env = false;

  // Data plane for block bytes. Default kAuto (UCX where the shard offers it).
  TransportMode transport = TransportMode::kAuto;
  // UCX transports (UCX_TLS passthrough), e.g. "tcp", "rc,tcp", "posix,cma".
  // Empty (default): UCX chooses among transports that detect a dead peer
  // (tcp, RDMA); shared memory only when named here (docs/transport.md).
  std::string ucx_tls;
  // The network devices the client's UCX may use (UCX_NET_DEVICES passthrough:
  // "lo", "eth0,mlx5_0:1", "all"). UCX's tcp transport listens on each and UCX
  // 1.13 aborts the process on some malformed bytes sent there, so "auto"
  // (default) keeps UCX on "lo" when every member is a loopback address, and
  // otherwise leaves UCX's default (the UCX_NET_DEVICES environment variable,
  // else all devices). Reach the client's UCX port from trusted hosts only.
  std::string ucx_net_devices = "auto";
  // Lease asked for on a UCX read (Get without inline data). Every UCX transfer
  // of the read must finish before the lease ends (minus a safety margin) or the
  // block is reported failed, never as data. 100 ms .. 600 s. Default 10 s.
  absl::Duration ucx_lease = absl::Seconds(10);
  // Send the Get that leases blocks for a UCX read, and the Release of those
  // leases, over the UCX connection (active-message calls answered by the
  // shard's UCX worker) instead of gRPC, when the shard offers it
  // (ConnectResponse.calls). Cheaper per call; false keeps every RPC on gRPC.
  bool ucx_calls = true;
  // With a shard on this host whose tier is in UCX shared memory: copy gets and
  // puts with the calling thread straight from / into the mapped tier
  // (docs/transport.md, "Mapped gets"). false leaves them to the UCX worker's
  // progress thread (one-sided still, one copy at a time). Default true.
  bool ucx_mapped_copies = true;
  // transport=auto: a shard that fell back to gRPC for a reason that can pass (UCX
  // off on the shard or not built there, no common transport, its connection
  // limit, a failed endpoint) is offered UCX again this long after (one Connect
  // RPC on a later call); UCX is used from then on if it works. Not retried: a
  // shard UCX reaches only over tcp (auto keeps gRPC there by design), and a
  // client whose own UCX cannot start. 0 = never again. 100 ms .. 1 h, or 0.
  // transport=ucx: a shard that refused UCX for such a reason is asked again only
  // this long after; calls meanwhile fail with its reason (FAILED_PRECONDITION)
  // without a Connect each (0: every call asks). Default 30 s.
  absl::Duration ucx_retry_interval = absl::Seconds(30);

  // Security (docs/operations.md, "Authentication and TLS"); all empty by default.
  // Bearer token sent with every call (`authorization` metadata) to shards
  // started with auth_tokens_file; 16..512 printable ASCII bytes, no spaces.
  std::string auth_token;
  // PEM CA bundle that signed the shards' certificates: the channels use TLS.
  std::string tls_ca_file;
  // PEM client certificate chain and key (both or neither; need tls_ca_file):
  // for shards that require client certificates (mTLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name the shards' certificates are checked against instead of the host
  // of each member address (e.g. the DNS name in the certificate when members
  // are given as IPs). Empty: the member's host.
  std::string tls_server_name;
  // How often the TLS files above are read again; new connections use a changed
  // CA bundle, certificate or key (SPIRE and cert-manager rotate them while the
  // serving process runs). Replace them atomically (write beside, then rename, as a
  // Kubernetes Secret update does): gRPC uses whatever it reads, and a key read
  // beside another certificate fails new handshakes until the next read. 1 s .. 24 h.
  // Default 60 s.
  absl::Duration tls_reload_interval = absl::Seconds(60);

  // OK, or INVALID_ARGUMENT naming the first bad field.
  absl::Status Validate() const;

  // For tools (kvhub, kvhub-bench, kvhub-demo, kvhub-replay): fills each security
  // field that is still empty from the environment: auth_token from KVHUB_TOKEN,
  // tls_ca_file / tls_cert_file / tls_key_file / tls_server_name from KVHUB_TLS_CA,
  // KVHUB_TLS_CERT, KVHUB_TLS_KEY, KVHUB_TLS_SERVER_NAME. Client::Create never reads
  // the environment itself.
  void ApplySecurityEnvironment();

  // Parses "host:port[@weight],host:port[@weight],..." (whitespace around
  // items ignored). INVALID_ARGUMENT on an empty list, an empty item ("a:1,,b:2",
  // a trailing comma), a missing port or a bad weight.
  static absl::StatusOr<std::vector<MemberConfig>> ParseMembers(absl::string_view text);
};

}  // namespace kvhub
