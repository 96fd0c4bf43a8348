// GPU codec tests: blocks byte-identical to codec::Encode, pages identical to
// codec::Decode (so the CPU decodes GPU-encoded blocks and the GPU decodes
// CPU-encoded ones), through both the tiled and the element kivi kernels.
// Without a CUDA device every test SKIPs with the reason (never passes vacuously).
#include "codec/cuda/gpu_codec.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>

#include "codec/codec.h"
#include "codec/cuda/paged_test_util.h"

namespace kvhub::codec::cuda {
namespace {

#define REQUIRE_DEVICE()                                   \
  do {                                                     \
    auto n = CudaDeviceCount();                            \
    if (!n.ok()) GTEST_SKIP() << n.status().message();     \
  } while (0)

constexpr uint16_t kSentinel = 0x7E7E;

// Device copy of a HostCache (same shape, same page contents).
class DeviceCache {
 public:
  explicit DeviceCache(const HostCache& h) : shape_(h.shape) {
    for (auto* layers : {&h.k, &h.v}) {
      for (const auto& x : *layers) {
        void* p = nullptr;
        ok_ = ok_ && cudaMalloc(&p, x.size() * 2) == cudaSuccess &&
              cudaMemcpy(p, x.data(), x.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess;
        (layers == &h.k ? k_ : v_).push_back(static_cast<uint16_t*>(p));
      }
    }
  }
  ~DeviceCache() {
    for (auto* p : k_) cudaFree(p);
    for (auto* p : v_) cudaFree(p);
  }
  DeviceCache(const DeviceCache&) = delete;
  DeviceCache& operator=(const DeviceCache&) = delete;

  bool ok() const { return ok_; }
  PagedKv View() const { return PagedKv{shape_, k_, v_}; }
  // Copies the device pages back into *h (same shape).
  bool Download(HostCache* h) const {
    bool ok = true;
    for (size_t l = 0; l < k_.size(); ++l) {
      ok = ok && cudaMemcpy(h->k[l].data(), k_[l], h->k[l].size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess;
      ok = ok && cudaMemcpy(h->v[l].data(), v_[l], h->v[l].size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess;
    }
    return ok;
  }

 private:
  PagedShape shape_;
  std::vector<uint16_t*> k_, v_;
  bool ok_ = true;
};

void FillSentinel(HostCache* h) {
  for (auto* layers : {&h->k, &h->v}) {
    for (auto& x : *layers) std::fill(x.begin(), x.end(), kSentinel);
  }
}

size_t CountSentinels(const HostCache& h) {
  size_t n = 0;
  for (const auto* layers : {&h.k, &h.v}) {
    for (const auto& x : *layers) n += std::count(x.begin(), x.end(), kSentinel);
  }
  return n;
}

class GpuCodecTest : public testing::TestWithParam<bool> {
 protected:
  std::unique_ptr<GpuCodec> Codec() {
    GpuCodec::Options o;
    o.kivi_tiles = GetParam();
    auto gpu = GpuCodec::Create(0, o);
    EXPECT_TRUE(gpu.ok()) << gpu.status();
    return gpu.ok() ? std::move(*gpu) : nullptr;
  }
};

TEST_P(GpuCodecTest, EncodeFromPagesIsByteIdenticalToCpuEncode) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  uint64_t seed = 1;
  for (const Case& k : Cases()) {
    SCOPED_TRACE(Name(k));
    const uint32_t pages = PagesForTokens(k.tokens, k.page_tokens) + 5;
    HostCache host = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    DeviceCache dev(host);
    ASSERT_TRUE(dev.ok());
    const PagedEncodeParams p = Params(k);
    std::vector<uint8_t> raw = Gather(host, k.tokens), want, got;
    ASSERT_TRUE(Encode(ViewOf(k, p, raw), p.codec, &want).ok());
    // Encode once to size the device block, poison it, encode again: every
    // byte of the result must have been written by this call.
    ASSERT_TRUE(gpu->EncodeFromPages(dev.View(), host.page_ids, p, &got).ok());
    ASSERT_EQ(cudaMemset(gpu->device_block(), 0xA5, want.size()), cudaSuccess);
    ASSERT_TRUE(gpu->EncodeFromPages(dev.View(), host.page_ids, p, &got).ok());
    ASSERT_EQ(got.size(), want.size());
    size_t first = 0;
    while (first < got.size() && got[first] == want[first]) ++first;
    EXPECT_EQ(first, got.size()) << "first differing byte " << first;
  }
}

TEST_P(GpuCodecTest, DecodeToPagesMatchesCpuDecodeIncludingRope) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  uint64_t seed = 100;
  for (const Case& k : Cases()) {
    const uint32_t pages = PagesForTokens(k.tokens, k.page_tokens) + 3;
    HostCache src = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    const PagedEncodeParams p = Params(k);
    std::vector<uint8_t> raw = Gather(src, k.tokens), block;
    ASSERT_TRUE(Encode(ViewOf(k, p, raw), p.codec, &block).ok());
    std::vector<std::optional<int64_t>> targets = {std::nullopt, k.base + 1000};
    if (k.dim % 2 == 0) targets.push_back(k.base + 3);
    for (const auto& target : targets) {
      SCOPED_TRACE(Name(k) + " target " + (target ? std::to_string(*target) : "none"));
      DecodeOptions opt;
      opt.target_position = target;
      KvShape sh{k.layers, k.heads, k.dim, k.tokens, DType::kBf16};
      std::vector<uint8_t> want(sh.RawBytes());
      absl::Status cpu = Decode(block, KvMutableView{sh, want.data(), want.size()}, opt);
      // A destination with another page assignment, sentinels everywhere:
      // only the block's token slots may change.
      HostCache dst = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
      FillSentinel(&dst);
      DeviceCache dev(dst);
      ASSERT_TRUE(dev.ok());
      absl::Status g = gpu->DecodeToPages(block, dev.View(), dst.page_ids, opt);
      ASSERT_EQ(cpu.ok(), g.ok()) << cpu << " vs " << g;
      if (!cpu.ok()) continue;
      ASSERT_TRUE(dev.Download(&dst));
      EXPECT_EQ(Gather(dst, k.tokens), want);
      const size_t total = 2ull * k.layers * dst.shape.LayerElements();
      const size_t written = 2ull * k.layers * k.tokens * k.heads * k.dim;
      size_t sentinel_in_block = 0;
      for (size_t i = 0; i + 1 < want.size(); i += 2) {
        sentinel_in_block += (want[i] | (want[i + 1] << 8)) == kSentinel;
      }
      EXPECT_EQ(CountSentinels(dst), total - written + sentinel_in_block);
    }
  }
}

TEST_P(GpuCodecTest, CorruptBlockLeavesPagesUntouched) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  Case k{CodecId::kKivi4, 1, 2, 64, 64, 16, 64, 1, 0, false, RopePairing::kNeox};
  HostCache host = MakeCache(1, 8, 16, 2, 64, 64, 9);
  DeviceCache dev(host);
  ASSERT_TRUE(dev.ok());
  std::vector<uint8_t> block;
  ASSERT_TRUE(gpu->EncodeFromPages(dev.View(), host.page_ids, Params(k), &block).ok());
  block[block.size() / 2] ^= 4;
  EXPECT_EQ(gpu->DecodeToPages(block, dev.View(), host.page_ids).code(), absl::StatusCode::kDataLoss);
  HostCache after = host;
  ASSERT_TRUE(dev.Download(&after));
  EXPECT_EQ(after.k, host.k);
  EXPECT_EQ(after.v, host.v);
}

// Non-finite input is refused by both kernel paths, as by the CPU codec.
TEST_P(GpuCodecTest, NonFiniteInputIsRefused) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  for (CodecId c : {CodecId::kKivi4, CodecId::kKivi2, CodecId::kFp8, CodecId::kInt8}) {
    SCOPED_TRACE(std::string(CodecName(c)));
    Case k{c, 1, 2, 64, 64, 16, 64, 1, 0, false, RopePairing::kNeox};
    HostCache host = MakeCache(1, 8, 16, 2, 64, 64, 11);
    // An infinity in a non-sink token of the block (page_ids[1], slot 3).
    host.v[0][(size_t(host.page_ids[1]) * 16 + 3) * 128 + 77] = 0x7F80;
    DeviceCache dev(host);
    ASSERT_TRUE(dev.ok());
    std::vector<uint8_t> raw = Gather(host, k.tokens), want, got;
    absl::Status cpu = Encode(ViewOf(k, Params(k), raw), Params(k).codec, &want);
    absl::Status g = gpu->EncodeFromPages(dev.View(), host.page_ids, Params(k), &got);
    EXPECT_EQ(cpu.code(), absl::StatusCode::kInvalidArgument) << cpu;
    EXPECT_EQ(g.code(), cpu.code()) << g;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, GpuCodecTest, testing::Bool(),
                         [](const testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("Tiled") : std::string("Element");
                         });

TEST(GpuCodecDeviceTest, NoDeviceIsAClearError) {
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
