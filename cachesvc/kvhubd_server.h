#pragma once
// KvhubdServer: one kvhubd node in-process: the BlockStore, the gRPC KvHub service
// (callback API), the HTTP metrics endpoint and the expiry thread, wired together.
// kvhubd's main() is flags + signals around this class.
//
// Lifecycle: Start() binds both listeners (port 0 = ephemeral) and begins serving;
// BeginDrain() flips Health//readyz to DRAINING and refuses new puts; Shutdown()
// drains (drain_grace), then stops gRPC with a shutdown_timeout deadline for in-flight
// calls, stops the expiry thread and the HTTP listener. The destructor calls Shutdown().
//
// Thread safety: Start/Shutdown/destructor from one thread; BeginDrain and the
// accessors from any thread.

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cachesvc/http_endpoint.h"
#include "cachesvc/auth.h"
#include "cachesvc/reloadable_auth.h"
#include "cachesvc/kvhub_service.h"
#include "cachesvc/kvhubd_config.h"
#include "cachesvc/metrics.h"
#include "cachesvc/reservation_table.h"
#include "cachesvc/tls_reloader.h"
#include "cachesvc/ucx_server.h"
#include "grpcpp/server.h"
#include "storage/block_store.h"
#include "storage/gpu_tier.h"
#include "storage/tiered_block_store.h"

namespace kvhub::cachesvc {

class KvhubdServer {
 public:
  // Validates `config`, allocates the store, binds and starts everything.
  // INVALID_ARGUMENT for a bad config; RESOURCE_EXHAUSTED when memory cannot be had;
  // UNAVAILABLE when an address cannot be bound. `ucx_vetter`: the UCX address
  // vetter from UcxServer::StartAddressVetter (started earlier, while the process
  // was single-threaded), or null.
  static absl::StatusOr<std::unique_ptr<KvhubdServer>> Start(const KvhubdConfig& config,
                                                             UcxServer::AddressVetterPtr ucx_vetter = nullptr);
  ~KvhubdServer();

  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& http_address() const { return http_->address(); }
  const std::string& node_id() const { return node_id_; }
  // "kvhubd ready grpc=HOST:PORT http=HOST:PORT node=ID" (no newline).
  std::string ReadyLine() const;

  void BeginDrain();
  bool serving() const { return !service_->draining(); }
  // `drain` false skips phase 1 (drain_grace): for a node that never announced
  // itself (its ready_file could not be written), nobody is routed to it.
  void Shutdown(bool drain = true);

  // Re-reads auth_tokens_file (SIGHUP; also every auth_reload_ms when it changed):
  // a changed, valid file is in force for every new call, and the UCX connections
  // of tokens it no longer allows are closed. A file that cannot be read or
  // parsed keeps the tokens in force; the error is logged and returned.
  // FAILED_PRECONDITION when authentication is off (no auth_tokens_file).
  absl::Status ReloadAuth() ABSL_LOCKS_EXCLUDED(auth_mu_);
  // Re-reads the TLS files (SIGHUP; also every tls_reload_ms): a changed, valid set
  // serves new handshakes; an invalid one is refused (logged, counted, returned) and
  // the set in force stays. FAILED_PRECONDITION when TLS is off.
  absl::Status ReloadTls();

  std::string RenderMetrics() const;
  // UCX data plane state ("serving ..." or why it is off).
  const std::string& ucx_status() const { return ucx_->status_text(); }

 private:
  KvhubdServer() = default;
  void ExpiryLoop();

  KvhubdConfig config_;
  std::string node_id_;
  std::string grpc_address_;
  absl::Time started_;
  // Before store_, so destroyed after it: with shared-memory regions it owns the
  // store's memory (its worker is stopped first, in ~KvhubdServer).
  std::unique_ptr<UcxServer> ucx_;
  std::unique_ptr<storage::BlockStore> store_;
  std::unique_ptr<storage::GpuTier> gpu_tier_;  // until store_ takes it (gpu_tier_bytes > 0)
  storage::TieredBlockStore* tiered_ = nullptr;  // store_ itself when gpu_tier_bytes > 0
  std::unique_ptr<ReservationTable> reservations_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<ReloadableAuthenticator> auth_;  // null: no authentication; outlives service_
  mutable absl::Mutex auth_mu_;
  uint64_t auth_reloads_ ABSL_GUARDED_BY(auth_mu_) = 0;
  uint64_t auth_reload_failures_ ABSL_GUARDED_BY(auth_mu_) = 0;
  std::string auth_last_error_ ABSL_GUARDED_BY(auth_mu_);  // logged once per distinct error
  absl::Time auth_checked_ ABSL_GUARDED_BY(auth_mu_);
  std::shared_ptr<TlsReloader> tls_;  // null: plaintext; shared with the server credentials
  std::unique_ptr<KvHubService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpEndpoint> http_;
  std::thread expiry_thread_;
  absl::Mutex mu_;
  bool stop_expiry_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ = false;
};

}  // namespace kvhub::cachesvc
