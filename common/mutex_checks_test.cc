#include "common/mutex_checks.h"

#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

// Takes a then b, then b then a: a lock-order inversion (never a real
// deadlock here: one thread), which abseil's checks report as a potential one.
void InvertLockOrder() {
  absl::Mutex a, b;
  {
    absl::MutexLock la(&a);
    absl::MutexLock lb(&b);
  }
  {
    absl::MutexLock lb(&b);
    absl::MutexLock la(&a);
  }
}

// gtest runs *DeathTest suites first, so this runs before any test below
// turns the checks off in this process.
TEST(MutexChecksDeathTest, AnInversionAbortsWhileTheChecksAreOn) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(InvertLockOrder(), "deadlock");
}

TEST(MutexChecks, KeptWhenTheEnvironmentAsks) {
  ASSERT_EQ(setenv("KVHUB_MUTEX_DEADLOCK_CHECKS", "1", 1), 0);
  EXPECT_FALSE(TurnOffMutexDeadlockChecks());
  ASSERT_EQ(unsetenv("KVHUB_MUTEX_DEADLOCK_CHECKS"), 0);
}

TEST(MutexChecks, AnInversionIsIgnoredOnceTurnedOff) {
  ASSERT_TRUE(TurnOffMutexDeadlockChecks());
  InvertLockOrder();  // would abort with the checks on (the death test above)
}

}  // namespace
}  // namespace kvhub
