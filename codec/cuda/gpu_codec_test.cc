// GPU codec tests: blocks byte-identical to codec::Encode, pages identical to
// codec::Decode (so the CPU decodes GPU-encoded blocks and the GPU decodes
// CPU-encoded ones), through both the tiled and the element kivi kernels.
// Without a CUDA device every test SKIPs with the reason (never passes vacuously).
#include "codec/cuda/gpu_codec.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
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
    // The codec's stream does not wait for the default stream: finish the uploads.
    ok_ = ok_ && cudaDeviceSynchronize() == cudaSuccess;
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
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the poison lands before the codec's stream runs
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
  // An empty block (a null span: was a memcpy from null before it was refused).
  EXPECT_EQ(gpu->DecodeToPages(absl::Span<const uint8_t>(), dev.View(), host.page_ids).code(),
            absl::StatusCode::kInvalidArgument);
  // A codec on another device leaves the calling thread's current device as it was
  // (Create and calls made theirs current and left it so, or ran on the caller's).
  int devices = 0;
  ASSERT_EQ(cudaGetDeviceCount(&devices), cudaSuccess);
  if (devices >= 2) {
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    auto other = GpuCodec::Create(1);
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_EQ((*other)->DecodeToPages(absl::Span<const uint8_t>(), dev.View(), host.page_ids).code(),
              absl::StatusCode::kInvalidArgument);
    int current = -1;
    ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
    EXPECT_EQ(current, 0);
  } else {
    std::cout << "[ NOTE ] one CUDA device: the current-device check needs two\n";
  }
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

// Disjoint random page lists of `count` blocks of `tokens` tokens.
std::vector<std::vector<int32_t>> PageLists(const HostCache& c, uint32_t tokens, uint32_t count,
                                            uint64_t seed) {
  std::vector<int32_t> all(c.shape.num_pages);
  for (uint32_t i = 0; i < c.shape.num_pages; ++i) all[i] = static_cast<int32_t>(i);
  std::mt19937_64 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  const uint32_t per = PagesForTokens(tokens, c.shape.page_tokens);
  std::vector<std::vector<int32_t>> lists;
  for (uint32_t b = 0; b < count; ++b) lists.emplace_back(all.begin() + b * per, all.begin() + (b + 1) * per);
  return lists;
}

// A key that rotation makes inf fails the decode, on both kernel paths, as
// codec::Decode does; one such block names itself in a batch.
TEST_P(GpuCodecTest, DecodeRefusesKeysThatRotateToInf) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  uint64_t seed = 600;
  for (const Case& k : HugeSinkCases()) {
    SCOPED_TRACE(Name(k));
    const uint32_t pages = 2 * PagesForTokens(k.tokens, k.page_tokens) + 2;
    HostCache src = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    const PagedEncodeParams p = Params(k);
    std::vector<uint8_t> raw = Gather(src, k.tokens), plain, huge;
    ASSERT_TRUE(Encode(ViewOf(k, p, raw), p.codec, &plain).ok());
    SetHugeSinkKeys(&src);
    raw = Gather(src, k.tokens);
    ASSERT_TRUE(Encode(ViewOf(k, p, raw), p.codec, &huge).ok());
    HostCache dst = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    DeviceCache dev(dst);
    ASSERT_TRUE(dev.ok());
    ASSERT_TRUE(gpu->DecodeToPages(huge, dev.View(), dst.page_ids).ok());
    DecodeOptions moved;
    moved.target_position = 1000;
    absl::Status g = gpu->DecodeToPages(huge, dev.View(), dst.page_ids, moved);
    EXPECT_EQ(g.code(), absl::StatusCode::kInvalidArgument) << g;
    EXPECT_NE(g.message().find("inf or NaN after rotation"), std::string::npos) << g;
    EXPECT_TRUE(gpu->DecodeToPages(plain, dev.View(), dst.page_ids, moved).ok());
    // In a batch: the second block is the bad one.
    std::vector<std::vector<int32_t>> lists = PageLists(dst, k.tokens, 2, seed++);
    const absl::Span<const uint8_t> blocks[] = {plain, huge};
    const absl::Span<const int32_t> ids[] = {lists[0], lists[1]};
    const DecodeOptions opts[] = {moved, moved};
    g = gpu->DecodeManyToPages(blocks, dev.View(), ids, opts);
    EXPECT_EQ(g.code(), absl::StatusCode::kInvalidArgument) << g;
    EXPECT_NE(g.message().find("block 1"), std::string::npos) << g;
  }
}

// Blocks b = 0 .. lists.size() of a prefix starting at position 0 (sinks in
// the first only, so the blocks' layouts differ), gathered from pages
// lists[b] of `src` and encoded by the CPU codec.
struct Prefix {
  std::vector<PagedEncodeParams> params;
  std::vector<std::vector<uint8_t>> blocks;
};
Prefix EncodePrefixOnCpu(const Case& k, HostCache* src, const std::vector<std::vector<int32_t>>& lists) {
  Prefix p;
  for (size_t b = 0; b < lists.size(); ++b) {
    Case kb = k;
    kb.base = static_cast<int64_t>(b) * k.tokens;
    src->page_ids = lists[b];
    std::vector<uint8_t> raw = Gather(*src, k.tokens);
    p.params.push_back(Params(kb));
    p.blocks.emplace_back();
    EXPECT_TRUE(Encode(ViewOf(kb, p.params.back(), raw), p.params.back().codec, &p.blocks.back()).ok());
  }
  return p;
}

// Blocks of one prefix decoded in one call, each as codec::Decode.
TEST_P(GpuCodecTest, DecodeManyToPagesMatchesCpuDecodeOfEachBlock) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  uint64_t seed = 300;
  constexpr uint32_t kBlocks = 3;
  for (const Case& base_case : Cases()) {
    Case k = base_case;
    k.sinks = 4;
    const uint32_t pages = kBlocks * PagesForTokens(k.tokens, k.page_tokens) + 2;
    HostCache src = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    HostCache dst = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    FillSentinel(&dst);
    const auto src_lists = PageLists(src, k.tokens, kBlocks, seed++);
    const auto dst_lists = PageLists(dst, k.tokens, kBlocks, seed++);
    const std::vector<std::vector<uint8_t>> blocks = EncodePrefixOnCpu(k, &src, src_lists).blocks;
    std::vector<std::vector<uint8_t>> want(kBlocks);
    std::vector<DecodeOptions> opts(kBlocks);
    KvShape sh{k.layers, k.heads, k.dim, k.tokens, DType::kBf16};
    for (uint32_t b = 0; b < kBlocks; ++b) {
      if (k.dim % 2 == 0 && b == 1) opts[b].target_position = int64_t{b} * k.tokens + 500;  // one block moves
      want[b].resize(sh.RawBytes());
      ASSERT_TRUE(Decode(blocks[b], KvMutableView{sh, want[b].data(), want[b].size()}, opts[b]).ok());
    }
    SCOPED_TRACE(Name(k));
    DeviceCache dev(dst);
    ASSERT_TRUE(dev.ok());
    std::vector<absl::Span<const uint8_t>> spans(blocks.begin(), blocks.end());
    std::vector<absl::Span<const int32_t>> ids(dst_lists.begin(), dst_lists.end());
    ASSERT_TRUE(gpu->DecodeManyToPages(spans, dev.View(), ids, opts).ok());
    ASSERT_TRUE(dev.Download(&dst));
    size_t written = 0;
    for (uint32_t b = 0; b < kBlocks; ++b) {
      dst.page_ids = dst_lists[b];
      EXPECT_EQ(Gather(dst, k.tokens), want[b]) << "block " << b;
      for (size_t i = 0; i + 1 < want[b].size(); i += 2) written += (want[b][i] | (want[b][i + 1] << 8)) != kSentinel;
    }
    EXPECT_EQ(CountSentinels(dst), 2ull * k.layers * dst.shape.LayerElements() - written);
  }
}

// The blocks of one prompt encoded in one call, each as codec::Encode.
TEST_P(GpuCodecTest, EncodeManyFromPagesMatchesCpuEncodeOfEachBlock) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  uint64_t seed = 500;
  constexpr uint32_t kBlocks = 3;
  for (const Case& base_case : Cases()) {
    Case k = base_case;
    k.sinks = 4;  // sinks in the first block only: the blocks' layouts differ
    SCOPED_TRACE(Name(k));
    const uint32_t pages = kBlocks * PagesForTokens(k.tokens, k.page_tokens) + 2;
    HostCache src = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    const auto lists = PageLists(src, k.tokens, kBlocks, seed++);
    const Prefix want = EncodePrefixOnCpu(k, &src, lists);
    DeviceCache dev(src);
    ASSERT_TRUE(dev.ok());
    std::vector<absl::Span<const int32_t>> ids(lists.begin(), lists.end());
    std::vector<std::vector<uint8_t>> got;
    ASSERT_TRUE(gpu->EncodeManyFromPages(dev.View(), ids, want.params, &got).ok());
    ASSERT_EQ(got.size(), kBlocks);
    for (uint32_t b = 0; b < kBlocks; ++b) EXPECT_TRUE(got[b] == want.blocks[b]) << "block " << b;
  }
}

TEST_P(GpuCodecTest, EncodeManyNamesTheBlockWithBadInput) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  Case k{CodecId::kKivi4, 1, 2, 64, 64, 16, 64, 1, 0, false, RopePairing::kNeox};
  HostCache host = MakeCache(1, 16, 16, 2, 64, 64, 31);
  const auto lists = PageLists(host, k.tokens, 3, 32);
  host.v[0][(size_t(lists[1][2]) * 16 + 5) * 128 + 9] = 0x7FC0;  // a NaN in block 1
  DeviceCache dev(host);
  ASSERT_TRUE(dev.ok());
  std::vector<absl::Span<const int32_t>> ids(lists.begin(), lists.end());
  std::vector<PagedEncodeParams> params(3, Params(k));
  std::vector<std::vector<uint8_t>> got;
  absl::Status s = gpu->EncodeManyFromPages(dev.View(), ids, params, &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("block 1"), std::string::npos) << s;
  EXPECT_TRUE(got.empty());
}

// A page in two blocks, or one corrupt block: the call fails and no page changes.
TEST_P(GpuCodecTest, DecodeManyRefusesOverlapAndCorruptionWithoutWriting) {
  REQUIRE_DEVICE();
  auto gpu = Codec();
  ASSERT_NE(gpu, nullptr);
  Case k{CodecId::kKivi4, 1, 2, 64, 64, 16, 64, 1, 0, false, RopePairing::kNeox};
  HostCache host = MakeCache(1, 16, 16, 2, 64, 64, 21);
  const auto lists = PageLists(host, k.tokens, 3, 22);
  std::vector<std::vector<uint8_t>> blocks(3);
  for (uint32_t b = 0; b < 3; ++b) {
    host.page_ids = lists[b];
    std::vector<uint8_t> raw = Gather(host, k.tokens);
    ASSERT_TRUE(Encode(ViewOf(k, Params(k), raw), Params(k).codec, &blocks[b]).ok());
  }
  DeviceCache dev(host);
  ASSERT_TRUE(dev.ok());
  std::vector<absl::Span<const uint8_t>> spans(blocks.begin(), blocks.end());
  std::vector<absl::Span<const int32_t>> overlap = {lists[0], lists[1], lists[0]};
  absl::Status s = gpu->DecodeManyToPages(spans, dev.View(), overlap);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("two blocks"), std::string::npos) << s;
  blocks[2][blocks[2].size() - 3] ^= 1;
  spans.assign(blocks.begin(), blocks.end());
  std::vector<absl::Span<const int32_t>> ids(lists.begin(), lists.end());
  s = gpu->DecodeManyToPages(spans, dev.View(), ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("block 2"), std::string::npos) << s;
  HostCache after = host;
  ASSERT_TRUE(dev.Download(&after));
  EXPECT_EQ(after.k, host.k);
  EXPECT_EQ(after.v, host.v);
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
