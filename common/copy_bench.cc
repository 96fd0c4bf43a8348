// Large copies as the data paths make them: 1 MiB blocks from a source much
// larger than the last-level cache (256 MiB, cold) into one of eight 1 MiB
// destinations per thread (the caller's buffers). memcpy in one call vs
// CopyBytes (64 KiB pieces) vs CopyAndXxh3_64 (pieces, each hashed as it lands).
//
//   build/bin/kvhub_copy_bench --benchmark_min_time=1
//
// Compare the rows of one run; these machines are noisy.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/copy.h"
#include "common/hash.h"

namespace kvhub {
namespace {

constexpr size_t kBlock = size_t{1} << 20;
constexpr size_t kSource = size_t{256} << 20;
constexpr size_t kDestBlocks = 8;

uint8_t* Source() {
  static uint8_t* src = [] {
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, kSource));
    for (size_t i = 0; i < kSource; ++i) p[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
    return p;
  }();
  return src;
}

enum class Way { kMemcpy, kCopyBytes, kCopyAndHash };

void Copy(benchmark::State& state, Way way) {
  const uint8_t* src = Source();
  auto* dst = static_cast<uint8_t*>(std::aligned_alloc(4096, kDestBlocks * kBlock));
  std::memset(dst, 0, kDestBlocks * kBlock);
  // Threads start on different source blocks and walk the whole source.
  size_t i = static_cast<size_t>(state.thread_index()) * 97;
  uint64_t sink = 0;
  for (auto _ : state) {
    uint8_t* d = dst + (i % kDestBlocks) * kBlock;
    const uint8_t* s = src + (i % (kSource / kBlock)) * kBlock;
    switch (way) {
      case Way::kMemcpy: std::memcpy(d, s, kBlock); break;
      case Way::kCopyBytes: CopyBytes(d, s, kBlock); break;
      case Way::kCopyAndHash: sink += CopyAndXxh3_64(d, s, kBlock); break;
    }
    benchmark::DoNotOptimize(d);
    ++i;
  }
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
  std::free(dst);
}

void BM_Memcpy1MiB(benchmark::State& state) { Copy(state, Way::kMemcpy); }
void BM_CopyBytes1MiB(benchmark::State& state) { Copy(state, Way::kCopyBytes); }
void BM_CopyAndXxh3_1MiB(benchmark::State& state) { Copy(state, Way::kCopyAndHash); }

BENCHMARK(BM_Memcpy1MiB)->Threads(1)->Threads(4)->UseRealTime();
BENCHMARK(BM_CopyBytes1MiB)->Threads(1)->Threads(4)->UseRealTime();
BENCHMARK(BM_CopyAndXxh3_1MiB)->Threads(1)->Threads(4)->UseRealTime();

}  // namespace
}  // namespace kvhub

BENCHMARK_MAIN();
