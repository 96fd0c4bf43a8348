#pragma once
// UcxConfig: how the UCX data plane is set up (docs/transport.md).
//
// Plain value type; not synchronized. Validate() before use (UcxContext::Create does).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kvhub::transport {

// Largest request or response of UcxWorker::CallPeer (here, without UCX's
// headers, for callers that size answers to it).
inline constexpr size_t kMaxUcxCallBytes = size_t{1} << 20;

// How a worker's progress thread waits for work.
enum class UcxProgressMode : uint8_t {
  kSleep = 0,  // ucp_worker_arm + epoll on ucp_worker_get_efd; no CPU while idle (default)
  kPoll = 1,   // spin on ucp_worker_progress; lowest latency, burns one core; benchmarks only
};

// Which UCX protocol moves a block's bytes.
enum class UcxPath : uint8_t {
  kAuto = 0,  // per peer, from the lanes UCX picked (see docs/transport.md "RMA or AM")
  kRma = 1,   // one-sided ucp_get_nbx / ucp_put_nbx + flush against the shard's rkeys
  kAm = 2,    // active message request; the bytes travel as an AM (rendezvous for large blocks)
};

absl::string_view UcxPathName(UcxPath path);
// True when a UCX_TLS list names a shared-memory transport (sm, shm, posix, sysv,
// cma, knem, xpmem); false for an exclusion list ("^..."), as for the default. kvhub allows endpoints without peer failure detection only
// then (see UcxConfig::require_peer_failure_detection and docs/transport.md).
bool TlsNamesSharedMemory(absl::string_view tls);
// The names of a UCX_TLS list whose transports deliver active messages through a
// shared-memory receive queue (posix, sysv, and the aliases sm and shm), joined with
// commas in their order; empty when it names none (or is an exclusion list). A
// ping meant to find a stuck shared-memory queue (transport/ucx_ping.h) must
// travel over these alone: given tcp as well, UCX sends it over tcp.
std::string SharedMemoryQueueTls(absl::string_view tls);
// True when a context with these transports (UcxContext::TransportNames) can
// reach a peer over nothing but tcp: every name is "tcp" or "self", or a
// shared-memory one ("sysv", "posix", "cma", "knem", "xpmem") while
// `peer_failure_detection` is required (endpoints then leave shared memory out).
// False for an empty list and for any other transport (RDMA, CUDA, unknown).
bool ReachesPeersOnlyOverTcp(const std::vector<std::string>& transports, bool peer_failure_detection);
// True when UCX may pick tcp under this UCX_TLS value: empty (UCX's default), a list
// naming tcp or all, or an exclusion list ("^...") that does not exclude tcp.
bool TlsMayUseTcp(absl::string_view tls);
absl::string_view UcxProgressModeName(UcxProgressMode mode);

struct UcxConfig {
  // false: UCX is never initialized; callers use the gRPC stream path.
  bool enabled = true;
  // Passed to UCX as its TLS option (the same as UCX_TLS), e.g. "tcp", "posix,cma",
  // "rc,sm". Empty: UCX's own default, which honours the UCX_TLS environment variable.
  std::string tls;
  // Further UCX context options (name without the UCX_ prefix, value), e.g.
  // {"RNDV_THRESH", "64K"}. Applied after `tls`; a bad value fails Create() (UCX
  // itself only warns about names it does not know).
  std::vector<std::pair<std::string, std::string>> options;
  // Bytes UCX's tcp transport reads from a socket per receive (its
  // TCP_RX_SEG_SIZE; UCX's own default is 64 KiB). Large blocks arrive in far
  // fewer reads and wake-ups with 1 MiB: tcp gets of 1 MiB blocks 2.9-3.1 ->
  // 4.5-4.6 GB/s here (docs/results-transport.md, session 5). Costs that much
  // per receive buffer (UCX grows its pool 8 buffers at a time: 8 MiB per
  // worker). 0 leaves UCX's default; the UCX_TCP_RX_SEG_SIZE environment
  // variable or an RX_SEG_SIZE entry in `options` wins over this.
  // 0 or 8 KiB .. 64 MiB. Default 1 MiB.
  uint64_t tcp_rx_segment_bytes = 1 << 20;
  UcxProgressMode progress_mode = UcxProgressMode::kSleep;
  // Longest a sleeping progress thread waits without an event (a safety net only;
  // events and submissions wake it at once). 1 ms .. 10 s. Default 200 ms.
  absl::Duration idle_wakeup = absl::Milliseconds(200);
  // Deadline of one batch of transfers when the caller gives none. Default 10 s.
  absl::Duration op_timeout = absl::Seconds(10);
  // Per-direction choice of protocol; kAuto picks by transport (docs/transport.md).
  UcxPath get_path = UcxPath::kAuto;
  UcxPath put_path = UcxPath::kAuto;
  // Create the context with UCP_FEATURE_RMA. Where no lane is one-sided (tcp;
  // shared memory on memory UCX did not allocate) UCX serves a peer's RMA in
  // software: this process's worker copies from or to whatever address the
  // peer's message names, checked against nothing (not the registered regions,
  // not kvhub's grants). false keeps those handlers out: the process neither
  // issues nor serves RMA, and UCX drops a peer's RMA aimed at it (the peer's
  // request never completes and times out). Its workers then move everything by
  // active messages: Connect is refused (FAILED_PRECONDITION) where get_path or
  // put_path is kRma, or where a peer without failure detection would need RMA
  // puts. Default true.
  bool rma = true;
  // Endpoints use UCP_ERR_HANDLING_MODE_PEER, so a dead peer fails transfers
  // instead of hanging them and timed-out transfers can be cancelled. UCX 1.13
  // offers that on tcp and RDMA (rc/dc) but not on shared memory (posix/sysv AM
  // lanes; cma RMA lanes are dropped in that mode). false lets a peer that no
  // transport reaches in PEER mode be connected without failure detection
  // (UCP_ERR_HANDLING_MODE_NONE, e.g. UCX_TLS=posix,cma); such a peer is marked
  // "nofail" in its transport description. Default true.
  bool require_peer_failure_detection = true;
  // Gets from a peer whose regions are mapped into this process (shared memory
  // that UCX allocated on the serving side, reached over a posix/sysv lane, get
  // path RMA) are copied by the calling thread straight from the mapping
  // (ucp_rkey_ptr) instead of queuing on the progress thread, so concurrent
  // callers copy in parallel and no thread is woken. false: such gets go through
  // the progress thread like any RMA get. Default true.
  bool mapped_gets = true;
  // The same for puts into a peer's mapped segments (the reservation's range;
  // the shard verifies the checksum at commit). Default true.
  bool mapped_puts = true;
  // Client buffers kept registered (ucp_mem_map) by the registration cache; the
  // least recently used registration is dropped beyond this. 0 disables the cache.
  uint32_t registration_cache_entries = 256;

  // OK, or INVALID_ARGUMENT naming the first bad field.
  absl::Status Validate() const;
};


}  // namespace kvhub::transport
