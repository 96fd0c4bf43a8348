#include "common/hash.h"

#include <cstdint>
#include <random>
#include <vector>

// The reference: xxHash compiled inline here, for the baseline ISA.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "gtest/gtest.h"

namespace kvhub {
namespace {

// Xxh3_64 may run xxHash's AVX2/AVX-512 dispatch for large inputs; every length,
// alignment and content must give exactly the baseline result (block checksums
// are compared across machines).
TEST(HashTest, Xxh3_64MatchesTheReferenceAtEveryLengthAndAlignment) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> buf((3 << 20) + 64);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  const size_t lengths[] = {0,    1,    3,    16,   17,   128,  129,  240,     241,     1023,
                            4095, 4096, 4097, 8191, 65536, 99999, 1 << 20, (1 << 20) + 7, 3 << 20};
  for (size_t len : lengths) {
    for (size_t off : {0, 1, 13, 64}) {
      if (off + len > buf.size()) continue;
      EXPECT_EQ(Xxh3_64(buf.data() + off, len), XXH3_64bits(buf.data() + off, len))
          << "len " << len << " offset " << off;
    }
  }
  // A known value: XXH3-64 of the empty input, seed 0.
  EXPECT_EQ(Xxh3_64(nullptr, 0), 0x2D06800538D394C2ull);
}

}  // namespace
}  // namespace kvhub
