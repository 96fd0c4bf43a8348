#include "cachesvc/stalled_sends.h"

#include <utility>
#include <vector>

namespace kvhub::cachesvc {

uint64_t StalledSends::Watch(std::function<void()> cancel) {
  absl::MutexLock l(&mu_);
  const uint64_t ticket = ++next_;
  Call& c = calls_[ticket];
  c.cancel = std::move(cancel);
  c.progress = clock_->Now();
  return ticket;
}

void StalledSends::Progress(uint64_t ticket) {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  if (auto it = calls_.find(ticket); it != calls_.end()) it->second.progress = now;
}

void StalledSends::Unwatch(uint64_t ticket) {
  absl::MutexLock l(&mu_);
  // The condition names the waiting thread itself (absl may evaluate it on the
  // thread that unlocks, so it must not depend on which thread that is).
  struct Wait {
    StalledSends* self;
    uint64_t ticket;
    std::thread::id waiter;
  } wait{this, ticket, std::this_thread::get_id()};
  // A cancel of this call running on another thread uses the call's context: the
  // call must not end under it. On the cancelling thread itself (gRPC ran the
  // call's completion inline) there is nothing to wait for.
  mu_.Await(absl::Condition(
      +[](Wait* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        auto it = w->self->calls_.find(w->ticket);
        return it == w->self->calls_.end() || !it->second.cancelling ||
               it->second.canceller == w->waiter;
      },
      &wait));
  calls_.erase(ticket);
}

size_t StalledSends::CancelStalled(absl::Duration limit) {
  std::vector<std::pair<uint64_t, std::function<void()>>> due;
  {
    const absl::Time now = clock_->Now();
    absl::MutexLock l(&mu_);
    for (auto& [ticket, c] : calls_) {
      if (c.cancelled || now - c.progress < limit) continue;
      c.cancelled = true;
      // Moved out: the call's own Unwatch may erase its entry while it runs.
      due.emplace_back(ticket, std::move(c.cancel));
    }
  }
  size_t cancelled = 0;
  for (auto& [ticket, cancel] : due) {
    {
      // Marked one at a time, right before its cancel: a call whose completion gRPC
      // runs inline in an earlier call's cancel (on this thread) is let go by its
      // Unwatch at once, and must then not be cancelled through its freed context.
      absl::MutexLock l(&mu_);
      auto it = calls_.find(ticket);
      if (it == calls_.end()) continue;  // ended (Unwatch) since it was found stalled
      it->second.cancelling = true;
      it->second.canceller = std::this_thread::get_id();
      ++cancelled_total_;
    }
    ++cancelled;
    cancel();
    absl::MutexLock l(&mu_);
    if (auto it = calls_.find(ticket); it != calls_.end()) it->second.cancelling = false;
  }
  return cancelled;
}

size_t StalledSends::watched() const {
  absl::MutexLock l(&mu_);
  return calls_.size();
}

uint64_t StalledSends::cancelled_total() const {
  absl::MutexLock l(&mu_);
  return cancelled_total_;
}

}  // namespace kvhub::cachesvc
