// KvHubService: the UCX parts of the service: Connect's handler (DoConnect; cachesvc/ucx_server.h),
// the Session streams that watch UCX connections, and the calls served over UCX.

#include "cachesvc/kvhub_service.h"

#include <functional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "cachesvc/raw_messages.h"
#include "common/hash.h"
#include "common/log.h"
#include "transport/ucx_config.h"
#include "google/protobuf/arena.h"

namespace kvhub::cachesvc {

uint64_t KvHubService::UcxOwner(absl::string_view authorization) {
  return Xxh3_64(authorization.data(), authorization.size());
}

grpc::Status KvHubService::DoConnect(const v1::ConnectRequest& req, v1::ConnectResponse* resp, uint64_t owner,
                                     const std::function<bool()>& gave_up) {
  if (ucx_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ucx is not set up on this shard; use gRPC");
  }
  grpc::Status st = ucx_->Connect(req, resp, owner, gave_up);
  if (st.ok()) resp->set_incarnation(incarnation_);
  return st;
}

// One Session stream. Lives until OnDone and until BeginStop's reference (if
// any) is dropped; ends once (End), by the client's cancel, a refusal or BeginStop.
class KvHubService::SessionReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  SessionReactor(KvHubService* service, uint64_t conn_id, std::string authorization)
      : service_(service), conn_id_(conn_id), authorization_(std::move(authorization)) {}

  // The authorization metadata the stream was opened with ("" if none).
  const std::string& authorization() const { return authorization_; }

  // Registers the session, or ends it with the reason it cannot watch conn_id_
  // (`auth`: the caller's authorization; `recheck` checks it again against the
  // tokens in force once the session is registered, where a reload's sweep finds it).
  void Start(const grpc::Status& auth, const std::function<grpc::Status()>& recheck) {
    if (service_->stopping()) return End(StoppingStatus(), /*close=*/false);
    if (!auth.ok()) return End(auth, false);
    if (service_->ucx_ == nullptr) {
      return End(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ucx is not set up on this shard"), false);
    }
    // Only the caller that made the connection (same credentials) may watch it, and so
    // end it: another one gets NOT_FOUND, as for an id that was never made.
    const uint64_t owner = UcxOwner(authorization_);
    if (absl::Status live = service_->ucx_->CheckLive(conn_id_, owner); !live.ok()) {
      return End(grpc::Status(grpc::StatusCode::NOT_FOUND,
                              absl::StrCat("session: ", live.message(), "; Connect again")),
                 false);
    }
    grpc::Status refused;
    {
      absl::MutexLock l(&service_->sessions_mu_);
      if (service_->sessions_closed_) {
        refused = StoppingStatus();
      } else if (!service_->sessions_.try_emplace(conn_id_, this).second) {
        refused = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                               absl::StrCat("ucx connection ", conn_id_, " already has a session"));
      } else {
        registered_ = true;
      }
    }
    if (!refused.ok()) return End(refused, false);
    // The worker may have been replaced since the check above, after its
    // sessions were ended: this one would then watch a connection that is gone.
    if (absl::Status live = service_->ucx_->CheckLive(conn_id_, owner); !live.ok()) {
      return End(grpc::Status(grpc::StatusCode::NOT_FOUND,
                              absl::StrCat("session: ", live.message(), "; Connect again")),
                 false);
    }
    // Tokens reloaded between the first check and the registration: the reload's
    // sweep of sessions did not see this one. Its connection goes if the token no
    // longer allows UCX.
    if (grpc::Status again = recheck(); !again.ok()) return End(again, /*close=*/true);
    // Tell the client the shard watches the connection now.
    v1::SessionEvent open;
    open.set_open(true);
    if (grpc::Status st = SerializeRawResponse(open, &open_event_); !st.ok()) return End(st, /*close=*/true);
    absl::MutexLock l(&mu_);
    if (claimed_) return;  // BeginStop got there first
    writing_ = true;
    StartWrite(&open_event_);
  }

  void OnWriteDone(bool ok) override {
    (void)ok;  // a failed write: the client is gone, and OnCancel says so
    grpc::Status finish;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ended_) return;
      finish = end_status_;
    }
    Finish(finish);  // may lead to OnDone and `delete this`: nothing after it
  }

  // The client cancelled, or its gRPC connection broke: the UCX connection goes too.
  void OnCancel() override {
    End(grpc::Status(grpc::StatusCode::CANCELLED, "its client ended the session"), true);
  }

  void OnDone() override {
    if (registered_) {
      absl::MutexLock l(&service_->sessions_mu_);
      auto it = service_->sessions_.find(conn_id_);
      if (it != service_->sessions_.end() && it->second == this) service_->sessions_.erase(it);
    }
    Unref();
  }

  // Finishes the stream once (after the open event's write, if one is out);
  // `close` also closes the UCX connection.
  void End(const grpc::Status& status, bool close) { (void)EndOnce(status, close); }
  // End, saying whether this call ended it (false: ended already, by another
  // caller or by its client).
  bool EndOnce(const grpc::Status& status, bool close) {
    {
      absl::MutexLock l(&mu_);
      if (claimed_) return false;
      claimed_ = true;  // no open event is started from now on
    }
    if (close) {
      absl::Status c = service_->ucx_->Close(conn_id_);
      KVHUB_LOG(info, "ucx: connection {} closed: {}{}", conn_id_, status.error_message(),
                c.ok() ? std::string() : absl::StrCat(" (", c.message(), ")"));
    }
    {
      absl::MutexLock l(&mu_);
      ended_ = true;
      end_status_ = status;
      if (writing_) return true;  // OnWriteDone finishes
    }
    Finish(status);  // may lead to OnDone and `delete this`: nothing after it
    return true;
  }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  KvHubService* const service_;
  const uint64_t conn_id_;
  const std::string authorization_;
  bool registered_ = false;  // set in Start, before any reaction can run
  std::atomic<int> refs_{1};  // gRPC's (dropped in OnDone), plus BeginStop's while it ends the stream
  grpc::ByteBuffer open_event_;  // a serialized SessionEvent{open: true}
  absl::Mutex mu_;
  bool claimed_ ABSL_GUARDED_BY(mu_) = false;  // End has begun (once)
  bool ended_ ABSL_GUARDED_BY(mu_) = false;    // ... and decided the status
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // the open event is on its way
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* KvHubService::Session(grpc::CallbackServerContext* ctx,
                                                                  const grpc::ByteBuffer* req) {
  v1::SessionRequest request;
  grpc::Status admitted = ParseRawRequest(req, &request);
  // As Connect: only a token for every namespace may hold a UCX connection.
  if (admitted.ok()) admitted = Authorize(ctx, nullptr, /*every_namespace=*/true);
  auto* r = new SessionReactor(this, request.conn_id(), std::string(AuthorizationOf(ctx).value_or("")));
  r->Start(admitted, [this, ctx] { return Authorize(ctx, nullptr, /*every_namespace=*/true); });
  return r;
}

size_t KvHubService::EndSessions(const grpc::Status& status,
                                 const std::function<bool(uint64_t conn_id, const std::string& authorization)>& which,
                                 bool for_good, bool close) {
  std::vector<SessionReactor*> live;
  {
    absl::MutexLock l(&sessions_mu_);
    if (for_good) sessions_closed_ = true;
    for (auto& [id, r] : sessions_) {
      if (!which(id, r->authorization())) continue;
      r->Ref();
      live.push_back(r);
    }
  }
  size_t ended = 0;
  for (SessionReactor* r : live) {
    if (r->EndOnce(status, close)) ++ended;
    r->Unref();
  }
  return ended;
}

namespace {
// Whether `authorization` no longer allows what Connect requires (every namespace).
bool RevokedForUcx(const Authenticator& now, absl::string_view authorization) {
  absl::StatusOr<const AuthGrant*> grant = now.Authenticate(authorization.empty() ? nullptr : &authorization);
  return !grant.ok() || !(*grant)->all_namespaces;
}
}  // namespace

void KvHubService::PruneConnAuthLocked() {
  // The snapshot is taken under the lock: an entry added meanwhile (its connection
  // made before it) cannot be pruned by a snapshot older than it.
  const std::vector<uint64_t> ids = ucx_->LiveConnectionIds();
  const absl::flat_hash_set<uint64_t> live(ids.begin(), ids.end());
  absl::erase_if(conn_auth_, [&live](const auto& e) { return !live.contains(e.first); });
}

bool KvHubService::RememberConnAuth(uint64_t conn_id, absl::string_view authorization) {
  {
    absl::MutexLock l(&conn_auth_mu_);
    conn_auth_[conn_id] = std::string(authorization);
    if (conn_auth_.size() > 2 * kMaxUcxConnections && ucx_ != nullptr) PruneConnAuthLocked();
  }
  if (auth_ == nullptr || !RevokedForUcx(*auth_->Current(), authorization)) return true;
  if (ucx_ != nullptr) ucx_->Close(conn_id).IgnoreError();  // NOT_FOUND: a reload closed it already
  return false;
}

size_t KvHubService::EndRevokedUcxSessions(const Authenticator& now) {
  size_t ended = EndSessions(
      grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                   "the shard's tokens were reloaded and this connection's token no longer allows UCX "
                   "(Connect needs a token for every namespace, '*')"),
      [&now](uint64_t, const std::string& authorization) { return RevokedForUcx(now, authorization); },
      /*for_good=*/false, /*close=*/true);
  if (ucx_ == nullptr) return ended;
  // Then every live connection made with a revoked token, watched or not. (One
  // whose Connect is still running is checked by RememberConnAuth.)
  std::vector<uint64_t> revoked;
  {
    absl::MutexLock l(&conn_auth_mu_);
    PruneConnAuthLocked();
    for (const auto& [id, authorization] : conn_auth_) {
      if (RevokedForUcx(now, authorization)) revoked.push_back(id);
    }
  }
  for (uint64_t id : revoked) {
    if (ucx_->Close(id).ok()) ++ended;  // NOT_FOUND: closed by its session's end above
  }
  return ended;
}

void KvHubService::BeginStop() {
  draining_.store(true, std::memory_order_release);
  stopping_.store(true, std::memory_order_release);
  EndSessions(StoppingStatus(), [](uint64_t, const std::string&) { return true; }, /*for_good=*/true);
}

void KvHubService::EndUcxSessionsBefore(uint64_t first_conn_id) {
  EndSessions(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                           "the shard replaced its UCX worker (its shared-memory queue had stopped); Connect again"),
              [first_conn_id](uint64_t id, const std::string&) { return id < first_conn_id; }, /*for_good=*/false);
}

size_t KvHubService::EndUcxSessionsOfClosedConnections() {
  if (ucx_ == nullptr) return 0;
  // The sessions first, then one snapshot of the worker's connections (one round
  // trip to it, however many sessions there are). A session registers only once its
  // connection is live, and ids are never reused: a listed session whose connection
  // is missing from the later snapshot has lost it for good. (Taken the other way
  // round, a connection made between the two would look gone.) Only ids matter: a
  // session's owner was checked when it registered.
  std::vector<uint64_t> watched;
  {
    absl::MutexLock l(&sessions_mu_);
    watched.reserve(sessions_.size());
    for (const auto& [id, r] : sessions_) watched.push_back(id);
  }
  if (watched.empty()) return 0;
  const std::vector<uint64_t> ids = ucx_->LiveConnectionIds();
  const absl::flat_hash_set<uint64_t> live(ids.begin(), ids.end());
  absl::flat_hash_set<uint64_t> gone;
  for (uint64_t id : watched) {
    if (!live.contains(id)) gone.insert(id);
  }
  if (gone.empty()) return 0;
  const size_t ended = EndSessions(
      grpc::Status(grpc::StatusCode::UNAVAILABLE,
                   "the shard closed this UCX connection (its endpoint to the client failed, or no Session "
                   "watched it in time); Connect again"),
      [&gone](uint64_t id, const std::string&) { return gone.contains(id); }, /*for_good=*/false,
      /*close=*/false);
  if (ended > 0) KVHUB_LOG(info, "ucx: ended {} session(s) whose connection the shard had closed", ended);
  return ended;
}

uint64_t KvHubService::ucx_sessions() const {
  absl::MutexLock l(&sessions_mu_);
  return sessions_.size();
}

bool KvHubService::HasUcxSession(uint64_t conn_id) const {
  absl::MutexLock l(&sessions_mu_);
  return sessions_.contains(conn_id);
}

namespace {
absl::Status FromGrpc(const grpc::Status& st) {
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}
}  // namespace

absl::StatusOr<std::string> KvHubService::UcxCall(uint32_t method, absl::string_view request) {
  Rpc rpc;
  switch (method) {
    case v1::UCX_CALL_GET: rpc = Rpc::kUcxGet; break;
    case v1::UCX_CALL_RELEASE: rpc = Rpc::kUcxRelease; break;
    default: return absl::UnimplementedError(absl::StrCat("unknown UCX call method ", method));
  }
  const absl::Time start = Clock::Real()->Now();
  InflightScope scope(this);
  absl::StatusOr<std::string> out = absl::UnavailableError("kvhubd is shutting down; retry on another node");
  if (!stopping()) out = rpc == Rpc::kUcxGet ? UcxGet(request) : UcxRelease(request);
  metrics_->RecordRpc(rpc, Clock::Real()->Now() - start, static_cast<int>(out.status().code()));
  return out;
}

absl::StatusOr<std::string> KvHubService::UcxGet(absl::string_view request) {
  thread_local v1::GetRequest req;  // reused: no allocation once warm
  req.Clear();
  if (!req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
    return absl::InvalidArgumentError(UnparseableRequestMessage(req.GetTypeName()));
  }
  if (req.inline_data()) {
    return absl::InvalidArgumentError("a Get called over UCX returns leases only (inline_data=false); "
                                      "fetch inline data over gRPC");
  }
  // As in Get: the per-block sub-messages live on a reused arena.
  google::protobuf::Arena& arena = ResponseArena();
  auto* response = google::protobuf::Arena::CreateMessage<v1::GetResponse>(&arena);
  GetTally served;  // counted only if the answer goes out
  const grpc::Status st = DoGet(req, response, &served);
  absl::StatusOr<std::string> out;
  if (!st.ok()) {
    out = FromGrpc(st);
  } else if (const size_t bytes = response->ByteSizeLong(); bytes > transport::kMaxUcxCallBytes) {
    // The worker would replace the answer with INTERNAL and the client never learn
    // its leases (long per-block messages: a long namespace over its lease share).
    ReleaseUnannounced(*response);
    out = absl::ResourceExhaustedError(absl::StrCat("the answer to this Get is ", bytes, " bytes, over a UCX call's ",
                                                    transport::kMaxUcxCallBytes,
                                                    "; its leases were released: ask for fewer keys per call"));
  } else {
    out = response->SerializeAsString();
    RecordGet(req, served);
  }
  arena.Reset();
  return out;
}

absl::StatusOr<std::string> KvHubService::UcxRelease(absl::string_view request) {
  thread_local v1::ReleaseRequest req;
  thread_local v1::ReleaseResponse resp;
  req.Clear();
  resp.Clear();
  if (!req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
    return absl::InvalidArgumentError(UnparseableRequestMessage(req.GetTypeName()));
  }
  const grpc::Status st = DoRelease(req, &resp);
  if (!st.ok()) return FromGrpc(st);
  return resp.SerializeAsString();
}

}  // namespace kvhub::cachesvc
