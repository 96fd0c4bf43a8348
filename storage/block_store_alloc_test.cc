// Shows that the data path does not touch the heap: global operator new is
// replaced in this binary by a counting one, and after warm-up N
// Reserve+Commit, Acquire+Release and Lookup cycles (with eviction) must make
// zero allocations.

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "gtest/gtest.h"
#include "storage/block_store.h"
#include "storage/block_store_test_util.h"

namespace {
std::atomic<uint64_t> g_allocs{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

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
    uint64_t before = g_allocs.load();
    Cycles(*store, clock, 100000, 5000, payload, sum, keys, present);
    uint64_t after = g_allocs.load();
    EXPECT_EQ(after - before, 0u) << policy << ": heap allocations on the data path";
    EXPECT_GT(store->Stats().evictions, 5000u);
  }
}

}  // namespace
}  // namespace kvhub::storage
