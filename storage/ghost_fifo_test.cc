#include "storage/ghost_fifo.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace kvhub::storage {
namespace {

TEST(GhostFifoTest, RemembersTheNewestCapacityDigestsInOrder) {
  GhostFifo g;
  g.Init(100, 16);
  for (uint64_t d = 1; d <= 250; ++d) g.Insert(d);
  EXPECT_EQ(g.size(), 100u);
  for (uint64_t d = 1; d <= 150; ++d) EXPECT_FALSE(g.Contains(d)) << d;
  for (uint64_t d = 151; d <= 250; ++d) EXPECT_TRUE(g.Contains(d)) << d;
  g.TrimTo(10);
  for (uint64_t d = 151; d <= 240; ++d) EXPECT_FALSE(g.Contains(d)) << d;
  for (uint64_t d = 241; d <= 250; ++d) EXPECT_TRUE(g.Contains(d)) << d;
}

// Ghost hits erase digests: their ring entries are dead until reclaimed. The
// memory of a growing ghost follows the digests it really holds (it used to
// double on every full ring of mostly dead entries, up to its capacity), and a
// full one forgets no live digest to make room while dead entries take space.
TEST(GhostFifoTest, ErasedDigestsNeitherGrowTheRingNorPushOutLiveOnes) {
  GhostFifo growing;
  growing.Init(1u << 20, 16);
  for (uint64_t d = 1; d <= 100000; ++d) {
    growing.Insert(d);
    if (d > 8) growing.Erase(d - 8);  // at most 8 live at any time
  }
  EXPECT_EQ(growing.size(), 8u);
  EXPECT_LE(growing.allocated(), 32u);

  GhostFifo full;
  full.Init(64);
  for (uint64_t d = 1; d <= 64; ++d) full.Insert(d);
  for (uint64_t d = 1; d <= 32; ++d) full.Erase(d);  // half the ring is dead
  for (uint64_t d = 1001; d <= 1032; ++d) full.Insert(d);
  EXPECT_EQ(full.size(), 64u);
  for (uint64_t d = 33; d <= 64; ++d) EXPECT_TRUE(full.Contains(d)) << d;
  for (uint64_t d = 1001; d <= 1032; ++d) EXPECT_TRUE(full.Contains(d)) << d;
  full.Insert(2000);  // now full of live digests: the oldest goes
  EXPECT_FALSE(full.Contains(33));
  EXPECT_TRUE(full.Contains(34));
}

}  // namespace
}  // namespace kvhub::storage
