#include "storage/s3fifo_queues.h"

#include "gtest/gtest.h"

namespace kvhub::storage {
namespace {

auto All() {
  return [](uint32_t) { return true; };
}

TEST(S3FifoQueuesTest, PromotionKeepsOrResetsFrequencyAsAsked) {
  for (auto mode : {S3FifoQueues::OnPromote::kKeepFrequency, S3FifoQueues::OnPromote::kResetFrequency}) {
    S3FifoQueues q;
    q.Init(8);
    q.Insert(0, kNoSlot, 100, S3FifoQueues::kSmall);
    q.Insert(1, kNoSlot, 100, S3FifoQueues::kSmall);
    q.Access(0);
    q.Access(0);
    // S holds everything: slot 0 (hit twice) moves to M, slot 1 is the victim.
    EXPECT_EQ(q.Pick(All(), All(), false, 0.1, mode), 1u);
    EXPECT_TRUE(q.in_main(0));
    EXPECT_EQ(q.frequency(0), mode == S3FifoQueues::OnPromote::kKeepFrequency ? 2u : 0u);
    EXPECT_EQ(q.Remove(1), S3FifoQueues::kSmall);
    EXPECT_EQ(q.Remove(1), S3FifoQueues::kNone);
    EXPECT_EQ(q.size(), 1u);
    EXPECT_EQ(q.main_bytes(), 100u);
    EXPECT_EQ(q.small_bytes(), 0u);
  }
}

TEST(S3FifoQueuesTest, MainIsAClockAndPrefixAwarePicksLeavesFirst) {
  S3FifoQueues q;
  q.Init(8);
  q.Insert(0, kNoSlot, 10, S3FifoQueues::kMain);  // parent
  q.Insert(1, 0, 10, S3FifoQueues::kMain);        // child of 0
  q.Insert(2, kNoSlot, 10, S3FifoQueues::kMain);
  q.Access(2);
  // M's tail is 0; it has a live child, so it is passed over and leaf 1 goes.
  // Then 2 spends its second chance (one hit) and 0, now a leaf, goes.
  EXPECT_EQ(q.Pick(All(), All(), /*leaves_only=*/true, 0.1, S3FifoQueues::OnPromote::kKeepFrequency), 1u);
  EXPECT_EQ(q.Remove(1), S3FifoQueues::kMain);
  EXPECT_EQ(q.Pick(All(), All(), /*leaves_only=*/true, 0.1, S3FifoQueues::OnPromote::kKeepFrequency), 0u);
  // Without prefix awareness the CLOCK order alone decides, and a slot the caller
  // cannot evict is passed over.
  EXPECT_EQ(q.Pick([](uint32_t s) { return s != 0; }, All(), false, 0.1, S3FifoQueues::OnPromote::kKeepFrequency), 2u);
  // Misuse is ignored: unknown slots, duplicates, out of range.
  q.Insert(2, kNoSlot, 10, S3FifoQueues::kSmall);
  q.Insert(99, kNoSlot, 10, S3FifoQueues::kSmall);
  q.Access(99);
  EXPECT_EQ(q.Remove(99), S3FifoQueues::kNone);
  EXPECT_EQ(q.size(), 2u);
}

// A slot the caller does not want (it could leave, but would not help: another size
// class) is passed over untouched: it keeps its place and its frequency, so a slab
// search that finds nothing costs the tier nothing.
TEST(S3FifoQueuesTest, UnwantedSlotsKeepTheirPlaceAndFrequency) {
  constexpr auto kKeep = S3FifoQueues::OnPromote::kKeepFrequency;
  S3FifoQueues q;
  q.Init(8);
  for (uint32_t s : {0u, 1u, 2u}) q.Insert(s, kNoSlot, 10, S3FifoQueues::kMain);
  EXPECT_EQ(q.Pick(All(), [](uint32_t s) { return s != 0; }, false, 0.1, kKeep), 1u);
  EXPECT_EQ(q.Remove(1), S3FifoQueues::kMain);
  EXPECT_EQ(q.Pick(All(), All(), false, 0.1, kKeep), 0u) << "the passed slot must still be the oldest";
  // Nothing wanted: no victim, and 2 keeps its second chance.
  q.Access(2);
  EXPECT_EQ(q.Pick(All(), [](uint32_t) { return false; }, false, 0.1, kKeep), kNoSlot);
  EXPECT_EQ(q.frequency(2), 1u);
  EXPECT_EQ(q.Pick(All(), All(), false, 0.1, kKeep), 0u);
  // In S likewise: an unwanted slot is neither evicted nor promoted, and stays put.
  S3FifoQueues small;
  small.Init(8);
  for (uint32_t s : {0u, 1u, 2u}) small.Insert(s, kNoSlot, 10, S3FifoQueues::kSmall);
  small.Access(1);
  EXPECT_EQ(small.Pick(All(), [](uint32_t s) { return s == 2; }, false, 0.1, kKeep), 2u);
  EXPECT_TRUE(small.in_small(1));
  EXPECT_EQ(small.frequency(1), 1u);
  EXPECT_EQ(small.Remove(2), S3FifoQueues::kSmall);
  EXPECT_EQ(small.Pick(All(), All(), false, 0.1, kKeep), 0u) << "the passed slot must still be the tail of S";
}

}  // namespace
}  // namespace kvhub::storage
