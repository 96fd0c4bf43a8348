#include "client/buffer_overlap.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

using ::testing::HasSubstr;

TEST(BufferOverlapTest, DisjointAdjacentAndEmptyBuffersPass) {
  std::vector<uint8_t> mem(4000);
  std::vector<std::span<uint8_t>> b = {{mem.data() + 3000, 1000}, {mem.data(), 1000},
                                       {mem.data() + 1000, 1000}, {mem.data() + 500, 0}};
  EXPECT_TRUE(CheckBuffersDisjoint(b).ok());
  EXPECT_TRUE(CheckBuffersDisjoint({}).ok());
  std::vector<std::span<uint8_t>> empties = {{mem.data(), 0}, {mem.data(), 0}};
  EXPECT_TRUE(CheckBuffersDisjoint(empties).ok());
}

TEST(BufferOverlapTest, NamesTheOverlappingPair) {
  std::vector<uint8_t> mem(4000);
  std::vector<std::span<uint8_t>> b = {{mem.data() + 3000, 1000}, {mem.data(), 1000},
                                       {mem.data() + 999, 10}};
  absl::Status s = CheckBuffersDisjoint(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("buffers 1 and 2 overlap"));
}

TEST(BufferOverlapTest, TheSameBufferTwiceOverlaps) {
  std::vector<uint8_t> mem(100);
  std::vector<std::span<uint8_t>> b = {{mem.data(), 100}, {mem.data(), 100}};
  EXPECT_THAT(CheckBuffersDisjoint(b).message(), HasSubstr("buffers 0 and 1 overlap"));
}

TEST(BufferOverlapTest, ABufferInsideALongerOneOverlaps) {
  std::vector<uint8_t> mem(1000);
  std::vector<std::span<uint8_t>> b = {{mem.data() + 500, 10}, {mem.data(), 1000}};
  EXPECT_THAT(CheckBuffersDisjoint(b).message(), HasSubstr("buffers 0 and 1 overlap"));
}

}  // namespace
}  // namespace kvhub
