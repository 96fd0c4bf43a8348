// Shows that the data path does not touch the heap: global operator new is
// replaced in this binary by a counting one (tests/testing/alloc_counter.h), and after warm-up N
// Reserve+Commit, Acquire+Release and Lookup cycles (with eviction) must make
// zero allocations.

#include <cstring>
#include <new>
#include <vector>

#include "gtest/gtest.h"
#include "storage/block_store.h"
#include "storage/block_store_test_util.h"
#include "tests/testing/alloc_counter.h"

namespace kvhub::storage {
namespace {

using testing::Key;

// `keys` and `present` are the caller's, so the loop itself allocates nothing.
void Cycles(BlockStore& store, ManualClock& clock, uint64_t first, uint64_t n,
            const std::vector<uint8_t>& payload, uint64_t sum, std::vector<BlockKey>& keys,
            std::vector<uint8_t>& present) {
  for (uint64_t i = first; i < first + n; ++i) {
    auto r = store.Reserve("tenant", Key(i), payload.size(), sum);
    ASSERT_TRUE(r.ok());
    std::memcpy(r->data, payload.data(), payload.size());
    ASSERT_TRUE(store.Commit(r->id).ok());
    auto l = store.Acquire("tenant", Key(i));
    ASSERT_TRUE(l.ok());
    ASSERT_TRUE(store.Release(l->id).ok());
    for (size_t k = 0; k < keys.size(); ++k) keys[k] = Key(i - k);
    store.Lookup("tenant", keys, present);
    if (i % 64 == 0) {
      clock.Advance(absl::Seconds(1));
      store.ExpireNow();
    }
  }
}

TEST(BlockStoreAllocTest, TheCounterSeesAllocations) {
  kvhub::testing::StartCountingAllocations();
  void* a = ::operator new(64);  // explicit calls: the compiler may not elide them
  void* b = ::operator new[](128, std::nothrow);
  ::operator delete(a);
  ::operator delete[](b);
  EXPECT_EQ(kvhub::testing::StopCountingAllocations(), 2u);
}

TEST(BlockStoreAllocTest, DataPathMakesNoHeapAllocations) {
  for (const char* policy : {"s3fifo", "lru"}) {
    ManualClock clock;
    BlockStoreConfig c = testing::SmallConfig();
    c.eviction.name = policy;
    auto made = BlockStore::Create(c, &clock);
    ASSERT_TRUE(made.ok());
    std::unique_ptr<BlockStore> store = *std::move(made);
    std::vector<uint8_t> payload = testing::Bytes(1, 6000);
    uint64_t sum = testing::Sum(payload);
    std::vector<BlockKey> keys(256);
    std::vector<uint8_t> present(256);
    // Warm-up: fill the store past capacity so every slab is carved and eviction runs.
    Cycles(*store, clock, 1000, 2000, payload, sum, keys, present);
    ASSERT_GT(store->Stats().evictions, 0u);
    kvhub::testing::StartCountingAllocations();
    Cycles(*store, clock, 100000, 5000, payload, sum, keys, present);
    EXPECT_EQ(kvhub::testing::StopCountingAllocations(), 0u) << policy << ": heap allocations on the data path";
    EXPECT_GT(store->Stats().evictions, 5000u);
  }
}

}  // namespace
}  // namespace kvhub::storage
