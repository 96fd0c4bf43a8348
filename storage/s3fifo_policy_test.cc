#include "storage/s3fifo_policy.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvhub::storage {
namespace {

bool Any(uint32_t) { return true; }

uint32_t EvictOne(S3FifoPolicy& p) {
  uint32_t v = p.PickVictim(Any);
  if (v != kNoSlot) p.OnRemove(v, true);
  return v;
}

TEST(S3FifoPolicyTest, NewBlocksEnterSmallAndLeaveInFifoOrder) {
  S3FifoPolicy p(0.1, false);
  p.Init(16);
  for (uint32_t s = 0; s < 5; ++s) p.OnInsert(s, kNoSlot, 100 + s, 10);
  for (uint32_t s = 0; s < 5; ++s) EXPECT_TRUE(p.in_small(s));
  EXPECT_EQ(p.small_bytes(), 50u);
  EXPECT_EQ(EvictOne(p), 0u);
  EXPECT_EQ(EvictOne(p), 1u);
  EXPECT_TRUE(p.in_ghost(100));
  EXPECT_TRUE(p.in_ghost(101));
  EXPECT_EQ(p.Name(), "s3fifo");
}

TEST(S3FifoPolicyTest, HitInSmallPromotesToMain) {
  S3FifoPolicy p(0.1, false);
  p.Init(16);
  for (uint32_t s = 0; s < 4; ++s) p.OnInsert(s, kNoSlot, 100 + s, 10);
  p.OnAccess(0);
  EXPECT_EQ(p.frequency(0), 1u);
  // 0 is the oldest but was hit: it moves to main and 1 is evicted.
  EXPECT_EQ(EvictOne(p), 1u);
  EXPECT_TRUE(p.in_main(0));
  EXPECT_FALSE(p.in_ghost(100));
}

// Pinned blocks stay in S (a put that pins never passes through a ghost). Counted
// toward S's share they left no probation to new blocks: with 10 pinned blocks in S
// (10% of the tier) every new block was the next victim, while M's blocks, never
// used again, stayed.
TEST(S3FifoPolicyTest, PinnedBlocksInSmallDoNotTakeTheProbationOfNewOnes) {
  S3FifoPolicy p(0.1, false);
  p.Init(256);
  auto can_evict = [](uint32_t s) { return s >= 10; };  // 0..9 pinned
  for (uint32_t s = 0; s < 10; ++s) p.OnInsert(s, kNoSlot, 1000 + s, 1);
  for (uint32_t s = 10; s < 110; ++s) {
    p.OnInsert(s, kNoSlot, 1000 + s, 1);
    p.OnAccess(s);
  }
  uint32_t v = p.PickVictim(can_evict);  // promotes most of 10..109, evicts one of them
  ASSERT_NE(v, kNoSlot);
  ASSERT_TRUE(v >= 10 && v < 110) << v;
  p.OnRemove(v, true);
  for (uint32_t s = 200; s < 205; ++s) {
    p.OnInsert(s, kNoSlot, 1000 + s, 1);
    v = p.PickVictim(can_evict);
    ASSERT_NE(v, kNoSlot);
    EXPECT_LT(v, 200u) << "a block just inserted was evicted before the idle ones of M";
    p.OnRemove(v, true);
  }
  for (uint32_t s = 200; s < 205; ++s) EXPECT_TRUE(p.in_small(s)) << s;
}

TEST(S3FifoPolicyTest, GhostHitAdmitsStraightToMain) {
  S3FifoPolicy p(0.1, false);
  p.Init(16);
  for (uint32_t s = 0; s < 4; ++s) p.OnInsert(s, kNoSlot, 100 + s, 10);
  ASSERT_EQ(EvictOne(p), 0u);
  ASSERT_TRUE(p.in_ghost(100));
  // The same key (digest 100) comes back in a new slot: it goes to main.
  p.OnInsert(7, kNoSlot, 100, 10);
  EXPECT_TRUE(p.in_main(7));
  EXPECT_FALSE(p.in_ghost(100));
  // A never-seen key goes to small.
  p.OnInsert(8, kNoSlot, 555, 10);
  EXPECT_TRUE(p.in_small(8));
}

// A pick whose main-queue budget went to unevictable blocks, and that then
// promoted a hit block from S into M, must still evict it: it returned no victim
// while one was evictable, and the store refused the put ("nothing is evictable").
TEST(S3FifoPolicyTest, APromotionAfterMainRanOutOfStepsStillFindsAVictim) {
  S3FifoPolicy p(0.1, false);
  p.Init(4);
  // Slot 0 in M by a ghost hit, large; then not evictable (pinned).
  p.OnInsert(0, kNoSlot, 100, 100);
  ASSERT_EQ(EvictOne(p), 0u);
  p.OnInsert(0, kNoSlot, 100, 100);
  ASSERT_TRUE(p.in_main(0));
  // Slot 1 in S, small (S under its byte share: the pick scans M first), hit once.
  p.OnInsert(1, kNoSlot, 101, 1);
  p.OnAccess(1);
  const uint32_t v = p.PickVictim([](uint32_t s) { return s != 0; });
  EXPECT_EQ(v, 1u) << "no victim while slot 1 was evictable";
}

TEST(S3FifoPolicyTest, MainUsesFrequencyAsSecondChances) {
  S3FifoPolicy p(0.5, false);
  p.Init(16);
  // Put 0 and 1 into main through the ghost (fillers 5..9 stay resident so the
  // ghost, bounded by the resident count, remembers both).
  p.OnInsert(0, kNoSlot, 1000, 10);
  p.OnInsert(1, kNoSlot, 1001, 10);
  for (uint32_t s = 5; s < 10; ++s) p.OnInsert(s, kNoSlot, s, 10);
  EXPECT_EQ(EvictOne(p), 0u);
  EXPECT_EQ(EvictOne(p), 1u);
  p.OnInsert(0, kNoSlot, 1000, 10);
  p.OnInsert(1, kNoSlot, 1001, 10);
  ASSERT_TRUE(p.in_main(0) && p.in_main(1));
  for (uint32_t s = 5; s < 10; ++s) p.OnRemove(s, /*evicted=*/false);
  p.OnAccess(0);
  p.OnAccess(0);
  // Small is empty: victims come from main; 0 (freq 2) outlives 1 (freq 0).
  EXPECT_EQ(EvictOne(p), 1u);
  EXPECT_EQ(EvictOne(p), 0u);
  EXPECT_EQ(EvictOne(p), kNoSlot);
}

TEST(S3FifoPolicyTest, FrequencySaturatesAtThree) {
  S3FifoPolicy p(0.1, false);
  p.Init(4);
  p.OnInsert(0, kNoSlot, 1, 10);
  for (int i = 0; i < 10; ++i) p.OnAccess(0);
  EXPECT_EQ(p.frequency(0), 3u);
}

TEST(S3FifoPolicyTest, SmallQueueKeptNearRatio) {
  // Steady state: blocks hit once are promoted; one-hit wonders leave from small.
  S3FifoPolicy p(0.1, false);
  const uint32_t n = 1000;
  p.Init(n + 1);
  uint64_t hint = 0;
  for (uint32_t s = 0; s < n; ++s) {
    p.OnInsert(s, kNoSlot, ++hint, 100);
    if (s % 2 == 0) p.OnAccess(s);
  }
  for (int i = 0; i < 5000; ++i) {
    uint32_t v = EvictOne(p);
    ASSERT_NE(v, kNoSlot);
    p.OnInsert(v, kNoSlot, ++hint, 100);
    if (i % 2 == 0) p.OnAccess(v);
  }
  double small_share = static_cast<double>(p.small_bytes()) /
                       static_cast<double>(p.small_bytes() + p.main_bytes());
  EXPECT_LT(small_share, 0.2);
  EXPECT_EQ(p.size(), n);
}

TEST(S3FifoPolicyTest, SkipsUnevictable) {
  S3FifoPolicy p(0.1, false);
  p.Init(8);
  for (uint32_t s = 0; s < 3; ++s) p.OnInsert(s, kNoSlot, s, 10);
  EXPECT_EQ(p.PickVictim([](uint32_t s) { return s == 2; }), 2u);
  EXPECT_EQ(p.PickVictim([](uint32_t) { return false; }), kNoSlot);
}

TEST(S3FifoPolicyTest, PrefixAwareEvictsLeavesFirst) {
  S3FifoPolicy p(0.1, /*prefix_aware=*/true);
  p.Init(16);
  p.OnInsert(0, kNoSlot, 10, 10);
  p.OnInsert(1, 0, 11, 10);
  p.OnInsert(2, 1, 12, 10);
  p.OnInsert(3, kNoSlot, 13, 10);
  std::vector<uint32_t> order;
  for (uint32_t v; (v = EvictOne(p)) != kNoSlot;) order.push_back(v);
  ASSERT_EQ(order.size(), 4u);
  // Every block leaves after its descendants.
  auto pos = [&](uint32_t s) { return std::find(order.begin(), order.end(), s) - order.begin(); };
  EXPECT_LT(pos(2), pos(1));
  EXPECT_LT(pos(1), pos(0));
  EXPECT_EQ(p.Name(), "s3fifo+prefix");
}

TEST(S3FifoPolicyTest, PrefixAwareFallsBackToInterior) {
  S3FifoPolicy p(0.1, true);
  p.Init(4);
  p.OnInsert(0, kNoSlot, 10, 10);
  p.OnInsert(1, 0, 11, 10);
  EXPECT_EQ(p.PickVictim([](uint32_t s) { return s == 0; }), 0u);
}

TEST(GhostFifoTest, BoundedFifoMembership) {
  GhostFifo g;
  g.Init(3);
  g.Insert(1);
  g.Insert(2);
  g.Insert(3);
  EXPECT_TRUE(g.Contains(1));
  g.Insert(4);  // drops 1
  EXPECT_FALSE(g.Contains(1));
  EXPECT_TRUE(g.Contains(4));
  g.Erase(3);
  EXPECT_FALSE(g.Contains(3));
  EXPECT_EQ(g.size(), 2u);
  g.Insert(2);  // refresh: 2 is now newest
  g.TrimTo(1);
  EXPECT_TRUE(g.Contains(2));
  EXPECT_FALSE(g.Contains(4));
  EXPECT_EQ(g.size(), 1u);
  // Churn many digests through a small ghost.
  for (uint64_t i = 0; i < 10000; ++i) g.Insert(i * 7919);
  EXPECT_EQ(g.size(), 3u);
  EXPECT_TRUE(g.Contains(9999 * 7919));
  EXPECT_FALSE(g.Contains(9996 * 7919));
}

TEST(GhostFifoTest, GrowingRoomKeepsExactlyTheSameDigestsAsFullRoom) {
  // The same random mix of inserts (with refreshes), erases and trims on a ghost
  // allocated in full and on one that starts with 16 digests of room.
  constexpr uint32_t kCapacity = 5000;
  GhostFifo full, grown;
  full.Init(kCapacity);
  grown.Init(kCapacity, 16);
  EXPECT_EQ(full.allocated(), kCapacity);
  EXPECT_EQ(grown.allocated(), 16u);
  EXPECT_EQ(grown.capacity(), kCapacity);
  std::mt19937_64 rng(11);
  for (int step = 0; step < 200000; ++step) {
    const uint64_t d = rng() % 12000;
    const uint64_t op = rng() % 100;
    if (op < 70) {
      full.Insert(d);
      grown.Insert(d);
    } else if (op < 95) {
      full.Erase(d);
      grown.Erase(d);
    } else if (op < 96) {
      const uint32_t limit = static_cast<uint32_t>(rng() % kCapacity);
      full.TrimTo(limit);
      grown.TrimTo(limit);
    }
    ASSERT_EQ(full.size(), grown.size()) << "step " << step;
    const uint64_t probe = rng() % 12000;
    ASSERT_EQ(full.Contains(probe), grown.Contains(probe)) << "step " << step << " digest " << probe;
    ASSERT_LE(grown.allocated(), kCapacity);
  }
  for (uint64_t d = 0; d < 12000; ++d) ASSERT_EQ(full.Contains(d), grown.Contains(d)) << d;
  EXPECT_GT(grown.allocated(), 1024u);  // it grew (doubling from 16) as the churn needed
}

TEST(GhostFifoTest, RoomFollowsWhatIsHeld) {
  GhostFifo g;
  g.Init(1u << 20, 16);
  // Held to 100 digests by trimming (as a policy trims to a multiple of its
  // resident blocks), the room stays small however many digests pass.
  for (uint64_t i = 0; i < 100000; ++i) {
    g.Insert(i);
    g.TrimTo(100);
  }
  EXPECT_EQ(g.size(), 100u);
  EXPECT_LE(g.allocated(), 128u);
  EXPECT_TRUE(g.Contains(99999));
  EXPECT_FALSE(g.Contains(99899));
}

}  // namespace
}  // namespace kvhub::storage
