#include "client/ucx_data_plane.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/block_verify.h"
#include "client/read_batch.h"
#include "client/shard.h"
#include "client/shard_session.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/ucx_net_devices.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "transport/ucx_context.h"
#include "transport/ucx_ping.h"
#include "transport/ucx_rkey_pin.h"
#include "transport/ucx_worker.h"

namespace kvhub {
namespace {

std::string ClientName() {
  char host[128] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "client", ":", getpid());
}

bool Transient(const absl::Status& s) {
  // CANCELLED: a shard's Connect that found its caller gone (a client sees it only
  // if its own cancel raced the reply).
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kCancelled;
}

// The worker no longer knows `peer`: a timed-out batch force-closed its endpoint
// (its transfers come back DEADLINE_EXCEEDED, not UNAVAILABLE).
bool PeerGone(transport::UcxWorker& worker, transport::PeerId peer) {
  return absl::IsNotFound(worker.PeerTransports(peer).status());
}

// Time kept between the end of a transfer and the end of its lease/reservation,
// for clock drift between the client's and the shard's view of "now".
absl::Duration SafetyMargin(absl::Duration span) {
  return std::min(span / 5, absl::Seconds(2));
}

}  // namespace

struct UcxDataPlane::Peer {
  enum class State : uint8_t { kNew, kUcx, kGrpc };
  std::string address;
  absl::Mutex mu;  // serializes connecting; guards the fields below it
  State state ABSL_GUARDED_BY(mu) = State::kNew;
  uint64_t peer_id ABSL_GUARDED_BY(mu) = 0;
  std::shared_ptr<transport::UcxWorker> worker ABSL_GUARDED_BY(mu);  // peer_id's (kUcx)
  bool shm ABSL_GUARDED_BY(mu) = false;  // its lanes include shared memory
  bool am_gets ABSL_GUARDED_BY(mu) = false;  // gets resolve to active messages (the shard ends their leases)
  bool calls ABSL_GUARDED_BY(mu) = false;    // lease Gets and Releases go over UCX (ConnectResponse.calls)
  uint64_t incarnation ABSL_GUARDED_BY(mu) = 0;  // ConnectResponse.incarnation of the connected process
  // How the shard is reached, for TransportStats: its own lock, never held long,
  // so a stats call does not wait out a Connect in progress under `mu`.
  mutable absl::Mutex transport_mu;
  std::string transport ABSL_GUARDED_BY(transport_mu) = "not connected yet";
  void SetTransport(std::string t) ABSL_LOCKS_EXCLUDED(transport_mu) {
    absl::MutexLock l(&transport_mu);
    transport = std::move(t);
  }
  std::string Transport() const ABSL_LOCKS_EXCLUDED(transport_mu) {
    absl::MutexLock l(&transport_mu);
    return transport;
  }
  absl::Status last_error ABSL_GUARDED_BY(mu);  // why UCX is not used (kGrpc / transport=ucx failures)
  // kGrpc in auto mode: when to offer UCX again (ClientConfig::ucx_retry_interval).
  absl::Time retry_ucx_at ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
  // transport=ucx: until when calls fail with last_error without asking the shard
  // again, after it refused UCX for a reason that is not transient.
  absl::Time refused_until ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  // After a transient failure to connect that may have left a connection on the
  // shard (its Session failed, or Connect ran out of time), no new Connect before
  // connect_after: each one costs the shard a connection it keeps, unwatched, for
  // its grace (ucx_session_grace_ms), and calls come far faster than that. The wait
  // doubles from 50 ms to 1 s, counted from the start of the failed try, and resets
  // once connected.
  absl::Time connect_after ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  absl::Duration connect_backoff ABSL_GUARDED_BY(mu) = absl::ZeroDuration();
  // UCX sessions that failed to open in a row since the last connection.
  int session_failures ABSL_GUARDED_BY(mu) = 0;
  // Keeps the shard's side of the connection (null for shards without sessions),
  // and its number among this peer's sessions (a restarted shard reuses conn ids).
  std::unique_ptr<ShardSession> session ABSL_GUARDED_BY(mu);
  uint64_t session_seq ABSL_GUARDED_BY(mu) = 0;
  // Set by a session's end (on a gRPC thread, without mu) to its number; when it
  // is the current session's, the next call connects again.
  std::atomic<uint64_t> lost_session{0};
  // The UCX peer of the current session once connected (0 before, and after
  // DropConnection). A session's end disconnects it at once: calls and transfers
  // in flight fail with UNAVAILABLE instead of waiting out their deadlines.
  std::atomic<uint64_t> session_peer{0};
  std::atomic<uint64_t> ucx_get{0}, ucx_put{0}, grpc_get{0}, grpc_put{0};
};

UcxDataPlane::UcxDataPlane(const ClientConfig& config, Hooks hooks)
    : config_(config),
      hooks_(std::move(hooks)),
      grpc_(config),
      releases_(std::make_unique<DeferredReleases>(
          DeferredReleases::Config{},
          [this](Shard& shard, const v1::ReleaseRequest& req, v1::ReleaseResponse* resp, bool* retried) {
            return ReleaseLeases(shard, req, resp, retried);
          })) {}

UcxDataPlane::~UcxDataPlane() {
  releases_.reset();  // sends the leases still queued (the shards outlive this)
  {
    absl::MutexLock l(&peers_mu_);
    for (auto& [shard, p] : peers_) {
      absl::MutexLock pl(&p->mu);
      p->session.reset();  // the shards close their side of the connections
    }
  }
  {
    absl::MutexLock l(&peers_mu_);
    for (auto& [shard, p] : peers_) {
      absl::MutexLock pl(&p->mu);
      p->worker.reset();
    }
  }
  {
    absl::MutexLock l(&worker_mu_);
    worker_.reset();  // closes endpoints before the context goes
  }
  context_.reset();
}

absl::StatusOr<std::unique_ptr<transport::UcxWorker>> UcxDataPlane::NewWorker() {
  transport::UcxWorker::Options o;
  o.name = "kvhub-client";
  // Answers pings only: CheckWorker's, which tell whether it still receives.
  o.calls = [](uint32_t method, absl::string_view) -> absl::StatusOr<std::string> {
    if (transport::AnswerPing(method)) return std::string();
    return absl::UnimplementedError("a kvhub client answers no UCX calls but pings");
  };
  absl::StatusOr<std::unique_ptr<transport::UcxWorker>> w = transport::UcxWorker::Create(context_.get(), std::move(o));
  if (w.ok() && hooks_.on_worker) hooks_.on_worker((*w)->address());
  return w;
}

bool UcxDataPlane::WorkerByDesign() {
  absl::MutexLock l(&worker_mu_);
  return worker_by_design_;
}

std::shared_ptr<transport::UcxWorker> UcxDataPlane::CurrentWorker() {
  absl::MutexLock l(&worker_mu_);
  return worker_;
}

void UcxDataPlane::CheckWorker(const std::shared_ptr<transport::UcxWorker>& w) {
  {
    absl::MutexLock l(&check_mu_);
    // One check at a time (a check takes up to ~2 s of pings), and a stuck worker
    // fails every call: one check per second is plenty.
    if (checking_ || Clock::Real()->Now() - last_check_ < absl::Seconds(1)) return;
    last_check_ = Clock::Real()->Now();
    checking_ = true;
  }
  absl::Cleanup done = [this] {
    absl::MutexLock l(&check_mu_);
    checking_ = false;
  };
  if (CurrentWorker() != w) return;
  const absl::Status s = transport::CheckReceives(context_.get(), *w, absl::Seconds(1), /*attempts=*/2);
  if (!absl::IsDeadlineExceeded(s)) {
    if (!s.ok()) KVHUB_LOG(debug, "kvhub client: cannot check the UCX worker: {}", s.ToString());
    return;
  }
  absl::StatusOr<std::unique_ptr<transport::UcxWorker>> fresh = NewWorker();
  if (!fresh.ok()) {
    KVHUB_LOG(error, "kvhub client: the UCX worker stopped receiving ({}) and no new one can be made: {}",
              std::string(s.message()), fresh.status().ToString());
    return;
  }
  uint64_t resets = 0;
  {
    absl::MutexLock l(&worker_mu_);
    if (worker_ != w) return;  // replaced meanwhile
    worker_ = std::move(*fresh);
    resets = ++worker_resets_;
  }
  KVHUB_LOG(warn, "kvhub client: this client's UCX worker stopped receiving over shared memory ({}; a shard "
                  "killed while writing into its queue leaves the queue stuck): replaced it (replacement {}); "
                  "shards are connected again on their next call",
            std::string(s.message()), resets);
}

absl::Status UcxDataPlane::EnsureWorker() {
  absl::MutexLock l(&worker_mu_);
  if (worker_tried_) return worker_status_;
  worker_tried_ = true;
  transport::UcxConfig uc;
  uc.tls = config_.ucx_tls;
  uc.require_peer_failure_detection = !transport::TlsNamesSharedMemory(config_.ucx_tls);
  // UCX bounds one transfer's wait by op_timeout, at most 1 h; a longer data_deadline
  // (or an infinite one) still gets UCX, its transfers cut off at 1 h.
  uc.op_timeout = std::min(config_.data_deadline, absl::Hours(1));
  uc.mapped_gets = config_.ucx_mapped_copies;
  uc.mapped_puts = config_.ucx_mapped_copies;
  const bool members_on_loopback = std::all_of(config_.members.begin(), config_.members.end(),
                                               [](const MemberConfig& m) { return IsLoopbackHostPort(m.address); });
  if (std::string devices = ResolveUcxNetDevices(config_.ucx_net_devices, members_on_loopback); !devices.empty()) {
    uc.options.push_back({"NET_DEVICES", devices});
  }
  // transport=ucx over tcp only: every transfer is an active message, and a context
  // with RMA would also serve peers' software RMA at any address of this process, so
  // it is made without (auto keeps gRPC there instead: below).
  absl::StatusOr<std::unique_ptr<transport::UcxContext>> ctx =
      config_.transport == TransportMode::kAuto ? transport::UcxContext::Create(uc)
                                                : transport::UcxContext::CreateWithoutRmaOverTcp(uc);
  if (!ctx.ok()) {
    worker_status_ = absl::Status(ctx.status().code(), absl::StrCat("client UCX cannot start: ", ctx.status().message()));
    return worker_status_;
  }
  if (const std::vector<std::string> names = (*ctx)->TransportNames();
      config_.transport == TransportMode::kAuto &&
      transport::ReachesPeersOnlyOverTcp(names, uc.require_peer_failure_detection)) {
    // Auto keeps gRPC for a shard UCX reaches only over tcp (EnsureConnected). When
    // this client's own UCX has nothing but tcp, that is every shard: no worker, no
    // Connect, no UCX port opened for nothing.
    worker_by_design_ = true;
    worker_status_ = absl::FailedPreconditionError(absl::StrCat(
        "this client's UCX reaches shards only over tcp (UCX_TLS=", (*ctx)->tls_description(), "; transports here: ",
        absl::StrJoin(names, ","), "; shared memory only when ucx_tls names it), where auto keeps gRPC; "
        "transport=ucx forces UCX"));
    return worker_status_;
  }
  context_ = std::move(*ctx);
  absl::StatusOr<std::unique_ptr<transport::UcxWorker>> w = NewWorker();
  if (!w.ok()) {
    worker_status_ = absl::Status(w.status().code(), absl::StrCat("client UCX worker: ", w.status().message()));
    return worker_status_;
  }
  worker_ = std::move(*w);
  return worker_status_;
}

namespace {
// True when every lane UCX chose (e.g. "tcp", "tcp (nofail)") is plain TCP.
bool OnlyTcpLanes(absl::string_view tls) {
  bool any = false;
  for (absl::string_view lane : absl::StrSplit(tls, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    if (absl::StartsWith(lane, "(")) break;  // annotations such as "(nofail)" follow the lanes
    if (lane != "tcp") return false;
    any = true;
  }
  return any;
}
}  // namespace

UcxDataPlane::Peer* UcxDataPlane::PeerFor(Shard& shard) {
  Peer* p;
  {
    absl::MutexLock l(&peers_mu_);
    std::unique_ptr<Peer>& slot = peers_[&shard];
    if (slot == nullptr) {
      slot = std::make_unique<Peer>();
      slot->address = shard.address();
    }
    p = slot.get();
  }
  return p;
}

void UcxDataPlane::EnsureConnected(Shard& shard, Peer* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) {
  if (p->state == Peer::State::kUcx && p->session != nullptr && p->lost_session.load() == p->session_seq) {
    // The shard ended the session (it stopped, or lost the gRPC connection): it
    // closes, or has closed, its side of the connection.
    DropConnection(p);
    p->SetTransport("reconnecting (the UCX session ended)");
    KVHUB_LOG(warn, "kvhub client: the UCX session with shard {} ended; connecting again", p->address);
  }
  if (p->state == Peer::State::kUcx && p->worker != CurrentWorker()) {
    DropConnection(p);  // made on a worker that was replaced (CheckWorker)
    p->SetTransport("reconnecting (this client's UCX worker was replaced)");
  }
  bool retrying = false;
  if (p->state == Peer::State::kGrpc && Clock::Real()->Now() >= p->retry_ucx_at) {
    p->state = Peer::State::kNew;  // auto's fallback may be over: offer UCX again
    p->retry_ucx_at = absl::InfiniteFuture();
    retrying = true;
  }
  if (p->state != Peer::State::kNew) return;
  // transport=ucx and the shard refused UCX a moment ago: asking again on every
  // call would cost each one a Connect (and an older shard a connection it keeps
  // unwatched for ucx_session_grace_ms); the calls fail with the same reason.
  if (config_.transport == TransportMode::kUcx && Clock::Real()->Now() < p->refused_until) return;
  const absl::Time attempt = Clock::Real()->Now();
  if (attempt < p->connect_after) return;  // last_error says why
  // Counted from the start of the failed attempt: one that waited out its deadline
  // (a frozen shard) has already spaced the tries, and the next call tries again.
  auto back_off = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) {
    p->connect_backoff = std::clamp(p->connect_backoff * 2, absl::Milliseconds(50), absl::Seconds(1));
    p->connect_after = attempt + p->connect_backoff;
  };
  // by_design: auto chose gRPC on purpose (tcp only), logged at info, final; anything
  // else is a failure that made the client fall back, logged as a warning (at info
  // when a retry finds the same, or when `quiet`: a setup chosen on purpose),
  // retried after ucx_retry_interval unless `final`.
  auto give_up = [&](const absl::Status& why, bool by_design = false, bool final = false, bool quiet = false)
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) {
    const bool same = retrying && p->last_error.message() == why.message();
    p->last_error = why;
    if (config_.transport == TransportMode::kAuto) {
      p->state = Peer::State::kGrpc;
      p->SetTransport(absl::StrCat("grpc (fallback: ", why.message(), ")"));
      if (!by_design && !final && config_.ucx_retry_interval > absl::ZeroDuration()) {
        p->retry_ucx_at = Clock::Real()->Now() + config_.ucx_retry_interval;
      }
      spdlog::log(by_design || same || quiet ? spdlog::level::info : spdlog::level::warn,
                  "kvhub client: shard {} uses grpc: {}", p->address, std::string(why.message()));
    } else {
      p->SetTransport(absl::StrCat("none (transport=ucx: ", why.message(), ")"));
      // Only a refusal that stands (UCX off there, no common transport, its
      // connection limit, a token without '*') is held; a transient failure (the
      // shard restarting, its memory gone with it) is retried on the next call.
      // This client's own UCX cannot start (`final`): that stands for good, and
      // every call fails with it without asking (or logging) again.
      if (final) {
        p->refused_until = absl::InfiniteFuture();
      } else if (!Transient(why) && config_.ucx_retry_interval > absl::ZeroDuration()) {
        p->refused_until = Clock::Real()->Now() + config_.ucx_retry_interval;
      }
      KVHUB_LOG(error, "kvhub client: shard {}: transport=ucx but UCX is not available: {}", p->address,
                why.ToString());
    }
  };
  if (absl::Status s = EnsureWorker(); !s.ok()) return give_up(s, /*by_design=*/WorkerByDesign(), /*final=*/true);
  const std::shared_ptr<transport::UcxWorker> worker = CurrentWorker();
  v1::ConnectRequest req;
  req.set_worker_address(worker->address());
  req.set_client_name(ClientName());
  req.set_sends_conn_key(true);
  v1::ConnectResponse resp;
  absl::Status s = shard.Connect(req, &resp);
  if (!s.ok()) {
    if (Transient(s)) {  // the shard is down or slow: decide on a later call
      p->last_error = s;
      // UNAVAILABLE: nothing reached the shard, no connection was left there, and the
      // next call may find it back. A Connect that ran out of time may have made one.
      if (!absl::IsUnavailable(s)) back_off();
      return;
    }
    // A token scoped to some namespaces cannot open UCX (Connect needs '*'), and a
    // shard may run without UCX (FAILED_PRECONDITION): setups chosen on purpose,
    // so no warning on every start of a client (TransportStats keeps the reason).
    return give_up(s, /*by_design=*/false, /*final=*/false,
                   /*quiet=*/absl::IsPermissionDenied(s) || absl::IsFailedPrecondition(s));
  }
  if (resp.conn_key() == 0) {
    // The shard would drop our version 2 request headers; it closes the connection
    // unused once it sees no session.
    return give_up(absl::FailedPreconditionError("the shard is older than this client (UCX wire version 1, no "
                                                 "connection key); update the shard to use UCX"),
                   /*by_design=*/false, /*final=*/false, /*quiet=*/true);
  }
  // The shard keeps the connection while the session is open: every return below
  // that does not keep `session` makes it close the connection at once.
  std::unique_ptr<ShardSession> session;
  const uint64_t seq = ++p->session_seq;
  {
    absl::StatusOr<std::unique_ptr<ShardSession>> opened = ShardSession::Open(
        shard.ReadyConn().stub.get(), resp.conn_id(), shard.control_deadline(),
        [worker, p, seq](const absl::Status& why) {
          p->lost_session.store(seq);
          KVHUB_LOG(warn, "kvhub client: UCX session with shard {} ended: {}", p->address, why.ToString());
          // DropConnection (which clears session_peer) waits for this callback
          // before a new connection can take the peer's id.
          if (const uint64_t peer = p->session_peer.exchange(0); peer != 0) {
            (void)worker->Disconnect(peer, absl::UnavailableError(absl::StrCat(
                                                "the shard ended the UCX session (", why.message(), ")")));
          }
        });
    if (opened.ok()) {
      session = std::move(*opened);
    } else if (opened.status().code() != absl::StatusCode::kUnimplemented) {
      // Retried on a later call (connection closed meanwhile, shard stopping or slow),
      // a few times: one that keeps failing (the shard cannot reach this client's
      // worker, say) is a fallback like any other, said so and retried after
      // ucx_retry_interval, not a Connect a second for ever with nothing logged.
      // (auto mode with a retry interval; transport=ucx fails its calls with the
      // reason, and an interval of 0 would make a passing problem permanent).
      const absl::Status why = absl::UnavailableError(absl::StrCat("UCX session: ", opened.status().message()));
      back_off();  // the fallback's retry, or the next try, waits too
      if (config_.transport == TransportMode::kAuto && config_.ucx_retry_interval > absl::ZeroDuration() &&
          ++p->session_failures >= kSessionFailuresBeforeFallback) {
        p->session_failures = 0;
        return give_up(absl::UnavailableError(absl::StrCat(kSessionFailuresBeforeFallback,
                                                           " UCX connects in a row failed, the last: ",
                                                           why.message())));
      }
      p->last_error = why;
      if (config_.transport == TransportMode::kAuto) {
        p->SetTransport(absl::StrCat("grpc (UCX connect retrying: ", why.message(), ")"));
      }
      return;
    }  // else a shard without sessions: it keeps the connection until UCX fails it
  }
  transport::PeerInfo info;
  info.worker_address = resp.worker_address();
  info.conn = {resp.conn_id(), resp.conn_key()};
  info.one_sided_shm = resp.one_sided_shm();
  info.same_namespaces = !resp.host_namespaces().empty() && resp.host_namespaces() == transport::HostNamespaces();
  for (int i = 0; i < resp.regions_size(); ++i) {
    const v1::ConnectResponse::Region& r = resp.regions(i);
    if (r.rkey_id() != static_cast<uint32_t>(i)) {
      return give_up(absl::DataLossError(absl::StrCat("Connect: region ", i, " has rkey_id ", r.rkey_id())));
    }
    info.regions.push_back({r.base(), r.size(), r.packed_rkey()});
  }
  absl::StatusOr<transport::PeerId> id = worker->Connect(info);
  // No transport in common (e.g. a shared-memory-only shard and a client that wants
  // peer failure detection): auto's gRPC is the answer, logged at info.
  if (!id.ok()) {
    return give_up(id.status(), /*by_design=*/false, /*final=*/false,
                   /*quiet=*/absl::IsUnavailable(id.status()) && absl::StrContains(id.status().message(), "unreachable"));
  }
  const std::string tls = worker->PeerTransports(*id).value_or("unknown");
  if (config_.transport == TransportMode::kAuto && OnlyTcpLanes(tls)) {
    // Over plain TCP UCX gets were level with gRPC's in session 5 and 1.0-1.5x
    // them in session 6, on loopback only (docs/results-transport.md): too uneven,
    // and unmeasured on a real network, to leave the path that needs nothing but
    // the gRPC port. In auto mode UCX is for RDMA and shared memory.
    // Closed in flush mode, so the shard's reply to our wireup is delivered first:
    // UCX 1.13 aborts a shard whose reply is still queued when the client's side
    // is force-closed and gone (ClusterCliTest.ShortLivedClientsSideBySide...).
    if (absl::Status d = worker->Close(*id, absl::Seconds(1)); !d.ok()) {
      KVHUB_LOG(debug, "kvhub client: closing the tcp-only UCX endpoint to {}: {}", p->address, d.ToString());
    }
    return give_up(absl::FailedPreconditionError(absl::StrCat(
                       "UCX reaches this shard only over ", tls,
                       ", where auto keeps gRPC; transport=ucx forces UCX")),
                   /*by_design=*/true);
  }
  const absl::StatusOr<transport::UcxPath> get_path = worker->ResolvedPath(*id, transport::TransferKind::kGet);
  const absl::StatusOr<transport::UcxPath> put_path = worker->ResolvedPath(*id, transport::TransferKind::kPut);
  const auto path_name = [](const absl::StatusOr<transport::UcxPath>& path) {
    return path.ok() ? std::string(transport::UcxPathName(*path)) : std::string("?");
  };
  p->peer_id = *id;
  p->worker = worker;
  p->shm = transport::TlsNamesSharedMemory(absl::string_view(tls).substr(0, tls.find(' ')));  // "posix,cma (nofail)"
  if (session != nullptr) p->session_peer.store(*id);
  p->am_gets = get_path.ok() && *get_path == transport::UcxPath::kAm;
  p->calls = resp.calls() && config_.ucx_calls;
  p->incarnation = resp.incarnation();
  p->session = std::move(session);
  p->state = Peer::State::kUcx;
  p->last_error = absl::OkStatus();
  p->connect_backoff = absl::ZeroDuration();
  p->session_failures = 0;
  p->SetTransport(absl::StrCat("ucx (", tls, "; get=", path_name(get_path), " put=", path_name(put_path),
                                 p->calls ? "; leases over ucx" : "", ")"));
  KVHUB_LOG(info, "kvhub client: shard {} uses {}", p->address, p->Transport());
}

bool UcxDataPlane::WantsAllPutsReserved(Shard& shard) {
  (void)shard;
  return config_.transport == TransportMode::kUcx;
}

void UcxDataPlane::RecordInlinePut(const Shard& shard, uint64_t bytes) {
  PeerFor(const_cast<Shard&>(shard))->grpc_put.fetch_add(bytes, std::memory_order_relaxed);
}

UcxDataPlane::Route UcxDataPlane::RouteFor(Shard& shard) {
  Route r;
  r.peer = PeerFor(shard);
  absl::Status why;
  {
    absl::MutexLock l(&r.peer->mu);
    EnsureConnected(shard, r.peer);
    r.ucx = r.peer->state == Peer::State::kUcx;
    if (r.ucx) r.worker = r.peer->worker;
    r.peer_id = r.peer->peer_id;
    r.shm = r.peer->shm;
    r.am_gets = r.peer->am_gets;
    r.calls = r.peer->calls;
    r.incarnation = r.peer->incarnation;
    why = r.peer->last_error;
  }
  if (!r.ucx && config_.transport == TransportMode::kUcx) {
    if (Transient(why)) {
      // The shard did not answer Connect (down, restarting, frozen): a transient
      // failure the next call retries, not a shard without UCX.
      r.refused = absl::UnavailableError(
          absl::StrCat("shard ", r.peer->address, ": UCX Connect did not get through (retried on the next call): ",
                       why.message()));
    } else {
      r.refused = absl::FailedPreconditionError(
          absl::StrCat("shard ", r.peer->address, ": transport=ucx but UCX is not available: ", why.message()));
    }
  }
  return r;
}

absl::Status UcxDataPlane::WriteReserved(Shard& shard, std::span<const BlockWrite> writes) {
  if (writes.empty()) return absl::OkStatus();
  Route route = RouteFor(shard);
  Peer* p = route.peer;
  if (route.ucx && OtherProcess(route, writes[0].incarnation)) {
    // The reservations are in a process that started after this connection's.
    absl::StatusOr<Route> fresh = Reconnect(shard, route, writes[0].incarnation);
    if (!fresh.ok()) return fresh.status();
    route = *fresh;
  }
  if (route.ucx) return WriteUcx(shard, p, route, writes);
  if (!route.refused.ok()) return route.refused;
  // gRPC: decided fallback, or this call while the shard's Connect failed transiently.
  absl::Status s = grpc_.WriteReserved(shard, writes);
  if (s.ok()) {
    uint64_t n = 0;
    for (const BlockWrite& w : writes) n += w.data.size();
    p->grpc_put.fetch_add(n, std::memory_order_relaxed);
  }
  return s;
}

absl::Status UcxDataPlane::ReadBlocks(Shard& shard, absl::string_view ns, std::span<BlockRead> reads) {
  for (BlockRead& r : reads) {
    r.status = absl::UnknownError("not read");
    r.size = 0;
  }
  if (reads.empty()) return absl::OkStatus();
  const Route route = RouteFor(shard);
  Peer* p = route.peer;
  if (route.ucx) return ReadUcx(shard, p, route, ns, reads);
  if (!route.refused.ok()) {
    FailUnfinished(reads, route.refused);
    return route.refused;
  }
  absl::Status s = grpc_.ReadBlocks(shard, ns, reads);
  uint64_t n = 0;
  for (const BlockRead& r : reads) {
    if (r.status.ok()) n += r.size;
  }
  p->grpc_get.fetch_add(n, std::memory_order_relaxed);
  return s;
}

absl::Status UcxDataPlane::ReadUcx(Shard& shard, Peer* p, const Route& route_in, absl::string_view ns,
                                   std::span<BlockRead> reads) {
  Route route = route_in;
  uint64_t peer_id = route.peer_id;
  v1::GetRequest req;
  req.set_namespace_(std::string(ns));
  req.set_keys(PackedKeys(reads));
  req.set_inline_data(false);
  req.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(config_.ucx_lease)));
  // The lease starts no earlier than now on the shard: bound every transfer by it.
  const absl::Time t0 = Clock::Real()->Now();
  absl::Time lease_bound = t0 + config_.ucx_lease - SafetyMargin(config_.ucx_lease);
  v1::GetResponse resp;
  absl::Status s;
  bool peer_failed = false;
  if (route.calls) {
    // The same Get, called over the UCX connection: no gRPC round trip.
    s = CallShard(shard, route.worker, peer_id, route.shm, v1::UCX_CALL_GET, "Get", req, &resp);
    // A dead shard reached over shared memory does not fail the endpoint (no
    // peer failure detection there): the call just times out. Reconnect next
    // time in both cases; Connect over gRPC fails fast if the shard is gone.
    peer_failed = absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s);
  } else {
    grpc::ByteBuffer bb;
    s = shard.GetRaw(req, &bb);
    if (s.ok() && !grpc::SerializationTraits<v1::GetResponse>::Deserialize(&bb, &resp).ok()) {
      s = absl::DataLossError(absl::StrCat("Get ", shard.address(), ": cannot parse the response"));
    }
  }
  if (s.ok() && resp.blocks_size() != static_cast<int>(reads.size())) {
    s = absl::DataLossError(absl::StrCat("Get ", shard.address(), ": response has ", resp.blocks_size(),
                                         " blocks, request had ", reads.size()));
  }
  if (s.ok() && OtherProcess(route, resp.incarnation())) {
    // Leases granted by a process that started after this connection's: read them
    // over a new connection to it.
    absl::StatusOr<Route> fresh = Reconnect(shard, route, resp.incarnation());
    if (fresh.ok() && fresh->ucx) {
      route = *fresh;
      peer_id = route.peer_id;
    } else {
      s = !fresh.ok()             ? fresh.status()
          : !fresh->refused.ok() ? fresh->refused
                                 : absl::UnavailableError(absl::StrCat(
                                       "shard ", shard.address(), " restarted and is now served over gRPC; retry"));
    }
  }
  if (!s.ok()) {
    // Leases the shard granted (a reply of the wrong length, a restarted shard)
    // are read by nobody: release them rather than keep the blocks from eviction
    // until they expire. Best effort: unreleased leases end by expiry.
    v1::ReleaseRequest release;
    for (const v1::GetResponse::Block& b : resp.blocks()) {
      if (b.lease_id() != 0) release.add_lease_ids(b.lease_id());
    }
    v1::ReleaseResponse released;
    if (release.lease_ids_size() > 0) (void)shard.Release(release, &released).ok();
    FailUnfinished(reads, s);
    if (peer_failed) ForgetPeer(p, route.worker.get(), peer_id, "ucx peer failed");
    return s;
  }
  if (const absl::Duration granted = absl::Milliseconds(resp.lease_ms());
      granted > absl::ZeroDuration() && granted < config_.ucx_lease) {
    // The shard capped the lease (its max_lease_ms): the reads must end within what it gave.
    lease_bound = t0 + granted - SafetyMargin(granted);
  }
  if (hooks_.after_lease) hooks_.after_lease();

  // Over active messages the shard checks each read against its lease and holds
  // the memory until the bytes are out, so it can end the lease itself right
  // after (Transfer::end_grant): no Release call. One-sided RMA reads are
  // invisible to the shard: their leases are released, and checked, below.
  const bool shard_ends_leases = route.am_gets;
  std::vector<transport::Transfer> transfers;
  std::vector<size_t> index;  // transfers[k] reads reads[index[k]]
  std::vector<uint64_t> lease_of(reads.size(), 0);
  for (size_t i = 0; i < reads.size(); ++i) {
    const v1::GetResponse::Block& b = resp.blocks(static_cast<int>(i));
    BlockRead& r = reads[i];
    if (b.status().code() != 0) {
      r.status = ShardItemError(b.status().code(), b.status().message(), r.key);
      continue;
    }
    lease_of[i] = b.lease_id();
    if (b.lease_id() == 0) {
      r.status = absl::DataLossError(absl::StrCat("block ", r.key.Hex(), ": shard granted no lease"));
    } else if (b.size() > r.dest.size()) {
      r.status = BufferTooSmall(r.key, b.size(), r.dest.size());
    } else if (b.location().size() != b.size() || b.size() == 0) {
      r.status = absl::DataLossError(absl::StrCat("block ", r.key.Hex(), ": location size ", b.location().size(),
                                                  " != block size ", b.size()));
    } else {
      transfers.push_back({transport::TransferKind::kGet, transport::UcxPath::kAuto, b.location().rkey_id(),
                           b.location().offset(), b.size(), r.dest.data(), b.lease_id(),
                           shard_ends_leases});
      index.push_back(i);
    }
  }
  // Leases of reads that were all copied from a mapped segment (each copy
  // checked against the lease bound as it finished) are released in the
  // background: the answer could no longer change what the caller gets.
  bool release_later = true;
  if (!transfers.empty()) {
    std::vector<absl::Status> results(transfers.size());
    std::vector<transport::Transfer::CopyChecksum> sums(transfers.size());
    for (size_t k = 0; k < transfers.size(); ++k) transfers[k].checksum = &sums[k];
    const absl::Time end = std::min(lease_bound, Clock::Real()->Now() + config_.data_deadline);
    const absl::Duration budget = end - Clock::Real()->Now();
    if (budget <= absl::ZeroDuration()) {
      // The lease may already be over: whatever the shard's memory holds now is not ours to read.
      for (auto& st : results) {
        st = absl::DeadlineExceededError("lease would end before the UCX transfer; not read");
      }
    } else {
      if (hooks_.before_transfers) hooks_.before_transfers(std::span<transport::Transfer>(transfers));
      if (absl::Status e = route.worker->Execute(peer_id, transfers, std::span<absl::Status>(results), budget);
          !e.ok()) {
        for (auto& st : results) st = e;
      }
    }
    bool asked_gone = false;
    for (size_t k = 0; k < transfers.size(); ++k) {
      BlockRead& r = reads[index[k]];
      const v1::GetResponse::Block& b = resp.blocks(static_cast<int>(index[k]));
      // A finished AM read ended its lease on the shard. One that failed may not
      // have reached the shard at all: release it below (NOT_FOUND is harmless).
      if (transfers[k].end_grant && results[k].ok()) lease_of[index[k]] = 0;
      if (!results[k].ok()) {
        if (results[k].code() == absl::StatusCode::kUnavailable) peer_failed = true;
        // A timed-out batch may have force-closed the endpoint: the worker no longer
        // knows the peer, and every later call would fail on it until forgotten.
        if (absl::IsDeadlineExceeded(results[k]) && !peer_failed && !asked_gone) {
          asked_gone = true;  // once per batch: a hop to the progress thread
          peer_failed = PeerGone(*route.worker, peer_id);
        }
        // An active-message read waits for the shard's reply: this client's worker
        // may no longer receive over shared memory.
        if (absl::IsDeadlineExceeded(results[k]) && route.shm && !sums[k].computed) CheckWorker(route.worker);
        r.status = absl::Status(results[k].code(),
                                absl::StrCat("block ", r.key.Hex(), ": ucx get: ", results[k].message()));
        continue;
      }
      if (!sums[k].computed) release_later = false;
      // Gets copied from a mapped segment were hashed as they landed.
      // (The transfer moved exactly b.size() bytes: only the checksum is left to check.)
      r.status = sums[k].computed ? VerifyBlockChecksum(sums[k].xxh3_64, b.checksum())
                                  : VerifyBlock(r.dest.first(b.size()), b.size(), b.checksum());
      r.size = r.status.ok() ? b.size() : 0;
    }
  }
  v1::ReleaseRequest release;
  std::vector<size_t> released;  // release.lease_ids(k) belongs to reads[released[k]]
  for (size_t i = 0; i < reads.size(); ++i) {
    if (lease_of[i] == 0) continue;
    release.add_lease_ids(lease_of[i]);
    released.push_back(i);
  }
  if (release.lease_ids_size() > 0 && release_later) {
    releases_->Add(shard, std::span<const uint64_t>(release.lease_ids().data(), release.lease_ids().size()));
  } else if (release.lease_ids_size() > 0) {
    v1::ReleaseResponse rel;
    bool retried = false;
    absl::Status rs = ReleaseLeases(shard, release, &rel, &retried);
    // Answered by the gRPC retry of a UCX Release that failed in transit: the
    // shard may have run the first, and its NOT_FOUNDs then say nothing about
    // the reads, which are kept as when the Release fails (below).
    if (retried) rs = absl::UnavailableError("the UCX Release failed in transit; answered by its gRPC retry");
    if (rs.ok() && rel.items_size() == release.lease_ids_size()) {
      for (int k = 0; k < rel.items_size(); ++k) {
        BlockRead& r = reads[released[k]];
        if (rel.items(k).code() != 0 && r.status.ok()) {
          // The lease ended before we let go: the shard may have reused the memory
          // while we read it. The checksum passed, but never hand out such bytes.
          r.status = absl::UnavailableError(absl::StrCat("block ", r.key.Hex(), ": lease ended during the read (",
                                                         rel.items(k).message(), "); discarded"));
          r.size = 0;
        }
      }
    } else {
      // Reads finished inside the lease bound (by our clock) and verified; the
      // leases end by themselves.
      KVHUB_LOG(warn, "kvhub client: Release on {} failed: {}", shard.address(),
                rs.ok() ? std::string("item count mismatch") : rs.ToString());
    }
  }
  uint64_t n = 0;
  for (const BlockRead& r : reads) {
    if (r.status.ok()) n += r.size;
  }
  p->ucx_get.fetch_add(n, std::memory_order_relaxed);
  if (peer_failed) ForgetPeer(p, route.worker.get(), peer_id, "ucx peer failed");
  return absl::OkStatus();
}

absl::Status UcxDataPlane::ReleaseLeases(Shard& shard, const v1::ReleaseRequest& req, v1::ReleaseResponse* resp,
                                         bool* retried) {
  if (retried != nullptr) *retried = false;
  Peer* p = PeerFor(shard);
  uint64_t peer_id = 0;
  bool calls = false, shm = false;
  std::shared_ptr<transport::UcxWorker> worker;
  {
    absl::MutexLock l(&p->mu);
    // Not over a connection whose session ended (the shard dropped it: the call
    // would fail) or whose worker was replaced (it no longer receives: the call
    // would wait out control_deadline).
    calls = p->state == Peer::State::kUcx && p->calls && p->lost_session.load() != p->session_seq &&
            p->worker == CurrentWorker();
    peer_id = p->peer_id;
    worker = p->worker;
    shm = p->shm;
  }
  if (!calls || worker == nullptr) return shard.Release(req, resp);
  absl::Status s = CallShard(shard, worker, peer_id, shm, v1::UCX_CALL_RELEASE, "Release", req, resp);
  // The connection failed, not the shard's answer: the leases are still held there
  // (until they expire, keeping their blocks from eviction) unless released over
  // gRPC. A release the shard did make answers NOT_FOUND the second time.
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) {
    resp->Clear();
    if (absl::Status g = shard.Release(req, resp); g.ok()) {
      if (retried != nullptr) *retried = true;
      return g;
    }
  }
  return s;
}

absl::Status UcxDataPlane::CallShard(Shard& shard, const std::shared_ptr<transport::UcxWorker>& worker,
                                     uint64_t peer_id, bool shm, v1::UcxCall method, absl::string_view what,
                                     const google::protobuf::Message& req, google::protobuf::Message* resp) {
  absl::StatusOr<std::string> answer =
      worker->CallPeer(peer_id, method, req.SerializeAsString(), config_.control_deadline);
  // Over shared memory a call that times out may mean this client's worker no
  // longer receives (a stuck queue), not a slow shard.
  if (absl::IsDeadlineExceeded(answer.status()) && shm) CheckWorker(worker);
  if (!answer.ok()) {
    return absl::Status(answer.status().code(),
                        absl::StrCat(what, " ", shard.address(), " over ucx: ", answer.status().message()));
  }
  if (!resp->ParseFromString(*answer)) {
    return absl::DataLossError(absl::StrCat(what, " ", shard.address(), " over ucx: cannot parse the response"));
  }
  return absl::OkStatus();
}

void UcxDataPlane::DropConnection(Peer* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) {
  p->state = Peer::State::kNew;
  // The shard closes its side of the connection when the session ends. UCX may
  // pair the shard's endpoint with ours, so ours goes too: a later connection
  // starts from a fresh endpoint instead of one the shard is about to reset.
  p->session_peer.store(0);
  p->session.reset();  // waits for an end callback in progress
  if (p->worker != nullptr) {
    // UNAVAILABLE for the calls and transfers still in flight on it: failed in
    // transit, so a Release among them is made again over gRPC (CANCELLED was not,
    // and its leases stayed held on a live shard until they expired).
    if (absl::Status d = p->worker->Disconnect(
            p->peer_id, absl::UnavailableError(absl::StrCat("the UCX connection to ", p->address, " was dropped")));
        !d.ok() && !absl::IsNotFound(d)) {
      KVHUB_LOG(debug, "kvhub client: closing the UCX endpoint to {}: {}", p->address, d.ToString());
    }
  }
  p->worker.reset();  // a replaced worker goes once no call uses it
}

void UcxDataPlane::ForgetPeer(Peer* p, const transport::UcxWorker* worker, uint64_t peer_id,
                              absl::string_view why) {
  absl::MutexLock l(&p->mu);
  // Peer ids are per worker: a call that failed on a replaced worker names an id a
  // newer connection on the new worker may have too, which must stay.
  if (p->state == Peer::State::kUcx && p->worker.get() == worker && p->peer_id == peer_id) {
    DropConnection(p);  // reconnect on the next call
    p->SetTransport(absl::StrCat("reconnecting (", why, ")"));
    KVHUB_LOG(warn, "kvhub client: UCX connection to shard {} is gone ({}); reconnecting on next use", p->address,
              std::string(why));
  }
}

absl::StatusOr<UcxDataPlane::Route> UcxDataPlane::Reconnect(Shard& shard, const Route& stale, uint64_t incarnation) {
  ForgetPeer(stale.peer, stale.worker.get(), stale.peer_id, "the shard restarted since this client connected");
  Route fresh = RouteFor(shard);
  if (!fresh.ucx || !OtherProcess(fresh, incarnation)) return fresh;
  return absl::UnavailableError(absl::StrCat("shard ", shard.address(),
                                             " restarted again while this client reconnected over UCX"));
}

absl::Status UcxDataPlane::WriteUcx(Shard& shard, Peer* p, const Route& route, std::span<const BlockWrite> writes) {
  const uint64_t peer_id = route.peer_id;
  absl::Time end = Clock::Real()->Now() + config_.data_deadline;
  std::vector<transport::Transfer> transfers;
  transfers.reserve(writes.size());
  uint64_t bytes = 0;
  for (const BlockWrite& w : writes) {
    if (w.data.size() != w.location.size || w.data.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("reservation ", w.reservation_id, " holds ", w.location.size,
                                                     " bytes; block has ", w.data.size()));
    }
    if (w.expires != absl::InfiniteFuture()) {
      // The reservation's memory may be reused after it expires: finish before.
      end = std::min(end, w.expires - absl::Milliseconds(500));
    }
    // UCX only reads `local` for a put.
    transfers.push_back({transport::TransferKind::kPut, transport::UcxPath::kAuto, w.location.rkey_id,
                         w.location.offset, w.data.size(), const_cast<uint8_t*>(w.data.data()),
                         w.reservation_id});
    bytes += w.data.size();
  }
  const absl::Duration budget = end - Clock::Real()->Now();
  if (budget <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError(absl::StrCat("shard ", shard.address(),
                                                    ": reservation expires before the UCX put could finish"));
  }
  std::vector<absl::Status> results(transfers.size());
  if (hooks_.before_transfers) hooks_.before_transfers(std::span<transport::Transfer>(transfers));
  if (absl::Status e = route.worker->Execute(peer_id, transfers, std::span<absl::Status>(results), budget); !e.ok()) {
    return e;
  }
  for (size_t k = 0; k < results.size(); ++k) {
    if (results[k].ok()) continue;
    if (results[k].code() == absl::StatusCode::kUnavailable ||
        (absl::IsDeadlineExceeded(results[k]) && PeerGone(*route.worker, peer_id))) {
      ForgetPeer(p, route.worker.get(), peer_id, "ucx peer failed");
    }
    return absl::Status(results[k].code(), absl::StrCat("shard ", shard.address(), ": ucx put of reservation ",
                                                        writes[k].reservation_id, ": ", results[k].message()));
  }
  p->ucx_put.fetch_add(bytes, std::memory_order_relaxed);
  return absl::OkStatus();
}

std::vector<ShardTransportStats> UcxDataPlane::TransportStats() const {
  std::vector<const Peer*> peers;
  {
    // Peers are never removed: their pointers outlive the lock.
    absl::MutexLock l(&peers_mu_);
    for (const auto& [shard, p] : peers_) peers.push_back(p.get());
  }
  std::vector<ShardTransportStats> out;
  for (const Peer* p : peers) {
    ShardTransportStats st;
    st.address = p->address;
    st.transport = p->Transport();
    st.ucx_get_bytes = p->ucx_get.load(std::memory_order_relaxed);
    st.ucx_put_bytes = p->ucx_put.load(std::memory_order_relaxed);
    st.grpc_get_bytes = p->grpc_get.load(std::memory_order_relaxed);
    st.grpc_put_bytes = p->grpc_put.load(std::memory_order_relaxed);
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace kvhub
