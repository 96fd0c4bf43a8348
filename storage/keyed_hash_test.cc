#include "storage/keyed_hash.h"

#include <set>

#include "gtest/gtest.h"

namespace kvhub::storage {
namespace {

// Keys a client can aim at one bucket of an unkeyed hash (the index's hash before
// session 22: lo ^ rotl(hi, 17) ^ tag, then one multiply) spread out under the keyed
// one: they all shared one 32-bit hash, so every index operation walked all of them.
TEST(KeyedHashTest, KeysBuiltToCollideUnderAPublicHashSpreadOut) {
  const uint64_t tag = 0x1234567890abcdefull, target = 42;
  std::set<uint64_t> buckets;
  const int n = 10000;
  for (int i = 0; i < n; ++i) {
    const uint64_t hi = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1);
    const BlockKey key{target ^ ((hi << 17) | (hi >> 47)) ^ tag, hi};
    buckets.insert(KeyedHash64(key, tag) & ((1u << 20) - 1));
  }
  // 10000 random keys in 2^20 buckets: ~48 share a bucket with another.
  EXPECT_GT(buckets.size(), static_cast<size_t>(n * 0.98));
}

TEST(KeyedHashTest, SameInputSameHashAndTheSeedMatters) {
  const BlockKey key{1, 2};
  EXPECT_EQ(KeyedHash64(key, 3), KeyedHash64(key, 3));
  EXPECT_NE(KeyedHash64(key, 3), KeyedHash64(key, 4));
  EXPECT_NE(KeyedHash64(key, 3), KeyedHash64(BlockKey{2, 1}, 3));
  HashSeed other = ProcessHashSeed();
  other.s[0] ^= 1;
  EXPECT_NE(KeyedHash64(key, 3, other), KeyedHash64(key, 3));
}

}  // namespace
}  // namespace kvhub::storage
