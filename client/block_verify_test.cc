#include "client/block_verify.h"

#include <vector>

#include "common/hash.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

TEST(BlockVerifyTest, AcceptsMatchingBlock) {
  std::vector<uint8_t> b(4096);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7);
  EXPECT_TRUE(VerifyBlock(b, b.size(), Xxh3_64(b.data(), b.size())).ok());
}

TEST(BlockVerifyTest, RejectsFlippedBit) {
  std::vector<uint8_t> b(4096, 3);
  const uint64_t sum = Xxh3_64(b.data(), b.size());
  b[1234] ^= 0x10;
  absl::Status s = VerifyBlock(b, b.size(), sum);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("checksum"), std::string::npos);
}

TEST(BlockVerifyTest, RejectsSizeMismatch) {
  std::vector<uint8_t> b(100, 1);
  const uint64_t sum = Xxh3_64(b.data(), b.size());
  EXPECT_EQ(VerifyBlock(std::span<const uint8_t>(b).first(99), 100, sum).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifyBlock(b, 101, sum).code(), absl::StatusCode::kDataLoss);
}

TEST(BlockVerifyTest, HashedBlockChecksSizeThenChecksum) {
  EXPECT_TRUE(VerifyHashedBlock(100, 0xabc, 100, 0xabc).ok());
  absl::Status size = VerifyHashedBlock(99, 0xabc, 100, 0xabc);
  EXPECT_EQ(size.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(size.message().find("size mismatch"), std::string::npos) << size;
  absl::Status sum = VerifyHashedBlock(100, 0xabd, 100, 0xabc);
  EXPECT_EQ(sum.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(sum.message().find("checksum"), std::string::npos) << sum;
}

}  // namespace
}  // namespace kvhub
