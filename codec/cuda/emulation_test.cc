// Host verification of the CUDA codec path without a GPU: the kernel unit
// functions (block_kernels.h), compiled for the host and run by the emulation,
// must produce blocks byte-identical to codec::Encode and pages identical to
// codec::Decode, for every codec the kernels implement.
#include "codec/cuda/emulation.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "codec/codec.h"
#include "codec/cuda/element_math.h"
#include "codec/cuda/paged_test_util.h"
#include "codec/kernels_scalar_inl.h"
#include "codec/numeric.h"
#include "common/hash.h"

namespace kvhub::codec::cuda {
namespace {

TEST(EmulationTest, EncodeFromPagesMatchesCpuEncodeByteForByte) {
  uint64_t seed = 1;
  for (const Case& k : Cases()) {
    SCOPED_TRACE(Name(k));
    const uint32_t pages = PagesForTokens(k.tokens, k.page_tokens) + 5;
    HostCache cache = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    const PagedEncodeParams p = Params(k);
    std::vector<uint8_t> raw = Gather(cache, k.tokens);
    for (KernelChoice kc : {KernelChoice::kScalar, KernelChoice::kSimd}) {
      CodecParams cp = p.codec;
      cp.kernels = kc;
      std::vector<uint8_t> want;
      ASSERT_TRUE(Encode(ViewOf(k, p, raw), cp, &want).ok());
      std::vector<uint8_t> got;
      ASSERT_TRUE(EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &got).ok());
      ASSERT_EQ(got.size(), want.size());
      size_t first = 0;
      while (first < got.size() && got[first] == want[first]) ++first;
      EXPECT_EQ(first, got.size()) << "first differing byte " << first;
    }
  }
}

TEST(EmulationTest, DecodeToPagesMatchesCpuDecode) {
  uint64_t seed = 100;
  for (const Case& k : Cases()) {
    const PagedEncodeParams p = Params(k);
    const uint32_t pages = PagesForTokens(k.tokens, k.page_tokens) + 3;
    HostCache src = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    std::vector<uint8_t> raw = Gather(src, k.tokens);
    std::vector<uint8_t> block;
    ASSERT_TRUE(Encode(ViewOf(k, p, raw), p.codec, &block).ok());
    std::vector<std::optional<int64_t>> targets = {std::nullopt, k.base + 1000};
    if (k.dim % 2 == 0) targets.push_back(k.base - 7);
    for (const auto& target : targets) {
      SCOPED_TRACE(Name(k) + " target " + (target ? std::to_string(*target) : "none"));
      DecodeOptions opt;
      opt.target_position = target;
      KvShape sh{k.layers, k.heads, k.dim, k.tokens, DType::kBf16};
      std::vector<uint8_t> want(sh.RawBytes());
      absl::Status cpu = Decode(block, KvMutableView{sh, want.data(), want.size()}, opt);
      // A destination cache with a different page assignment and a sentinel
      // everywhere: only the block's token slots may change.
      HostCache dst = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
      for (auto* layers : {&dst.k, &dst.v}) {
        for (auto& x : *layers) std::fill(x.begin(), x.end(), uint16_t{0x7E7E});
      }
      absl::Status emu = EmulateDecodeToPages(block, dst.View(), dst.page_ids, opt);
      ASSERT_EQ(cpu.ok(), emu.ok()) << cpu << " vs " << emu;
      if (!cpu.ok()) continue;
      EXPECT_EQ(Gather(dst, k.tokens), want);
      // Untouched elsewhere: count sentinel elements.
      size_t sentinels = 0, total = 0;
      for (auto* layers : {&dst.k, &dst.v}) {
        for (auto& x : *layers) {
          total += x.size();
          sentinels += std::count(x.begin(), x.end(), uint16_t{0x7E7E});
        }
      }
      const size_t written = 2ull * k.layers * k.tokens * k.heads * k.dim;
      size_t sentinel_in_block = 0;
      for (size_t i = 0; i + 1 < want.size(); i += 2) {
        sentinel_in_block += (want[i] | (want[i + 1] << 8)) == 0x7E7E;
      }
      EXPECT_EQ(sentinels, total - written + sentinel_in_block);
    }
  }
}

// A key that rotation makes inf is refused by the emulated decode as by
// codec::Decode (the kernels used to write inf into the pages and return OK).
TEST(EmulationTest, DecodeRefusesKeysThatRotateToInfLikeTheCpu) {
  uint64_t seed = 500;
  for (const Case& k : HugeSinkCases()) {
    SCOPED_TRACE(Name(k));
    const uint32_t pages = PagesForTokens(k.tokens, k.page_tokens) + 2;
    HostCache src = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    SetHugeSinkKeys(&src);
    const PagedEncodeParams p = Params(k);
    std::vector<uint8_t> raw = Gather(src, k.tokens), block;
    ASSERT_TRUE(Encode(ViewOf(k, p, raw), p.codec, &block).ok());
    KvShape sh{k.layers, k.heads, k.dim, k.tokens, DType::kBf16};
    std::vector<uint8_t> want(sh.RawBytes());
    HostCache dst = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    // In place: no rotation, both decode (the huge keys come back as stored).
    ASSERT_TRUE(Decode(block, KvMutableView{sh, want.data(), want.size()}).ok());
    ASSERT_TRUE(EmulateDecodeToPages(block, dst.View(), dst.page_ids).ok());
    EXPECT_EQ(Gather(dst, k.tokens), want);
    DecodeOptions moved;
    moved.target_position = 1000;
    absl::Status cpu = Decode(block, KvMutableView{sh, want.data(), want.size()}, moved);
    absl::Status emu = EmulateDecodeToPages(block, dst.View(), dst.page_ids, moved);
    EXPECT_EQ(cpu.code(), absl::StatusCode::kInvalidArgument) << cpu;
    EXPECT_EQ(emu.code(), absl::StatusCode::kInvalidArgument) << emu;
    EXPECT_NE(emu.message().find("inf or NaN after rotation"), std::string::npos) << emu;
  }
}

// Every finite bf16 through the element functions of the kernels against the
// scalar reference kernels.
TEST(EmulationTest, ElementMathMatchesScalarKernelsForEveryBf16) {
  const float invs[] = {0.0f, 1.0f, 0.37f, 3.1e-3f, 812.5f, 1.0f / 448.0f, 7.3e5f};
  std::vector<uint16_t> all;
  for (uint32_t b = 0; b < 65536; ++b) {
    if ((b & 0x7FFF) < 0x7F80) all.push_back(static_cast<uint16_t>(b));
  }
  const size_t n = all.size();
  std::vector<int8_t> q8(n);
  std::vector<uint8_t> qf(n), qa(n);
  for (float inv : invs) {
    scalar::QuantInt8(all.data(), n, inv, q8.data());
    scalar::QuantFp8(all.data(), n, inv, qf.data());
    for (float qmax : {15.0f, 3.0f}) {
      for (float zero : {0.0f, -1.5f, 2.25f, -300.0f}) {
        scalar::QuantAffine1(all.data(), n, inv, zero, qmax, qa.data());
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(QuantAffine(all[i], inv, zero, qmax), qa[i]) << all[i];
        }
      }
    }
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(QuantInt8(all[i], inv), q8[i]) << all[i] << " inv " << inv;
      ASSERT_EQ(QuantFp8(all[i], inv), qf[i]) << all[i] << " inv " << inv;
    }
  }
  // Dequantization of every code with scales spanning the float range.
  for (float scale : {0.0f, 1.0f, 0.0123f, 3.7e-3f, 2.5e4f, 1e-38f}) {
    for (int c = 0; c < 256; ++c) {
      uint16_t y;
      uint8_t code = static_cast<uint8_t>(c);
      scalar::DequantFp8(&code, 1, scale, &y);
      ASSERT_EQ(DequantFp8(code, scale), y);
      int8_t ic = static_cast<int8_t>(c);
      scalar::DequantInt8(&ic, 1, scale, &y);
      ASSERT_EQ(DequantInt8(ic, scale), y);
      for (float zero : {0.0f, -2.0f, 1.0e-3f}) {
        scalar::DequantAffine1(&code, 1, scale, zero, &y);
        ASSERT_EQ(DequantAffine(code & 0xF, scale, zero), FloatToBf16(static_cast<float>(code & 0xF) * scale + zero));
        uint8_t c4 = code & 0xF;
        scalar::DequantAffine1(&c4, 1, scale, zero, &y);
        ASSERT_EQ(DequantAffine(c4, scale, zero), y);
      }
    }
  }
  // Centered keys: residual magnitude, quantization and dequantization.
  for (float mid : {0.0f, -0.0f, 1.5f, -40.25f, 3.0e4f, -1.0e-3f}) {
    std::vector<float> mids(n, mid);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(CenteredAbsBits(all[i], mid), scalar::AbsMaxCentered(&all[i], &mid, 1)) << all[i];
    }
    for (float inv : invs) {
      scalar::QuantInt8Centered(all.data(), mids.data(), n, inv, q8.data());
      scalar::QuantFp8Centered(all.data(), mids.data(), n, inv, qf.data());
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(QuantInt8Centered(all[i], mid, inv), q8[i]) << all[i] << " inv " << inv;
        ASSERT_EQ(QuantFp8Centered(all[i], mid, inv), qf[i]) << all[i] << " inv " << inv;
      }
    }
    for (float scale : {0.0f, 1.0f, 0.0123f, 3.7e-3f, 2.5e4f, 1e-38f}) {
      for (int c = 0; c < 256; ++c) {
        uint16_t y;
        uint8_t code = static_cast<uint8_t>(c);
        scalar::DequantFp8Centered(&code, &mid, 1, scale, &y);
        ASSERT_EQ(DequantFp8Centered(code, scale, mid), y);
        int8_t ic = static_cast<int8_t>(c);
        scalar::DequantInt8Centered(&ic, &mid, 1, scale, &y);
        ASSERT_EQ(DequantInt8Centered(ic, scale, mid), y);
      }
    }
  }
  // Channel centres from min/max keys, and scales from 32-bit magnitudes.
  for (size_t i = 0; i < n; i += 5) {
    for (size_t j = i; j < n; j += 3001) {
      int16_t mn = kvhub::codec::Bf16OrderKey(all[i]), mx = kvhub::codec::Bf16OrderKey(all[j]);
      if (mn > mx) std::swap(mn, mx);
      ASSERT_EQ(MidBf16(mn, mx), kvhub::codec::MidBf16(mn, mx)) << all[i] << " " << all[j];
    }
    const uint32_t a32 = (static_cast<uint32_t>(all[i] & 0x7FFF) << 16) | (all[i] * 2654435761u >> 16);
    for (float qmax : {127.0f, 448.0f}) {
      float s1, i1;
      SymScaleF(a32, qmax, &s1, &i1);
      float s0 = BitsFloat(a32) / qmax;
      const bool normal = s0 >= 1.17549435e-38f;
      ASSERT_EQ(FloatBits(s1), FloatBits(normal ? s0 : 0.0f));
      ASSERT_EQ(FloatBits(i1), FloatBits(normal ? 1.0f / s0 : 0.0f));
    }
  }
  // Symmetric scales, fp16 conversions and KIVI statistics.
  for (size_t i = 0; i < n; i += 7) {
    const uint16_t a = all[i] & 0x7FFF;
    for (float qmax : {127.0f, 448.0f}) {
      float s1, i1;
      SymScale(a, qmax, &s1, &i1);
      float s0 = kvhub::codec::Bf16ToFloat(a) / qmax;
      float want_inv = s0 >= 1.17549435e-38f ? 1.0f / s0 : 0.0f;
      ASSERT_EQ(FloatBits(i1), FloatBits(want_inv));
    }
    for (size_t j = i; j < n; j += 4099) {
      int16_t mn = kvhub::codec::Bf16OrderKey(all[i]), mx = kvhub::codec::Bf16OrderKey(all[j]);
      if (mn > mx) std::swap(mn, mx);
      for (float qmax : {15.0f, 3.0f}) {
        uint16_t sh0 = 0, zh0 = 0, sh1 = 0, zh1 = 0;
        float inv0 = 0, z0 = 0, inv1 = 0, z1 = 0;
        bool ok0 = scalar::KiviStats(&mn, &mx, 1, qmax, &sh0, &zh0, &inv0, &z0);
        bool ok1 = KiviStats(mn, mx, qmax, &sh1, &zh1, &inv1, &z1);
        ASSERT_EQ(ok0, ok1);
        if (!ok0) continue;
        ASSERT_EQ(sh0, sh1);
        ASSERT_EQ(zh0, zh1);
        ASSERT_EQ(FloatBits(inv0), FloatBits(inv1));
        ASSERT_EQ(FloatBits(z0), FloatBits(z1));
      }
    }
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_EQ(FloatBits(HalfToFloat(static_cast<uint16_t>(h))) ,
              FloatBits(kvhub::codec::HalfToFloat(static_cast<uint16_t>(h))));
  }
}

// The 16-byte chunk path needs aligned page storage; a cache that is not
// aligned takes the per-element path and must give the same pages.
TEST(EmulationTest, DecodeAlignedAndUnalignedCachesAgree) {
  for (CodecId codec : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    SCOPED_TRACE(std::string(CodecName(codec)));
    Case k{codec, 2, 2, 64, 40, 8, 32, 2, 0, false, RopePairing::kNeox};
    HostCache src = MakeCache(2, 7, 8, 2, 64, 40, 3);
    std::vector<uint8_t> block;
    ASSERT_TRUE(EmulateEncodeFromPages(src.View(), src.page_ids, Params(k), &block).ok());
    HostCache a = MakeCache(2, 7, 8, 2, 64, 40, 4);
    // b: the same contents, one element (2 bytes) off 16-byte alignment.
    std::vector<std::vector<uint16_t>> store;
    PagedKv b{a.shape, {}, {}};
    for (auto* layers : {&a.k, &a.v}) {
      for (auto& x : *layers) {
        std::vector<uint16_t> y(x.size() + 8);
        std::copy(x.begin(), x.end(), y.begin() + 1);
        store.push_back(std::move(y));
      }
    }
    for (size_t l = 0; l < 2; ++l) {
      b.k.push_back(store[l].data() + 1);
      b.v.push_back(store[2 + l].data() + 1);
    }
    ASSERT_TRUE(AllAligned16(std::vector<uint16_t*>(a.View().k)) == 1);
    ASSERT_TRUE(AllAligned16(b.k) == 0);
    ASSERT_TRUE(EmulateDecodeToPages(block, a.View(), a.page_ids).ok());
    ASSERT_TRUE(EmulateDecodeToPages(block, b, a.page_ids).ok());
    for (size_t l = 0; l < 2; ++l) {
      EXPECT_TRUE(std::equal(a.k[l].begin(), a.k[l].end(), store[l].begin() + 1));
      EXPECT_TRUE(std::equal(a.v[l].begin(), a.v[l].end(), store[2 + l].begin() + 1));
    }
  }
}

TEST(EmulationTest, RejectsWhatTheCpuCodecRejects) {
  Case k{CodecId::kKivi4, 1, 2, 32, 32, 8, 32, 1, 0, false, RopePairing::kNeox};
  HostCache cache = MakeCache(1, 6, 8, 2, 32, 32, 7);
  PagedEncodeParams p = Params(k);
  std::vector<uint8_t> out;
  // Non-finite input, for every codec, in a value segment.
  cache.v[0][cache.page_ids[2] * 8 * 64 + 5] = 0x7F80;
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    p.codec.codec = c;
    absl::Status s = EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << CodecName(c) << ": " << s;
  }
  // fp8/int8 keys (centered): inf past the sink, NaN in the sink row.
  cache.v[0][cache.page_ids[2] * 8 * 64 + 5] = 0;
  for (uint16_t bad : {uint16_t{0xFF80}, uint16_t{0x7FC0}}) {
    const size_t at = bad == 0x7FC0 ? cache.page_ids[0] * 8 * 64 + 3 : cache.page_ids[1] * 8 * 64 + 9;
    const uint16_t keep = cache.k[0][at];
    cache.k[0][at] = bad;
    for (CodecId c : {CodecId::kFp8, CodecId::kInt8}) {
      p.codec.codec = c;
      absl::Status s = EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &out);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << CodecName(c) << ": " << s;
      EXPECT_NE(s.message().find("inf or NaN"), std::string::npos) << s;
    }
    cache.k[0][at] = keep;
  }
  cache.v[0][cache.page_ids[2] * 8 * 64 + 5] = 0x7F80;
  // kivi range: a value group minimum beyond fp16.
  cache.v[0][cache.page_ids[2] * 8 * 64 + 5] = kvhub::codec::FloatToBf16(-70000.0f);
  p.codec.codec = CodecId::kKivi2;
  EXPECT_NE(EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &out).message().find("fp16"),
            std::string::npos);
  // lossless and raw have no kernels.
  p.codec.codec = CodecId::kLossless;
  EXPECT_NE(EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &out).message().find("CPU"),
            std::string::npos);
  // Page ids: wrong count, out of range; duplicates only matter when writing.
  p.codec.codec = CodecId::kFp8;
  cache.v[0][cache.page_ids[2] * 8 * 64 + 5] = 0;
  std::vector<int32_t> ids = cache.page_ids;
  ids.pop_back();
  EXPECT_EQ(EmulateEncodeFromPages(cache.View(), ids, p, &out).code(),
            absl::StatusCode::kInvalidArgument);
  ids = cache.page_ids;
  ids[1] = 6;
  EXPECT_EQ(EmulateEncodeFromPages(cache.View(), ids, p, &out).code(),
            absl::StatusCode::kInvalidArgument);
  // A page size past 65536 tokens made the page count wrap to 0: an empty page list
  // passed, and the kernels read page ids from whatever followed.
  {
    PagedKv huge = cache.View();
    huge.shape.page_tokens = 0xFFFFFFFFu;
    absl::Status s = EmulateEncodeFromPages(huge, {}, p, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("page_tokens"), std::string::npos) << s;
    ASSERT_TRUE(EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &out).ok());
    EXPECT_EQ(EmulateDecodeToPages(out, huge, {}).code(), absl::StatusCode::kInvalidArgument);
  }
  ids = cache.page_ids;
  ids[1] = ids[0];
  ASSERT_TRUE(EmulateEncodeFromPages(cache.View(), ids, p, &out).ok());
  EXPECT_EQ(EmulateDecodeToPages(out, cache.View(), ids).code(), absl::StatusCode::kInvalidArgument);
  // A corrupted block is refused before anything is written.
  ASSERT_TRUE(EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &out).ok());
  out[out.size() - 3] ^= 1;
  auto before = cache.v;
  EXPECT_EQ(EmulateDecodeToPages(out, cache.View(), cache.page_ids).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(cache.v, before);
}

// fp8/int8 keys beyond +-2^126 (they could decode to inf) are refused by the
// kernel functions with the CPU encoder's status; a block whose stored scale is
// NaN or negative (checksums recomputed) is refused by PlanDecode on the host,
// DATA_LOSS as codec::Decode, before any page is written.
TEST(EmulationTest, RefusesHugeCenteredKeysAndBadStatsLikeTheCpu) {
  uint64_t seed = 700;
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8}) {
    const Case k{c, 1, 2, 16, 20, 8, 32, 1, 0, false, RopePairing::kNeox};
    SCOPED_TRACE(Name(k));
    const uint32_t pages = PagesForTokens(k.tokens, k.page_tokens) + 2;
    const PagedEncodeParams p = Params(k);
    HostCache huge = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    const size_t td = huge.shape.TokenElements();
    const uint32_t t = 5;  // not a sink
    huge.k[0][(size_t(huge.page_ids[t / k.page_tokens]) * k.page_tokens + t % k.page_tokens) * td + 3] = 0x7F7F;
    std::vector<uint8_t> raw = Gather(huge, k.tokens), out;
    const absl::Status cpu = Encode(ViewOf(k, p, raw), p.codec, &out);
    EXPECT_EQ(cpu.code(), absl::StatusCode::kInvalidArgument) << cpu;
    EXPECT_EQ(EmulateEncodeFromPages(huge.View(), huge.page_ids, p, &out), cpu);

    HostCache cache = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
    ASSERT_TRUE(EmulateEncodeFromPages(cache.View(), cache.page_ids, p, &out).ok());
    KvShape sh{k.layers, k.heads, k.dim, k.tokens, DType::kBf16};
    const SegLayout L = Layout(c, sh, /*is_value=*/true, 0, 1);
    const uint64_t seg = BlockHeader::kSize + GetU64(out.data() + BlockHeader::kSize + 16);  // layer 0 values
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), -1.0f}) {
      std::vector<uint8_t> b = out;
      PutU32(b.data() + seg + L.scale_off + L.scale_bytes - 4, std::bit_cast<uint32_t>(bad));
      PutU64(b.data() + 80, Xxh3_64(b.data() + BlockHeader::kSize, b.size() - BlockHeader::kSize));
      PutU64(b.data() + 120, Xxh3_64(b.data(), 120));
      EXPECT_EQ(PlanDecode(b, {}).status().code(), absl::StatusCode::kDataLoss);
      HostCache dst = MakeCache(k.layers, pages, k.page_tokens, k.heads, k.dim, k.tokens, seed++);
      const auto before = dst.v;
      const absl::Status emu = EmulateDecodeToPages(b, dst.View(), dst.page_ids);
      std::vector<uint8_t> want(sh.RawBytes());
      EXPECT_EQ(emu, Decode(b, KvMutableView{sh, want.data(), want.size()}));
      EXPECT_EQ(emu.code(), absl::StatusCode::kDataLoss) << emu;
      EXPECT_EQ(dst.v, before);
    }
  }
}

TEST(PagedLayoutTest, ElementOffsets) {
  const int32_t ids[] = {5, 2, 9};
  // 4 tokens per page, 2 heads x 3 dims per token.
  EXPECT_EQ(PagedElementOffset(ids, 4, 6, 0, 0), 5u * 4 * 6);
  EXPECT_EQ(PagedElementOffset(ids, 4, 6, 3, 5), (5u * 4 + 3) * 6 + 5);
  EXPECT_EQ(PagedElementOffset(ids, 4, 6, 4, 0), 2u * 4 * 6);
  EXPECT_EQ(PagedElementOffset(ids, 4, 6, 9, 1), (9u * 4 + 1) * 6 + 1);
  EXPECT_EQ(PagesForTokens(9, 4), 3u);
  EXPECT_EQ(PagesForTokens(8, 4), 2u);
  PagedShape s{10, 4, 2, 3};
  EXPECT_TRUE(ValidatePages(s, ids, 9, 2, 3, true).ok());
  EXPECT_FALSE(ValidatePages(s, ids, 8, 2, 3, true).ok());   // one page too many
  EXPECT_FALSE(ValidatePages(s, ids, 9, 2, 4, true).ok());   // shape mismatch
  PagedShape small{9, 4, 2, 3};
  EXPECT_FALSE(ValidatePages(small, ids, 9, 2, 3, false).ok());  // id 9 out of range
}

TEST(BlockPlanTest, PlanMatchesEncodedSize) {
  for (const Case& k : Cases()) {
    PagedEncodeParams p = Params(k);
    auto plan = PlanEncode(PagedShape{100, k.page_tokens, k.heads, k.dim}, p);
    ASSERT_TRUE(plan.ok()) << plan.status();
    KvShape sh{k.layers, k.heads, k.dim, k.tokens, DType::kBf16};
    auto size = EncodedSize(sh, p.codec, plan->header.sink_tokens);
    ASSERT_TRUE(size.ok());
    EXPECT_EQ(plan->total_bytes(), *size) << Name(k);
  }
}

}  // namespace
}  // namespace kvhub::codec::cuda
