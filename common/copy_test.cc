#include "common/copy.h"

#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvhub {
namespace {

TEST(CopyTest, CopiesExactlyAndLeavesNeighboursAlone) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> src(3 * kCopyPieceBytes + 4096);
  for (auto& b : src) b = static_cast<uint8_t>(rng());
  const size_t lens[] = {0, 1, 63, kCopyPieceBytes - 1, kCopyPieceBytes, kCopyPieceBytes + 1,
                         2 * kCopyPieceBytes + 17, 3 * kCopyPieceBytes};
  for (size_t len : lens) {
    for (size_t src_off : {size_t{0}, size_t{5}}) {
      for (size_t dst_off : {size_t{0}, size_t{3}}) {
        std::vector<uint8_t> dst(len + 64, 0xEE);
        CopyBytes(dst.data() + dst_off, src.data() + src_off, len);
        for (size_t i = 0; i < dst_off; ++i) ASSERT_EQ(dst[i], 0xEE) << "before, len " << len;
        for (size_t i = 0; i < len; ++i) {
          ASSERT_EQ(dst[dst_off + i], src[src_off + i]) << "len " << len << " byte " << i;
        }
        for (size_t i = dst_off + len; i < dst.size(); ++i) ASSERT_EQ(dst[i], 0xEE) << "after, len " << len;
      }
    }
  }
}

}  // namespace
}  // namespace kvhub
