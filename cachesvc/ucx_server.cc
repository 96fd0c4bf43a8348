#include "cachesvc/ucx_server.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"

#ifdef KVHUB_HAVE_UCX
#include "absl/synchronization/mutex.h"
#include "cachesvc/ucx_probe.h"
#include "transport/ucx_address_vetter.h"
#include "transport/ucx_context.h"
#include "transport/ucx_ping.h"
#include "transport/ucx_rkey_pin.h"
#include "transport/ucx_worker.h"
#endif

namespace kvhub::cachesvc {

class UcxServer::AddressVetter {
 public:
#ifdef KVHUB_HAVE_UCX
  std::unique_ptr<transport::UcxAddressVetter> vetter;
#endif
};

void UcxServer::AddressVetterDeleter::operator()(AddressVetter* v) const { delete v; }

#ifdef KVHUB_HAVE_UCX
struct UcxServer::State {
  std::unique_ptr<transport::UcxContext> context;
  // The store's regions as UCX sees them: allocated by UCX (RegionProvider) or
  // registered by Serve.
  std::vector<std::unique_ptr<transport::UcxMemory>> regions;
  // The serving worker: null until Serve, and after Stop. Callers take a
  // reference (Current) so the probe may replace it under them.
  mutable absl::Mutex mu;
  std::shared_ptr<transport::UcxWorker> worker ABSL_GUARDED_BY(mu);
  std::vector<transport::RemoteRegionInfo> served ABSL_GUARDED_BY(mu);
  uint64_t generation ABSL_GUARDED_BY(mu) = 0;  // workers made so far, minus one
  // Served bytes of workers replaced or stopped.
  // Counters of workers replaced or stopped (Retire), in the fields Total reads.
  transport::UcxWorkerStats retired ABSL_GUARDED_BY(mu);
  void Retire(const transport::UcxWorkerStats& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (uint64_t transport::UcxWorkerStats::*f : kSummed) retired.*f += s.*f;
  }
  // What the retired workers and the serving one counted in `f`.
  uint64_t Total(uint64_t transport::UcxWorkerStats::*f) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock l(&mu);
    return retired.*f + (worker != nullptr ? worker->Stats().*f : 0);
  }
  static constexpr uint64_t transport::UcxWorkerStats::*kSummed[] = {
      &transport::UcxWorkerStats::served_get_bytes, &transport::UcxWorkerStats::served_put_bytes,
      &transport::UcxWorkerStats::unknown_conn_requests, &transport::UcxWorkerStats::busy_conn_requests};
  std::atomic<uint64_t> resets{0};
  transport::UcxWorker::Options options;  // Serve's, to make a replacement
  std::function<void(uint64_t first_conn_id)> on_reset;
  std::unique_ptr<UcxProbe> probe;        // with shared-memory queues and ucx_probe_ms > 0
  AddressVetterPtr vetter;  // ucx_vet_addresses: Connect's check
  absl::Duration probe_interval;
  std::string tls;
  std::string net_devices;        // UCX_NET_DEVICES set by kvhubd; empty: UCX's default
  bool shm = false;               // ucx_tls names shared memory
  bool allocate_regions = false;  // ... and ucx_shm_regions: RegionProvider allocates
  bool one_sided_shm = false;     // the store runs on UCX-allocated regions
  bool calls = false;             // the worker answers v1::UcxCall methods
  bool off = false;               // Serve failed (kept only to own the store's memory)
  // Members destroy in reverse: probe, worker, regions, context.

  std::shared_ptr<transport::UcxWorker> Current() const {
    absl::MutexLock l(&mu);
    return worker;
  }
};

namespace {
storage::TransferAccess AccessOf(transport::TransferKind kind) {
  return kind == transport::TransferKind::kPut ? storage::TransferAccess::kWrite : storage::TransferAccess::kRead;
}
}  // namespace
#else
struct UcxServer::State {};
#endif

UcxServer::~UcxServer() {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) state_->probe.reset();  // its thread calls back into this object
#endif
}

bool UcxServer::serving() const {
#ifdef KVHUB_HAVE_UCX
  return state_ != nullptr && state_->Current() != nullptr;
#else
  return false;
#endif
}

namespace {

// The UCX configuration of the serving worker's context (UcxServer::Create; the
// address vetter's probes use the same, and drop RMA over tcp only as it does).
transport::UcxConfig ServingUcxConfig(const KvhubdConfig& config) {
  transport::UcxConfig uc;
  uc.enabled = true;
  uc.tls = config.ucx_tls;
  // Shared memory only when named explicitly: UCX 1.13 has no peer failure
  // detection there (docs/transport.md); elsewhere every endpoint must have it.
  uc.require_peer_failure_detection = !transport::TlsNamesSharedMemory(config.ucx_tls);
  if (std::string devices = config.UcxNetDevices(); !devices.empty()) uc.options.push_back({"NET_DEVICES", devices});
  return uc;
}

}  // namespace

absl::StatusOr<UcxServer::AddressVetterPtr> UcxServer::StartAddressVetter(const KvhubdConfig& config) {
  if (!config.ucx_enabled || !config.ucx_vet_addresses) return nullptr;
#ifdef KVHUB_HAVE_UCX
  absl::StatusOr<std::unique_ptr<transport::UcxAddressVetter>> v =
      transport::UcxAddressVetter::Start(ServingUcxConfig(config), {});
  if (!v.ok()) {
    return absl::Status(v.status().code(),
                        absl::StrCat(v.status().message(), " (ucx_vet_addresses=false runs without it)"));
  }
  AddressVetterPtr out(new AddressVetter);
  out->vetter = *std::move(v);
  return out;
#else
  return nullptr;
#endif
}

std::unique_ptr<UcxServer> UcxServer::Create(const KvhubdConfig& config, AddressVetterPtr vetter) {
  std::unique_ptr<UcxServer> s(new UcxServer());
  s->enabled_ = config.ucx_enabled;
  if (!config.ucx_enabled) {
    s->status_text_ = "ucx disabled on this shard (ucx_enabled=false)";
    KVHUB_LOG(info, "ucx: off: {}; gRPC only", s->status_text_);
    return s;
  }
#ifndef KVHUB_HAVE_UCX
  s->status_text_ = "kvhubd was built without UCX";
  KVHUB_LOG(warn, "ucx: off: {}; gRPC only", s->status_text_);
  return s;
#else
  const transport::UcxConfig uc = ServingUcxConfig(config);
  const bool shm = transport::TlsNamesSharedMemory(config.ucx_tls);
  bool allocate = shm && config.ucx_shm_regions;
  absl::StatusOr<std::unique_ptr<transport::UcxContext>> ctx = absl::UnavailableError("not created");
  if (allocate) {
    // ucp_mem_map(ALLOCATE) must come from a shared-memory domain or fail: UCX's
    // default order would fall back to private mmap/heap memory, which peers
    // cannot map (their RMA would be emulated by our worker).
    transport::UcxConfig shm_only = uc;
    shm_only.options.push_back({"ALLOC_PRIO", "md:sysv,md:posix"});
    ctx = transport::UcxContext::Create(shm_only);
    if (!ctx.ok()) {
      KVHUB_LOG(warn, "ucx: cannot restrict allocations to shared memory ({}); regions stay private",
                ctx.status().ToString());
      allocate = false;
    }
  }
  // Over tcp only, no RMA (kvhub's clients use active messages there anyway).
  if (!ctx.ok()) ctx = transport::UcxContext::CreateWithoutRmaOverTcp(uc);
  if (!ctx.ok()) {
    s->status_text_ = absl::StrCat("ucx failed to initialize on this shard: ", ctx.status().ToString());
    KVHUB_LOG(error, "ucx: off: {}; serving gRPC only", s->status_text_);
    return s;
  }
  s->state_ = std::make_unique<State>();
  s->state_->context = std::move(*ctx);
  s->state_->tls = config.ucx_tls;
  s->state_->net_devices = config.UcxNetDevices();
  if (transport::TlsMayUseTcp(config.ucx_tls) && s->state_->net_devices != "lo") {
    const char* env = std::getenv("UCX_NET_DEVICES");
    const std::string devices = !s->state_->net_devices.empty() ? s->state_->net_devices
                                : env != nullptr                  ? absl::StrCat(env, " (UCX_NET_DEVICES)")
                                                                  : "all";
    KVHUB_LOG(warn,
              "ucx: UCX's tcp transport listens on network devices {} and takes bytes from whoever connects "
              "there; UCX 1.13 aborts the shard on some malformed ones, so keep that port reachable by trusted "
              "clients only (a firewall), or set ucx_net_devices to RDMA devices only (docs/transport.md, "
              "\"Security\")",
              devices);
  }
  s->state_->shm = shm;
  s->state_->allocate_regions = allocate;
  // Only posix/sysv queues can get stuck (cma has none).
  s->state_->probe_interval =
      !transport::SharedMemoryQueueTls(config.ucx_tls).empty() ? config.ucx_probe_interval : absl::ZeroDuration();
  s->state_->vetter = std::move(vetter);
  if (config.ucx_vet_addresses && s->state_->vetter == nullptr) {
    KVHUB_LOG(warn, "ucx: ucx_vet_addresses is on but no address vetter was started "
              "(UcxServer::StartAddressVetter): client addresses go to UCX unchecked");
  }
  return s;
#endif
}

storage::RegionProvider UcxServer::RegionProvider() {
#ifdef KVHUB_HAVE_UCX
  if (state_ == nullptr || !state_->allocate_regions) return nullptr;
  return [this](std::span<const uint64_t> sizes) -> absl::StatusOr<std::vector<storage::Region>> {
    std::vector<std::unique_ptr<transport::UcxMemory>> mems;
    std::vector<storage::Region> out;
    // Zero-filled, as the store requires of provided regions: the allocation comes
    // from UCX's sysv or posix domain only (ALLOC_PRIO, Create), a new SysV segment or
    // a new shared-memory file, which the kernel hands out zeroed.
    for (uint64_t n : sizes) {
      absl::StatusOr<std::unique_ptr<transport::UcxMemory>> m = state_->context->Allocate(n);
      if (!m.ok()) return m.status();
      out.push_back(storage::Region{static_cast<uint8_t*>((*m)->base()), n, false});
      mems.push_back(std::move(*m));
    }
    state_->regions = std::move(mems);
    return out;
  };
#else
  return nullptr;
#endif
}

void UcxServer::Serve(storage::BlockStore* store, CallHandler calls, ResetHandler on_reset) {
#ifdef KVHUB_HAVE_UCX
  if (state_ == nullptr) return;
  State& st = *state_;
  auto fail = [&](const absl::Status& why) {
    status_text_ = absl::StrCat("ucx failed to initialize on this shard: ", why.ToString());
    KVHUB_LOG(error, "ucx: off: {}; serving gRPC only", status_text_);
    st.probe.reset();
    {
      absl::MutexLock l(&st.mu);
      st.worker.reset();
    }
    st.off = true;
    // Memory UCX allocated is the store's: it stays (with the context) until
    // this object goes, after the store. Anything else can go now.
    if (!st.one_sided_shm) state_.reset();
  };
  const std::span<const storage::Region> regions = store->regions();
  // The store's regions are ours (RegionProvider) or its own: register those.
  st.one_sided_shm = st.allocate_regions && st.regions.size() == regions.size();
  for (size_t i = 0; st.one_sided_shm && i < regions.size(); ++i) {
    st.one_sided_shm = st.regions[i]->base() == regions[i].base;
  }
  if (!st.one_sided_shm) {
    st.regions.clear();
    for (const storage::Region& r : regions) {
      absl::StatusOr<std::unique_ptr<transport::UcxMemory>> mem = st.context->Register(r.base, r.size);
      if (!mem.ok()) return fail(mem.status());
      st.regions.push_back(std::move(*mem));
    }
  }
  transport::UcxWorker::Options wo;
  wo.name = "kvhubd";
  // Every active-message transfer must name a live lease (get) or reservation
  // (put) covering its range, and holds that memory until UCX is done with it.
  wo.access.begin = [store, n = regions.size()](transport::TransferKind kind, uint64_t grant, uint32_t region,
                                                uint64_t offset, uint64_t size) -> absl::StatusOr<uint64_t> {
    if (region >= n) return absl::InvalidArgumentError("unknown region");
    return store->BeginTransfer(AccessOf(kind), grant, storage::BlockLocation{region, offset, size});
  };
  wo.access.end = [store](transport::TransferKind kind, uint64_t hold) {
    store->EndTransfer(AccessOf(kind), hold);
  };
  // A client that reads a leased block over AM may ask us to end the lease once
  // the bytes are out (Transfer::end_grant) instead of calling Release.
  wo.access.end_grant = [store](uint64_t lease_id) {
    if (absl::Status s = store->Release(lease_id); !s.ok()) {
      // NOT_FOUND: the lease expired (or was released) while the bytes moved; the
      // hold kept them intact until now, so nothing else is to be done.
      KVHUB_LOG(debug, "ucx: ending lease {} after its read: {}", lease_id, s.ToString());
    }
  };
  for (const auto& m : st.regions) wo.served.push_back(m.get());
  st.calls = calls != nullptr;
  // The probe's ping is answered here, before the service's methods.
  wo.calls = [calls = std::move(calls)](uint32_t method, absl::string_view request) -> absl::StatusOr<std::string> {
    if (transport::AnswerPing(method)) return std::string();
    if (calls == nullptr) return absl::UnimplementedError("this shard answers no UCX calls; use gRPC");
    return calls(method, request);
  };
  st.options = wo;
  st.on_reset = std::move(on_reset);
  absl::StatusOr<std::unique_ptr<transport::UcxWorker>> worker =
      transport::UcxWorker::Create(st.context.get(), std::move(wo));
  if (!worker.ok()) return fail(worker.status());
  {
    absl::MutexLock l(&st.mu);
    st.worker = std::move(*worker);
    st.served = st.worker->ServedRegions();
  }
  status_text_ = absl::StrCat("serving ", regions.size(), " region(s) via UCX_TLS=",
                              st.tls.empty() ? "<ucx default: tcp/RDMA>" : st.tls,
                              st.net_devices.empty() ? "" : absl::StrCat(" on UCX_NET_DEVICES=", st.net_devices),
                              st.shm ? " (shared memory allowed)" : "",
                              st.one_sided_shm ? "; regions in UCX shared memory (one-sided local reads/writes)"
                                               : "",
                              st.context->config().rma ? "" : "; no RMA served (no one-sided lane: active messages)");
  KVHUB_LOG(info, "ucx: {}", status_text_);
  if (st.probe_interval > absl::ZeroDuration()) {
    UcxProbe::Config pc;
    pc.interval = st.probe_interval;
    absl::StatusOr<std::unique_ptr<UcxProbe>> probe = UcxProbe::Start(
        st.context.get(), pc, [&st] { return st.Current(); },
        [this](std::shared_ptr<transport::UcxWorker> deaf) { ReplaceWorker(std::move(deaf)); });
    if (probe.ok()) {
      st.probe = std::move(*probe);
    } else {
      // Serving goes on; a stuck queue would then stay stuck until a restart.
      KVHUB_LOG(error, "ucx: cannot start the shared-memory probe: {}; a client killed mid-send can leave "
                       "this shard deaf to UCX shared memory until it restarts", probe.status().ToString());
    }
  }
#else
  (void)store;
  (void)calls;
  (void)on_reset;
#endif
}

#ifdef KVHUB_HAVE_UCX
void UcxServer::ReplaceWorker(std::shared_ptr<transport::UcxWorker> deaf) {
  State& st = *state_;
  transport::UcxWorker::Options wo = st.options;
  uint64_t first_conn_id = 0;
  {
    absl::MutexLock l(&st.mu);
    if (st.worker != deaf) return;  // stopped, or replaced already
    ++st.generation;
    // Connection ids of each worker start past the last one's (2^32 apiece).
    wo.first_conn_id = first_conn_id = (st.generation << 32) + 1;
  }
  absl::StatusOr<std::unique_ptr<transport::UcxWorker>> fresh =
      transport::UcxWorker::Create(st.context.get(), std::move(wo));
  if (!fresh.ok()) {
    KVHUB_LOG(error, "ucx: the worker stopped receiving over shared memory and no new one can be made ({}); "
                     "UCX clients of this shard time out until it restarts", fresh.status().ToString());
    return;
  }
  transport::UcxWorkerStats old;
  {
    absl::MutexLock l(&st.mu);
    if (st.worker != deaf) return;  // Stop came first; `fresh` goes unused
    // Read under the lock that scrapes hold: taken before it, a scrape in between
    // saw the old worker's later counts, and the next one a smaller total (a reset).
    old = deaf->Stats();
    st.Retire(old);
    st.worker = std::move(*fresh);
    st.served = st.worker->ServedRegions();
  }
  st.resets.fetch_add(1, std::memory_order_relaxed);
  KVHUB_LOG(warn, "ucx: the worker stopped receiving over shared memory (a client killed while writing into its "
                  "queue leaves the queue stuck); replaced it, ending its {} connection(s): clients connect again",
            old.accepted_peers);
  if (st.on_reset != nullptr) st.on_reset(first_conn_id);
  // The deaf worker goes with the last reference (a Connect in flight may hold one):
  // its connections close and the holds of transfers still in flight end.
}
#endif

void UcxServer::Stop() {
#ifdef KVHUB_HAVE_UCX
  if (state_ == nullptr) return;
  state_->probe.reset();  // no replacement from here on
  std::shared_ptr<transport::UcxWorker> w;
  {
    absl::MutexLock l(&state_->mu);
    w = std::move(state_->worker);
    if (w != nullptr) state_->Retire(w->Stats());
  }
  if (w == nullptr) return;
  w.reset();  // the last reference: the probe is gone, and the caller stopped gRPC first
  // Registrations of the store's own regions go before the store unmaps them;
  // memory UCX allocated stays until this object goes (after the store).
  if (!state_->one_sided_shm) state_->regions.clear();
#endif
}

grpc::Status UcxServer::Connect(const v1::ConnectRequest& req, v1::ConnectResponse* resp, uint64_t owner,
                                const std::function<bool()>& gave_up) {
  if (req.worker_address().empty() || req.worker_address().size() > kMaxUcxWorkerAddressBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("worker_address must be 1..", kMaxUcxWorkerAddressBytes, " bytes, got ",
                                     req.worker_address().size()));
  }
  if (req.client_name().size() > kMaxUcxClientNameBytes ||
      std::any_of(req.client_name().begin(), req.client_name().end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("client_name must be <= ", kMaxUcxClientNameBytes, " bytes without control bytes"));
  }
  if (state_ == nullptr) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, status_text_);
#ifdef KVHUB_HAVE_UCX
  if (state_->off) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, status_text_);
  if (!req.sends_conn_key()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this shard serves UCX wire version 2 (request headers carry the connection key) and "
                        "the client does not send it; update the client to use UCX, it uses gRPC until then");
  }
  std::shared_ptr<transport::UcxWorker> worker;
  std::vector<transport::RemoteRegionInfo> served;
  {
    absl::MutexLock l(&state_->mu);
    worker = state_->worker;
    served = state_->served;
  }
  if (worker == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "ucx is not serving (starting or stopped)");
  }
  // The probe's own connection (shared memory) is not one of the clients'.
  const uint64_t cap = kMaxUcxConnections + (state_->probe != nullptr && state_->probe->LinkedTo(worker.get()) ? 1 : 0);
  if (worker->Stats().accepted_peers >= cap) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("too many live UCX connections (", kMaxUcxConnections, "); use gRPC"));
  }
  if (state_->vetter != nullptr) {
    if (absl::Status v = state_->vetter->vetter->Vet(req.worker_address()); !v.ok()) {
      KVHUB_LOG(warn, "ucx: refused client '{}': {}", req.client_name(), v.ToString());
      // INVALID_ARGUMENT (refused), UNAVAILABLE (busy: retry), FAILED_PRECONDITION (gone).
      return grpc::Status(static_cast<grpc::StatusCode>(v.code()), std::string(v.message()));
    }
  }
  if (gave_up != nullptr && gave_up()) {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "the caller cancelled or passed its deadline while its address was vetted; no connection made");
  }
  // The cap again, where it holds: Connects vetted at once (remembered addresses)
  // passed the check above together while each waited for its Accept.
  absl::StatusOr<transport::AcceptedConn> conn = worker->Accept(req.worker_address(), owner, cap);
  if (absl::IsResourceExhausted(conn.status())) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, absl::StrCat(conn.status().message(), "; use gRPC"));
  }
  if (!conn.ok()) {
    KVHUB_LOG(warn, "ucx: cannot accept client '{}': {}", req.client_name(), conn.status().ToString());
    if (absl::IsInvalidArgument(conn.status())) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(conn.status().message()));
    }
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("shard cannot reach the client's UCX worker: ", conn.status().message()));
  }
  bool replaced;
  {
    absl::MutexLock l(&state_->mu);
    replaced = state_->worker != worker;
  }
  if (replaced) {
    // The probe replaced the worker while the address was vetted (seconds): this
    // connection is on the deaf one, whose connections the reset just ended; the
    // client would find it gone at its first Session check. Ask it to come again.
    (void)worker->CloseAccepted(conn->id).ok();  // the deaf worker goes with its last reference anyway
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the shard's UCX worker was replaced while this Connect was handled; connect again");
  }
  resp->set_worker_address(worker->address());
  resp->set_conn_id(conn->id);
  resp->set_conn_key(conn->key);
  resp->set_tls(state_->tls);
  resp->set_one_sided_shm(state_->one_sided_shm);
  resp->set_calls(state_->calls);
  resp->set_host_namespaces(transport::HostNamespaces());
  for (size_t i = 0; i < served.size(); ++i) {
    v1::ConnectResponse::Region* r = resp->add_regions();
    r->set_rkey_id(static_cast<uint32_t>(i));
    r->set_base(served[i].base);
    r->set_size(served[i].size);
    r->set_packed_rkey(served[i].packed_rkey);
  }
  KVHUB_LOG(info, "ucx: accepted client '{}' as connection {}", req.client_name(), conn->id);
  return grpc::Status::OK;
#else
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, status_text_);
#endif
}

absl::Status UcxServer::Close(uint64_t conn_id) {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) {
    if (std::shared_ptr<transport::UcxWorker> w = state_->Current(); w != nullptr) {
      absl::Status s = w->CloseAccepted(conn_id);
      // A client whose connection ends may have died mid-send: check the queue now.
      if (state_->probe != nullptr) state_->probe->PingSoon();
      return s;
    }
  }
#endif
  return absl::NotFoundError(absl::StrCat("ucx connection ", conn_id, ": ucx is not serving"));
}

absl::Status UcxServer::CheckLive(uint64_t conn_id, uint64_t owner) {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) {
    if (std::shared_ptr<transport::UcxWorker> w = state_->Current(); w != nullptr) {
      return w->CheckAccepted(conn_id, owner);
    }
  }
#endif
  return absl::NotFoundError(absl::StrCat("ucx connection ", conn_id, ": ucx is not serving"));
}

size_t UcxServer::CloseUnwatched(const std::function<bool(uint64_t conn_id)>& watched, absl::Duration grace) {
#ifdef KVHUB_HAVE_UCX
  if (state_ == nullptr) return 0;
  std::shared_ptr<transport::UcxWorker> w = state_->Current();
  if (w == nullptr) return 0;
  const uint64_t probe_conn = state_->probe != nullptr ? state_->probe->conn_id() : 0;
  const absl::Time cutoff = Clock::Real()->Now() - grace;  // AcceptedConnections' clock
  size_t closed = 0;
  for (const auto& [id, accepted] : w->AcceptedConnections()) {
    if (accepted > cutoff || id == probe_conn || watched(id)) continue;
    if (w->CloseAccepted(id).ok()) {
      ++closed;
      KVHUB_LOG(info, "ucx: connection {} closed: no Session watched it {} after Connect (its client is gone)", id,
                absl::FormatDuration(grace));
    }
  }
  // As after any close: a client that died mid-send may have left the shared-memory
  // queue stuck, found by the next ping (not one ucx_probe_ms later).
  if (closed > 0 && state_->probe != nullptr) state_->probe->PingSoon();
  return closed;
#else
  (void)watched;
  (void)grace;
  return 0;
#endif
}

std::vector<uint64_t> UcxServer::LiveConnectionIds() {
  std::vector<uint64_t> out;
#ifdef KVHUB_HAVE_UCX
  if (state_ == nullptr) return out;
  std::shared_ptr<transport::UcxWorker> w = state_->Current();
  if (w == nullptr) return out;
  for (const auto& [id, accepted] : w->AcceptedConnections()) out.push_back(id);
#endif
  return out;
}

uint64_t UcxServer::connections() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ == nullptr) return 0;
  std::shared_ptr<transport::UcxWorker> w = state_->Current();
  if (w == nullptr) return 0;
  uint64_t n = w->Stats().accepted_peers;
  // The probe's own connection, when it is on this worker. Told by the probe, not
  // asked of the worker: /metrics and Stats call this, and a call into the worker's
  // thread waits for it (behind a long call, or for ever on a hung one).
  if (state_->probe != nullptr && state_->probe->LinkedTo(w.get()) && n > 0) --n;
  return n;
#else
  return 0;
#endif
}

uint64_t UcxServer::worker_resets() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) return state_->resets.load(std::memory_order_relaxed);
#endif
  return 0;
}

std::optional<bool> UcxServer::accepting() const {
  if (!enabled_) return std::nullopt;
#ifdef KVHUB_HAVE_UCX
  return serving() && (state_->vetter == nullptr || state_->vetter->vetter->alive());
#else
  return std::nullopt;
#endif
}

uint64_t UcxServer::refused_addresses() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr && state_->vetter != nullptr) return state_->vetter->vetter->stats().refused;
#endif
  return 0;
}

uint64_t UcxServer::unreachable_addresses() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr && state_->vetter != nullptr) return state_->vetter->vetter->stats().unreachable;
#endif
  return 0;
}

uint64_t UcxServer::unknown_conn_requests() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) return state_->Total(&transport::UcxWorkerStats::unknown_conn_requests);
#endif
  return 0;
}

uint64_t UcxServer::busy_conn_requests() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) return state_->Total(&transport::UcxWorkerStats::busy_conn_requests);
#endif
  return 0;
}

uint64_t UcxServer::served_get_bytes() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) return state_->Total(&transport::UcxWorkerStats::served_get_bytes);
#endif
  return 0;
}

uint64_t UcxServer::served_put_bytes() const {
#ifdef KVHUB_HAVE_UCX
  if (state_ != nullptr) return state_->Total(&transport::UcxWorkerStats::served_put_bytes);
#endif
  return 0;
}

}  // namespace kvhub::cachesvc
