#pragma once
// Time source behind an interface so leases, reservation timeouts and expiry
// can be tested without sleeping. Implementations must be thread-safe.

#include <atomic>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvhub {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The process-wide real clock; never null, never destroyed. It is monotonic:
  // its Now() does not follow steps of the wall clock (NTP, a resumed VM), so a
  // lease or reservation lasts what it was granted for. Its times are comparable
  // only with each other, within this process: not wall-clock times (absl::Now()),
  // and not to be sent to other hosts (send durations instead).
  static Clock* Real();
};

// A clock that only moves when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::UnixEpoch() + absl::Hours(1))
      : nanos_(absl::ToUnixNanos(start)) {}
  absl::Time Now() const override { return absl::FromUnixNanos(nanos_.load()); }
  void Advance(absl::Duration d) { nanos_.fetch_add(absl::ToInt64Nanoseconds(d)); }

 private:
  std::atomic<int64_t> nanos_;
};

}  // namespace kvhub
