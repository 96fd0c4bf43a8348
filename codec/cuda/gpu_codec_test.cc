// GPU codec tests: bytes identical to the CPU codecs in both directions.
// Without a CUDA device every test SKIPs with the reason (never passes vacuously).
#include "codec/cuda/gpu_codec.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <random>

#include "codec/cuda/emulation.h"
#include "codec/numeric.h"

namespace kvhub::codec::cuda {
namespace {

#define REQUIRE_DEVICE()                                               \
  do {                                                                 \
    auto n = CudaDeviceCount();                                        \
    if (!n.ok()) GTEST_SKIP() << n.status().message();                 \
  } while (0)

// Host pages mirrored on the device.
struct Mirror {
  PagedShape shape;
  std::vector<std::vector<uint16_t>> hk, hv;
  std::vector<uint16_t*> dk, dv;
  std::vector<int32_t> ids;
  ~Mirror() {
    for (auto* p : dk) cudaFree(p);
    for (auto* p : dv) cudaFree(p);
  }
  PagedKv Host() {
    PagedKv p{shape, {}, {}};
    for (auto& x : hk) p.k.push_back(x.data());
    for (auto& x : hv) p.v.push_back(x.data());
    return p;
  }
  PagedKv Device() { return PagedKv{shape, dk, dv}; }
  void Upload() {
    for (size_t l = 0; l < hk.size(); ++l) {
      ASSERT_EQ(cudaMemcpy(dk[l], hk[l].data(), hk[l].size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dv[l], hv[l].data(), hv[l].size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  void Download() {
    for (size_t l = 0; l < hk.size(); ++l) {
      ASSERT_EQ(cudaMemcpy(hk[l].data(), dk[l], hk[l].size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(hv[l].data(), dv[l], hv[l].size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    }
  }
};

void Fill(Mirror* m, uint32_t layers, uint32_t pages, uint32_t pt, uint32_t heads, uint32_t dim,
          uint32_t tokens, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  m->shape = {pages, pt, heads, dim};
  const size_t n = m->shape.LayerElements();
  for (uint32_t l = 0; l < layers; ++l) {
    for (auto* v : {&m->hk, &m->hv}) {
      std::vector<uint16_t> x(n);
      for (size_t i = 0; i < n; ++i) {
        x[i] = FloatToBf16(nd(rng) * ((i % dim) % 13 == 1 ? 15.0f : 1.0f));
      }
      v->push_back(std::move(x));
    }
    for (auto* d : {&m->dk, &m->dv}) {
      void* p = nullptr;
      ASSERT_EQ(cudaMalloc(&p, n * 2), cudaSuccess);
      d->push_back(static_cast<uint16_t*>(p));
    }
  }
  std::vector<int32_t> all(pages);
  for (uint32_t i = 0; i < pages; ++i) all[i] = static_cast<int32_t>(i);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(PagesForTokens(tokens, pt));
  m->ids = all;
  m->Upload();
}

struct Case {
  CodecId codec;
  uint32_t layers, heads, dim, tokens, pt, group, sinks;
  int64_t base;
  bool pre_rope;
};

std::vector<Case> Cases() {
  std::vector<Case> v;
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    v.push_back({c, 2, 8, 128, 256, 16, 64, 1, 0, false});
    v.push_back({c, 1, 3, 37, 45, 7, 32, 4, 0, false});
    v.push_back({c, 2, 2, 64, 100, 16, 128, 1, 300, true});
  }
  return v;
}

PagedEncodeParams Params(const Case& k) {
  PagedEncodeParams p;
  p.codec.codec = k.codec;
  p.codec.group_size = k.group;
  p.codec.sink_tokens = k.sinks;
  p.codec.keys_pre_rope = k.pre_rope;
  p.layers = k.layers;
  p.tokens = k.tokens;
  p.base_position = k.base;
  p.rope_base = 500000.0;
  return p;
}

TEST(GpuCodecTest, EncodeFromPagesIsByteIdenticalToCpu) {
  REQUIRE_DEVICE();
  auto gpu = GpuCodec::Create();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  uint64_t seed = 1;
  for (const Case& k : Cases()) {
    SCOPED_TRACE(std::string(CodecName(k.codec)) + " D" + std::to_string(k.dim));
    Mirror m;
    Fill(&m, k.layers, PagesForTokens(k.tokens, k.pt) + 4, k.pt, k.heads, k.dim, k.tokens, seed++);
    std::vector<uint8_t> want, got;
    // The host emulation is checked against codec::Encode by emulation_test.
    ASSERT_TRUE(EmulateEncodeFromPages(m.Host(), m.ids, Params(k), &want).ok());
    ASSERT_TRUE((*gpu)->EncodeFromPages(m.Device(), m.ids, Params(k), &got).ok());
    EXPECT_EQ(got, want);
  }
}

TEST(GpuCodecTest, DecodeToPagesMatchesCpuIncludingRope) {
  REQUIRE_DEVICE();
  auto gpu = GpuCodec::Create();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  uint64_t seed = 50;
  for (const Case& k : Cases()) {
    Mirror src, a;
    const uint32_t pages = PagesForTokens(k.tokens, k.pt) + 4;
    Fill(&src, k.layers, pages, k.pt, k.heads, k.dim, k.tokens, seed++);
    Fill(&a, k.layers, pages, k.pt, k.heads, k.dim, k.tokens, seed++);
    std::vector<uint8_t> block;
    ASSERT_TRUE((*gpu)->EncodeFromPages(src.Device(), src.ids, Params(k), &block).ok());
    for (std::optional<int64_t> target : {std::optional<int64_t>(), std::optional<int64_t>(k.base + 777)}) {
      if (target && k.dim % 2) continue;
      DecodeOptions opt;
      opt.target_position = target;
      Mirror b;  // expected: host emulation (== codec::Decode, emulation_test) on a copy
      b.shape = a.shape;
      b.hk = a.hk;
      b.hv = a.hv;
      b.ids = a.ids;
      ASSERT_TRUE(EmulateDecodeToPages(block, b.Host(), b.ids, opt).ok());
      ASSERT_TRUE((*gpu)->DecodeToPages(block, a.Device(), a.ids, opt).ok());
      a.Download();
      EXPECT_EQ(a.hk, b.hk);
      EXPECT_EQ(a.hv, b.hv);
      a.Upload();
    }
  }
}

TEST(GpuCodecTest, CorruptBlockLeavesPagesUntouched) {
  REQUIRE_DEVICE();
  auto gpu = GpuCodec::Create();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  Mirror m;
  Fill(&m, 1, 8, 16, 2, 64, 64, 9);
  std::vector<uint8_t> block;
  ASSERT_TRUE((*gpu)->EncodeFromPages(m.Device(), m.ids, Params({CodecId::kKivi4, 1, 2, 64, 64, 16, 64, 1, 0, false}), &block).ok());
  block[block.size() / 2] ^= 4;
  auto before = m.hk;
  EXPECT_EQ((*gpu)->DecodeToPages(block, m.Device(), m.ids).code(), absl::StatusCode::kDataLoss);
  m.Download();
  EXPECT_EQ(m.hk, before);
}

TEST(GpuCodecTest, NoDeviceIsAClearError) {
  auto n = CudaDeviceCount();
  if (n.ok()) {
    auto bad = GpuCodec::Create(*n);  // one past the last device
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("no CUDA device"), std::string::npos);
  } else {
    EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(n.status().message().find("no CUDA device"), std::string::npos);
    EXPECT_FALSE(GpuCodec::Create().ok());
  }
}

}  // namespace
}  // namespace kvhub::codec::cuda
