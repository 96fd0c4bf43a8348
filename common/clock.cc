#include "common/clock.h"

#include <time.h>

namespace kvhub {
namespace {
// CLOCK_MONOTONIC, shown as a time after the Unix epoch: it never jumps when the
// wall clock is stepped (NTP, a VM resumed), so leases and reservations last what
// they were granted for.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return absl::UnixEpoch() + absl::Seconds(ts.tv_sec) + absl::Nanoseconds(ts.tv_nsec);
  }
};
}  // namespace

Clock* Clock::Real() {
  static RealClock* clock = new RealClock();
  return clock;
}

}  // namespace kvhub
