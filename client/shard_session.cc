#include "client/shard_session.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"

namespace kvhub {

class ShardSession::Reactor final : public grpc::ClientReadReactor<v1::SessionEvent> {
 public:
  Reactor(uint64_t conn_id, OnEnd on_end) : on_end_(std::move(on_end)) { req_.set_conn_id(conn_id); }

  void Start(v1::KvHub::Stub* stub) {
    // Waits for a channel that is reconnecting (Open's timeout bounds it) instead
    // of failing at once; once open, the stream has no deadline.
    ctx_.set_wait_for_ready(true);
    stub->async()->Session(&ctx_, &req_, this);
    StartRead(&event_);
    StartCall();
  }

  // OK once the shard registered the session; its error if the stream ended first.
  absl::Status WaitOpen(absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    auto decided = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_ || done_; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&decided), timeout)) {
      return absl::DeadlineExceededError(absl::StrCat("Session not confirmed within ", absl::FormatDuration(timeout)));
    }
    if (done_) return end_status_;
    return absl::OkStatus();
  }

  // Stops on_end and cancels; waits for OnDone.
  void CancelAndWait() {
    {
      absl::MutexLock l(&mu_);
      quiet_ = true;
    }
    ctx_.TryCancel();
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(&done_));
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (event_.open()) {
      absl::MutexLock l(&mu_);
      open_ = true;
    }
    StartRead(&event_);
  }

  void OnDone(const grpc::Status& s) override {
    absl::Status status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    if (status.ok()) status = absl::UnavailableError("the shard ended the session");
    bool notify;
    {
      absl::MutexLock l(&mu_);
      notify = open_ && !quiet_;
      end_status_ = status;
    }
    if (notify) on_end_(status);
    absl::MutexLock l(&mu_);
    done_ = true;
  }

 private:
  const OnEnd on_end_;
  grpc::ClientContext ctx_;
  v1::SessionRequest req_;
  v1::SessionEvent event_;
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  bool quiet_ ABSL_GUARDED_BY(mu_) = false;  // being destroyed: no on_end
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<ShardSession>> ShardSession::Open(v1::KvHub::Stub* stub, uint64_t conn_id,
                                                                 absl::Duration timeout, OnEnd on_end) {
  auto* r = new Reactor(conn_id, std::move(on_end));
  std::unique_ptr<ShardSession> session(new ShardSession(r));
  r->Start(stub);
  if (absl::Status s = r->WaitOpen(timeout); !s.ok()) return s;  // the destructor cancels and waits
  return session;
}

ShardSession::~ShardSession() {
  reactor_->CancelAndWait();
  delete reactor_;
}

}  // namespace kvhub
