#pragma once
// UcxContext: one UCP context per process (features AM, WAKEUP, and RMA unless
// UcxConfig::rma is false), configured from UcxConfig (TLS passthrough), and
// memory registration against it.
//
// Thread safety: the context is created with mt_workers_shared, so Register()
// and several UcxWorkers on different threads may use it concurrently.
// Ownership: must outlive every UcxWorker and UcxMemory created from it.
// Failure: Create() returns UNAVAILABLE when UCX cannot initialize (no usable
// transport for the requested TLS); callers then run gRPC only.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ucp/api/ucp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "transport/ucx_config.h"
#include "transport/ucx_memory.h"

namespace kvhub::transport {

// A UCX status as an absl::Status with `what` as context. A peer that is gone or
// unreachable (reset, unreachable, its shared memory gone ...) is UNAVAILABLE, a
// timeout DEADLINE_EXCEEDED; what UCX reports otherwise unexpected is INTERNAL.
absl::Status UcsToStatus(ucs_status_t st, absl::string_view what);

class UcxContext {
 public:
  // FAILED_PRECONDITION if config.enabled is false; INVALID_ARGUMENT for a bad
  // config or an unknown UCX option; UNAVAILABLE if UCX fails to initialize.
  static absl::StatusOr<std::unique_ptr<UcxContext>> Create(const UcxConfig& config);
  // Create, then made again without RMA (UcxConfig::rma) when the transports it
  // finds reach peers over tcp only (ReachesPeersOnlyOverTcp, with
  // config.require_peer_failure_detection): nothing one-sided is possible there, and
  // with RMA UCX would serve peers' software RMA at any address. config().rma says
  // which was made. Errors as Create.
  static absl::StatusOr<std::unique_ptr<UcxContext>> CreateWithoutRmaOverTcp(const UcxConfig& config);
  ~UcxContext();
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;

  // Registers existing memory [base, base+size) for local and remote read/write
  // and packs its rkey. INVALID_ARGUMENT for null/empty; INTERNAL on UCX failure.
  absl::StatusOr<std::unique_ptr<UcxMemory>> Register(void* base, uint64_t size);
  // Has UCX allocate `size` bytes (ucp_mem_map with UCP_MEM_MAP_ALLOCATE) and
  // registers them like Register. On shared memory transports (posix, sysv) UCX
  // puts such memory in a segment peers on the host can map, so their RMA
  // reads and writes reach it without this process's CPU (memory registered
  // with Register is reachable there only through active messages or CMA).
  // The UcxMemory owns the bytes (freed with it). Contents start unspecified.
  // RESOURCE_EXHAUSTED when UCX cannot allocate (e.g. /dev/shm too small).
  absl::StatusOr<std::unique_ptr<UcxMemory>> Allocate(uint64_t size);

  ucp_context_h get() const { return context_; }
  const UcxConfig& config() const { return config_; }
  // The TLS this context was asked for ("" = UCX default / UCX_TLS env).
  std::string tls_description() const;
  // The transports UCX found for this context on this host after its TLS and
  // device filters (UCX's names: "self", "tcp", "posix", "cma", "rc_mlx5" ...),
  // each once, in UCX's order. Empty when UCX lists none.
  std::vector<std::string> TransportNames() const;

 private:
  // Packs memh's rkey into a UcxMemory that owns memh; unmaps memh on failure.
  absl::StatusOr<std::unique_ptr<UcxMemory>> Wrap(ucp_mem_h memh, void* base, uint64_t size);
  UcxContext(const UcxConfig& config, ucp_context_h context) : config_(config), context_(context) {}
  UcxConfig config_;
  ucp_context_h context_;
};

}  // namespace kvhub::transport
