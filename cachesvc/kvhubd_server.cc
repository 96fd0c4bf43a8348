#include "cachesvc/kvhubd_server.h"

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cachesvc/grpc_listener_watch.h"
#include "cachesvc/server_credentials.h"
#include "common/clock.h"
#include "common/cpu_limit.h"
#include "common/fd_limit.h"
#include "common/log.h"
#include "common/memory_limit.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/resource_quota.h"

namespace kvhub::cachesvc {
namespace {


// 0 = the CPUs this process may keep busy (affinity and cgroup quota: a Kubernetes
// CPU limit), at least 2.
int ResolveThreads(int configured) {
  if (configured > 0) return configured;
  return std::max(2, ReadCpuLimit().cpus);
}

std::string Hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "kvhubd";
  std::string h(buf);
  for (char& c : h) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') c = '-';
  }
  return h;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvhubdServer>> KvhubdServer::Start(const KvhubdConfig& config,
                                                                   UcxServer::AddressVetterPtr ucx_vetter) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  {
    const MemoryLimit limit = ReadMemoryLimit();
    std::string warning;
    if (absl::Status s = config.CheckMemoryLimit(limit.bytes, limit.source, &warning); !s.ok()) return s;
    if (!warning.empty()) KVHUB_LOG(warn, "kvhubd: {}", warning);
    if (std::string few = config.FewSlabsWarning(); !few.empty()) KVHUB_LOG(warn, "kvhubd: {}", few);
    if (std::string pm = config.PolicyMemoryWarning(); !pm.empty()) KVHUB_LOG(warn, "kvhubd: {}", pm);
  }
  std::unique_ptr<KvhubdServer> srv(new KvhubdServer());
  srv->config_ = config;
  srv->started_ = Clock::Real()->Now();
  const int threads = ResolveThreads(config.worker_threads);
  if (config.worker_threads != 0) {
    KVHUB_LOG(warn, "kvhubd: worker_threads={} has no effect: gRPC 1.51's callback server sizes its threads from "
              "the host's cores (docs/operations.md)", config.worker_threads);
  }
  // Security first: a bad tokens file or certificate stops kvhubd before it maps
  // memory or listens.
  absl::StatusOr<ServerSecurity> security = MakeServerSecurity(config);
  if (!security.ok()) return security.status();
  if (!config.auth_tokens_file.empty()) {
    absl::StatusOr<std::unique_ptr<ReloadableAuthenticator>> auth =
        ReloadableAuthenticator::FromFile(config.auth_tokens_file);
    if (!auth.ok()) return auth.status();
    srv->auth_ = *std::move(auth);
  }

  if (config.gpu_tier_bytes > 0) {  // first: without the GPU it asks for, kvhubd does not start
    storage::GpuTierConfig gc;
    gc.capacity_bytes = config.gpu_tier_bytes;
    absl::StatusOr<std::unique_ptr<storage::GpuTier>> tier = storage::GpuTier::Create(gc);
    if (!tier.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("gpu_tier_bytes = ", config.gpu_tier_bytes,
                                                        " but the gpu tier cannot start: ",
                                                        tier.status().message()));
    }
    srv->gpu_tier_ = std::move(*tier);
    KVHUB_LOG(info, "kvhubd gpu tier: {} bytes on {}", config.gpu_tier_bytes,
              srv->gpu_tier_->Stats().device_name);
  }

  // UCX first: with shared memory it allocates the store's regions (ucx_shm_regions).
  srv->ucx_ = UcxServer::Create(config, std::move(ucx_vetter));
  absl::StatusOr<std::unique_ptr<storage::BlockStore>> store = absl::UnavailableError("not created");
  if (storage::RegionProvider provider = srv->ucx_->RegionProvider(); provider != nullptr) {
    store = storage::BlockStore::Create(config.store, nullptr, std::move(provider));
    if (!store.ok()) {
      KVHUB_LOG(warn, "ucx: cannot allocate the host regions in UCX shared memory ({}); mapping them "
                "normally: local clients use active messages", store.status().ToString());
    }
  }
  if (!store.ok()) store = storage::BlockStore::Create(config.store);
  if (!store.ok()) return store.status();
  if (srv->gpu_tier_ != nullptr) {  // the gpu tier behind the host store (storage/tiered_block_store.h)
    absl::StatusOr<std::unique_ptr<storage::TieredBlockStore>> tiered = storage::TieredBlockStore::Create(
        *std::move(store), std::move(srv->gpu_tier_), storage::TieredStoreConfig{});
    if (!tiered.ok()) return tiered.status();
    srv->tiered_ = tiered->get();
    srv->store_ = *std::move(tiered);
  } else {
    srv->store_ = std::move(*store);
  }
  const absl::Duration margin = std::min(absl::Milliseconds(100), config.store.reservation_timeout / 4);
  srv->reservations_ = std::make_unique<ReservationTable>(srv->store_.get(), Clock::Real(), margin);
  srv->metrics_ = std::make_unique<ServiceMetrics>(config.metrics_max_namespaces, config.metrics_max_models);
  // Namespaces with a quota of their own get their series first: slots go to the
  // namespaces seen first, for good, and a tenant arriving after they ran out had its
  // quota and hit-rate series folded into "other" (KvhubNamespaceNearQuota blind).
  for (const storage::BlockStoreConfig::NamespaceQuota& q : config.store.namespace_quotas) {
    if (srv->metrics_->NamespaceIndex(q.ns) == config.metrics_max_namespaces) {
      KVHUB_LOG(warn, "kvhubd: namespace '{}' has a quota but no metrics series of its own ({} namespaces with "
                      "quotas, metrics_max_namespaces = {}): it is counted under \"other\"",
                q.ns, config.store.namespace_quotas.size(), config.metrics_max_namespaces);
    }
  }

  // gRPC first: the node id may depend on the bound port.
  InstallGrpcLogSink();  // before the listener exists: its failure is only ever logged
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.grpc_address, security->credentials, &port);
  srv->tls_ = security->tls;
  builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a port in use is an error, not shared
  // A client host that vanishes without closing its TCP connections (power loss,
  // partition) is noticed by pings within ~40 s; its Session streams then end and
  // their UCX connections are closed (KvHubService::Session).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Streams per connection and gRPC's memory are bounded: messages arrive before
  // any token is checked, so without these a client holding many half-sent
  // messages grew the process by gigabytes (session 15).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1024);
  // A connection that never finishes its handshake holds a descriptor only this long
  // (gRPC's default: 120 s), so idle TCP connections cannot use up the shard's.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(config.grpc_handshake_timeout)));
  grpc::ResourceQuota quota("kvhubd");
  quota.SetMaxThreads(threads);
  quota.Resize(config.grpc_memory_bytes);
  builder.SetResourceQuota(quota);

  srv->service_ = std::make_unique<KvHubService>(config, srv->store_.get(), srv->reservations_.get(),
                                                 srv->metrics_.get());
  srv->service_->set_ucx(srv->ucx_.get());
  srv->service_->set_tiered(srv->tiered_);
  srv->service_->set_auth(srv->auth_.get());
  // UCX: register the regions once; on failure this logs why and kvhubd serves gRPC
  // only. Clients may call the service's leases over UCX (UcxCall); the worker
  // stops (ucx_->Stop) before the service goes.
  // Not with a gpu tier: a lease Get of a block only the device holds promotes it
  // first, a device copy that may wait up to device_timeout (or for ever, hung),
  // and a call runs on the UCX worker's one thread, which would stop serving every
  // transfer, Connect and Stats meanwhile. Those clients call over gRPC.
  KvHubService* service = srv->service_.get();
  UcxServer::CallHandler calls = nullptr;
  if (srv->tiered_ == nullptr) {
    calls = [service](uint32_t method, absl::string_view request) { return service->UcxCall(method, request); };
  }
  srv->ucx_->Serve(srv->store_.get(), std::move(calls),
                   [service](uint64_t first_conn_id) { service->EndUcxSessionsBefore(first_conn_id); });
  builder.RegisterService(srv->service_.get());
  srv->server_ = builder.BuildAndStart();
  if (srv->server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot bind grpc_address ", config.grpc_address,
                                               " (in use, or not a local address?)"));
  }
  srv->grpc_address_ = absl::StrCat(config.grpc_address.substr(0, config.grpc_address.rfind(':')), ":", port);
  const bool loopback = config.GrpcOnLoopback();
  if (srv->auth_ == nullptr) {
    spdlog::log(loopback ? spdlog::level::info : spdlog::level::warn,
                "kvhubd security: gRPC {}, no authentication (auth_tokens_file unset): whoever reaches {} may "
                "read and write every namespace, and may crash the shard with a forged UCX Connect",
                security->description, srv->grpc_address_);  // the bound port, not 0
  } else if (!loopback && config.tls_cert_file.empty()) {
    KVHUB_LOG(warn,
              "kvhubd security: gRPC {}, {} bearer token(s) from {}, sent in plain text: whoever can read "
              "the traffic to {} can replay them; set tls_cert_file and tls_key_file",
              security->description, srv->auth_->Current()->size(), config.auth_tokens_file, srv->grpc_address_);
  } else {
    KVHUB_LOG(info, "kvhubd security: gRPC {}, {} bearer token(s) from {}", security->description,
              srv->auth_->Current()->size(), config.auth_tokens_file);
  }
  srv->node_id_ = config.node_id.empty() ? absl::StrCat(Hostname(), "-", port) : config.node_id;
  srv->service_->set_node_id(srv->node_id_);

  KvhubdServer* self = srv.get();
  HttpEndpoint::Callbacks callbacks;
  callbacks.serving = [self] { return self->serving(); };
  callbacks.metrics = [self] { return self->RenderMetrics(); };
  callbacks.broken = [] {
    std::optional<std::string> failure = GrpcListenerFailure();
    return failure ? absl::StrCat("grpc listener stopped (", *failure, "): new clients cannot connect; restart")
                   : std::string();
  };
  // HTTP connections open at once: at most 1/8 of the descriptors the process may
  // open (gRPC and UCX clients need the rest), at least 64, at most 4096.
  HttpServerConfig http_config;
  if (absl::StatusOr<OpenFileLimits> fds = ReadOpenFileLimits(); fds.ok()) {
    http_config.max_connections = static_cast<size_t>(std::clamp<uint64_t>(fds->soft / 8, 64, 4096));
  }
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> http =
      HttpEndpoint::Start(config.http_address, http_config, std::move(callbacks));
  if (!http.ok()) {
    // gRPC has served for a moment: a Session or a stream opened meanwhile would keep
    // a Shutdown without a deadline waiting forever, and this error unsaid.
    srv->service_->BeginStop();
    srv->server_->Shutdown(absl::ToChronoTime(absl::Now() + std::min(config.shutdown_timeout, absl::Seconds(2))));
    srv->server_->Wait();
    srv->server_.reset();
    return http.status();
  }
  srv->http_ = std::move(*http);
  srv->expiry_thread_ = std::thread([self] { self->ExpiryLoop(); });
  KVHUB_LOG(info, "kvhubd {} serving grpc={} http={} capacity={} bytes policy={}", srv->node_id_,
            srv->grpc_address_, srv->http_->address(), config.store.capacity_bytes, srv->store_->PolicyName());
  return srv;
}

KvhubdServer::~KvhubdServer() {
  Shutdown();
  // Members go in reverse order: HTTP, gRPC server, service, metrics, table, store,
  // UCX (which may own the store's memory); its worker, which calls into the
  // store, stops before the store goes.
  http_.reset();
  server_.reset();
  if (ucx_ != nullptr) ucx_->Stop();
  KVHUB_LOG(debug, "kvhubd {}: gRPC server destroyed", node_id_);
}

std::string KvhubdServer::ReadyLine() const {
  return absl::StrCat("kvhubd ready grpc=", grpc_address_, " http=", http_->address(), " node=", node_id_);
}

void KvhubdServer::BeginDrain() {
  if (service_ != nullptr && !service_->draining()) {
    service_->BeginDrain();
    KVHUB_LOG(info, "kvhubd {} draining: refusing new puts, readyz=503", node_id_);
  }
}

void KvhubdServer::Shutdown(bool drain) {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ == nullptr) return;  // never started (Start failed)
  BeginDrain();
  if (server_ != nullptr) {
    // Phase 1 (drain_grace): readyz=503, Health DRAINING, puts refused, reads served.
    if (drain && config_.drain_grace > absl::ZeroDuration()) absl::SleepFor(config_.drain_grace);
    // Phase 2: refuse every new call; let the calls in flight finish (<= shutdown_timeout).
    // Timed on the monotonic clock: a wall-clock step (NTP, a resumed VM) cut the
    // wait short or stretched it by the step.
    const absl::Time t0 = Clock::Real()->Now();
    const absl::Time deadline = t0 + config_.shutdown_timeout;
    service_->BeginStop();
    while (service_->inflight() > 0 && Clock::Real()->Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    // Phase 3: stop gRPC. Handlers are done, but their last bytes may still be on the
    // way to slow readers: grpc finishes sending them and waits for clients to close
    // their connections, within what is left of the budget (then it cancels). gRPC
    // takes a wall-clock deadline: what is left, from now.
    const absl::Duration left = std::max(absl::ZeroDuration(), deadline - Clock::Real()->Now());
    server_->Shutdown(absl::ToChronoTime(absl::Now() + left));
    server_->Wait();
    KVHUB_LOG(info, "kvhubd {}: gRPC stopped in {} ({} calls still in flight at the deadline)", node_id_,
              absl::FormatDuration(Clock::Real()->Now() - t0), service_->inflight());
  }
  if (expiry_thread_.joinable()) {
    {
      absl::MutexLock lock(&mu_);
      stop_expiry_ = true;
    }
    expiry_thread_.join();
  }
  if (http_ != nullptr) http_->Stop();
  KVHUB_LOG(debug, "kvhubd {}: expiry thread and HTTP stopped", node_id_);
}

void KvhubdServer::ExpiryLoop() {
  // Each duty below runs at its own period; the loop wakes at the shortest (an
  // hour-long expiry_interval kept a revoked token for an hour).
  const absl::Duration stalled_every = std::min(config_.expiry_interval, config_.stalled_send_timeout);
  const absl::Duration ucx_every = config_.ucx_session_grace > absl::ZeroDuration()
                                       ? std::min(config_.expiry_interval, config_.ucx_session_grace)
                                       : config_.expiry_interval;
  absl::Time swept = Clock::Real()->Now(), stalled_checked = swept, ucx_checked = swept;
  absl::Duration tick = std::min(stalled_every, ucx_ != nullptr ? ucx_every : config_.expiry_interval);
  if (auth_ != nullptr && config_.auth_reload_interval > absl::ZeroDuration()) {
    tick = std::min(tick, config_.auth_reload_interval);
  }
  if (tls_ != nullptr) tick = std::min(tick, config_.tls_reload_interval);
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_expiry_), tick)) return;
    }
    // (1 ms of slack: a wake-up a hair early must not skip a duty for a whole tick.)
    const absl::Time now = Clock::Real()->Now() + absl::Milliseconds(1);
    if (now - swept >= config_.expiry_interval) {
      swept = now;
      size_t n = reservations_->Sweep([this] { return store_->ExpireNow(); });
      if (n > 0) KVHUB_LOG(debug, "expiry sweep reclaimed {} reservations/leases", n);
    }
    if (now - stalled_checked >= stalled_every) {
      stalled_checked = now;
      service_->CancelStalledSends();
    }
    if (ucx_ != nullptr && now - ucx_checked >= ucx_every) {
      ucx_checked = now;
      if (config_.ucx_session_grace > absl::ZeroDuration() && !service_->stopping()) {
        ucx_->CloseUnwatched([this](uint64_t conn_id) { return service_->HasUcxSession(conn_id); },
                             config_.ucx_session_grace);
      }
      // After CloseUnwatched: a Session that registered while it closed the connection
      // ends here, as do those of connections the worker closed on an endpoint error.
      if (!service_->stopping()) service_->EndUcxSessionsOfClosedConnections();
    }
    if (auth_ != nullptr && config_.auth_reload_interval > absl::ZeroDuration()) {
      bool due;
      {
        absl::MutexLock l(&auth_mu_);
        due = Clock::Real()->Now() - auth_checked_ >= config_.auth_reload_interval;
      }
      if (due) ReloadAuth().IgnoreError();  // logged there; the tokens in force stay
    }
    if (tls_ != nullptr && tls_->SinceCheck() >= config_.tls_reload_interval) {
      ReloadTls().IgnoreError();  // logged by the reloader; the certificate in force stays
    }
  }
}

absl::Status KvhubdServer::ReloadAuth() {
  if (auth_ == nullptr) return absl::FailedPreconditionError("authentication is off (no auth_tokens_file)");
  // Revoked tokens' UCX connections are closed before the new tokens answer calls
  // (a call over such a connection was served in between: the test saw it), and
  // again after, for a connection made meanwhile under the old ones.
  size_t ended_before = 0;
  absl::StatusOr<bool> changed =
      auth_->Reload([&](const Authenticator& next) { ended_before = service_->EndRevokedUcxSessions(next); });
  {
    absl::MutexLock l(&auth_mu_);
    auth_checked_ = Clock::Real()->Now();  // monotonic: a wall-clock step does not stall the reload
    if (!changed.ok()) {
      ++auth_reload_failures_;
      const std::string error = changed.status().ToString();
      if (error != auth_last_error_) {  // the poll would repeat it every auth_reload_ms
        KVHUB_LOG(error, "kvhubd: reloading the tokens failed; the {} token(s) in force stay: {}",
                  auth_->Current()->size(), error);
        auth_last_error_ = error;
      }
      return changed.status();
    }
    auth_last_error_.clear();
    if (!*changed) return absl::OkStatus();
    ++auth_reloads_;
  }
  // Outside auth_mu_: ending sessions closes UCX connections.
  const std::shared_ptr<const Authenticator> now = auth_->Current();
  const size_t ended = ended_before + service_->EndRevokedUcxSessions(*now);
  if (now->size() == 0) {
    KVHUB_LOG(error, "kvhubd: {} lists no token now: every token is revoked and every call but Health is refused "
              "until tokens are listed again; {} UCX connection(s) closed", auth_->path(), ended);
  } else {
    KVHUB_LOG(info, "kvhubd: {} token(s) in force from {}; {} UCX connection(s) of revoked tokens closed", now->size(),
              auth_->path(), ended);
  }
  return absl::OkStatus();
}

absl::Status KvhubdServer::ReloadTls() {
  if (tls_ == nullptr) return absl::FailedPreconditionError("TLS is off (no tls_cert_file)");
  return tls_->Check().status();
}

std::string KvhubdServer::RenderMetrics() const {
  MetricsSnapshotInputs in;
  in.store = store_->Stats();
  if (tiered_ != nullptr) in.gpu = tiered_->tier_stats();
  in.node_id = node_id_;
  in.policy = store_->PolicyName();
  const storage::BlockStore::PolicyState policy = store_->PolicyStateNow();
  in.active_policy = policy.active;
  in.policy_switches = policy.switches;
  in.serving = serving();
  in.grpc_listener_failed = GrpcListenerFailure().has_value();
  in.uptime = Clock::Real()->Now() - started_;
  in.live_reservations = reservations_->size();
  in.stalled_sends_cancelled = service_->stalled_sends_cancelled();
  in.ucx_get_bytes = ucx_->served_get_bytes();
  in.ucx_put_bytes = ucx_->served_put_bytes();
  in.ucx_connections = ucx_->connections();
  in.ucx_sessions = service_->ucx_sessions();
  in.ucx_worker_resets = ucx_->worker_resets();
  in.ucx_refused_addresses = ucx_->refused_addresses();
  in.ucx_unreachable_addresses = ucx_->unreachable_addresses();
  in.ucx_unknown_conn_requests = ucx_->unknown_conn_requests();
  in.ucx_busy_conn_requests = ucx_->busy_conn_requests();
  in.ucx_accepting = ucx_->accepting();
  if (absl::StatusOr<OpenFileLimits> fds = ReadOpenFileLimits(); fds.ok()) {
    in.max_fds = fds->soft;
    in.open_fds = CountOpenFiles();
  }
  if (config_.store.namespace_quota_bytes != 0 || !config_.store.namespace_quotas.empty()) {
    in.namespace_usage = [this](absl::string_view ns) { return store_->NamespaceUsageOf(ns); };
  }
  if (auth_ != nullptr) {
    in.auth_on = true;
    in.auth_tokens = auth_->Current()->size();
    absl::MutexLock l(&auth_mu_);
    in.auth_reloads = auth_reloads_;
    in.auth_reload_failures = auth_reload_failures_;
  }
  if (tls_ != nullptr) {
    const TlsReloader::Stats t = tls_->stats();
    in.tls_on = true;
    in.tls_reloads = t.installed;
    in.tls_reload_failures = t.failed;
    in.tls_not_after = t.not_after;
  }
  return metrics_->RenderPrometheus(in);
}

}  // namespace kvhub::cachesvc
