// gpu tier: config checks and the no-device error run everywhere; storing
// blocks needs a CUDA device and SKIPs (with the reason) without one.
#include "storage/gpu_tier.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"

#ifdef KVHUB_GPU_TIER_TEST_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvhub::storage {
namespace {

TEST(GpuTierConfigTest, Validate) {
  GpuTierConfig c;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);  // 0 = off
  c.capacity_bytes = 1 << 20;
  EXPECT_TRUE(c.Validate().ok());
  c.staging_bytes = 1024;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c.staging_bytes = 1 << 20;
  c.device = -1;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c.device = 0;
  c.capacity_bytes = (1ull << 40) + 1;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
}

// Create either works (a device is present) or fails with a clear reason.
absl::StatusOr<std::unique_ptr<GpuTier>> TryCreate(uint64_t capacity) {
  GpuTierConfig c;
  c.capacity_bytes = capacity;
  c.staging_bytes = 64 << 10;  // small: multi-chunk transfers
  return GpuTier::Create(c);
}

TEST(GpuTierTest, NoDeviceIsAClearError) {
  auto t = TryCreate(1 << 20);
  if (t.ok()) {
    GpuTierConfig c;
    c.capacity_bytes = 1 << 20;
    c.device = 1 << 20;  // no such device
    auto bad = GpuTier::Create(c);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(bad.status().message().find("no CUDA device"), std::string::npos);
    return;
  }
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
  EXPECT_NE(t.status().message().find("no CUDA device"), std::string::npos) << t.status();
}

TEST(GpuTierTest, PutGetFindEraseAndCapacity) {
  auto t = TryCreate(1 << 20);
  if (!t.ok()) {
    // Only a missing device is a reason to skip; on a machine with one, a tier that
    // cannot start is a failure.
    ASSERT_TRUE(absl::IsFailedPrecondition(t.status()) &&
                absl::StrContains(t.status().message(), "no CUDA device"))
        << t.status();
    GTEST_SKIP() << t.status().message();
  }
  GpuTier& tier = **t;
  std::vector<uint8_t> a(300000), b(800000);
  std::iota(a.begin(), a.end(), uint8_t{1});
  std::iota(b.begin(), b.end(), uint8_t{7});
  const BlockKey ka{1, 2}, kb{3, 4};
  ASSERT_TRUE(tier.Put("ns", ka, a).ok());
  EXPECT_EQ(tier.Put("ns", ka, a).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(tier.Put("ns", kb, b).code(), absl::StatusCode::kResourceExhausted);  // 1.1 MB > 1 MiB
  ASSERT_TRUE(tier.Put("other", kb, std::vector<uint8_t>(b.begin(), b.begin() + 700000)).ok());
  EXPECT_EQ(tier.Stats().used_bytes, 1000000u);
  EXPECT_EQ(tier.Stats().blocks, 2u);
  std::vector<uint8_t> out(a.size());
  auto n = tier.Get("ns", ka, absl::MakeSpan(out));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(out, a);
  EXPECT_EQ(tier.Get("ns", kb, absl::MakeSpan(out)).status().code(), absl::StatusCode::kNotFound);
  auto f = tier.Find("ns", ka);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->size, a.size());
  EXPECT_NE(f->ptr, nullptr);
  ASSERT_TRUE(tier.Erase("ns", ka).ok());
  EXPECT_EQ(tier.Erase("ns", ka).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tier.Stats().used_bytes, 700000u);
  ASSERT_TRUE(tier.Put("ns", ka, a).ok());  // space is reusable
}

#ifdef KVHUB_GPU_TIER_TEST_CUDA
// A tier on another device leaves the calling thread's current device as it was
// (Create and every call made the tier's device current and left it so).
TEST(GpuTierTest, CallsKeepTheCallersCurrentDevice) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2) {
    GTEST_SKIP() << "needs two CUDA devices (the tier on device 1, the caller on 0); " << devices << " here";
  }
  auto current = [] {
    int d = -1;
    EXPECT_EQ(cudaGetDevice(&d), cudaSuccess);
    return d;
  };
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  GpuTierConfig c;
  c.capacity_bytes = 1 << 20;
  c.staging_bytes = 64 << 10;
  c.device = 1;
  auto t = GpuTier::Create(c);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(current(), 0) << "after Create";
  std::vector<uint8_t> a(100000, 7), out(a.size());
  ASSERT_TRUE((*t)->Put("ns", BlockKey{1, 2}, a).ok());
  EXPECT_EQ(current(), 0) << "after Put";
  ASSERT_TRUE((*t)->Get("ns", BlockKey{1, 2}, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, a);
  EXPECT_EQ(current(), 0) << "after Get";
  ASSERT_TRUE((*t)->Erase("ns", BlockKey{1, 2}).ok());
  EXPECT_EQ(current(), 0) << "after Erase";
  t->reset();
  EXPECT_EQ(current(), 0) << "after destruction";
}
#endif

}  // namespace
}  // namespace kvhub::storage
