#include "common/clock.h"

#include "gtest/gtest.h"

namespace kvhub {
namespace {

// The real clock is CLOCK_MONOTONIC (time since boot) shown after the Unix epoch,
// not the wall clock: leases must not follow steps of the wall clock.
TEST(Clock, RealClockIsMonotonicNotWallTime) {
  const absl::Time a = Clock::Real()->Now();
  const absl::Time b = Clock::Real()->Now();
  EXPECT_LE(a, b);
  EXPECT_LT(a, absl::Now() - absl::Hours(24 * 365));  // wall time is decades past 1970; boot time is not
  EXPECT_GT(a, absl::UnixEpoch());
}

TEST(Clock, ManualClockMovesOnlyWhenTold) {
  ManualClock c;
  const absl::Time t = c.Now();
  EXPECT_EQ(c.Now(), t);
  c.Advance(absl::Seconds(3));
  EXPECT_EQ(c.Now(), t + absl::Seconds(3));
}

}  // namespace
}  // namespace kvhub
