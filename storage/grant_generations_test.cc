#include "storage/grant_generations.h"

#include <cerrno>
#include <cstring>
#include <set>

#include "gtest/gtest.h"

namespace kvhub::storage {
namespace {

// Draws `n` generations, each passed the last: none is 0 or the one before it.
void ExpectNeverZeroNorThePrevious(GrantGenerations& gens, int n) {
  uint32_t previous = 0;
  for (int i = 0; i < n; ++i) {
    const uint32_t g = gens.Next(previous);
    ASSERT_NE(g, 0u);
    ASSERT_NE(g, previous);
    previous = g;
  }
}

TEST(GrantGenerationsTest, NeverZeroNeverThePreviousAndNotSequential) {
  GrantGenerations gens;
  EXPECT_TRUE(gens.unpredictable());
  std::set<uint32_t> seen;
  uint32_t previous = 0;
  int successors = 0;
  for (int i = 0; i < 10000; ++i) {
    const uint32_t g = gens.Next(previous);
    ASSERT_NE(g, 0u);
    ASSERT_NE(g, previous);
    if (g == previous + 1) ++successors;
    seen.insert(g);
    previous = g;
  }
  EXPECT_EQ(successors, 0);
  EXPECT_GT(seen.size(), 9990u);  // 32-bit draws: a handful of repeats at most
}

TEST(GrantGenerationsTest, ShortReadsAreCompletedAndZerosAndRepeatsSkipped) {
  // The source hands out at most 7 bytes per call: every other word is 0, and the
  // others repeat in pairs.
  uint32_t counter = 0;
  GrantGenerations gens([&counter](void* buf, size_t n) -> ssize_t {
    const size_t k = n < 7 ? n : 7;
    for (size_t i = 0; i < k; ++i, ++counter) {
      static_cast<uint8_t*>(buf)[i] = (counter % 8 < 4) ? 0 : static_cast<uint8_t>(1 + (counter / 16) % 200);
    }
    return static_cast<ssize_t>(k);
  });
  ExpectNeverZeroNorThePrevious(gens, 5000);
  EXPECT_TRUE(gens.unpredictable());
}

TEST(GrantGenerationsTest, AFailingKernelFallsBackAndSaysSo) {
  int calls = 0;
  GrantGenerations gens([&calls](void*, size_t) -> ssize_t {
    ++calls;
    errno = ENOSYS;
    return -1;
  });
  ExpectNeverZeroNorThePrevious(gens, 3000);
  EXPECT_FALSE(gens.unpredictable());
  EXPECT_EQ(calls, 1);  // not asked again once it failed
}

}  // namespace
}  // namespace kvhub::storage
