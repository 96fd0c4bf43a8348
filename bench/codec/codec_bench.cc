// Encode/decode throughput per codec, in GB/s of bf16 input, one thread (per core).
// Block: 256 tokens of a Llama-3-8B-like model (32 layers x 8 KV heads x 128 dims,
// bf16, 32 MiB raw), synthetic KV from codec/synthetic_kv.h.
//   kvhub_codec_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// bytes_per_second is computed from CPU time (per core); Time is wall time.

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec/kernels.h"
#include "codec/synthetic_kv.h"

namespace kvhub::codec {
namespace {

const SyntheticKv& Data(uint32_t layers) {
  static SyntheticKv* d32 = nullptr;
  static SyntheticKv* d2 = nullptr;
  SyntheticKv*& d = layers == 32 ? d32 : d2;
  if (d == nullptr) {
    SyntheticKvConfig c;
    c.layers = layers;
    auto g = GenerateSyntheticKv(c);
    if (!g.ok()) {
      std::fprintf(stderr, "%s\n", g.status().ToString().c_str());
      std::abort();
    }
    d = new SyntheticKv(std::move(*g));
  }
  return *d;
}

CodecParams P(int codec, int group, int scalar) {
  CodecParams p;
  p.codec = static_cast<CodecId>(codec);
  p.group_size = static_cast<uint32_t>(group);
  p.kernels = scalar ? KernelChoice::kScalar : KernelChoice::kSimd;
  return p;
}

void Label(benchmark::State& st, const CodecParams& p, uint32_t layers) {
  std::string l = std::string(CodecName(p.codec));
  if (p.codec == CodecId::kKivi4 || p.codec == CodecId::kKivi2) l += "/g" + std::to_string(p.group_size);
  l += p.kernels == KernelChoice::kScalar ? "/scalar" : "/simd";
  l += "/L" + std::to_string(layers);
  st.SetLabel(l);
}

// Args: codec id, group, scalar, layers.
void BM_Encode(benchmark::State& st) {
  const uint32_t layers = static_cast<uint32_t>(st.range(3));
  const SyntheticKv& d = Data(layers);
  KvView v = d.View(500000.0, RopePairing::kNeox);
  CodecParams p = P(static_cast<int>(st.range(0)), static_cast<int>(st.range(1)),
                    static_cast<int>(st.range(2)));
  std::vector<uint8_t> out;
  for (auto _ : st) {
    absl::Status s = Encode(v, p, &out);
    if (!s.ok()) st.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(v.size));
  st.counters["ratio"] = double(v.size) / double(out.size());
  Label(st, p, layers);
}

void BM_Decode(benchmark::State& st) {
  const uint32_t layers = static_cast<uint32_t>(st.range(3));
  const SyntheticKv& d = Data(layers);
  KvView v = d.View(500000.0, RopePairing::kNeox);
  CodecParams p = P(static_cast<int>(st.range(0)), static_cast<int>(st.range(1)),
                    static_cast<int>(st.range(2)));
  std::vector<uint8_t> block;
  if (absl::Status s = Encode(v, p, &block); !s.ok()) {
    st.SkipWithError(s.ToString().c_str());
    return;
  }
  std::vector<uint8_t> out(v.size);
  DecodeOptions o;
  o.kernels = p.kernels;
  for (auto _ : st) {
    absl::Status s = Decode(block, KvMutableView{v.shape, out.data(), out.size()}, o);
    if (!s.ok()) st.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(v.size));
  Label(st, p, layers);
}

void Args(benchmark::internal::Benchmark* b) {
  for (int layers : {32}) {
    for (int scalar : {0, 1}) {
      b->Args({1, 0, scalar, layers});   // raw
      b->Args({2, 0, scalar, layers});   // lossless
      b->Args({3, 0, scalar, layers});   // fp8
      b->Args({4, 0, scalar, layers});   // int8
      for (int g : {32, 64, 128}) {
        if (scalar && g != 64) continue;
        b->Args({5, g, scalar, layers});  // kivi4
        b->Args({6, g, scalar, layers});  // kivi2
      }
    }
  }
  // GB/s from CPU time: the per-core figure, robust on a shared machine
  // (wall time is printed too).
  b->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Encode)->Apply(Args);
BENCHMARK(BM_Decode)->Apply(Args);

}  // namespace
}  // namespace kvhub::codec

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("simd_target", kvhub::codec::SimdKernels().name);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
