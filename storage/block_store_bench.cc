// Google Benchmark for the host tier (not run by ctest):
//   ninja -C build-storage kvhub_storage_bench && build-storage/bin/kvhub_storage_bench
// Lookup is reported in keys/s (items_per_second) at batch 256; Put and
// Acquire+Release in ops/s.

#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "common/hash.h"
#include "storage/block_store.h"

namespace kvhub::storage {
namespace {

BlockKey Key(uint64_t i) { return BlockKey{i * 0x9e3779b97f4a7c15ull + 1, i ^ 0x5555}; }

// 256 MiB store of 4 KiB blocks holding `blocks` committed blocks.
std::unique_ptr<BlockStore> MakeStore(const char* policy, uint64_t blocks) {
  BlockStoreConfig c;
  c.capacity_bytes = 256ull << 20;
  c.region_bytes = 64ull << 20;
  c.max_block_bytes = 1ull << 20;
  c.min_block_bytes = 4096;
  c.eviction.name = policy;
  c.max_leases = 1 << 16;
  c.populate = true;  // fault pages in at Create, outside the timed loops
  auto s = BlockStore::Create(c);
  if (!s.ok()) abort();
  std::vector<uint8_t> payload(4096, 7);
  uint64_t sum = Xxh3_64(payload.data(), payload.size());
  for (uint64_t i = 0; i < blocks; ++i) {
    if (!(*s)->Put("bench", Key(i), payload, sum).ok()) abort();
  }
  return *std::move(s);
}

std::unique_ptr<BlockStore>& Shared(const char* policy) {
  static std::unique_ptr<BlockStore> s3 = MakeStore("s3fifo", 50000);
  static std::unique_ptr<BlockStore> lru = MakeStore("lru", 50000);
  return policy[0] == 's' ? s3 : lru;
}

template <int kPolicy>
void BM_Lookup256(benchmark::State& state) {
  const char* policy = kPolicy == 0 ? "s3fifo" : "lru";
  BlockStore& store = *Shared(policy);
  std::vector<BlockKey> keys(256);
  std::vector<uint8_t> present(256);
  uint64_t base = 1000 * static_cast<uint64_t>(state.thread_index());
  const bool hits = state.range(0) != 0;
  for (auto _ : state) {
    for (size_t i = 0; i < keys.size(); ++i) {
      keys[i] = Key(hits ? (base + i) % 50000 : 1000000 + base + i);
    }
    base = (base + 256) % 50000;
    benchmark::DoNotOptimize(store.Lookup("bench", keys, present));
  }
  state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK_TEMPLATE(BM_Lookup256, 0)->Arg(1)->Arg(0)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Lookup256, 1)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();

// Reserve + copy 4 KiB + Commit (checksum), with eviction once the store is full.
void BM_Put4K(benchmark::State& state) {
  auto store = MakeStore(state.range(0) == 0 ? "s3fifo" : "lru", 0);
  std::vector<uint8_t> payload(4096, 3);
  uint64_t sum = Xxh3_64(payload.data(), payload.size());
  uint64_t i = 0;
  for (auto _ : state) {
    if (!store->Put("bench", Key(i++), payload, sum).ok()) abort();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["evictions"] = static_cast<double>(store->Stats().evictions);
}
BENCHMARK(BM_Put4K)->Arg(0)->Arg(1)->Iterations(400000);

void BM_AcquireRelease(benchmark::State& state) {
  BlockStore& store = *Shared("s3fifo");
  uint64_t i = 0;
  for (auto _ : state) {
    auto l = store.Acquire("bench", Key(i++ % 50000));
    if (!l.ok() || !store.Release(l->id).ok()) abort();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AcquireRelease)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace kvhub::storage

BENCHMARK_MAIN();
