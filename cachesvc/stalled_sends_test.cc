#include "cachesvc/stalled_sends.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"

namespace kvhub::cachesvc {
namespace {

TEST(StalledSendsTest, ACallWithoutProgressForTheLimitIsCancelledOnce) {
  ManualClock clock;
  StalledSends s(&clock);
  int cancels = 0;
  const uint64_t t = s.Watch([&] { ++cancels; });
  EXPECT_NE(t, 0u);
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(s.CancelStalled(absl::Seconds(10)), 0u);
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(s.CancelStalled(absl::Seconds(10)), 1u);
  clock.Advance(absl::Seconds(60));
  EXPECT_EQ(s.CancelStalled(absl::Seconds(10)), 0u);  // once
  EXPECT_EQ(cancels, 1);
  EXPECT_EQ(s.cancelled_total(), 1u);
  EXPECT_EQ(s.watched(), 1u);  // until the call ends
  s.Unwatch(t);
  EXPECT_EQ(s.watched(), 0u);
}

TEST(StalledSendsTest, ProgressRestartsTheClockAndEndedCallsAreNeverCancelled) {
  ManualClock clock;
  StalledSends s(&clock);
  int a = 0, b = 0;
  const uint64_t ta = s.Watch([&] { ++a; });
  const uint64_t tb = s.Watch([&] { ++b; });
  EXPECT_NE(ta, tb);
  for (int i = 0; i < 5; ++i) {
    clock.Advance(absl::Seconds(8));
    s.Progress(ta);  // a reader that keeps reading, slowly
    EXPECT_EQ(s.CancelStalled(absl::Seconds(30)), 0u) << i;
    if (i == 2) s.Unwatch(tb);
  }
  clock.Advance(absl::Seconds(31));
  EXPECT_EQ(s.CancelStalled(absl::Seconds(30)), 1u);
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 0);
  s.Unwatch(ta);
}

// gRPC may run a cancelled call's completion, and so its Unwatch, inside TryCancel
// on the sweeping thread: that must neither deadlock nor touch the erased entry.
TEST(StalledSendsTest, UnwatchFromInsideTheCancelIsFine) {
  ManualClock clock;
  StalledSends s(&clock);
  uint64_t t = 0;
  bool ran = false;
  t = s.Watch([&] {
    s.Unwatch(t);
    ran = true;
  });
  clock.Advance(absl::Minutes(2));
  EXPECT_EQ(s.CancelStalled(absl::Minutes(1)), 1u);
  EXPECT_TRUE(ran);
  EXPECT_EQ(s.watched(), 0u);
}

// Two stalled calls of one connection: gRPC may run the second's completion (and
// so its Unwatch, and the end of its context) inside the first's TryCancel, on
// the sweeping thread. Both were marked as being cancelled by that thread, so the
// second's Unwatch let it go at once, and the sweep then cancelled it through its
// freed context. A call that ends before its turn is not cancelled now.
TEST(StalledSendsTest, ACallEndedInsideAnEarlierCancelIsNotCancelled) {
  ManualClock clock;
  StalledSends s(&clock);
  uint64_t first = 0, second = 0;
  int first_cancels = 0, second_cancels = 0;
  bool second_ended = false;
  // Watched in this order; the sweep may meet them in either: whichever it cancels
  // first ends the other (as gRPC running the other's completion inline would).
  first = s.Watch([&] {
    ++first_cancels;
    if (!second_ended) {
      second_ended = true;
      s.Unwatch(second);
    }
  });
  second = s.Watch([&] {
    ++second_cancels;
    if (!second_ended) {
      second_ended = true;
      s.Unwatch(first);
    }
  });
  clock.Advance(absl::Minutes(2));
  EXPECT_EQ(s.CancelStalled(absl::Minutes(1)), 1u);
  EXPECT_EQ(first_cancels + second_cancels, 1) << "a call was cancelled after it had ended";
  EXPECT_EQ(s.cancelled_total(), 1u);
  EXPECT_EQ(s.watched(), 1u);
  s.Unwatch(first_cancels == 1 ? first : second);
  EXPECT_EQ(s.watched(), 0u);
}

// A call that ends on another thread while its cancel runs must wait for the cancel
// to return: the cancel uses the call's context, which ends with the call.
TEST(StalledSendsTest, UnwatchOnAnotherThreadWaitsForARunningCancel) {
  ManualClock clock;
  StalledSends s(&clock);
  absl::Notification in_cancel, release;
  std::atomic<bool> cancel_returned{false}, unwatched{false};
  const uint64_t t = s.Watch([&] {
    in_cancel.Notify();
    release.WaitForNotification();
    cancel_returned = true;
  });
  clock.Advance(absl::Minutes(2));
  std::thread sweeper([&] { EXPECT_EQ(s.CancelStalled(absl::Minutes(1)), 1u); });
  in_cancel.WaitForNotification();
  std::thread ender([&] {
    s.Unwatch(t);
    EXPECT_TRUE(cancel_returned.load()) << "the call ended while its cancel was running";
    unwatched = true;
  });
  absl::SleepFor(absl::Milliseconds(20));  // room for a wrong Unwatch to return early
  EXPECT_FALSE(unwatched.load());
  release.Notify();
  ender.join();
  sweeper.join();
  EXPECT_TRUE(unwatched.load());
  EXPECT_EQ(s.watched(), 0u);
}

}  // namespace
}  // namespace kvhub::cachesvc
