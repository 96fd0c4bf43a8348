// GPU codec benchmark: encode+gather and decode+scatter GB/s per codec next to
// the device-to-device copy bandwidth of the same GPU in the same run.
// Bytes counted: encode = bf16 bytes read + encoded bytes written; decode =
// encoded bytes read + bf16 bytes written; copy = bytes read + bytes written.
// Times are wall clock around synchronous calls (metadata upload and launch
// overhead included), best of --iters. Usage:
//   kvhub_gpu_bench [--layers 32 --heads 8 --dim 128 --tokens 256 --page_tokens 16 --iters 20]
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/cuda/gpu_codec.h"
#include "codec/numeric.h"

using namespace kvhub::codec;
using namespace kvhub::codec::cuda;

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#define CK(x)                                                                 \
  do {                                                                        \
    cudaError_t e_ = (x);                                                     \
    if (e_ != cudaSuccess) {                                                  \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));           \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  uint32_t layers = 32, heads = 8, dim = 128, tokens = 256, pt = 16, iters = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    uint32_t v = static_cast<uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    if (a == "--layers") layers = v;
    else if (a == "--heads") heads = v;
    else if (a == "--dim") dim = v;
    else if (a == "--tokens") tokens = v;
    else if (a == "--page_tokens") pt = v;
    else if (a == "--iters") iters = v;
    else { std::fprintf(stderr, "unknown flag %s\n", a.c_str()); return 2; }
  }
  auto gpu = GpuCodec::Create();
  if (!gpu.ok()) {
    std::fprintf(stderr, "%s\n", std::string(gpu.status().message()).c_str());
    return 1;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const uint32_t block_pages = PagesForTokens(tokens, pt);
  const uint32_t pages = block_pages * 4;
  PagedShape shape{pages, pt, heads, dim};
  const size_t layer_bytes = shape.LayerElements() * 2;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> host(shape.LayerElements());
  for (auto& x : host) x = kvhub::codec::FloatToBf16(nd(rng));
  PagedKv src{shape, {}, {}}, dst{shape, {}, {}};
  for (uint32_t l = 0; l < layers; ++l) {
    for (auto* v : {&src.k, &src.v, &dst.k, &dst.v}) {
      void* p;
      CK(cudaMalloc(&p, layer_bytes));
      CK(cudaMemcpy(p, host.data(), layer_bytes, cudaMemcpyHostToDevice));
      v->push_back(static_cast<uint16_t*>(p));
    }
  }
  std::vector<int32_t> all(pages);
  for (uint32_t i = 0; i < pages; ++i) all[i] = static_cast<int32_t>(i);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<int32_t> ids(all.begin(), all.begin() + block_pages);
  std::vector<int32_t> ids2(all.begin() + block_pages, all.begin() + 2 * block_pages);
  const double raw = 2.0 * layers * tokens * heads * dim * 2;

  // Device-to-device copy of the block's raw size.
  void *ca, *cb;
  CK(cudaMalloc(&ca, static_cast<size_t>(raw)));
  CK(cudaMalloc(&cb, static_cast<size_t>(raw)));
  CK(cudaMemset(ca, 1, static_cast<size_t>(raw)));
  double best_copy = 1e30;
  for (uint32_t i = 0; i < iters; ++i) {
    double t0 = Now();
    CK(cudaMemcpy(cb, ca, static_cast<size_t>(raw), cudaMemcpyDeviceToDevice));
    CK(cudaDeviceSynchronize());
    best_copy = std::min(best_copy, Now() - t0);
  }
  const double copy_gbs = 2.0 * raw / best_copy / 1e9;
  std::printf("device: %s  block: %u layers x %u heads x %u dim x %u tokens (%.1f MiB bf16), pages of %u tokens\n",
              prop.name, layers, heads, dim, tokens, raw / 1048576.0, pt);
  std::printf("%-14s %10s %12s %8s %12s %8s\n", "codec", "enc MiB", "encode GB/s", "% copy",
              "decode GB/s", "% copy");
  std::printf("%-14s %10s %12.1f %8s %12.1f %8s\n", "d2d copy", "-", copy_gbs, "100", copy_gbs, "100");
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    for (bool rope : {false, true}) {
      if (rope && c != CodecId::kKivi4) continue;
      PagedEncodeParams p;
      p.codec.codec = c;
      p.layers = layers;
      p.tokens = tokens;
      p.base_position = 4096;
      p.rope_base = 500000.0;
      double best_enc = 1e30, best_dec = 1e30;
      std::vector<uint8_t> block;
      auto st = (*gpu)->EncodeFromPages(src, ids, p, &block);
      if (!st.ok()) {
        std::fprintf(stderr, "encode %s: %s\n", std::string(CodecName(c)).c_str(), std::string(st.message()).c_str());
        return 1;
      }
      for (uint32_t i = 0; i < iters; ++i) {
        double t0 = Now();
        auto plan = (*gpu)->EncodeOnDevice(src, ids, p);
        best_enc = std::min(best_enc, Now() - t0);
        if (!plan.ok()) return 1;
      }
      DecodeOptions opt;
      if (rope) opt.target_position = 8192;
      auto plan = PlanDecode(block, opt);
      if (!plan.ok()) return 1;
      // The encoded block stays resident on the device (copied once).
      void* dblock_v;
      CK(cudaMalloc(&dblock_v, block.size()));
      uint8_t* dblock = static_cast<uint8_t*>(dblock_v);
      CK(cudaMemcpy(dblock, block.data(), block.size(), cudaMemcpyHostToDevice));
      for (uint32_t i = 0; i < iters; ++i) {
        double t0 = Now();
        auto s = (*gpu)->DecodeOnDevice(*plan, dblock, dst, ids2);
        best_dec = std::min(best_dec, Now() - t0);
        if (!s.ok()) return 1;
      }
      CK(cudaFree(dblock));
      const double enc = static_cast<double>(block.size());
      const double eg = (raw + enc) / best_enc / 1e9, dg = (raw + enc) / best_dec / 1e9;
      std::string name = std::string(CodecName(c)) + (rope ? "+rope" : "");
      std::printf("%-14s %10.2f %12.1f %8.0f %12.1f %8.0f\n", name.c_str(), enc / 1048576.0, eg,
                  100 * eg / copy_gbs, dg, 100 * dg / copy_gbs);
    }
  }
  std::printf("targets: kivi4 decode+scatter >= 50%% of copy, encode+gather >= 40%%\n");
  return 0;
}
