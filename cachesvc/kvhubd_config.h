#pragma once
// KvhubdConfig: everything kvhubd can be told, with commented defaults.
//
// Sources, later wins: built-in defaults (KvhubdConfig::Defaults()), a config file of
// `key = value` lines (`#` starts a comment; unknown keys are errors), then
// command-line flags of the same names (kvhubd --capacity_bytes=2GiB). Every key and
// its meaning is listed in docs/operations.md and by KvhubdConfig::KeyHelp().
//
// Values: sizes accept a plain byte count or a suffix B, KiB, MiB, GiB, TiB (also K, M,
// G, T as binary multiples); durations are integers in milliseconds (keys end in _ms);
// booleans are true/false/1/0/yes/no.
//
// Thread safety: a plain value type; not synchronized.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "storage/block_store.h"

namespace kvhub::cachesvc {

// Hard limits from proto/kvhub/v1/kvhub.proto.
inline constexpr uint64_t kHardMaxBlockBytes = 256ull << 20;  // bytes per block
inline constexpr uint64_t kMaxInlinePayloadBytes = 256ull << 20;  // inline Put/Get bytes per call
// gRPC max message size: the inline payload plus room for keys, statuses and framing.
inline constexpr int kMaxGrpcMessageBytes = static_cast<int>((256ull << 20) + (4ull << 20));

// A config file larger than this is refused (a config is a few dozen lines).
inline constexpr size_t kMaxConfigFileBytes = 1 << 20;

// True for the keys whose empty value would run the shard without authentication or
// TLS (auth_tokens_file, tls_*_file): a config file may not set them empty.
bool TurnsSecurityOffWhenEmpty(absl::string_view key);

struct KvhubdConfig {
  // gRPC listen address HOST:PORT; port 0 picks an ephemeral port (printed in the ready line).
  std::string grpc_address = "127.0.0.1:7480";
  // HTTP listen address for /metrics /healthz /readyz /dashboard; port 0 = ephemeral.
  std::string http_address = "127.0.0.1:7481";
  // This node's name in Stats/Health/metrics; empty: "<hostname>-<grpc port>".
  std::string node_id;

  // The host-memory tier. Defaults() sets capacity_bytes to min(25% of the memory limit,
  // 4 GiB); the memory limit is the smaller of physical memory and the process's cgroup
  // limit (common/memory_limit.h: a Kubernetes container's memory limit).
  storage::BlockStoreConfig store;
  // At start, refuse a capacity_bytes above the memory limit: the tier's memory is
  // faulted in as it fills, so such a node would start and be OOM-killed later, losing
  // every block. false starts anyway (kvhubd still warns). Default true.
  bool check_memory_limit = true;
  // The gpu tier (storage/gpu_tier.h): device bytes for blocks in a CUDA memory pool.
  // 0 (default) = off. When > 0, kvhubd refuses to start without a usable CUDA device.
  uint64_t gpu_tier_bytes = 0;

  // Threads: gRPC callback executor cap (ResourceQuota max threads); HTTP has its own one thread.
  // 0 = the CPUs this process may keep busy: its affinity mask and its cgroup CPU quota
  // (a Kubernetes CPU limit), common/cpu_limit.h; at least 2.
  int worker_threads = 0;
  // How often the background thread reclaims expired reservations and leases.
  absl::Duration expiry_interval = absl::Seconds(1);
  // On SIGTERM/SIGINT: how long /readyz reports 503 (DRAINING) before the gRPC server
  // stops accepting calls; lets load balancers notice. 0 = stop at once.
  absl::Duration drain_grace = absl::ZeroDuration();
  // Deadline for in-flight calls to finish after shutdown begins; then they are cancelled.
  absl::Duration shutdown_timeout = absl::Seconds(10);
  // Bytes per GetChunk message of GetStream.
  uint64_t get_stream_chunk_bytes = 1ull << 20;
  // A GetStream whose response makes no progress for this long is cancelled,
  // and so is an inline Get whose one response message is not sent within it:
  // their blocks stay unevictable while gRPC holds the response, and
  // a peer whose application stopped reading would hold them for ever
  // (cachesvc/stalled_sends.h). 1 s .. 1 h; default 60 s.
  absl::Duration stalled_send_timeout = absl::Seconds(60);
  // Bytes gRPC may hold for messages being received and sent (its memory quota):
  // beyond it gRPC cancels streams (RESOURCE_EXHAUSTED) instead of buffering more,
  // so half-sent messages cannot grow the process until it is OOM-killed (they
  // arrive before any token is checked). 64MiB .. 64GiB. Default 1GiB.
  uint64_t grpc_memory_bytes = 1ull << 30;
  // A new gRPC connection must finish its handshake (TLS, and the client's HTTP/2
  // SETTINGS) within this, or it is closed. gRPC's own default is 120 s, so
  // connections that connect and send nothing each held a descriptor for 2 minutes:
  // 600 of them made a shard with a 512-descriptor limit refuse every new client
  // (session 16). 100 .. 120000 ms. Default 10000.
  absl::Duration grpc_handshake_timeout = absl::Seconds(10);
  // Metrics label cardinality caps: namespaces beyond the first cap, and models of a
  // namespace beyond the second (counted per namespace), are folded into "other".
  int metrics_max_namespaces = 64;
  int metrics_max_models = 16;
  // trace | debug | info | warn | error | off (logs go to stderr).
  std::string log_level = "info";
  // If set, the ready line is also written to this file (atomically, via rename).
  std::string ready_file;

  // UCX data plane (docs/transport.md). true: register the host regions with UCX at
  // start and serve the Connect RPC; if UCX fails to initialize kvhubd logs why and
  // serves gRPC only (Connect answers FAILED_PRECONDITION with the reason).
  bool ucx_enabled = true;
  // UCX transports, passed through as UCX_TLS ("tcp", "rc,tcp", "posix,cma" ...).
  // Empty (default): UCX chooses among the transports that detect a dead peer (tcp,
  // RDMA); shared memory is used only when named here explicitly (UCX 1.13 cannot
  // detect a dead peer on it; see docs/transport.md "Shared memory").
  std::string ucx_tls;
  // The network devices UCX may use, passed through as UCX_NET_DEVICES
  // (interfaces such as lo or eth0, RDMA ports such as mlx5_0:1; "all": every
  // one). UCX's tcp transport listens on each device it uses and takes bytes from
  // whoever connects there, and UCX 1.13 aborts the process on some malformed
  // ones, so that port must be reachable by trusted clients only
  // (docs/transport.md, "Security"). "auto" (default): "lo" when grpc_address is a
  // loopback address (a shard only local clients reach keeps UCX off the other
  // interfaces too), else UCX's default (the UCX_NET_DEVICES environment
  // variable, else all); an explicit value wins over the environment.
  std::string ucx_net_devices = "auto";
  // With shared memory named in ucx_tls (posix or sysv): have UCX allocate the
  // host tier's regions (ucp_mem_map ALLOCATE, in /dev/shm), so clients on this
  // host read and write blocks one-sidedly (RMA: a memcpy from the mapped
  // segment, no shard CPU) instead of by active messages. Needs /dev/shm to hold
  // capacity_bytes; if UCX cannot allocate, kvhubd logs why and maps its own
  // regions (AM path). Ignored on other transports. Default true.
  bool ucx_shm_regions = true;
  // With shared memory named in ucx_tls: how often the shard pings its own UCX
  // worker over shared memory, and at once after a client's connection closes. A
  // client killed while UCX writes its message into the worker's shared-memory
  // queue leaves that queue stuck (UCX 1.13), and the worker then receives
  // nothing over shared memory; when two pings in a row go unanswered (1 s each)
  // kvhubd replaces the worker and ends every Session, and clients connect again
  // (docs/transport.md "Recovery from a stuck shared-memory queue"). 0 turns the
  // probe off. Default 1000.
  absl::Duration ucx_probe_interval = absl::Milliseconds(1000);
  // A UCX connection that no Session stream watches this long after Connect is
  // closed (its client died or gave up between Connect and Session; checked every
  // expiry_interval). 0 keeps such connections until UCX fails them (clients
  // older than the Session RPC). Default 10000.
  absl::Duration ucx_session_grace = absl::Milliseconds(10000);
  // Try each client's UCX worker address (Connect) in a throwaway process before
  // the shard's worker is given it (transport/ucx_address_vetter.h): UCX 1.13
  // trusts addresses, and some malformed ones crash the process inside
  // ucp_ep_create, which would lose the cache. The probe also connects to the
  // address, so one where something other than UCX answers crashes the probe, not
  // the shard. An address that crashes or hangs the probe is refused with
  // INVALID_ARGUMENT, one it cannot connect to with FAILED_PRECONDITION. Costs one
  // small process forked at start and ~10-25 ms per new client worker (a reconnect
  // with the same worker is remembered). Default true.
  bool ucx_vet_addresses = true;

  // Security (docs/operations.md, "Authentication and TLS"). All empty by default:
  // anyone who reaches the gRPC port may read and write every namespace, over
  // plaintext; kvhubd says so in its log.
  // Bearer tokens and the namespaces each may use (cachesvc/auth.h). With it,
  // every RPC but Health needs a token, and UCX Connect a token for every
  // namespace ("*": UCX exposes the whole host tier to a connected client).
  std::string auth_tokens_file;
  // How often kvhubd re-reads auth_tokens_file and, when its contents changed,
  // puts the new tokens in force (SIGHUP does it at once). 0: only on SIGHUP.
  // A file that cannot be read or parsed keeps the tokens in force.
  absl::Duration auth_reload_interval = absl::Milliseconds(10000);
  // PEM server certificate chain and private key: gRPC over TLS (both or neither).
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA bundle: with TLS on, clients must present a certificate it signed (mTLS).
  std::string tls_client_ca_file;
  // How often the TLS files are read again; a changed, complete and matching
  // certificate and key (or client CA) serve new connections from then on, without a
  // restart that would empty the cache. 1 s .. 24 h. Default 60 s.
  absl::Duration tls_reload_interval = absl::Seconds(60);

  // Where each key was last set, for Validate's messages: "FILE:LINE" (ApplyText)
  // or "--key" (set by kvhubd's flag handling). Keys left at their defaults are absent.
  std::map<std::string, std::string> origins;

  // Defaults with the machine-dependent capacity filled in.
  static KvhubdConfig Defaults();
  // The same for a process that may use `memory_limit_bytes` (0: unknown).
  static KvhubdConfig DefaultsFor(uint64_t memory_limit_bytes);

  // True when grpc_address is a loopback address (127.x, localhost, [::1]): only
  // clients on this host reach the shard.
  bool GrpcOnLoopback() const;
  // UCX_NET_DEVICES for the shard's UCX context from ucx_net_devices: a device
  // list, or empty for UCX's default (see ucx_net_devices).
  std::string UcxNetDevices() const;

  // OK, or INVALID_ARGUMENT naming the first bad key and why (and where it was
  // set, when `origins` knows).
  absl::Status Validate() const;

  // Checks capacity_bytes against `limit_bytes` (ReadMemoryLimit(); `source` names it):
  // FAILED_PRECONDITION when the capacity is above it and check_memory_limit is true.
  // Sets *warning (when not null) to a message for the log when the capacity is above
  // it with the check off, or above 90% of it (little room left for the slot table,
  // leases and gRPC buffers); clears it otherwise. A limit of 0 (unknown) passes.
  absl::Status CheckMemoryLimit(uint64_t limit_bytes, absl::string_view source,
                                std::string* warning) const;
  // A warning for the log when the host tier has fewer than kFewSlabs allocator slabs
  // (docs/storage.md): a slab serves one block size class at a time, so a small
  // capacity_bytes with a large max_block_bytes stores few sizes at once, and a pinned
  // or leased block holds its slab. Empty when there are enough.
  static constexpr uint64_t kFewSlabs = 8;
  std::string FewSlabsWarning() const;
  // A warning for the log when eviction_policy is duel, max_blocks is auto and the
  // policy's per-slot state (kDuelBytesPerSlot, measured: docs/replay.md, "Policy
  // memory") comes to more than 2% of capacity_bytes. Empty otherwise.
  static constexpr uint64_t kDuelBytesPerSlot = 370;
  std::string PolicyMemoryWarning() const;

  // Sets one key from its text form. INVALID_ARGUMENT for an unknown key or a bad value.
  absl::Status Set(absl::string_view key, absl::string_view value);

  // Applies `key = value` lines. Errors name the line number (and `origin`, e.g. a path).
  absl::Status ApplyText(absl::string_view text, absl::string_view origin = "config");
  // Reads and applies a file (at most kMaxConfigFileBytes). NOT_FOUND if it does not
  // exist, INVALID_ARGUMENT for a directory or a bad line (a key set twice in one file
  // included), DATA_LOSS if it cannot be read.
  absl::Status ApplyFile(const std::string& path);

  // The keys Set() accepts, in documentation order, with one-line help each.
  struct KeyInfo {
    const char* key;
    const char* help;
  };
  static const std::vector<KeyInfo>& Keys();

  // The effective config as `key = value` lines (for logs and --print_config).
  std::string ToText() const;
};

// Parses "4GiB", "512MiB", "4096", "1M" ... into bytes. INVALID_ARGUMENT otherwise.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);
// Parses a listen address HOST:PORT (PORT 0..65535; HOST non-empty, [v6] allowed).
absl::Status ValidateListenAddress(absl::string_view address);

}  // namespace kvhub::cachesvc
