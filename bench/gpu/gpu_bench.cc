// GPU codec benchmark: encode+gather and decode+scatter GB/s per codec next to
// the device-to-device copy bandwidth of the same GPU in the same run.
//
// Bytes counted: encode = bf16 bytes read + encoded bytes written; decode =
// encoded bytes read + bf16 bytes written; copy = bytes read + bytes written.
// Two views of each, both medians over --iters calls:
//   call:   wall clock around one synchronous GpuCodec call (planning,
//           metadata upload, launches and the final synchronization
//           included), next to one synchronous cudaMemcpy of the block's bf16
//           size;
//   kernel: CUDA events around the codec's kernels of the same call
//           (GpuCodec::last_kernel_seconds), next to a --copy_mib
//           device-to-device copy timed with CUDA events. A copy of the
//           block's size timed the same way is printed above the table.
// Every call works on a different block (--blocks rotating page sets and
// encoded blocks, inputs never zero) so repeated calls do not run out of L2.
// Usage:
//   kvhub_gpu_bench [--layers 32 --heads 8 --dim 128 --tokens 256 --page_tokens 16
//                    --iters 50 --blocks 8 --copy_mib 1024 --codec fp8|int8|kivi4|kivi2]
#include <cuda_runtime_api.h>

#include <algorithm>
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

#define CK(x)                                                       \
  do {                                                              \
    cudaError_t e_ = (x);                                           \
    if (e_ != cudaSuccess) {                                        \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                 \
    }                                                               \
  } while (0)

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median wall-clock and device seconds of `call` (run `iters` times after 3
// warm-ups, with argument 0, 1, 2, ...), events recorded on `stream`.
template <typename F>
void Time(cudaStream_t stream, uint32_t iters, F call, double* wall, double* device) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (uint32_t i = 0; i < 3; ++i) call(i);
  std::vector<double> w, d;
  for (uint32_t i = 0; i < iters; ++i) {
    CK(cudaStreamSynchronize(stream));
    double t0 = Now();
    CK(cudaEventRecord(a, stream));
    call(i);
    CK(cudaEventRecord(b, stream));
    CK(cudaEventSynchronize(b));
    w.push_back(Now() - t0);
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    d.push_back(ms / 1e3);
  }
  *wall = Median(w);
  *device = Median(d);
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t layers = 32, heads = 8, dim = 128, tokens = 256, pt = 16, iters = 50, blocks = 8,
           copy_mib = 1024;
  std::string only;  // --codec: one codec instead of all
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--codec") {
      only = argv[i + 1];
      if (only != "fp8" && only != "int8" && only != "kivi4" && only != "kivi2") {
        std::fprintf(stderr, "--codec: '%s' is not one of fp8, int8, kivi4, kivi2\n", only.c_str());
        return 2;
      }
      continue;
    }
    char* end = nullptr;
    unsigned long v = std::strtoul(argv[i + 1], &end, 10);
    if (*argv[i + 1] == '\0' || *end != '\0' || v == 0 || v > (1ul << 20)) {
      std::fprintf(stderr, "%s: '%s' is not a count in 1 .. 2^20\n", a.c_str(), argv[i + 1]);
      return 2;
    }
    uint32_t* dst = a == "--layers" ? &layers : a == "--heads" ? &heads : a == "--dim" ? &dim
                  : a == "--tokens" ? &tokens : a == "--page_tokens" ? &pt : a == "--iters" ? &iters
                  : a == "--blocks" ? &blocks : a == "--copy_mib" ? &copy_mib : nullptr;
    if (dst == nullptr) {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
    *dst = static_cast<uint32_t>(v);
  }
  auto tiled = GpuCodec::Create();
  if (!tiled.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tiled.status().message()).c_str());
    return 1;
  }
  GpuCodec::Options element_options;
  element_options.kivi_tiles = false;
  auto element = GpuCodec::Create(0, element_options);
  if (!element.ok()) {
    std::fprintf(stderr, "%s\n", std::string(element.status().message()).c_str());
    return 1;
  }
  cudaStream_t stream = static_cast<cudaStream_t>((*tiled)->stream());
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const uint32_t block_pages = PagesForTokens(tokens, pt);
  const uint32_t pages = block_pages * blocks;
  PagedShape shape{pages, pt, heads, dim};
  const size_t layer_bytes = shape.LayerElements() * 2;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> host(shape.LayerElements());
  // Key-like data: a few outlier channels, never all zero.
  for (size_t i = 0; i < host.size(); ++i) {
    host[i] = kvhub::codec::FloatToBf16(nd(rng) * ((i % dim) % 29 == 3 ? 12.0f : 1.0f));
  }
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
  std::vector<std::vector<int32_t>> ids(blocks);
  for (uint32_t b = 0; b < blocks; ++b) {
    ids[b].assign(all.begin() + b * block_pages, all.begin() + (b + 1) * block_pages);
  }
  const double raw = 2.0 * layers * tokens * heads * dim * 2;

  // Copies: the block's size per synchronous call, and a large one for the
  // device bandwidth (source and destination rotate through `blocks` slots).
  const size_t big = size_t{copy_mib} << 20;
  void *ca, *cb, *sa, *sb;
  CK(cudaMalloc(&ca, big));
  CK(cudaMalloc(&cb, big));
  CK(cudaMemset(ca, 1, big));
  CK(cudaMalloc(&sa, static_cast<size_t>(raw) * blocks));
  CK(cudaMalloc(&sb, static_cast<size_t>(raw) * blocks));
  CK(cudaMemset(sa, 1, static_cast<size_t>(raw) * blocks));
  double copy_wall, copy_dev, unused;
  Time(stream, iters, [&](uint32_t i) {
    const size_t off = static_cast<size_t>(raw) * (i % blocks);
    CK(cudaMemcpyAsync(static_cast<char*>(sb) + off, static_cast<char*>(sa) + off,
                       static_cast<size_t>(raw), cudaMemcpyDeviceToDevice, stream));
    CK(cudaStreamSynchronize(stream));
  }, &copy_wall, &unused);
  Time(stream, iters, [&](uint32_t) {
    CK(cudaMemcpyAsync(cb, ca, big, cudaMemcpyDeviceToDevice, stream));
  }, &unused, &copy_dev);
  double copy_block_dev;  // the block's size, events, rotating slots
  Time(stream, iters, [&](uint32_t i) {
    const size_t off = static_cast<size_t>(raw) * (i % blocks);
    CK(cudaMemcpyAsync(static_cast<char*>(sb) + off, static_cast<char*>(sa) + off,
                       static_cast<size_t>(raw), cudaMemcpyDeviceToDevice, stream));
  }, &unused, &copy_block_dev);
  const double copy_call = 2.0 * raw / copy_wall / 1e9, copy_big = 2.0 * big / copy_dev / 1e9;
  std::printf("device: %s (%d SMs)  block: %u layers x %u heads x %u dim x %u tokens (%.1f MiB bf16), "
              "pages of %u tokens, %u blocks rotating\n",
              prop.name, prop.multiProcessorCount, layers, heads, dim, tokens, raw / 1048576.0, pt,
              blocks);
  std::printf("call: per synchronous call, vs a %.1f MiB cudaMemcpy + sync; kern: the kernels "
              "(CUDA events), vs a %u MiB copy (CUDA events); medians of %u\n",
              raw / 1048576.0, copy_mib, iters);
  std::printf("copy of the block's size timed with CUDA events: %.1f GB/s\n", 2.0 * raw / copy_block_dev / 1e9);
  std::printf("%-11s %7s | %9s %6s %9s %6s | %9s %6s %9s %6s\n", "", "", "encode", "", "", "",
              "decode", "", "", "");
  std::printf("%-11s %7s | %9s %6s %9s %6s | %9s %6s %9s %6s\n", "codec", "enc MiB", "call GB/s",
              "% copy", "kern GB/s", "% copy", "call GB/s", "% copy", "kern GB/s", "% copy");
  std::printf("%-11s %7s | %9.1f %6s %9.1f %6s | %9.1f %6s %9.1f %6s\n", "d2d copy", "-", copy_call,
              "100", copy_big, "100", copy_call, "100", copy_big, "100");
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    for (int variant = 0; variant < 4; ++variant) {
      const bool rope = variant & 1, elem = variant & 2;
      const bool kivi = c == CodecId::kKivi4 || c == CodecId::kKivi2;
      if ((rope && c != CodecId::kKivi4) || (elem && !kivi)) continue;
      if (!only.empty() && only != CodecName(c)) continue;
      GpuCodec* gpu = elem ? element->get() : tiled->get();
      stream = static_cast<cudaStream_t>(gpu->stream());
      PagedEncodeParams p;
      p.codec.codec = c;
      p.layers = layers;
      p.tokens = tokens;
      p.base_position = 4096;
      p.rope_base = 500000.0;
      // One encoded block per page set, resident on the device for decode.
      std::vector<std::vector<uint8_t>> enc(blocks);
      std::vector<uint8_t*> dblock(blocks);
      std::vector<BlockPlan> plans;
      DecodeOptions opt;
      if (rope) opt.target_position = 8192;
      for (uint32_t b = 0; b < blocks; ++b) {
        auto st = gpu->EncodeFromPages(src, ids[b], p, &enc[b]);
        if (!st.ok()) {
          std::fprintf(stderr, "encode %s: %s\n", std::string(CodecName(c)).c_str(),
                       std::string(st.message()).c_str());
          return 1;
        }
        auto plan = PlanDecode(enc[b], opt);
        if (!plan.ok()) return 1;
        plans.push_back(*plan);
        void* d;
        CK(cudaMalloc(&d, enc[b].size()));
        CK(cudaMemcpy(d, enc[b].data(), enc[b].size(), cudaMemcpyHostToDevice));
        dblock[b] = static_cast<uint8_t*>(d);
      }
      double ew, ed, dw, dd, unused_dev;
      std::vector<double> ek, dk;
      Time(stream, iters, [&](uint32_t i) {
        auto plan = gpu->EncodeOnDevice(src, ids[i % blocks], p);
        if (!plan.ok()) std::exit(1);
        ek.push_back(gpu->last_kernel_seconds());
      }, &ew, &unused_dev);
      Time(stream, iters, [&](uint32_t i) {
        const uint32_t b = i % blocks;
        if (!gpu->DecodeOnDevice(plans[b], dblock[b], dst, ids[(b + 1) % blocks]).ok()) std::exit(1);
        dk.push_back(gpu->last_kernel_seconds());
      }, &dw, &unused_dev);
      ed = Median(ek);
      dd = Median(dk);
      // All `blocks` blocks in one EncodeManyOnDevice call (one prompt
      // published) and one DecodeManyOnDevice call (one prefix fetched).
      double bw = 0, bd = 0, ebw = 0, ebd = 0;
      if (!elem && blocks > 1) {
        std::vector<absl::Span<const int32_t>> src_ids(ids.begin(), ids.end());
        std::vector<PagedEncodeParams> many_params(blocks, p);
        std::vector<double> ebk;
        Time(stream, iters, [&](uint32_t) {
          if (!gpu->EncodeManyOnDevice(src, src_ids, many_params).ok()) std::exit(1);
          ebk.push_back(gpu->last_kernel_seconds());
        }, &ebw, &unused_dev);
        ebd = Median(ebk);
      }
      if (!elem && blocks > 1) {
        std::vector<const uint8_t*> cblocks(dblock.begin(), dblock.end());
        std::vector<absl::Span<const int32_t>> dst_ids;
        for (uint32_t b = 0; b < blocks; ++b) dst_ids.push_back(ids[(b + 1) % blocks]);
        std::vector<double> bk;
        Time(stream, iters, [&](uint32_t) {
          if (!gpu->DecodeManyOnDevice(plans, cblocks, dst, dst_ids).ok()) std::exit(1);
          bk.push_back(gpu->last_kernel_seconds());
        }, &bw, &unused_dev);
        bd = Median(bk);
      }
      for (uint8_t* d : dblock) CK(cudaFree(d));
      const double bytes = raw + static_cast<double>(enc[0].size());
      std::string name = std::string(CodecName(c)) + (rope ? "+rope" : "") + (elem ? " elem" : "");
      auto pct = [](double x, double y) { return 100.0 * x / y; };
      std::printf("%-11s %7.2f | %9.1f %6.0f %9.1f %6.0f | %9.1f %6.0f %9.1f %6.0f\n", name.c_str(),
                  enc[0].size() / 1048576.0, bytes / ew / 1e9, pct(bytes / ew / 1e9, copy_call),
                  bytes / ed / 1e9, pct(bytes / ed / 1e9, copy_big), bytes / dw / 1e9,
                  pct(bytes / dw / 1e9, copy_call), bytes / dd / 1e9, pct(bytes / dd / 1e9, copy_big));
      if (bd > 0) {
        const double many = bytes * blocks;
        const std::string bname = name + " x" + std::to_string(blocks);
        std::printf("%-11s %7s | %9.1f %6.0f %9.1f %6.0f | %9.1f %6.0f %9.1f %6.0f\n", bname.c_str(), "",
                    many / ebw / 1e9, pct(many / ebw / 1e9, copy_call), many / ebd / 1e9,
                    pct(many / ebd / 1e9, copy_big), many / bw / 1e9, pct(many / bw / 1e9, copy_call),
                    many / bd / 1e9, pct(many / bd / 1e9, copy_big));
      }
    }
  }
  std::printf("elem: the per-element kivi kernels (GpuCodec::Options::kivi_tiles = false); "
              "xN: N blocks in one EncodeManyOnDevice / DecodeManyOnDevice call\n");
  std::printf("targets: kivi4 decode+scatter >= 50%% of copy, encode+gather >= 40%%\n");
  return 0;
}
