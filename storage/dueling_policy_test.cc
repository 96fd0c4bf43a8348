#include "storage/dueling_policy.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace kvhub::storage {
namespace {

auto kAll = [](uint32_t) { return true; };

// A cache of `cap` slots driven by `p`; key k has hint 1000 + k. Returns hits.
struct Driver {
  DuelingPolicy* p;
  uint32_t cap;
  std::vector<int64_t> key_in;   // slot -> key or -1
  std::vector<int64_t> slot_of;  // key -> slot or -1
  Driver(DuelingPolicy* policy, uint32_t c, uint32_t keys)
      : p(policy), cap(c), key_in(c, -1), slot_of(keys, -1) {
    p->Init(c);
  }
  bool Ref(uint32_t k) {
    if (slot_of[k] >= 0) {
      p->OnAccess(static_cast<uint32_t>(slot_of[k]));
      return true;
    }
    uint32_t s = kNoSlot;
    for (uint32_t i = 0; i < cap; ++i) {
      if (key_in[i] < 0) {
        s = i;
        break;
      }
    }
    if (s == kNoSlot) {
      s = p->PickVictim(kAll);
      EXPECT_NE(s, kNoSlot);
      p->OnRemove(s, true);
      slot_of[key_in[s]] = -1;
    }
    key_in[s] = k;
    slot_of[k] = s;
    p->OnInsert(s, kNoSlot, 1000 + k, 1);
    return false;
  }
};

TEST(DuelingConfig, Validate) {
  DuelingConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.half_life = 0;
  EXPECT_FALSE(c.Validate().ok());
  c = {};
  c.margin = 1.5;
  EXPECT_FALSE(c.Validate().ok());
  c = {};
  c.lru_margin = -0.1;
  EXPECT_FALSE(c.Validate().ok());
  c = {};
  c.as3fifo.window = 0;
  EXPECT_FALSE(c.Validate().ok());
}

TEST(Dueling, FollowsLruOnARecencyLoopThatFits) {
  // A loop over 60 keys in a 64-block cache, after a burst of one-hit keys:
  // LRU keeps the whole loop.
  DuelingPolicy p({});
  Driver d(&p, 64, 10000);
  for (uint32_t k = 100; k < 400; ++k) d.Ref(k);
  uint64_t hits = 0;
  for (int round = 0; round < 50; ++round) {
    for (uint32_t k = 0; k < 60; ++k) hits += d.Ref(k);
  }
  EXPECT_TRUE(p.following_lru());
  EXPECT_GT(hits, 49u * 60u - 60u);
}

TEST(Dueling, FollowsAs3fifoUnderScansWithAHotSet) {
  // A hot set of 20 keys re-read every 40 references, with scans of one-hit
  // keys in between, in a 32-block cache: LRU loses the hot set to the scans,
  // as3fifo keeps it in its main queue.
  DuelingConfig c;
  c.start_with_lru = true;
  DuelingPolicy p(c);
  Driver d(&p, 32, 200000);
  uint32_t next = 1000;
  uint64_t hot_hits = 0, hot_refs = 0;
  for (int round = 0; round < 400; ++round) {
    for (uint32_t k = 0; k < 20; ++k) {
      bool h = d.Ref(k);
      if (round >= 200) {
        hot_hits += h;
        ++hot_refs;
      }
    }
    for (int i = 0; i < 40; ++i) d.Ref(next++);
  }
  EXPECT_FALSE(p.following_lru());
  EXPECT_GE(p.switches(), 1u);
  EXPECT_GT(hot_hits, hot_refs / 2);
}

TEST(Dueling, OnlyEvictableSlotsAreChosen) {
  DuelingPolicy p({});
  p.Init(8);
  for (uint32_t s = 0; s < 8; ++s) p.OnInsert(s, kNoSlot, 50 + s, 1);
  uint32_t v = p.PickVictim([](uint32_t s) { return s == 5; });
  EXPECT_EQ(v, 5u);
  p.OnRemove(v, true);
  EXPECT_EQ(p.PickVictim([](uint32_t) { return false; }), kNoSlot);
}

}  // namespace
}  // namespace kvhub::storage
