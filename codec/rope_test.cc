#include "codec/rope.h"

#include <cmath>
#include <random>
#include <vector>

#include "codec/numeric.h"
#include "gtest/gtest.h"

namespace kvhub::codec {
namespace {

std::vector<uint16_t> RandomKeys(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<uint16_t> k(n);
  for (auto& v : k) v = FloatToBf16(d(rng));
  return k;
}

double MaxAbsDiff(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, double(std::fabs(Bf16ToFloat(a[i]) - Bf16ToFloat(b[i]))));
  }
  return m;
}

TEST(RopeTest, RotationByDeltaRoundTrips) {
  const uint32_t T = 32, H = 2, D = 64;
  for (RopePairing p : {RopePairing::kNeox, RopePairing::kInterleaved}) {
    std::vector<uint16_t> k = RandomKeys(size_t{T} * H * D, 1);
    std::vector<uint16_t> r = k;
    RopeParams rp{10000.0, p};
    ASSERT_TRUE(RotateKeysBf16(r.data(), T, H, D, rp, 123456, 0).ok());
    EXPECT_GT(MaxAbsDiff(k, r), 0.1);
    ASSERT_TRUE(RotateKeysBf16(r.data(), T, H, D, rp, -123456, 0).ok());
    // Two bf16 roundings per element: within a few bf16 ulps of |x| <= ~8.
    EXPECT_LT(MaxAbsDiff(k, r), 0.2);
  }
}

TEST(RopeTest, MatchesTheDefinitionInFloat64) {
  // One token, one head, D=4, position 3; compare against a direct float64 rotation.
  const uint32_t D = 4;
  const float x[4] = {1.0f, 2.0f, -3.0f, 0.5f};
  for (RopePairing p : {RopePairing::kNeox, RopePairing::kInterleaved}) {
    std::vector<uint16_t> k(D);
    for (uint32_t i = 0; i < D; ++i) k[i] = FloatToBf16(x[i]);
    ASSERT_TRUE(RotateKeysBf16(k.data(), 1, 1, D, RopeParams{100.0, p}, 3, 1).ok());
    for (uint32_t i = 0; i < D / 2; ++i) {
      uint32_t a = p == RopePairing::kNeox ? i : 2 * i;
      uint32_t b = p == RopePairing::kNeox ? i + D / 2 : 2 * i + 1;
      double th = 3.0 * std::pow(100.0, -2.0 * i / D);
      double r0 = x[a] * std::cos(th) - x[b] * std::sin(th);
      double r1 = x[a] * std::sin(th) + x[b] * std::cos(th);
      EXPECT_NEAR(Bf16ToFloat(k[a]), r0, std::fabs(r0) / 128 + 1e-6);
      EXPECT_NEAR(Bf16ToFloat(k[b]), r1, std::fabs(r1) / 128 + 1e-6);
    }
  }
}

TEST(RopeTest, ApplyThenRemoveIsPositionIndependentForRelativeAngles) {
  // Rotating by positions base..base+T then by -(base)..-(base+T) returns the input.
  const uint32_t T = 16, H = 1, D = 128;
  std::vector<uint16_t> k = RandomKeys(size_t{T} * H * D, 2);
  std::vector<uint16_t> r = k;
  RopeParams rp{500000.0, RopePairing::kNeox};
  ASSERT_TRUE(RotateKeysBf16(r.data(), T, H, D, rp, 70000, 1).ok());
  ASSERT_TRUE(RotateKeysBf16(r.data(), T, H, D, rp, -70000, -1).ok());
  EXPECT_LT(MaxAbsDiff(k, r), 0.2);
}

TEST(RopeTest, RejectsBadArguments) {
  std::vector<uint16_t> k(8);
  EXPECT_FALSE(RotateKeysBf16(k.data(), 1, 1, 7, RopeParams{}, 0, 1).ok());
  EXPECT_FALSE(RotateKeysBf16(k.data(), 1, 1, 8, RopeParams{-1.0, RopePairing::kNeox}, 0, 1).ok());
  EXPECT_FALSE(RotateKeysBf16(k.data(), 1, 1, 8, RopeParams{}, int64_t{1} << 60, 1).ok());
  EXPECT_FALSE(RotateKeysBf16(k.data(), 1, 1, 8, RopeParams{}, 0, 2).ok());
  // A base far from any model's overflows the angles (cos/sin of inf is NaN).
  EXPECT_FALSE(RopeCosSinTable(1, 128, RopeParams{1e-300, RopePairing::kNeox}, int64_t{1} << 52, 0).ok());
  std::vector<uint16_t> k128(128);
  EXPECT_FALSE(
      RotateKeysBf16(k128.data(), 1, 1, 128, RopeParams{1e-300, RopePairing::kNeox}, int64_t{1} << 52, 0).ok());
}

}  // namespace
}  // namespace kvhub::codec
