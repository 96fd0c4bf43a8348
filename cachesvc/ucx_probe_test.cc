#include "cachesvc/ucx_probe.h"

#include <atomic>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "transport/ucx_config.h"
#include "transport/ucx_context.h"
#include "transport/ucx_ping.h"
#include "transport/ucx_worker.h"

namespace kvhub::cachesvc {
namespace {

using transport::UcxWorker;

// A serving worker that answers pings, slowly (past the probe's timeout) while `deaf`.
std::shared_ptr<UcxWorker> Target(transport::UcxContext* ctx, std::atomic<bool>* deaf) {
  UcxWorker::Options o;
  o.name = "probe-target";
  o.calls = [deaf](uint32_t method, absl::string_view) -> absl::StatusOr<std::string> {
    if (!transport::AnswerPing(method)) return absl::UnimplementedError("ping only");
    if (deaf->load()) absl::SleepFor(absl::Milliseconds(150));
    return std::string();
  };
  auto w = UcxWorker::Create(ctx, std::move(o));
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? std::shared_ptr<UcxWorker>(std::move(*w)) : nullptr;
}

bool WaitFor(const std::function<bool()>& cond, absl::Duration limit = absl::Seconds(10)) {
  for (const absl::Time until = absl::Now() + limit; absl::Now() < until; absl::SleepFor(absl::Milliseconds(5))) {
    if (cond()) return true;
  }
  return cond();
}

TEST(UcxProbeTest, ConfigValidates) {
  EXPECT_TRUE(UcxProbe::Config{}.Validate().ok());
  EXPECT_TRUE(absl::IsInvalidArgument(UcxProbe::Config{.interval = absl::Milliseconds(1)}.Validate()));
  EXPECT_TRUE(absl::IsInvalidArgument(UcxProbe::Config{.timeout = absl::Hours(1)}.Validate()));
  EXPECT_TRUE(absl::IsInvalidArgument(UcxProbe::Config{.misses = 0}.Validate()));
}

// The probe keeps pinging a target that answers; one that stops answering in
// time is reported deaf once, after `misses` misses in a row, and the probe
// moves on to the next target it is given.
TEST(UcxProbeTest, ReportsADeafTargetAndMovesToTheNextOne) {
  transport::UcxConfig uc;
  uc.tls = "tcp";
  auto ctx = transport::UcxContext::Create(uc);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  std::atomic<bool> deaf1{false}, deaf2{false};
  std::shared_ptr<UcxWorker> first = Target(ctx->get(), &deaf1);
  std::shared_ptr<UcxWorker> second = Target(ctx->get(), &deaf2);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);

  absl::Mutex mu;
  std::shared_ptr<UcxWorker> current = first;
  int deaf_reports = 0;
  UcxWorker* reported = nullptr;
  auto probe = UcxProbe::Start(
      ctx->get(), {.interval = absl::Milliseconds(20), .timeout = absl::Milliseconds(100), .misses = 2},
      [&] {
        absl::MutexLock l(&mu);
        return current;
      },
      [&](std::shared_ptr<UcxWorker> d) {
        absl::MutexLock l(&mu);
        ++deaf_reports;
        reported = d.get();
        current = second;
      });
  ASSERT_TRUE(probe.ok()) << probe.status();
  ASSERT_TRUE(WaitFor([&] { return (*probe)->pings_answered() >= 3; }));
  EXPECT_EQ((*probe)->pings_missed(), 0u);
  // The probe's connection is one the target accepted.
  ASSERT_NE((*probe)->conn_id(), 0u);
  EXPECT_TRUE(first->CheckAccepted((*probe)->conn_id()).ok());

  deaf1 = true;
  ASSERT_TRUE(WaitFor([&] {
    absl::MutexLock l(&mu);
    return deaf_reports > 0;
  }));
  const uint64_t answered = (*probe)->pings_answered();
  ASSERT_TRUE(WaitFor([&] { return (*probe)->pings_answered() >= answered + 3; }));
  {
    absl::MutexLock l(&mu);
    EXPECT_EQ(deaf_reports, 1);
    EXPECT_EQ(reported, first.get());
  }
  EXPECT_GE((*probe)->pings_missed(), 2u);
  EXPECT_TRUE(second->CheckAccepted((*probe)->conn_id()).ok());
  probe->reset();
  // Stopped: its connection on the live target is closed.
  EXPECT_TRUE(WaitFor([&] { return second->Stats().accepted_peers == 0; }));
}

}  // namespace
}  // namespace kvhub::cachesvc
