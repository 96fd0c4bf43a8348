#include "client/deferred_releases.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/client_config.h"
#include "client/shard.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

// Records every Release it is asked to send; answers each lease with `code_for(id)`.
struct Recorder {
  absl::Mutex mu;
  std::vector<std::pair<std::string, std::vector<uint64_t>>> calls ABSL_GUARDED_BY(mu);
  std::function<absl::Status()> fail;            // non-OK: the call fails
  std::function<int32_t(uint64_t)> code_for;     // per-item code (0 = released)
  absl::Notification* on_call = nullptr;  // notified at the first call (once: lanes call concurrently)
  std::atomic<bool> called{false};
  // Calls to this address wait for `gate` (a frozen shard).
  std::string frozen_address;
  absl::Notification* gate = nullptr;
  bool retried = false;                          // answers come from a retry

  DeferredReleases::Sender sender() {
    return [this](Shard& shard, const v1::ReleaseRequest& req, v1::ReleaseResponse* resp, bool* was_retried) {
      *was_retried = retried;
      std::vector<uint64_t> ids(req.lease_ids().begin(), req.lease_ids().end());
      {
        absl::MutexLock l(&mu);
        calls.emplace_back(shard.address(), ids);
      }
      if (on_call != nullptr && !called.exchange(true)) on_call->Notify();
      if (gate != nullptr && shard.address() == frozen_address) gate->WaitForNotification();
      if (fail) {
        if (absl::Status s = fail(); !s.ok()) return s;
      }
      for (uint64_t id : ids) {
        auto* item = resp->add_items();
        item->set_code(code_for ? code_for(id) : 0);
        if (item->code() != 0) item->set_message("lease expired");
      }
      return absl::OkStatus();
    };
  }
  std::vector<uint64_t> SentTo(const std::string& address) {
    absl::MutexLock l(&mu);
    std::vector<uint64_t> out;
    for (const auto& [a, ids] : calls) {
      if (a == address) out.insert(out.end(), ids.begin(), ids.end());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

class DeferredReleasesTest : public ::testing::Test {
 protected:
  DeferredReleasesTest() : a_("127.0.0.1:1", ClientConfig{}), b_("127.0.0.1:2", ClientConfig{}) {}
  Shard a_, b_;
  Recorder rec_;
};

TEST_F(DeferredReleasesTest, EveryLeaseIsReleasedOnceOnItsOwnShard) {
  // A long delay (Flush sends at once): the two Adds to a_ make one batch however
  // slow the machine is.
  DeferredReleases d({.max_delay = absl::Seconds(1)}, rec_.sender());
  const uint64_t a1[] = {1, 2, 3}, a2[] = {4, 0}, b1[] = {10};
  d.Add(a_, a1);
  d.Add(b_, b1);
  d.Add(a_, a2);  // 0 is "no lease": skipped
  d.Flush();
  EXPECT_EQ(rec_.SentTo(a_.address()), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(rec_.SentTo(b_.address()), (std::vector<uint64_t>{10}));
  const DeferredReleases::Stats st = d.stats();
  EXPECT_EQ(st.released, 5u);
  EXPECT_EQ(st.late + st.failed_calls, 0u);
  EXPECT_EQ(st.calls, 2u) << "one call per shard for leases queued together";
}

// One sender thread served every shard in turn: a frozen shard's Release (up to the
// control deadline and a retry) held every other shard's leases behind it.
TEST_F(DeferredReleasesTest, AFrozenShardDoesNotHoldUpTheOthers) {
  absl::Notification gate, a_called;
  rec_.frozen_address = a_.address();
  rec_.gate = &gate;
  rec_.on_call = &a_called;
  DeferredReleases d({.max_delay = absl::Milliseconds(1)}, rec_.sender());
  // Lets lane a's call go however the test ends (d's destructor waits for it).
  absl::Cleanup unfreeze = [&gate] {
    if (!gate.HasBeenNotified()) gate.Notify();
  };
  const uint64_t a1[] = {1}, b1[] = {2};
  d.Add(a_, a1);
  ASSERT_TRUE(a_called.WaitForNotificationWithTimeout(absl::Seconds(5)));  // a's call is stuck now
  d.Add(b_, b1);
  bool b_released = false;
  for (int i = 0; i < 2000 && !b_released; ++i) {
    b_released = rec_.SentTo(b_.address()) == std::vector<uint64_t>{2};
    if (!b_released) absl::SleepFor(absl::Milliseconds(1));
  }
  std::move(unfreeze).Invoke();
  EXPECT_TRUE(b_released) << "shard b's release waited for frozen shard a";
  d.Flush();
  EXPECT_EQ(d.stats().released, 2u);
}

TEST_F(DeferredReleasesTest, AFullBatchIsSentWithoutWaitingForTheDelay) {
  absl::Notification called;
  rec_.on_call = &called;
  DeferredReleases d({.max_delay = absl::Seconds(1), .max_batch = 4}, rec_.sender());
  const uint64_t ids[] = {1, 2, 3, 4};
  d.Add(a_, ids);
  // Sent on being full: well before the 1 s a partial batch waits.
  ASSERT_TRUE(called.WaitForNotificationWithTimeout(absl::Milliseconds(900)))
      << "a full batch waited for max_delay";
}

TEST_F(DeferredReleasesTest, FailedCallsAndLateLeasesAreCounted) {
  int call = 0;
  rec_.fail = [&] { return ++call == 1 ? absl::UnavailableError("shard down") : absl::OkStatus(); };
  rec_.code_for = [](uint64_t id) { return id == 7 ? static_cast<int32_t>(absl::StatusCode::kNotFound) : 0; };
  DeferredReleases d({.max_delay = absl::Milliseconds(1)}, rec_.sender());
  const uint64_t first[] = {5}, second[] = {6, 7};
  d.Add(a_, first);
  d.Flush();
  d.Add(a_, second);
  d.Flush();
  const DeferredReleases::Stats st = d.stats();
  EXPECT_EQ(st.calls, 2u);
  EXPECT_EQ(st.failed_calls, 1u);
  EXPECT_EQ(st.released, 1u);
  EXPECT_EQ(st.late, 1u);
  EXPECT_EQ(st.unsure, 0u);
  // A retried call's NOT_FOUND may be the first attempt's release: not late.
  rec_.retried = true;
  const uint64_t third[] = {7, 8};
  d.Add(a_, third);
  d.Flush();
  EXPECT_EQ(d.stats().late, 1u);
  EXPECT_EQ(d.stats().unsure, 1u);
  EXPECT_EQ(d.stats().released, 2u);
}

TEST_F(DeferredReleasesTest, DestructionSendsWhatIsPending) {
  {
    DeferredReleases d({.max_delay = absl::Seconds(1)}, rec_.sender());
    const uint64_t ids[] = {8, 9};
    d.Add(b_, ids);
  }
  EXPECT_EQ(rec_.SentTo(b_.address()), (std::vector<uint64_t>{8, 9}));
}

TEST_F(DeferredReleasesTest, ConcurrentAddsLoseNothing) {
  DeferredReleases d({.max_delay = absl::Microseconds(200), .max_batch = 16}, rec_.sender());
  constexpr int kThreads = 4, kPer = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        const uint64_t id = 1 + t * kPer + i;
        d.Add(i % 2 ? a_ : b_, {&id, 1});
      }
    });
  }
  for (auto& th : threads) th.join();
  d.Flush();
  std::vector<uint64_t> all = rec_.SentTo(a_.address());
  const std::vector<uint64_t> on_b = rec_.SentTo(b_.address());
  all.insert(all.end(), on_b.begin(), on_b.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPer));
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], i + 1) << "lost or duplicated lease";
  EXPECT_EQ(d.stats().released, static_cast<uint64_t>(kThreads * kPer));
}

// Leases added while a Release is on the wire pile up beyond max_batch; they used
// to go out as one call, and a shard refuses a Release of more than 4096 ids
// whole, so none of them was released (all waited for expiry).
TEST_F(DeferredReleasesTest, WhatPilesUpDuringACallIsSentInBatchesTheShardAccepts) {
  absl::Notification entered, go_on;
  rec_.on_call = &entered;
  rec_.fail = [&] {
    go_on.WaitForNotification();
    return absl::OkStatus();
  };
  {
    DeferredReleases d(DeferredReleases::Config{.max_delay = absl::Milliseconds(1), .max_batch = 4096},
                       rec_.sender());
    const uint64_t first = 1;
    d.Add(a_, std::span<const uint64_t>(&first, 1));
    entered.WaitForNotification();  // the loop is inside the first call
    std::vector<uint64_t> ids;
    for (uint64_t id = 2; id <= 8193; ++id) ids.push_back(id);
    d.Add(a_, std::span<const uint64_t>(ids.data(), 4096));
    d.Add(a_, std::span<const uint64_t>(ids.data() + 4096, ids.size() - 4096));
    go_on.Notify();
    d.Flush();
    DeferredReleases::Stats st = d.stats();
    EXPECT_EQ(st.released, 8193u);
    EXPECT_EQ(st.failed_calls, 0u);
    EXPECT_EQ(st.calls, 3u);
  }
  absl::MutexLock l(&rec_.mu);
  for (const auto& [address, ids] : rec_.calls) EXPECT_LE(ids.size(), 4096u);
}

TEST(DeferredReleasesConfigTest, RejectsOutOfRangeValues) {
  EXPECT_TRUE(DeferredReleases::Config{}.Validate().ok());
  EXPECT_FALSE((DeferredReleases::Config{.max_delay = absl::ZeroDuration()}).Validate().ok());
  EXPECT_FALSE((DeferredReleases::Config{.max_batch = 0}).Validate().ok());
}

}  // namespace
}  // namespace kvhub
