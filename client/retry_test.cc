#include "client/retry.h"

#include <vector>

#include "gtest/gtest.h"

namespace kvhub {
namespace {

TEST(RetryTest, BackoffDoublesUpToMax) {
  RetryPolicy p{5, absl::Milliseconds(10), absl::Milliseconds(50)};
  EXPECT_EQ(p.Backoff(1, 1.0), absl::Milliseconds(10));
  EXPECT_EQ(p.Backoff(2, 1.0), absl::Milliseconds(20));
  EXPECT_EQ(p.Backoff(3, 1.0), absl::Milliseconds(40));
  EXPECT_EQ(p.Backoff(4, 1.0), absl::Milliseconds(50));
  EXPECT_EQ(p.Backoff(9, 1.0), absl::Milliseconds(50));
  EXPECT_EQ(p.Backoff(1, 1.2), absl::Milliseconds(12));
}

TEST(RetryTest, RetriesOnlyUnavailable) {
  RetryPolicy p{4, absl::ZeroDuration(), absl::ZeroDuration()};
  int calls = 0;
  grpc::Status s = CallWithRetry(p, absl::InfiniteDuration(), [&](int, absl::Duration) {
    ++calls;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  });
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);

  for (auto code : {grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::INVALID_ARGUMENT,
                    grpc::StatusCode::INTERNAL, grpc::StatusCode::RESOURCE_EXHAUSTED}) {
    calls = 0;
    s = CallWithRetry(p, absl::InfiniteDuration(), [&](int, absl::Duration) {
      ++calls;
      return grpc::Status(code, "x");
    });
    EXPECT_EQ(calls, 1) << code;
    EXPECT_EQ(s.error_code(), code);
  }
}

TEST(RetryTest, StopsAtFirstSuccess) {
  RetryPolicy p{5, absl::ZeroDuration(), absl::ZeroDuration()};
  int calls = 0;
  grpc::Status s = CallWithRetry(p, absl::InfiniteDuration(), [&](int k, absl::Duration) {
    ++calls;
    return k < 2 ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "down") : grpc::Status::OK;
  });
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(calls, 3);
}

TEST(RetryTest, WaitsBetweenAttemptsWithTheHookUntilTheBackoffEnds) {
  RetryPolicy p{3, absl::Milliseconds(100), absl::Milliseconds(100)};
  std::vector<absl::Duration> waits;
  p.wait_for = [&](absl::Duration wait) { waits.push_back(wait); };
  int calls = 0;
  grpc::Status s = CallWithRetry(p, absl::InfiniteDuration(), [&](int, absl::Duration) {
    ++calls;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  });
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(waits.size(), 2u) << "one wait before each retry, none after the last attempt";
  for (absl::Duration w : waits) {
    EXPECT_GT(w, absl::Milliseconds(20));  // the backoff with its jitter (80-120 ms), less a preempted moment
    EXPECT_LE(w, absl::Milliseconds(120));
  }
}

// The deadline bounds the whole call: attempts that each fail slowly (a shard whose
// connection attempts time out) are not retried past it, and each attempt is given
// only what is left of it.
TEST(RetryTest, TheDeadlineBoundsAllAttemptsTogether) {
  // Wide margins (a loaded 2-core CI machine oversleeps by tens of ms): attempts of
  // 1 s under a 1.5 s deadline.
  RetryPolicy p{5, absl::Milliseconds(10), absl::Milliseconds(10)};
  std::vector<absl::Duration> lefts;
  const absl::Time start = absl::Now();
  grpc::Status s = CallWithRetry(p, absl::Milliseconds(1500), [&](int, absl::Duration left) {
    lefts.push_back(left);
    absl::SleepFor(std::min(left, absl::Milliseconds(1000)));  // fails after 1 s, or at its deadline
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection attempt timed out");
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_EQ(lefts.size(), 2u) << "the third attempt would start after the deadline";
  EXPECT_GT(lefts[0], absl::Milliseconds(1300));
  EXPECT_LT(lefts[1], absl::Milliseconds(500));  // 1500 - 1000 - backoff
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(2300));
}

// The deadline and backoff are measured on the policy's clock (Clock::Real(),
// monotonic, by default): here a clock that moves only as the attempts and waits
// say, so the call's budget is exactly theirs, whatever the wall clock does
// meanwhile (a step back of X gave a "2 s" call X more, on absl::Now()).
TEST(RetryTest, TimeIsTheClocksNotTheWallClocks) {
  ManualClock clock;
  RetryPolicy p{10, absl::Milliseconds(100), absl::Milliseconds(100)};
  p.clock = &clock;
  std::vector<absl::Duration> waits, lefts;
  p.wait_for = [&](absl::Duration wait) {
    waits.push_back(wait);
    clock.Advance(wait);
  };
  grpc::Status s = CallWithRetry(p, absl::Seconds(1), [&](int, absl::Duration left) {
    lefts.push_back(left);
    clock.Advance(absl::Milliseconds(300));  // each attempt fails after 300 ms
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  // 300 + ~100 + 300 + ~100 + 300 = ~1.1 s: the third attempt ends past the budget;
  // a fourth would start after it.
  ASSERT_EQ(lefts.size(), 3u);
  EXPECT_EQ(lefts[0], absl::Seconds(1));
  for (size_t i = 1; i < lefts.size(); ++i) {  // the clock keeps whole nanoseconds
    EXPECT_LE(absl::AbsDuration(lefts[i] - (lefts[i - 1] - absl::Milliseconds(300) - waits[i - 1])),
              absl::Nanoseconds(1));
  }
  ASSERT_EQ(waits.size(), 3u) << "the wait after the third attempt is cut to what is left (0)";
  EXPECT_EQ(waits[2], absl::ZeroDuration());
}

TEST(RetryTest, FromGrpcKeepsCodeAndNamesTheCall) {
  absl::Status s = FromGrpc(grpc::Status(grpc::StatusCode::NOT_FOUND, "gone"), "Get a:1");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "Get a:1: gone");
  EXPECT_TRUE(FromGrpc(grpc::Status::OK, "x").ok());
}

}  // namespace
}  // namespace kvhub
