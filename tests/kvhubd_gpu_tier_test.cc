// kvhubd with the gpu tier (gpu_tier_bytes > 0; storage/tiered_block_store.h),
// as a process called through the raw stub. With a CUDA device: blocks the
// host tier evicted are still served, byte-exact, from their gpu copies, and a
// deleted block stays deleted. Without one: kvhubd refuses to start.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "storage/gpu_tier.h"
#include "tests/testing/kvhub_test_util.h"
#include "tests/testing/kvhubd_process.h"
#include "tests/testing/run_command.h"

namespace kvhub {
namespace {

using testing::Checksum;
using testing::KvhubdProcess;
using testing::NewKvHubStub;
using testing::PutOne;
using testing::TestBlock;
using testing::TestKey;

bool HaveDevice(std::string* why) {
  storage::GpuTierConfig c;
  c.capacity_bytes = 1 << 20;
  auto t = storage::GpuTier::Create(c);
  if (!t.ok()) *why = std::string(t.status().message());
  return t.ok();
}

// A counter or gauge (no labels) from /metrics; -1 if absent.
double Metric(const KvhubdProcess& p, const std::string& name) {
  httplib::Client cli("127.0.0.1", p.http_port());
  cli.set_read_timeout(5);
  auto r = cli.Get("/metrics");
  if (!r || r->status != 200) return -1;
  for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
    if (absl::StartsWith(line, name + " ")) {
      double v;
      if (absl::SimpleAtod(line.substr(name.size() + 1), &v)) return v;
    }
  }
  return -1;
}

const std::vector<std::string> kFlags = {"--capacity_bytes=16MiB", "--region_bytes=16MiB",
                                         "--max_block_bytes=1MiB", "--try_hugepages=false",
                                         "--gpu_tier_bytes=256MiB", "--log_level=warn"};

TEST(KvhubdGpuTierTest, WithoutADeviceKvhubdRefusesToStart) {
  std::string why;
  if (HaveDevice(&why)) GTEST_SKIP() << "a CUDA device is present: see ServesEvictedBlocksFromTheGpuTier";
  auto p = KvhubdProcess::Start({.flags = kFlags, .ready_timeout = absl::Seconds(20)});
  ASSERT_FALSE(p.ok()) << "kvhubd started with gpu_tier_bytes and no device (" << why << ")";
  // Refused for that reason, not any other (a bad flag, a crash): its stderr says.
  std::string cmd = absl::StrCat(testing::ProgramPath("kvhubd"), " --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0");
  for (const std::string& f : kFlags) absl::StrAppend(&cmd, " ", f);
  const testing::CommandResult r = testing::RunCommand(absl::StrCat("timeout 30 ", cmd, " 2>&1"));
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "gpu tier cannot start") || absl::StrContains(r.out, "built without CUDA"))
      << r.out;
}

TEST(KvhubdGpuTierTest, ServesEvictedBlocksFromTheGpuTier) {
  std::string why;
  if (!HaveDevice(&why)) GTEST_SKIP() << why;
  auto p = KvhubdProcess::Start({.flags = kFlags});
  ASSERT_TRUE(p.ok()) << p.status();
  auto stub = NewKvHubStub((*p)->grpc_address());
  constexpr uint64_t kBlocks = 64;  // 64 MiB through a 16 MiB host tier
  constexpr size_t kSize = 1000 * 1000;
  for (uint64_t i = 0; i < kBlocks; ++i) {
    std::string data = TestBlock(i, kSize);
    v1::PutResponse resp;
    grpc::Status s = PutOne(*stub, "ns", i, data, Checksum(data), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(resp.items(0).code(), 0) << resp.items(0).message();
    // Pace the publisher so the copier copies each block before the host evicts it.
    for (int w = 0; w < 2000 && Metric(**p, "kvhub_gpu_tier_copied_total") +
                                        Metric(**p, "kvhub_gpu_tier_copy_dropped_total") < i + 1;
         ++w) {
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  EXPECT_EQ(Metric(**p, "kvhub_gpu_tier_copied_total"), kBlocks);
  EXPECT_GT(Metric(**p, "kvhub_tier_evictions_total{tier=\"host\"}"), 0);

  for (uint64_t i = 0; i < kBlocks; ++i) {
    v1::GetRequest req;
    req.set_namespace_("ns");
    req.set_keys(TestKey(i));
    req.set_inline_data(true);
    v1::GetResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub->Get(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(resp.blocks(0).status().code(), 0) << i << ": " << resp.blocks(0).status().message();
    EXPECT_TRUE(resp.blocks(0).data() == TestBlock(i, kSize)) << "block " << i << " differs";
  }
  EXPECT_GT(Metric(**p, "kvhub_gpu_tier_promotions_total"), 0);
  EXPECT_EQ(Metric(**p, "kvhub_gpu_tier_checksum_failures_total"), 0);
  EXPECT_EQ(Metric(**p, "kvhub_gpu_tier_serving"), 1);
  EXPECT_EQ(Metric(**p, "kvhub_gpu_tier_device_errors_total"), 0);
  {  // The Stats RPC reports the gpu tier beside the host tier.
    v1::StatsRequest req;
    v1::StatsResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Stats(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.tiers_size(), 2);
    EXPECT_EQ(resp.tiers(0).tier(), "host");
    EXPECT_EQ(resp.tiers(1).tier(), "gpu");
    EXPECT_GT(resp.tiers(1).capacity_bytes(), 0u);
    EXPECT_GT(resp.tiers(1).blocks(), 0u);
    EXPECT_GT(resp.tiers(1).used_bytes(), 0u);
  }

  // Delete an early block (its host copy is long gone): it stays deleted.
  {
    v1::DeleteRequest req;
    req.set_namespace_("ns");
    req.set_keys(TestKey(0));
    v1::DeleteResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Delete(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.items(0).code(), 0) << resp.items(0).message();
  }
  for (int round = 0; round < 2; ++round) {
    v1::GetRequest req;
    req.set_namespace_("ns");
    req.set_keys(TestKey(0));
    req.set_inline_data(true);
    v1::GetResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Get(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.blocks(0).status().code(), grpc::StatusCode::NOT_FOUND);
  }
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
}

}  // namespace
}  // namespace kvhub
