#include "storage/slab_allocator.h"

#include <cstring>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "storage/block_index.h"
#include "storage/size_classes.h"

namespace kvhub::storage {
namespace {

TEST(SizeClassesTest, CoverRangeWithBoundedWaste) {
  auto sc = SizeClasses::Build(4096, 64ull << 20, 256ull << 20, 8);
  ASSERT_TRUE(sc.ok()) << sc.status();
  EXPECT_EQ(sc->size(0), 4096u);
  EXPECT_GE(sc->size(sc->count() - 1), 64ull << 20);
  for (uint32_t c = 0; c < sc->count(); ++c) {
    EXPECT_EQ(sc->size(c) % SizeClasses::kAlign, 0u);
    if (c > 0) {
      EXPECT_GT(sc->size(c), sc->size(c - 1));
      // Neighbours differ by the geometric step 2^(1/8) (x 64/63 where the slab/k
      // classes start) or, for classes of k < 16 chunks per slab, by k/(k-1).
      double r = static_cast<double>(sc->size(c)) / static_cast<double>(sc->size(c - 1));
      EXPECT_LE(r, sc->slab_bytes() / sc->size(c) < 16 ? 1.34 : 1.108) << c;
    }
  }
  // Every size maps to the smallest class that holds it.
  for (uint64_t b : {1ull, 4096ull, 4097ull, 100000ull, 33ull << 20, 64ull << 20}) {
    uint32_t c = sc->ClassFor(b);
    ASSERT_LT(c, sc->count());
    EXPECT_GE(sc->size(c), b);
    if (c > 0) {
      EXPECT_LT(sc->size(c - 1), b);
    }
  }
  EXPECT_EQ(sc->ClassFor((64ull << 20) + sc->size(sc->count() - 1)), sc->count());
  // Large classes are slab/k: no tail waste in a slab.
  uint32_t big = sc->ClassFor(33ull << 20);
  EXPECT_LT(sc->slab_bytes() - sc->chunks_per_slab(big) * sc->size(big), SizeClasses::kAlign * 16);
}

TEST(SizeClassesTest, AutoSlabGrowsWithCapacityAndKeepsSixtyFourSlabs) {
  constexpr uint64_t MiB = 1ull << 20, GiB = 1ull << 30;
  // Small stores: the smallest slab that holds the largest block.
  EXPECT_EQ(AutoSlabBytes(1 * GiB, 1 * GiB, 64 * MiB), 64 * MiB);
  EXPECT_EQ(AutoSlabBytes(4 * GiB, 1 * GiB, 64 * MiB), 64 * MiB);  // 64 slabs
  EXPECT_EQ(AutoSlabBytes(8 * GiB, 1 * GiB, 64 * MiB), 128 * MiB);
  EXPECT_EQ(AutoSlabBytes(64 * GiB, 1 * GiB, 64 * MiB), 1 * GiB);
  EXPECT_EQ(AutoSlabBytes(400 * GiB, 1 * GiB, 64 * MiB), 1 * GiB);  // never above a region
  EXPECT_EQ(AutoSlabBytes(400 * GiB, 256 * MiB, 64 * MiB), 256 * MiB);
  EXPECT_EQ(AutoSlabBytes(8 * MiB, 8 * MiB, 1 * MiB), 1 * MiB);
  EXPECT_EQ(AutoSlabBytes(1 * GiB, 1 * GiB, 3 * MiB), 16 * MiB);  // 64 slabs of 16 MiB
  // bit_ceil(max block) does not divide the region: the whole region.
  EXPECT_EQ(AutoSlabBytes(1 * GiB, 96 * MiB, 64 * MiB), 96 * MiB);
  // Big slabs waste little on big blocks: 18.9 MB blocks in 64 MiB vs 1 GiB slabs.
  const uint64_t block = 18875520;
  auto small = SizeClasses::Build(4096, 64 * MiB, 64 * MiB, 8);
  auto big = SizeClasses::Build(4096, 64 * MiB, 1 * GiB, 8);
  ASSERT_TRUE(small.ok() && big.ok());
  const double waste_small = static_cast<double>(small->size(small->ClassFor(block))) / block - 1;
  const double waste_big = static_cast<double>(big->size(big->ClassFor(block))) / block - 1;
  EXPECT_GT(waste_small, 0.15);
  EXPECT_LT(waste_big, 0.03);
}

TEST(SizeClassesTest, RejectsBadBounds) {
  EXPECT_FALSE(SizeClasses::Build(0, 100, 4096, 8).ok());
  EXPECT_FALSE(SizeClasses::Build(4096, 100, 4096, 8).ok());
  EXPECT_FALSE(SizeClasses::Build(64, 8192, 4096, 8).ok());  // block > slab
  EXPECT_FALSE(SizeClasses::Build(64, 1024, 4096, 0).ok());
}

class SlabAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sc = SizeClasses::Build(256, 16384, 65536, 4);
    ASSERT_TRUE(sc.ok());
    classes_ = *sc;
    memory_.resize(kSlabs * 65536);
    std::vector<uint8_t*> bases;
    for (uint32_t i = 0; i < kSlabs; ++i) bases.push_back(memory_.data() + i * 65536);
    alloc_.Init(&classes_, bases);
  }
  static constexpr uint32_t kSlabs = 4;
  SizeClasses classes_;
  std::vector<uint8_t> memory_;
  SlabAllocator alloc_;
};

TEST_F(SlabAllocatorTest, CarvesDistinctChunksAndReusesFreed) {
  uint32_t cls = classes_.ClassFor(1000);
  uint64_t size = classes_.size(cls);
  uint32_t per = classes_.chunks_per_slab(cls);
  std::set<uint64_t> seen;
  for (uint32_t i = 0; i < per * kSlabs; ++i) {
    uint64_t off = alloc_.Allocate(cls);
    ASSERT_NE(off, SlabAllocator::kNoChunk) << i;
    EXPECT_EQ(off % size == 0 || (off % 65536) % size == 0, true);
    EXPECT_TRUE(seen.insert(off).second);
    EXPECT_EQ(alloc_.ClassOf(off), cls);
  }
  EXPECT_EQ(alloc_.Allocate(cls), SlabAllocator::kNoChunk);
  EXPECT_EQ(alloc_.free_slabs(), 0u);
  EXPECT_EQ(alloc_.allocated_bytes(), uint64_t{per} * kSlabs * size);
  uint64_t victim = *std::next(seen.begin(), 5);
  EXPECT_FALSE(alloc_.Free(victim));
  EXPECT_EQ(alloc_.Allocate(cls), victim);  // the freed chunk comes back
}

// Block memory is written by peers (one-sided puts), also after a chunk is freed:
// what lies in a free chunk must not steer allocation. (With links in the chunks,
// a freed chunk overwritten with 0x41 handed out chunk 0x41414141, far outside
// the slab.)
TEST_F(SlabAllocatorTest, BytesWrittenIntoFreeChunksDoNotSteerAllocation) {
  const uint32_t cls = classes_.ClassFor(1000);
  const uint64_t size = classes_.size(cls);
  const uint32_t per = classes_.chunks_per_slab(cls);
  std::vector<uint64_t> live;
  for (uint32_t i = 0; i < per; ++i) live.push_back(alloc_.Allocate(cls));  // slab 0 full
  std::set<uint64_t> freed;
  for (uint32_t i = 1; i < per; i += 2) {
    ASSERT_FALSE(alloc_.Free(live[i]));
    freed.insert(live[i]);
    // A late write lands in the freed chunk: every byte of it, links included.
    std::memset(alloc_.Address(live[i]), 0x41, size);
  }
  std::set<uint64_t> got;
  for (size_t i = 0; i < freed.size(); ++i) {
    const uint64_t off = alloc_.Allocate(cls);
    ASSERT_NE(off, SlabAllocator::kNoChunk);
    EXPECT_TRUE(freed.contains(off)) << "chunk " << off << " was not free";
    EXPECT_TRUE(got.insert(off).second) << "chunk " << off << " handed out twice";
  }
  EXPECT_EQ(got, freed);
  // Then fresh chunks from the next slab, not a wild one.
  const uint64_t next = alloc_.Allocate(cls);
  ASSERT_NE(next, SlabAllocator::kNoChunk);
  EXPECT_NE(alloc_.SlabOf(next), alloc_.SlabOf(live[0])) << "the first slab is full again";
  EXPECT_LT(alloc_.SlabOf(next), kSlabs);
  EXPECT_EQ((next % 65536) % size, 0u);
}

// Owner tags: a chunk reports whose bytes it holds, from its last Free, or for a
// fresh one, from everything its slab held in earlier classes.
TEST_F(SlabAllocatorTest, ChunksSayWhoseBytesTheyHold) {
  const uint32_t small = classes_.ClassFor(1000), large = classes_.ClassFor(16384);
  uint64_t prior = 99;
  const uint64_t a = alloc_.Allocate(small, &prior);
  EXPECT_EQ(prior, 0u) << "fresh memory is nobody's";
  const uint64_t b = alloc_.Allocate(small, &prior);
  EXPECT_EQ(prior, 0u);
  EXPECT_FALSE(alloc_.Free(b, 7));
  EXPECT_EQ(alloc_.Allocate(small, &prior), b);
  EXPECT_EQ(prior, 7u) << "the owner given to its last Free";
  EXPECT_FALSE(alloc_.Free(b, 7));
  EXPECT_TRUE(alloc_.Free(a, 7)) << "the slab is free";
  // Every chunk it held was 7's: so is a fresh chunk of another class there.
  std::vector<uint64_t> bigs;
  for (uint64_t off; (off = alloc_.Allocate(large, &prior)) != SlabAllocator::kNoChunk;) {
    bigs.push_back(off);
    EXPECT_EQ(prior, alloc_.SlabOf(off) == alloc_.SlabOf(a) ? 7u : 0u) << off;
  }
  // Two owners in one slab: a fresh chunk there holds bytes of both.
  for (uint64_t off : bigs) alloc_.Free(off, alloc_.SlabOf(off) == alloc_.SlabOf(a) ? 8u : 0u);
  std::set<uint64_t> priors;
  for (uint64_t off; (off = alloc_.Allocate(small, &prior)) != SlabAllocator::kNoChunk;) {
    if (alloc_.SlabOf(off) == alloc_.SlabOf(a)) priors.insert(prior);
  }
  EXPECT_EQ(priors, (std::set<uint64_t>{SlabAllocator::kMixed}));
}

TEST_F(SlabAllocatorTest, EmptySlabChangesClass) {
  uint32_t small = classes_.ClassFor(300);
  uint32_t large = classes_.ClassFor(16384);
  std::vector<uint64_t> offs;
  for (uint64_t off; (off = alloc_.Allocate(small)) != SlabAllocator::kNoChunk;) {
    offs.push_back(off);
  }
  EXPECT_EQ(alloc_.Allocate(large), SlabAllocator::kNoChunk);
  // Free every chunk of slab 2: it returns to the pool and serves the large class.
  int freed_slabs = 0;
  for (uint64_t off : offs) {
    if (alloc_.SlabOf(off) == 2) freed_slabs += alloc_.Free(off) ? 1 : 0;
  }
  EXPECT_EQ(freed_slabs, 1);
  EXPECT_EQ(alloc_.free_slabs(), 1u);
  uint64_t big = alloc_.Allocate(large);
  ASSERT_NE(big, SlabAllocator::kNoChunk);
  EXPECT_EQ(alloc_.SlabOf(big), 2u);
  EXPECT_EQ(alloc_.ClassOf(big), large);
  for (uint32_t i = 1; i < classes_.chunks_per_slab(large); ++i) {
    EXPECT_NE(alloc_.Allocate(large), SlabAllocator::kNoChunk);
  }
  EXPECT_EQ(alloc_.Allocate(large), SlabAllocator::kNoChunk);
}

TEST(BlockIndexTest, InsertFindEraseWithNamespaces) {
  BlockIndex idx;
  idx.Init(1000);
  for (uint32_t s = 0; s < 1000; ++s) idx.Insert(BlockKey{s * 31ull, s}, s % 3, s);
  EXPECT_EQ(idx.size(), 1000u);
  for (uint32_t s = 0; s < 1000; ++s) {
    EXPECT_EQ(idx.Find(BlockKey{s * 31ull, s}, s % 3), s);
    EXPECT_EQ(idx.Find(BlockKey{s * 31ull, s}, (s % 3) + 1), kNoSlot);  // other namespace
  }
  // Erase every other key; the rest stay findable (backward-shift deletion).
  for (uint32_t s = 0; s < 1000; s += 2) EXPECT_TRUE(idx.Erase(BlockKey{s * 31ull, s}, s % 3));
  EXPECT_FALSE(idx.Erase(BlockKey{0, 0}, 0));
  for (uint32_t s = 0; s < 1000; ++s) {
    EXPECT_EQ(idx.Find(BlockKey{s * 31ull, s}, s % 3), s % 2 ? s : kNoSlot) << s;
  }
  EXPECT_EQ(idx.size(), 500u);
}

}  // namespace
}  // namespace kvhub::storage
