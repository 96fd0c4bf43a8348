#include "storage/lru_policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace kvhub::storage {
namespace {

bool Any(uint32_t) { return true; }

TEST(LruPolicyTest, EvictsLeastRecentlyUsed) {
  LruPolicy p(/*prefix_aware=*/false);
  p.Init(8);
  for (uint32_t s = 0; s < 4; ++s) p.OnInsert(s, kNoSlot, s, 100);
  p.OnAccess(0);  // order, coldest first: 1 2 3 0
  std::vector<uint32_t> order;
  for (uint32_t v; (v = p.PickVictim(Any)) != kNoSlot;) {
    order.push_back(v);
    p.OnRemove(v, true);
  }
  EXPECT_EQ(order, (std::vector<uint32_t>{1, 2, 3, 0}));
  EXPECT_EQ(p.size(), 0u);
  EXPECT_EQ(p.Name(), "lru");
}

TEST(LruPolicyTest, SkipsUnevictableAndReturnsNoSlotWhenNone) {
  LruPolicy p(false);
  p.Init(4);
  for (uint32_t s = 0; s < 3; ++s) p.OnInsert(s, kNoSlot, s, 1);
  EXPECT_EQ(p.PickVictim([](uint32_t s) { return s != 0; }), 1u);
  EXPECT_EQ(p.PickVictim([](uint32_t) { return false; }), kNoSlot);
  p.OnRemove(1, false);
  EXPECT_FALSE(p.contains(1));
  EXPECT_EQ(p.PickVictim([](uint32_t s) { return s == 2; }), 2u);
}

// Unwanted (could leave, would not help the caller) is not unevictable: the slot is
// passed over in place, not made the most recently used.
TEST(LruPolicyTest, UnwantedSlotsKeepTheirPlace) {
  LruPolicy p(false);
  p.Init(4);
  for (uint32_t s = 0; s < 3; ++s) p.OnInsert(s, kNoSlot, s, 1);  // coldest first: 0 1 2
  EXPECT_EQ(p.PickVictim(Any, [](uint32_t s) { return s != 0; }), 1u);
  p.OnRemove(1, true);
  EXPECT_EQ(p.PickVictim(Any), 0u) << "0 was passed over, not moved to the young end";
  EXPECT_EQ(p.PickVictim(Any, [](uint32_t) { return false; }), kNoSlot);
  EXPECT_EQ(p.PickVictim(Any), 0u);
}

TEST(LruPolicyTest, PrefixAwareEvictsLeavesFirst) {
  LruPolicy p(/*prefix_aware=*/true);
  p.Init(16);
  // Chain 0 <- 1 <- 2, then a lone block 3; 0 is the least recently used.
  p.OnInsert(0, kNoSlot, 0, 1);
  p.OnInsert(1, 0, 1, 1);
  p.OnInsert(2, 1, 2, 1);
  p.OnInsert(3, kNoSlot, 3, 1);
  std::vector<uint32_t> order;
  for (uint32_t v; (v = p.PickVictim(Any)) != kNoSlot;) {
    order.push_back(v);
    p.OnRemove(v, true);
  }
  // 2 is the coldest leaf; then its parent becomes the coldest leaf, and so on.
  EXPECT_EQ(order, (std::vector<uint32_t>{2, 1, 0, 3}));
}

// A child deleted (not evicted): its recently used parent is not sent to the cold
// end (it was the next victim, ahead of an older block).
TEST(LruPolicyTest, PrefixAwareKeepsARecentParentWhenItsChildIsDeleted) {
  LruPolicy p(/*prefix_aware=*/true);
  p.Init(8);
  p.OnInsert(0, kNoSlot, 0, 1);  // P
  p.OnInsert(1, 0, 1, 1);        // C, child of P
  p.OnInsert(2, kNoSlot, 2, 1);  // X
  p.OnAccess(0);                 // P used after X
  p.OnRemove(1, /*evicted=*/false);
  EXPECT_EQ(p.PickVictim(Any), 2u);
}

TEST(LruPolicyTest, PrefixAwareFallsBackToInteriorWhenNoLeafEvictable) {
  LruPolicy p(true);
  p.Init(4);
  p.OnInsert(0, kNoSlot, 0, 1);
  p.OnInsert(1, 0, 1, 1);
  EXPECT_EQ(p.PickVictim([](uint32_t s) { return s != 1; }), 0u);
  // Parent removed first; the child later; then the slot is reused without
  // confusing the child counts.
  p.OnRemove(0, true);
  p.OnInsert(0, kNoSlot, 9, 1);
  p.OnInsert(2, 0, 2, 1);
  p.OnRemove(1, true);  // stale parent link: must not touch new slot 0's count
  EXPECT_EQ(p.PickVictim(Any), 2u);  // 0 still has child 2
}

TEST(LruPolicyTest, PlainLruIgnoresParents) {
  LruPolicy p(false);
  p.Init(4);
  p.OnInsert(0, kNoSlot, 0, 1);
  p.OnInsert(1, 0, 1, 1);
  EXPECT_EQ(p.PickVictim(Any), 0u);
}

TEST(EvictionPolicyFactoryTest, MakesBothAndRejectsUnknown) {
  EvictionPolicyConfig c;
  auto s3 = MakeEvictionPolicy(c);
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ((*s3)->Name(), "s3fifo");  // the default: plain S3-FIFO
  c.prefix_aware = true;
  auto s3p = MakeEvictionPolicy(c);
  ASSERT_TRUE(s3p.ok());
  EXPECT_EQ((*s3p)->Name(), "s3fifo+prefix");
  c.name = "lru";
  c.prefix_aware = false;
  auto lru = MakeEvictionPolicy(c);
  ASSERT_TRUE(lru.ok());
  EXPECT_EQ((*lru)->Name(), "lru");
  c.name = "arc";
  EXPECT_EQ(MakeEvictionPolicy(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.name = "s3fifo";
  c.s3fifo_small_ratio = 1.5;
  EXPECT_EQ(MakeEvictionPolicy(c).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvhub::storage
