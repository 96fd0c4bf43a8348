#include "storage/adaptive_s3fifo_policy.h"

#include "gtest/gtest.h"

namespace kvhub::storage {
namespace {

auto kAll = [](uint32_t) { return true; };

TEST(AdaptiveS3FifoConfig, Validate) {
  AdaptiveS3FifoConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.min_small = 0.5;
  c.max_small = 0.4;
  EXPECT_FALSE(c.Validate().ok());
  c = {};
  c.window = 0;
  EXPECT_FALSE(c.Validate().ok());
  c = {};
  c.initial_small = 0.95;
  EXPECT_FALSE(c.Validate().ok());
}

TEST(AdaptiveS3Fifo, NewBlocksGoSmallAndOneHitWondersLeaveFirst) {
  AdaptiveS3FifoPolicy p({});
  p.Init(8);
  for (uint32_t s = 0; s < 4; ++s) p.OnInsert(s, kNoSlot, 100 + s, 1);
  for (uint32_t s = 0; s < 4; ++s) EXPECT_TRUE(p.in_small(s));
  p.OnAccess(0);  // 0 was hit: promoted instead of evicted
  uint32_t v = p.PickVictim(kAll);
  EXPECT_EQ(v, 1u);
  EXPECT_TRUE(p.in_main(0));
  p.OnRemove(v, true);
  EXPECT_EQ(p.size(), 3u);
}

TEST(AdaptiveS3Fifo, GhostHitIsAdmittedToMain) {
  AdaptiveS3FifoPolicy p({});
  p.Init(4);
  p.OnInsert(0, kNoSlot, 7, 1);
  p.OnInsert(1, kNoSlot, 8, 1);
  uint32_t v = p.PickVictim(kAll);
  ASSERT_EQ(v, 0u);
  p.OnRemove(v, true);
  p.OnInsert(0, kNoSlot, 7, 1);  // the same key comes back: proven
  EXPECT_TRUE(p.in_main(0));
  EXPECT_TRUE(p.in_small(1));
}

TEST(AdaptiveS3Fifo, SmallShareGrowsOnSmallGhostHitsAndShrinksOnMainGhostHits) {
  AdaptiveS3FifoConfig c;
  c.gain = 1.0;
  AdaptiveS3FifoPolicy p(c);
  p.Init(16);
  for (uint32_t s = 0; s < 10; ++s) p.OnInsert(s, kNoSlot, 1000 + s, 1);
  double before = p.small_share();
  uint32_t v = p.PickVictim(kAll);
  uint64_t hint = 1000 + v;
  p.OnRemove(v, true);
  p.OnInsert(v, kNoSlot, hint, 1);  // would have hit with a larger S
  EXPECT_GT(p.small_share(), before);
  double grown = p.small_share();
  // Evict from main: put a block in main and make it the only candidate.
  AdaptiveS3FifoPolicy q(c);
  q.Init(4);
  q.OnInsert(0, kNoSlot, 1, 1);
  q.OnRemove(0, true);           // 1 is in the admission ghost
  q.OnInsert(0, kNoSlot, 1, 1);  // -> main
  ASSERT_TRUE(q.in_main(0));
  double qb = q.small_share();
  ASSERT_EQ(q.PickVictim(kAll), 0u);
  q.OnRemove(0, true);           // main victim
  q.OnInsert(0, kNoSlot, 1, 1);  // would have hit with a larger M
  EXPECT_LT(q.small_share(), qb);
  EXPECT_TRUE(q.in_main(0));
  (void)grown;
}

TEST(AdaptiveS3Fifo, PrefixAwareEvictsLeavesFirstAndHonorsCanEvict) {
  AdaptiveS3FifoConfig c;
  c.prefix_aware = true;
  AdaptiveS3FifoPolicy p(c);
  p.Init(4);
  p.OnInsert(0, kNoSlot, 1, 1);
  p.OnInsert(1, 0, 2, 1);
  p.OnInsert(2, 1, 3, 1);
  EXPECT_EQ(p.PickVictim(kAll), 2u);  // the leaf, though the oldest is 0
  EXPECT_EQ(p.PickVictim([](uint32_t s) { return s == 1; }), 1u);
  EXPECT_EQ(p.PickVictim([](uint32_t) { return false; }), kNoSlot);
}

}  // namespace
}  // namespace kvhub::storage
