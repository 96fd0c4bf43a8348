#pragma once
// StalledSends: cancels the calls whose response stopped moving.
//
// kvhubd's Get and GetStream responses are zero-copy slices of leased store
// memory, and the blocks they point into stay unevictable (a transfer hold)
// until gRPC drops the slices. A peer whose gRPC transport is alive but whose
// application stopped reading never lets such a call end: HTTP/2 flow control
// only pauses the stream, and keepalive pings are answered by the transport,
// not the application. The service registers each such call here; a periodic
// sweep (kvhubd's expiry thread) cancels the ones that made no progress for
// the configured limit, and gRPC then drops their slices.
//
// Thread safety: all methods are thread-safe. `cancel` runs on the sweeping
// thread, outside this object's lock, and may run the call's completion inline
// (gRPC does), including its Unwatch. Unwatch on another thread waits for a
// cancel of the same call in progress to return, so the call's context stays
// valid for the whole cancel.

#include <cstdint>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace kvhub::cachesvc {

class StalledSends {
 public:
  // `clock` (not owned, never null) dates progress; Clock::Real() in kvhubd.
  explicit StalledSends(const Clock* clock) : clock_(clock) {}
  StalledSends(const StalledSends&) = delete;
  StalledSends& operator=(const StalledSends&) = delete;

  // Watches a call from now on; `cancel` ends it (it must not block, and is
  // called at most once). Returns the ticket for Progress and Unwatch (never 0).
  uint64_t Watch(std::function<void()> cancel);
  // The call's response moved (a write completed): its stall clock restarts.
  void Progress(uint64_t ticket);
  // The call is over; its ticket is forgotten. Must be called exactly once per
  // ticket, before the call's context is gone.
  void Unwatch(uint64_t ticket);
  // Cancels every watched call without progress for `limit` (once each);
  // returns how many were cancelled by this sweep.
  size_t CancelStalled(absl::Duration limit);
  size_t watched() const;
  uint64_t cancelled_total() const;

 private:
  struct Call {
    std::function<void()> cancel;
    absl::Time progress;
    bool cancelled = false;   // cancel was called (or is being called)
    bool cancelling = false;  // cancel is running on `canceller`
    std::thread::id canceller;
  };
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cancelled_total_ ABSL_GUARDED_BY(mu_) = 0;
  // Node map: a call's entry stays put while its cancel runs unlocked.
  absl::node_hash_map<uint64_t, Call> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvhub::cachesvc
