#include "codec/codec.h"

#include <bit>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/kernels.h"
#include "codec/numeric.h"
#include "codec/quality.h"
#include "codec/rope.h"
#include "codec/segment_layout.h"
#include "codec/synthetic_kv.h"
#include "common/hash.h"
#include "gtest/gtest.h"

namespace kvhub::codec {
namespace {

// A small block with random-ish bf16 content, including outliers and zeros.
struct Block {
  KvShape shape;
  std::vector<uint8_t> data;
  KvView View(int64_t base = 0) const {
    KvView v;
    v.shape = shape;
    v.data = data.data();
    v.size = data.size();
    v.base_position = base;
    v.rope_base = 10000.0;
    v.fingerprint = U128{0x1234, 0x5678};
    return v;
  }
};

Block MakeBlock(uint32_t L, uint32_t H, uint32_t D, uint32_t T, uint64_t seed,
                DType dt = DType::kBf16) {
  Block b;
  b.shape = KvShape{L, H, D, T, dt};
  b.data.resize(b.shape.RawBytes());
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const size_t count = b.data.size() / DTypeBytes(dt);
  for (size_t i = 0; i < count; ++i) {
    float v = n(rng);
    if (i % 37 == 0) v *= 15.0f;
    if (i % 101 == 0) v = 0.0f;
    if (dt == DType::kFp32) {
      std::memcpy(&b.data[4 * i], &v, 4);
    } else {
      uint16_t h = FloatToBf16(v);
      if (dt == DType::kFp16) FloatToHalf(v, &h);
      std::memcpy(&b.data[2 * i], &h, 2);
    }
  }
  return b;
}

const CodecId kAll[] = {CodecId::kRaw, CodecId::kLossless, CodecId::kFp8,
                        CodecId::kInt8, CodecId::kKivi4,   CodecId::kKivi2};

CodecParams Params(CodecId c, uint32_t group = 64, KernelChoice k = KernelChoice::kSimd) {
  CodecParams p;
  p.codec = c;
  p.group_size = group;
  p.kernels = k;
  return p;
}

std::vector<uint8_t> MustEncode(const KvView& v, const CodecParams& p) {
  std::vector<uint8_t> out;
  absl::Status s = Encode(v, p, &out);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::vector<uint8_t> MustDecode(const std::vector<uint8_t>& block, const KvShape& shape,
                                const DecodeOptions& o = {}) {
  std::vector<uint8_t> out(shape.RawBytes());
  absl::Status s = Decode(block, KvMutableView{shape, out.data(), out.size()}, o);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

double RelL2(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  double e = 0, n = 0;
  for (size_t i = 0; i + 1 < a.size(); i += 2) {
    uint16_t x, y;
    std::memcpy(&x, &a[i], 2);
    std::memcpy(&y, &b[i], 2);
    double fx = Bf16ToFloat(x), fy = Bf16ToFloat(y);
    e += (fx - fy) * (fx - fy);
    n += fx * fx;
  }
  return std::sqrt(e / n);
}

TEST(CodecTest, RoundTripEveryCodecAndShape) {
  struct Shape {
    uint32_t L, H, D, T;
  };
  // Includes shapes with no full vector, odd sizes and partial groups.
  const Shape shapes[] = {{2, 2, 128, 256}, {1, 3, 80, 100}, {2, 1, 7, 33}, {1, 1, 1, 1},
                          {1, 2, 64, 129}, {1, 4, 96, 64}};
  for (const Shape& s : shapes) {
    Block b = MakeBlock(s.L, s.H, s.D, s.T, s.L * 1000 + s.D);
    for (CodecId c : kAll) {
      for (uint32_t g : {32u, 64u, 128u}) {
        if (c != CodecId::kKivi4 && c != CodecId::kKivi2 && g != 64) continue;
        SCOPED_TRACE(testing::Message() << CodecName(c) << " g" << g << " shape " << s.L << "x"
                                        << s.H << "x" << s.D << "x" << s.T);
        CodecParams p = Params(c, g);
        std::vector<uint8_t> enc = MustEncode(b.View(), p);
        if (c != CodecId::kLossless) {
          // The default sink_tokens (1) applies to kivi, fp8 and int8 at position 0.
          auto want = EncodedSize(b.shape, p, c == CodecId::kRaw ? 0 : 1);
          ASSERT_TRUE(want.ok());
          EXPECT_EQ(enc.size(), *want);
        }
        BlockHeader h;
        std::vector<uint8_t> dec(b.shape.RawBytes());
        ASSERT_TRUE(Decode(enc, KvMutableView{b.shape, dec.data(), dec.size()}, {}, &h).ok());
        EXPECT_EQ(h.codec, c);
        EXPECT_EQ(h.shape, b.shape);
        EXPECT_EQ(h.fingerprint, (U128{0x1234, 0x5678}));
        double err = RelL2(b.data, dec);
        switch (c) {
          case CodecId::kRaw:
          case CodecId::kLossless: EXPECT_EQ(dec, b.data); break;
          // Centered keys: fp8's relative error applies to |x - centre|, a
          // little more than |x| on zero-mean iid data (0.051-0.059 here).
          case CodecId::kFp8: EXPECT_LT(err, 0.07); break;
          case CodecId::kInt8: EXPECT_LT(err, 0.05); break;
          case CodecId::kKivi4: EXPECT_LT(err, 0.25); break;
          case CodecId::kKivi2: EXPECT_LT(err, 1.5); break;  // iid data with 15x outliers
        }
      }
    }
  }
}

TEST(CodecTest, LosslessIsBitExactForEveryDtypeAndSpecialValues) {
  for (DType dt : {DType::kBf16, DType::kFp16, DType::kFp32}) {
    Block b = MakeBlock(2, 2, 64, 64, 9, dt);
    // NaN, inf, -0, subnormals survive bit for bit.
    const uint8_t specials[] = {0x80, 0x7F, 0xFF, 0x80, 0x01, 0x00, 0xC1, 0xFF};
    std::memcpy(b.data.data(), specials, sizeof specials);
    CodecParams p = Params(CodecId::kLossless);
    std::vector<uint8_t> enc = MustEncode(b.View(), p);
    EXPECT_EQ(MustDecode(enc, b.shape), b.data) << DTypeName(dt);
    p.kernels = KernelChoice::kScalar;
    EXPECT_EQ(MustEncode(b.View(), p), enc);
  }
}

// A plane's length is a u32 in the format: a shape whose segments hold 2^32
// elements (within the 2^34-byte block limit) used to encode "successfully" into a
// block that never decodes. It is refused before any byte of the input is read
// (the view below claims 16 GiB over a one-byte buffer).
TEST(CodecTest, LosslessRefusesSegmentsItsPlaneLengthsCannotHold) {
  KvView kv;
  kv.shape = KvShape{1, 1024, 64, 65536, DType::kBf16};
  ASSERT_EQ(kv.shape.SegmentElements(), uint64_t{1} << 32);
  ASSERT_TRUE(kv.shape.Validate().ok());
  const uint8_t one = 0;
  kv.data = &one;
  kv.size = kv.shape.RawBytes();
  std::vector<uint8_t> out;
  const absl::Status s = Encode(kv, Params(CodecId::kLossless), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("2^32-1"), absl::string_view::npos) << s;
}

TEST(CodecTest, ScalarAndSimdGiveIdenticalBytes) {
  SyntheticKvConfig c;
  c.layers = 2;
  c.kv_heads = 4;
  auto g = GenerateSyntheticKv(c);
  ASSERT_TRUE(g.ok());
  std::vector<Block> blocks;
  blocks.push_back(Block{g->shape, g->kv});
  blocks.push_back(MakeBlock(1, 3, 80, 100, 5));
  blocks.push_back(MakeBlock(2, 1, 7, 33, 6));
  for (const Block& b : blocks) {
    for (CodecId codec : kAll) {
      for (uint32_t grp : {32u, 64u, 128u}) {
        if (grp != 64 && !(codec == CodecId::kKivi4 || codec == CodecId::kKivi2)) continue;
        for (bool pre : {false, true}) {
          // base 7: no sinks; base 0 with 5 sink tokens (fp8, int8, kivi).
          for (int64_t base : {7, 0}) {
            if (pre && (codec == CodecId::kLossless || b.shape.head_dim % 2)) continue;
            CodecParams p = Params(codec, grp);
            p.keys_pre_rope = pre;
            p.sink_tokens = 5;
            SCOPED_TRACE(testing::Message() << CodecName(codec) << " g" << grp << " pre" << pre
                                            << " base" << base);
            std::vector<uint8_t> simd = MustEncode(b.View(base), p);
            p.kernels = KernelChoice::kScalar;
            std::vector<uint8_t> scal = MustEncode(b.View(base), p);
            ASSERT_EQ(simd, scal);
            DecodeOptions o;
            std::vector<uint8_t> ds = MustDecode(simd, b.shape, o);
            o.kernels = KernelChoice::kScalar;
            EXPECT_EQ(MustDecode(simd, b.shape, o), ds);
          }
        }
      }
    }
  }
  EXPECT_STRNE(SimdKernels().name, "");
}

TEST(CodecTest, KernelsAgreeOnEdgeValues) {
  // Every bf16 bit pattern that is finite, through every kernel, both ways.
  std::vector<uint16_t> x;
  for (uint32_t b = 0; b < 65536; ++b) {
    if ((b & 0x7FFF) < 0x7F80) x.push_back(static_cast<uint16_t>(b));
  }
  const Kernels& S = ScalarKernels();
  const Kernels& V = SimdKernels();
  const size_t n = x.size();
  EXPECT_EQ(S.abs_max_bits(x.data(), n), V.abs_max_bits(x.data(), n));
  for (float inv : {1.0f, 1e-30f, 3e30f, 0.0f, 448.0f / 3.3e38f}) {
    std::vector<int8_t> a(n), b(n);
    S.quant_int8(x.data(), n, inv, a.data());
    V.quant_int8(x.data(), n, inv, b.data());
    ASSERT_EQ(a, b) << inv;
    std::vector<uint8_t> c(n), d(n);
    S.quant_fp8(x.data(), n, inv, c.data());
    V.quant_fp8(x.data(), n, inv, d.data());
    ASSERT_EQ(c, d) << inv;
  }
  std::vector<uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes[i] = static_cast<uint8_t>(i);
  for (float s : {1.0f, 0.37f, 1e-20f, 2.5e30f, std::numeric_limits<float>::quiet_NaN(),
                  -std::numeric_limits<float>::infinity()}) {
    std::vector<uint16_t> a(256), b(256);
    S.dequant_fp8(codes.data(), 256, s, a.data());
    V.dequant_fp8(codes.data(), 256, s, b.data());
    ASSERT_EQ(a, b);
    S.dequant_int8(reinterpret_cast<int8_t*>(codes.data()), 256, s, a.data());
    V.dequant_int8(reinterpret_cast<int8_t*>(codes.data()), 256, s, b.data());
    ASSERT_EQ(a, b);
  }
  {
    std::vector<uint16_t> all(65536);
    for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
    std::vector<float> a(65536), b(65536);
    S.half_to_float(all.data(), all.size(), a.data());
    V.half_to_float(all.data(), all.size(), b.data());
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), 4 * a.size()));
  }
  // Centered kernels: every finite x against centres of every magnitude.
  {
    std::mt19937_64 rng(11);
    std::vector<float> mid(n);
    const float mids[] = {0.0f, -0.0f, 1.0f, -17.5f, 1e-30f, 3e-39f, 1000.0f, -2.5e5f};
    for (size_t i = 0; i < n; ++i) {
      mid[i] = (i % 3 == 0) ? mids[rng() % 8] : Bf16ToFloat(FloatToBf16(static_cast<float>(
                                                    static_cast<int64_t>(rng() % 2001) - 1000) /
                                                    8.0f));
    }
    EXPECT_EQ(S.abs_max_centered(x.data(), mid.data(), n),
              V.abs_max_centered(x.data(), mid.data(), n));
    for (size_t len : {size_t{0}, size_t{1}, size_t{7}, size_t{33}, size_t{1000}}) {
      EXPECT_EQ(S.abs_max_centered(x.data() + 5, mid.data() + 5, len),
                V.abs_max_centered(x.data() + 5, mid.data() + 5, len));
    }
    // A non-finite residual shows as bits >= 0x7F800000 in both.
    std::vector<uint16_t> big(64, FloatToBf16(3e38f));
    std::vector<float> neg(64, -3e38f);
    EXPECT_GE(S.abs_max_centered(big.data(), neg.data(), 64), 0x7F800000u);
    EXPECT_GE(V.abs_max_centered(big.data(), neg.data(), 64), 0x7F800000u);
    for (float inv : {1.0f, 1e-30f, 3e30f, 0.0f, 448.0f / 3.3e38f, 0.0123f}) {
      std::vector<int8_t> a(n), b(n);
      S.quant_int8_centered(x.data(), mid.data(), n, inv, a.data());
      V.quant_int8_centered(x.data(), mid.data(), n, inv, b.data());
      ASSERT_EQ(a, b) << inv;
      std::vector<uint8_t> c(n), d(n);
      S.quant_fp8_centered(x.data(), mid.data(), n, inv, c.data());
      V.quant_fp8_centered(x.data(), mid.data(), n, inv, d.data());
      ASSERT_EQ(c, d) << inv;
    }
    std::vector<uint8_t> all(4096);
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i);
    for (float s : {1.0f, 0.37f, 1e-20f, 2.5e30f, std::numeric_limits<float>::quiet_NaN(),
                    -std::numeric_limits<float>::infinity()}) {
      std::vector<uint16_t> a(all.size()), b(all.size());
      S.dequant_fp8_centered(all.data(), mid.data(), all.size(), s, a.data());
      V.dequant_fp8_centered(all.data(), mid.data(), all.size(), s, b.data());
      ASSERT_EQ(a, b) << s;
      const int8_t* q = reinterpret_cast<const int8_t*>(all.data());
      S.dequant_int8_centered(q, mid.data(), all.size(), s, a.data());
      V.dequant_int8_centered(q, mid.data(), all.size(), s, b.data());
      ASSERT_EQ(a, b) << s;
    }
  }
  std::vector<int16_t> mn1(n / 64 + 1), mx1(n / 64 + 1), mn2(n / 64 + 1), mx2(n / 64 + 1);
  S.group_min_max(x.data(), n, 64, mn1.data(), mx1.data());
  V.group_min_max(x.data(), n, 64, mn2.data(), mx2.data());
  EXPECT_EQ(mn1, mn2);
  EXPECT_EQ(mx1, mx2);
}

TEST(CodecTest, KiviStatsAgreeAcrossKernels) {
  // Random and edge min/max pairs (finite, tiny, subnormal, near the fp16 limit).
  std::mt19937_64 rng(3);
  std::vector<int16_t> mn, mx;
  const float edges[] = {0.0f, -0.0f, 1e-30f, 6e-8f, 3e-5f, 6.1e-5f, 1.0f, 65504.0f, 65519.0f,
                         -65504.0f, 1e5f, 1e-10f, 300.0f, -7.5f};
  for (float a : edges) {
    for (float b : edges) {
      int16_t ka = Bf16OrderKey(FloatToBf16(a)), kb = Bf16OrderKey(FloatToBf16(b));
      mn.push_back(std::min(ka, kb));
      mx.push_back(std::max(ka, kb));
    }
  }
  for (int i = 0; i < 100000; ++i) {
    uint16_t a = static_cast<uint16_t>(rng()) & 0x477F, b = static_cast<uint16_t>(rng()) & 0x477F;
    if (rng() & 1) a |= 0x8000;
    int16_t ka = Bf16OrderKey(a), kb = Bf16OrderKey(b);
    mn.push_back(std::min(ka, kb));
    mx.push_back(std::max(ka, kb));
  }
  // Process in chunks so a chunk with one out-of-range pair does not hide the others.
  const size_t chunk = 37;
  int bad_chunks = 0;
  for (size_t at = 0; at < mn.size(); at += chunk) {
    size_t n = std::min(chunk, mn.size() - at);
    for (float q : {15.0f, 3.0f}) {
      std::vector<uint16_t> s1(n), z1(n), s2(n), z2(n);
      std::vector<float> i1(n), f1(n), i2(n), f2(n);
      bool ok1 = ScalarKernels().kivi_stats(&mn[at], &mx[at], n, q, s1.data(), z1.data(), i1.data(), f1.data());
      bool ok2 = SimdKernels().kivi_stats(&mn[at], &mx[at], n, q, s2.data(), z2.data(), i2.data(), f2.data());
      ASSERT_EQ(ok1, ok2) << at;
      bad_chunks += !ok1;
      if (!ok1) continue;
      ASSERT_EQ(s1, s2) << at;
      ASSERT_EQ(z1, z2) << at;
      ASSERT_EQ(0, std::memcmp(i1.data(), i2.data(), 4 * n)) << at;
      ASSERT_EQ(0, std::memcmp(f1.data(), f2.data(), 4 * n)) << at;
    }
  }
  EXPECT_GT(bad_chunks, 0);  // the edges include values beyond fp16
}

TEST(CodecTest, Fp8AndHalfConversionsMatchDefinitions) {
  // e4m3: decode of every code, and encode is nearest-even with saturation.
  EXPECT_EQ(E4m3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(E4m3ToFloat(0x01), 0.001953125f);
  EXPECT_EQ(E4m3ToFloat(0x08), 0.015625f);
  EXPECT_EQ(FloatToE4m3(1000.0f), 0x7E);
  EXPECT_EQ(FloatToE4m3(-1000.0f), 0xFE);
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;  // NaN codes are never produced
    float v = E4m3ToFloat(static_cast<uint8_t>(c));
    EXPECT_EQ(E4m3ToFloat(FloatToE4m3(v)), v) << c;
  }
  // Halfway between 1.0 (0x38) and 1.125 (0x39): ties to even (0x38).
  EXPECT_EQ(FloatToE4m3(1.0625f), 0x38);
  EXPECT_EQ(FloatToE4m3(1.1875f), 0x3A);  // between 0x39 and 0x3A: even is 0x3A
  uint16_t h;
  ASSERT_TRUE(FloatToHalf(65504.0f, &h));
  EXPECT_EQ(h, 0x7BFF);
  EXPECT_FALSE(FloatToHalf(65520.0f, &h));
  ASSERT_TRUE(FloatToHalf(5.9604644775390625e-08f, &h));
  EXPECT_EQ(h, 0x0001);
  for (uint32_t b = 0; b < 0x7C00; ++b) {
    uint16_t back;
    ASSERT_TRUE(FloatToHalf(HalfToFloat(static_cast<uint16_t>(b)), &back));
    ASSERT_EQ(back, b);
  }
}

TEST(CodecTest, RatiosMeetTargetsOnLlamaShape) {
  KvShape sh{32, 8, 128, 256, DType::kBf16};
  const double raw = static_cast<double>(sh.RawBytes());
  auto ratio = [&](CodecId c, uint32_t g, uint32_t sinks) {
    auto n = EncodedSize(sh, Params(c, g), sinks);
    EXPECT_TRUE(n.ok());
    return raw / static_cast<double>(*n);
  };
  EXPECT_GE(ratio(CodecId::kKivi4, 64, 0), 3.5);
  EXPECT_GE(ratio(CodecId::kKivi4, 64, 1), 3.5);
  EXPECT_GE(ratio(CodecId::kKivi2, 64, 0), 6.0);
  EXPECT_GE(ratio(CodecId::kKivi2, 64, 1), 6.0);
  EXPECT_GE(ratio(CodecId::kFp8, 64, 0), 1.99);
  EXPECT_GE(ratio(CodecId::kInt8, 64, 0), 1.93);
}

// EncodedSize gives no size for a block Encode refuses: past the format's limit, or
// pre-RoPE keys of an odd head_dim (it gave sizes for both).
TEST(CodecTest, EncodedSizeRefusesWhatEncodeRefuses) {
  const KvShape huge{1024, 64, 128, 1024, DType::kBf16};  // 2^35 bytes
  absl::StatusOr<uint64_t> n = EncodedSize(huge, Params(CodecId::kFp8), 0);
  EXPECT_TRUE(absl::IsInvalidArgument(n.status())) << n.status();
  CodecParams pre = Params(CodecId::kFp8);
  pre.keys_pre_rope = true;
  const KvShape odd{1, 1, 7, 4, DType::kBf16};
  n = EncodedSize(odd, pre, 0);
  EXPECT_TRUE(absl::IsInvalidArgument(n.status())) << n.status();
  std::vector<uint8_t> raw(odd.RawBytes()), out;
  EXPECT_FALSE(Encode(KvView{odd, raw.data(), raw.size()}, pre, &out).ok());
  pre.keys_pre_rope = false;
  EXPECT_TRUE(EncodedSize(odd, pre, 0).ok());
}

TEST(CodecTest, SinkTokensAreExactOnlyInTheFirstBlock) {
  Block b = MakeBlock(1, 2, 64, 128, 3);
  CodecParams p = Params(CodecId::kKivi2);
  p.sink_tokens = 4;
  std::vector<uint8_t> enc = MustEncode(b.View(0), p);
  BlockHeader h;
  std::vector<uint8_t> dec(b.shape.RawBytes());
  ASSERT_TRUE(Decode(enc, KvMutableView{b.shape, dec.data(), dec.size()}, {}, &h).ok());
  EXPECT_EQ(h.sink_tokens, 4);
  const size_t row = 2 * 64 * 2;  // bytes per token (2 heads x 64 dims x bf16)
  for (int s = 0; s < 2; ++s) {   // K and V
    const size_t seg = s * b.shape.SegmentBytes();
    EXPECT_EQ(0, std::memcmp(dec.data() + seg, b.data.data() + seg, 4 * row));
    EXPECT_NE(0, std::memcmp(dec.data() + seg + 4 * row, b.data.data() + seg + 4 * row, row));
  }
  auto h2 = InspectBlock(MustEncode(b.View(2), p));
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(h2->sink_tokens, 2);
  auto h3 = InspectBlock(MustEncode(b.View(256), p));
  ASSERT_TRUE(h3.ok());
  EXPECT_EQ(h3->sink_tokens, 0);
}

TEST(CodecTest, Fp8AndInt8KeepSinkTokensExact) {
  Block b = MakeBlock(2, 2, 64, 96, 21);
  // A sink far outside the other tokens' range must not widen their scales.
  const uint16_t huge = FloatToBf16(3.0e4f);
  for (size_t seg = 0; seg < 4; ++seg) std::memcpy(&b.data[seg * b.shape.SegmentBytes() + 2 * 5], &huge, 2);
  const size_t row = 2 * 64 * 2;  // bytes per token
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8}) {
    SCOPED_TRACE(CodecName(c));
    CodecParams p = Params(c);
    p.sink_tokens = 4;
    std::vector<uint8_t> enc = MustEncode(b.View(0), p);
    auto want = EncodedSize(b.shape, p, 4);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(enc.size(), *want);
    BlockHeader h;
    std::vector<uint8_t> dec(b.shape.RawBytes());
    ASSERT_TRUE(Decode(enc, KvMutableView{b.shape, dec.data(), dec.size()}, {}, &h).ok());
    EXPECT_EQ(h.sink_tokens, 4);
    EXPECT_EQ(h.group_size, 0);
    for (size_t seg = 0; seg < 4; ++seg) {  // K and V of both layers
      const size_t off = seg * b.shape.SegmentBytes();
      EXPECT_EQ(0, std::memcmp(dec.data() + off, b.data.data() + off, 4 * row)) << seg;
      EXPECT_NE(0, std::memcmp(dec.data() + off + 4 * row, b.data.data() + off + 4 * row, row));
    }
    // Without sinks the huge value sets token 0's scale (int8) or the head's
    // scale (fp8): the rest of the block gets worse.
    CodecParams p0 = p;
    p0.sink_tokens = 0;
    std::vector<uint8_t> dec0 = MustDecode(MustEncode(b.View(0), p0), b.shape);
    std::vector<uint8_t> rest(b.data.begin() + 4 * row, b.data.end());
    std::vector<uint8_t> rest_s(dec.begin() + 4 * row, dec.end());
    std::vector<uint8_t> rest_0(dec0.begin() + 4 * row, dec0.end());
    EXPECT_LE(RelL2(rest, rest_s), RelL2(rest, rest_0));
    // Later blocks have fewer or no sinks.
    auto h2 = InspectBlock(MustEncode(b.View(3), p));
    ASSERT_TRUE(h2.ok());
    EXPECT_EQ(h2->sink_tokens, 1);
    auto h3 = InspectBlock(MustEncode(b.View(96), p));
    ASSERT_TRUE(h3.ok());
    EXPECT_EQ(h3->sink_tokens, 0);
    // All tokens sinks: the block is exact.
    p.sink_tokens = 1000;
    EXPECT_EQ(MustDecode(MustEncode(b.View(0), p), b.shape), b.data);
  }
}

// Keys whose error with the version-1 symmetric scheme (per-row int8 /
// per-head fp8 scale, no centres) is computed here as the baseline.
std::vector<uint8_t> SymmetricKeysV1(const Block& b, CodecId c) {
  std::vector<uint8_t> out = b.data;
  const uint32_t T = b.shape.tokens, H = b.shape.kv_heads, D = b.shape.head_dim;
  const Kernels& K = ScalarKernels();
  for (uint32_t l = 0; l < b.shape.layers; ++l) {
    const uint16_t* x = reinterpret_cast<const uint16_t*>(b.data.data() + 2 * l * b.shape.SegmentBytes());
    uint16_t* y = reinterpret_cast<uint16_t*>(out.data() + 2 * l * b.shape.SegmentBytes());
    for (uint32_t h = 0; h < H; ++h) {
      float head_amax = 0;
      for (uint32_t t = 0; t < T; ++t) {
        head_amax = std::max(head_amax, Bf16ToFloat(K.abs_max_bits(x + (size_t{t} * H + h) * D, D)));
      }
      for (uint32_t t = 0; t < T; ++t) {
        const size_t r = (size_t{t} * H + h) * D;
        if (c == CodecId::kInt8) {
          float s = Bf16ToFloat(K.abs_max_bits(x + r, D)) / 127.0f;
          std::vector<int8_t> q(D);
          K.quant_int8(x + r, D, 1.0f / s, q.data());
          K.dequant_int8(q.data(), D, s, y + r);
        } else {
          float s = head_amax / 448.0f;
          std::vector<uint8_t> q(D);
          K.quant_fp8(x + r, D, 1.0f / s, q.data());
          K.dequant_fp8(q.data(), D, s, y + r);
        }
      }
    }
  }
  return out;
}

TEST(CodecTest, CenteredKeysCutTheErrorOfOutlierChannels) {
  // The generator's keys have 2 outlier RoPE pairs per head with a consistent
  // sign at 10-20x the median channel scale (docs/codecs.md).
  SyntheticKvConfig cfg;
  cfg.layers = 2;
  cfg.kv_heads = 4;
  cfg.base_position = 4096;  // no sink token
  auto g = GenerateSyntheticKv(cfg);
  ASSERT_TRUE(g.ok());
  Block b{g->shape, g->kv};
  const size_t seg = b.shape.SegmentBytes();
  auto keys = [&](const std::vector<uint8_t>& v) {
    std::vector<uint8_t> k;
    for (uint32_t l = 0; l < b.shape.layers; ++l) {
      k.insert(k.end(), v.begin() + 2 * l * seg, v.begin() + (2 * l + 1) * seg);
    }
    return k;
  };
  const Queries q{g->queries_per_kv_head, g->queries};
  for (CodecId c : {CodecId::kInt8, CodecId::kFp8}) {
    std::vector<uint8_t> dec = MustDecode(MustEncode(b.View(4096), Params(c)), b.shape);
    std::vector<uint8_t> old = SymmetricKeysV1(b, c);
    const double now = RelL2(keys(b.data), keys(dec));
    const double v1 = RelL2(keys(b.data), keys(old));
    auto rn = CompareAttention(b.shape, b.data.data(), dec.data(), q);
    auto r1 = CompareAttention(b.shape, b.data.data(), old.data(), q);
    ASSERT_TRUE(rn.ok() && r1.ok());
    // The v1 reference has exact values; the codec's values add their own error.
    SCOPED_TRACE(testing::Message() << CodecName(c) << " key rel L2 " << now << " (v1 " << v1
                                    << "), attention p99 " << rn->attn_rel_l2.p99 << " (v1 keys only "
                                    << r1->attn_rel_l2.p99 << ")");
    EXPECT_LT(now * 2, v1);
    EXPECT_LT(rn->attn_rel_l2.p99 * 4, r1->attn_rel_l2.p99);
    // Measured: int8 keys 0.0029 vs 0.0144, attention 0.0072 vs 0.049;
    // fp8 keys 0.0106 vs 0.0255, attention 0.028 vs 0.41.
    EXPECT_LT(rn->attn_rel_l2.p99, c == CodecId::kInt8 ? 0.015 : 0.06);
  }
}

TEST(CodecTest, EncoderRejectsBadInput) {
  Block b = MakeBlock(1, 2, 64, 64, 4);
  std::vector<uint8_t> out;
  KvView v = b.View();
  v.size -= 1;
  EXPECT_EQ(Encode(v, Params(CodecId::kRaw), &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Encode(b.View(), Params(CodecId::kKivi4, 48), &out).code(),
            absl::StatusCode::kInvalidArgument);
  CodecParams pr = Params(CodecId::kLossless);
  pr.keys_pre_rope = true;
  EXPECT_EQ(Encode(b.View(), pr, &out).code(), absl::StatusCode::kInvalidArgument);
  // Non-finite input: every lossy codec refuses, lossless keeps it.
  Block nan = b;
  nan.data[2 * 77] = 0xC0;
  nan.data[2 * 77 + 1] = 0x7F;
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    EXPECT_EQ(Encode(nan.View(), Params(c), &out).code(), absl::StatusCode::kInvalidArgument)
        << CodecName(c);
  }
  EXPECT_TRUE(Encode(nan.View(), Params(CodecId::kLossless), &out).ok());
  Block nan2 = b;  // in a value row after the sink
  nan2.data[b.shape.SegmentBytes() + 2 * 1000 + 1] = 0xFF;
  nan2.data[b.shape.SegmentBytes() + 2 * 1000] = 0x80;  // -inf
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    EXPECT_EQ(Encode(nan2.View(), Params(c), &out).code(), absl::StatusCode::kInvalidArgument)
        << CodecName(c);
  }
  Block kinf = b;  // in a key row after the sink: the centred path must catch it
  kinf.data[2 * 1000 + 1] = 0x7F;
  kinf.data[2 * 1000] = 0x80;  // +inf
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8}) {
    for (KernelChoice k : {KernelChoice::kSimd, KernelChoice::kScalar}) {
      absl::Status st = Encode(kinf.View(), Params(c, 64, k), &out);
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << CodecName(c);
      EXPECT_NE(st.message().find("inf or NaN"), std::string::npos) << st;
    }
  }
  // A huge (finite) sink value is kept exactly by kivi.
  Block sinkbig = b;
  uint16_t hv = FloatToBf16(1e6f);
  std::memcpy(&sinkbig.data[2 * 3], &hv, 2);
  ASSERT_TRUE(Encode(sinkbig.View(), Params(CodecId::kKivi4), &out).ok());
  std::vector<uint8_t> dec(b.shape.RawBytes());
  ASSERT_TRUE(Decode(out, KvMutableView{b.shape, dec.data(), dec.size()}).ok());
  EXPECT_EQ(0, std::memcmp(&dec[6], &hv, 2));
  // kivi cannot hold values beyond fp16.
  Block big = b;
  uint16_t huge = FloatToBf16(1e6f);
  std::memcpy(&big.data[2 * 1000], &huge, 2);  // token 7: not a sink
  EXPECT_EQ(Encode(big.View(), Params(CodecId::kKivi4), &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Encode(big.View(), Params(CodecId::kInt8), &out).ok());
  // Lossy codecs take bf16 only.
  Block f16 = MakeBlock(1, 1, 8, 8, 1, DType::kFp16);
  EXPECT_EQ(Encode(f16.View(), Params(CodecId::kInt8), &out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CodecTest, DecoderRejectsTruncationAtEveryOffset) {
  Block b = MakeBlock(2, 2, 16, 64, 8);
  for (CodecId c : kAll) {
    std::vector<uint8_t> enc = MustEncode(b.View(), Params(c, 32));
    std::vector<uint8_t> out(b.shape.RawBytes());
    for (size_t len = 0; len < enc.size(); ++len) {
      std::vector<uint8_t> cut(enc.begin(), enc.begin() + len);  // exact-size heap copy for ASan
      absl::Status s = Decode(cut, KvMutableView{b.shape, out.data(), out.size()});
      ASSERT_FALSE(s.ok()) << CodecName(c) << " len " << len;
    }
    std::vector<uint8_t> longer = enc;
    longer.push_back(0);
    EXPECT_FALSE(Decode(longer, KvMutableView{b.shape, out.data(), out.size()}).ok());
  }
}

TEST(CodecTest, EveryFlippedBitIsACleanError) {
  Block b = MakeBlock(1, 2, 16, 32, 9);
  for (CodecId c : kAll) {
    std::vector<uint8_t> enc = MustEncode(b.View(), Params(c, 32));
    std::vector<uint8_t> out(b.shape.RawBytes());
    for (size_t bit = 0; bit < enc.size() * 8; ++bit) {
      std::vector<uint8_t> bad = enc;
      bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      absl::Status s = Decode(bad, KvMutableView{b.shape, out.data(), out.size()});
      ASSERT_FALSE(s.ok()) << CodecName(c) << " bit " << bit;
      // Past the magic/version/size fields, corruption is reported as data loss.
      if (bit / 8 >= 8) {
        ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss) << CodecName(c) << " bit " << bit << s;
      }
    }
  }
}

// InspectBlock is what callers size their output buffers from: a header that
// claims a huge shape over a body that cannot hold it fails there (before, a
// 128-byte file made `kvhub-codec decode` zero 16 GiB, then refuse the block).
TEST(CodecTest, InspectRefusesHeadersTheBodyCannotBackBeforeAnyBufferIsSized) {
  Block b = MakeBlock(1, 2, 16, 32, 10);
  for (CodecId c : {CodecId::kKivi4, CodecId::kFp8, CodecId::kRaw, CodecId::kLossless}) {
    std::vector<uint8_t> enc = MustEncode(b.View(), Params(c, 32));
    ASSERT_TRUE(InspectBlock(enc).ok()) << CodecName(c);
    // The header alone, and the block cut short: the length is wrong.
    std::vector<uint8_t> head(enc.begin(), enc.begin() + 128);
    EXPECT_FALSE(InspectBlock(head).ok()) << CodecName(c);
    std::vector<uint8_t> cut(enc.begin(), enc.end() - 16);
    EXPECT_FALSE(InspectBlock(cut).ok()) << CodecName(c);
    // 64x the tokens, header resealed, body unchanged.
    std::vector<uint8_t> big = enc;
    PutU32(big.data() + 28, 32 * 64);
    PutU64(big.data() + 64, b.shape.RawBytes() * 64);
    PutU64(big.data() + 120, Xxh3_64(big.data(), 120));
    EXPECT_FALSE(InspectBlock(big).ok()) << CodecName(c);
  }
}

// A block whose bytes changed after it was made is DATA_LOSS from InspectBlock too,
// wherever the change lands (a flip in the segment table was INVALID_ARGUMENT
// "misplaced", so an engine that checks the code took corruption for a bad input);
// a structural lie under valid checksums stays INVALID_ARGUMENT.
TEST(CodecTest, InspectCallsAChangedBlockDataLoss) {
  Block b = MakeBlock(2, 2, 16, 32, 10);
  std::vector<uint8_t> enc = MustEncode(b.View(), Params(CodecId::kKivi4, 32));
  for (size_t at : {size_t{128}, size_t{128 + 20}, size_t{128 + 40}, enc.size() / 2}) {
    std::vector<uint8_t> v = enc;
    v[at] ^= 1;
    absl::StatusOr<BlockHeader> h = InspectBlock(v);
    EXPECT_TRUE(h.ok() || h.status().code() == absl::StatusCode::kDataLoss) << at << ": " << h.status();
    std::vector<uint8_t> out(b.shape.RawBytes());
    EXPECT_EQ(Decode(v, KvMutableView{b.shape, out.data(), out.size()}).code(), absl::StatusCode::kDataLoss) << at;
  }
  std::vector<uint8_t> table_flip = enc;
  table_flip[128] ^= 1;  // segment 0's offset
  EXPECT_EQ(InspectBlock(table_flip).status().code(), absl::StatusCode::kDataLoss);
  PutU64(table_flip.data() + 80, Xxh3_64(table_flip.data() + 128, table_flip.size() - 128));  // resealed: a lie
  PutU64(table_flip.data() + 120, Xxh3_64(table_flip.data(), 120));
  EXPECT_EQ(InspectBlock(table_flip).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CodecTest, DecoderRejectsStructuralLiesWithValidChecksums) {
  Block b = MakeBlock(1, 2, 16, 32, 10);
  std::vector<uint8_t> enc = MustEncode(b.View(), Params(CodecId::kKivi4, 32));
  std::vector<uint8_t> out(b.shape.RawBytes());
  auto reseal = [](std::vector<uint8_t> v) {
    PutU64(v.data() + 80, Xxh3_64(v.data() + 128, v.size() - 128));
    PutU64(v.data() + 120, Xxh3_64(v.data(), 120));
    return v;
  };
  auto expect_invalid = [&](std::vector<uint8_t> v, const char* what) {
    absl::Status s = Decode(reseal(std::move(v)), KvMutableView{b.shape, out.data(), out.size()});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what << ": " << s;
  };
  { auto v = enc; v[8] = 99; expect_invalid(v, "unknown codec"); }
  { auto v = enc; v[9] = 7; expect_invalid(v, "unknown dtype"); }
  { auto v = enc; v[11] = 0x80; expect_invalid(v, "unknown flag"); }
  { auto v = enc; PutU16(v.data() + 12, 48); expect_invalid(v, "group size"); }
  { auto v = enc; PutU16(v.data() + 14, 33); expect_invalid(v, "sinks > tokens"); }
  { auto v = enc; PutU32(v.data() + 16, 5000); expect_invalid(v, "absurd layers"); }
  { auto v = enc; PutU32(v.data() + 24, 0); expect_invalid(v, "zero head_dim"); }
  { auto v = enc; PutU32(v.data() + 28, 64); expect_invalid(v, "raw_bytes mismatch"); }
  { auto v = enc; v[100] = 1; expect_invalid(v, "reserved byte"); }
  { auto v = enc; PutU64(v.data() + 128, 8); expect_invalid(v, "segment overlaps table"); }
  { auto v = enc; PutU64(v.data() + 128 + 8, GetU64(v.data() + 128 + 8) + 16); expect_invalid(v, "segment size"); }
  { auto v = enc; PutU64(v.data() + 128, GetU64(v.data() + 128) + 1); expect_invalid(v, "misaligned"); }
  // Bytes the layout does not account for (were accepted: one block, many byte
  // strings): junk after the last segment, and a segment moved 16 bytes on.
  {
    auto v = enc;
    v.insert(v.end(), 32, 0xAB);
    PutU64(v.data() + 72, GetU64(v.data() + 72) + 32);
    expect_invalid(v, "bytes after the last segment");
  }
  {
    auto v = enc;
    const uint64_t body = GetU64(v.data() + 72);
    const uint32_t segs = 2 * b.shape.layers;
    v.insert(v.begin() + 128 + 16 * segs, 16, 0);  // before segment 0
    for (uint32_t s = 0; s < segs; ++s) PutU64(v.data() + 128 + 16 * s, GetU64(v.data() + 128 + 16 * s) + 16);
    PutU64(v.data() + 72, body + 16);
    expect_invalid(v, "a gap before segment 0");
  }
  { auto v = enc; PutU16(v.data() + 4, 1); expect_invalid(v, "format version 1"); }
  { auto v = enc; PutU64(v.data() + 32, static_cast<uint64_t>(-7)); expect_invalid(v, "negative base_position"); }
  // fp8/int8: the key segment's centre array is part of its size; group size is not allowed.
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8}) {
    std::vector<uint8_t> e8 = MustEncode(b.View(), Params(c));
    { auto v = e8; PutU16(v.data() + 12, 32); expect_invalid(v, "group size for fp8/int8"); }
    { auto v = e8; PutU16(v.data() + 14, 0); expect_invalid(v, "sink count without sink rows"); }
    // K segment shrunk by its centre array (2*H*D bytes, as a v1 block had).
    { auto v = e8; PutU64(v.data() + 128 + 8, GetU64(v.data() + 128 + 8) - 64); expect_invalid(v, "K without centres"); }
  }
  {
    std::vector<uint8_t> raw = MustEncode(b.View(), Params(CodecId::kRaw));
    PutU16(raw.data() + 14, 1);
    absl::Status s = Decode(reseal(raw), KvMutableView{b.shape, out.data(), out.size()});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("sink tokens set for codec raw"), std::string::npos) << s;
  }
  {
    auto v = enc;
    PutU16(v.data() + 4, 1);
    absl::Status s = Decode(reseal(v), KvMutableView{b.shape, out.data(), out.size()});
    EXPECT_NE(s.message().find("unsupported format version 1"), std::string::npos) << s;
  }
  // Output view that does not match.
  KvShape other = b.shape;
  other.tokens = 16;
  std::vector<uint8_t> small(other.RawBytes());
  EXPECT_EQ(Decode(enc, KvMutableView{other, small.data(), small.size()}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Decode(enc, KvMutableView{b.shape, out.data(), out.size() - 1}).code(),
            absl::StatusCode::kInvalidArgument);
}

// Recomputes both checksums of a block, as a forger (or a faulty encoder) would.
std::vector<uint8_t> Reseal(std::vector<uint8_t> v) {
  PutU64(v.data() + 80, Xxh3_64(v.data() + 128, v.size() - 128));
  PutU64(v.data() + 120, Xxh3_64(v.data(), 120));
  return v;
}

// A lossless plane must be one current-format zstd frame. libzstd built with legacy
// support (Debian's is) decodes v0.5-v0.7 frames too, and a frame followed by another
// one: bytes no kvhub encoder writes, which reached zstd's old decoders before.
TEST(CodecTest, LosslessPlanesAreOneCurrentZstdFrame) {
  Block b = MakeBlock(1, 2, 64, 64, 3);
  std::vector<uint8_t> enc = MustEncode(b.View(), Params(CodecId::kLossless));
  const uint8_t* seg = enc.data() + 128 + GetU64(enc.data() + 128);
  ASSERT_EQ(seg[0], 2u);  // bf16: two byte planes
  uint64_t pos = 4 + 8 * 2;
  size_t zstd_at = 0, zstd_len = 0;
  for (size_t p = 0; p < 2; ++p) {
    const uint32_t len = GetU32(seg + 4 + 8 * p + 4);
    if (seg[4 + 8 * p] == 1 && zstd_len == 0) {
      zstd_at = static_cast<size_t>(seg + pos - enc.data());
      zstd_len = len;
    }
    pos += len;
  }
  ASSERT_GT(zstd_len, 0u) << "no plane was compressed";
  std::vector<uint8_t> out(b.shape.RawBytes());
  for (uint32_t legacy_magic : {0xFD2FB525u, 0xFD2FB526u, 0xFD2FB527u}) {
    std::vector<uint8_t> v = enc;
    PutU32(v.data() + zstd_at, legacy_magic);
    v = Reseal(std::move(v));
    const absl::Status s = Decode(v, KvMutableView{b.shape, out.data(), out.size()});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("not one zstd frame"), std::string::npos) << s;
    EXPECT_FALSE(InspectBlock(v).ok());
  }
  EXPECT_EQ(MustDecode(enc, b.shape), b.data);
}

bool AllFiniteBf16(const std::vector<uint8_t>& kv) {
  for (size_t i = 0; i + 1 < kv.size(); i += 2) {
    if ((GetU16(&kv[i]) & 0x7F80) == 0x7F80) return false;
  }
  return true;
}

// fp8/int8 keys decode as bf16(q * scale + mid): near bf16's largest, the
// rounding of mid and of the code carried a finite key to inf (this block, fp8:
// key 0x7F7F of token 1 decoded as 0x7F80). Encoders refuse non-sink keys beyond
// +-2^126 (segment_layout.h kCenteredKeyMaxBf16).
TEST(CodecTest, CenteredKeysBeyondTwoPow126AreRefused) {
  Block b;
  b.shape = KvShape{1, 1, 2, 2, DType::kBf16};  // 1 layer, 1 head, head_dim 2, 2 tokens
  b.data.assign(b.shape.RawBytes(), 0);
  auto with = [&](std::initializer_list<std::pair<size_t, uint16_t>> elems) {
    Block m = b;
    for (const auto& [i, v] : elems) PutU16(&m.data[2 * i], v);
    return m;
  };
  // Elements: keys 0..3 ([token][channel]), values 4..7.
  const Block example = with({{0, 0x7C03}, {2, 0x7F7F}});  // key channel 0 = {0x7C03, 0x7F7F}
  std::vector<uint8_t> out;
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8}) {
    for (KernelChoice k : {KernelChoice::kSimd, KernelChoice::kScalar}) {
      SCOPED_TRACE(testing::Message() << CodecName(c) << (k == KernelChoice::kScalar ? " scalar" : " simd"));
      const CodecParams p = Params(c, 64, k);
      // base_position 1: no sink tokens (the default setting makes position 0 one).
      absl::Status st = Encode(example.View(1), p, &out);
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
      EXPECT_NE(st.message().find("2^126"), std::string::npos) << st;
      EXPECT_NE(st.message().find(absl::StrCat("codec ", CodecName(c))), std::string::npos) << st;
      // Just past the bound, either sign, either token: refused.
      for (uint16_t v : {uint16_t{0x7E81}, uint16_t{0xFE81}, uint16_t{0x7F7F}, uint16_t{0xFF7F}}) {
        for (size_t i : {size_t{1}, size_t{2}}) {
          EXPECT_EQ(Encode(with({{i, v}}).View(1), p, &out).code(), absl::StatusCode::kInvalidArgument)
              << "bits " << v << " at element " << i;
        }
      }
      // At the bound: accepted. Non-finite keys keep their own message.
      EXPECT_TRUE(Encode(with({{1, 0x7E80}, {2, 0xFE80}}).View(1), p, &out).ok());
      st = Encode(with({{2, 0x7F80}}).View(1), p, &out);
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
      EXPECT_NE(st.message().find("inf or NaN"), std::string::npos) << st;
      // Sink keys are stored as they are, and values are not centred: neither is bounded.
      EXPECT_TRUE(Encode(with({{0, 0x7F7F}, {1, 0xFF7F}}).View(0), p, &out).ok());
      EXPECT_TRUE(Encode(with({{4, 0x7F7F}, {6, 0x7C03}, {7, 0xFF7F}}).View(1), p, &out).ok());
    }
  }
  // lossless keeps the block exactly.
  EXPECT_EQ(MustDecode(MustEncode(example.View(1), Params(CodecId::kLossless)), b.shape), example.data);
}

// The bound makes every accepted block decode finite: keys at and just inside
// +-2^126 in the patterns that overflowed near bf16's largest (a channel from
// small to the bound, from -bound to +bound, near the bound), sink keys and
// values at bf16's largest.
TEST(CodecTest, CenteredKeysAtTheBoundDecodeFinite) {
  Block b = MakeBlock(2, 2, 16, 64, 31);
  const KvShape& sh = b.shape;
  const size_t HD = 2 * 16;
  std::mt19937_64 rng(5);
  for (uint32_t l = 0; l < sh.layers; ++l) {
    uint8_t* keys = b.data.data() + 2 * l * sh.SegmentBytes();
    uint8_t* values = keys + sh.SegmentBytes();
    for (size_t i = 0; i < HD; ++i) PutU16(keys + 2 * i, (i % 2) ? 0x7F7F : 0xFF7F);  // token 0: the sink
    for (size_t t = 1; t < sh.tokens; ++t) {
      for (size_t i = 0; i < HD; ++i) {
        const uint16_t sign = (rng() & 1) ? 0x8000 : 0;
        uint16_t v;
        switch (i % 4) {
          case 0: v = t % 2 ? 0x7E80 : 0x7C03; break;  // the refused example, scaled to the bound
          case 1: v = t % 2 ? 0x7E80 : 0xFE80; break;  // -bound .. +bound
          case 2: v = static_cast<uint16_t>((0x7E80 - rng() % 64) | sign); break;
          default: v = static_cast<uint16_t>((0x7E00 + rng() % 0x81) | sign); break;  // 2^125 .. 2^126
        }
        PutU16(keys + 2 * (t * HD + i), v);
      }
    }
    for (size_t e = 0; e < sh.SegmentElements(); e += 3) PutU16(values + 2 * e, (e % 2) ? 0x7F7F : 0xFF7F);
  }
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8}) {
    for (KernelChoice k : {KernelChoice::kSimd, KernelChoice::kScalar}) {
      SCOPED_TRACE(testing::Message() << CodecName(c) << (k == KernelChoice::kScalar ? " scalar" : " simd"));
      std::vector<uint8_t> enc = MustEncode(b.View(0), Params(c, 64, k));
      DecodeOptions o;
      o.kernels = k;
      std::vector<uint8_t> dec = MustDecode(enc, sh, o);
      EXPECT_TRUE(AllFiniteBf16(dec));
      EXPECT_LT(RelL2(b.data, dec), 0.25);  // sanity: the data, not garbage
    }
  }
}

// Decode used stored scales, key centres and kivi zeros as they were: a block
// changed and resealed (or a faulty encoder's) with a NaN, inf or negative one
// decoded to NaN/inf with OK. It is DATA_LOSS now, naming layer, K/V and field.
TEST(CodecTest, DecoderRefusesStoredStatsThatAreNotFiniteOrNegative) {
  Block b = MakeBlock(2, 2, 16, 64, 14);
  std::vector<uint8_t> out(b.shape.RawBytes());
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  struct Edit {
    const char* field;
    uint64_t at;  // from the segment start
    uint32_t bits;
    int width;    // bytes
  };
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    const std::vector<uint8_t> enc = MustEncode(b.View(), Params(c, 32));
    auto h = InspectBlock(enc);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_TRUE(Decode(Reseal(enc), KvMutableView{b.shape, out.data(), out.size()}).ok());
    for (uint32_t s : {0u, 3u}) {  // layer 0 keys, layer 1 values
      const bool is_value = s % 2 == 1;
      const SegLayout L = Layout(c, b.shape, is_value, h->group_size, h->sink_tokens);
      const uint64_t seg = BlockHeader::kSize + GetU64(enc.data() + BlockHeader::kSize + 16 * s);
      std::vector<Edit> edits;
      // The checks read four fp16 (two f32) statistics at a time: every lane is hit.
      if (IsKivi(c)) {  // fp16 scale and zero
        const uint64_t n = L.scale_bytes / 2;
        for (uint64_t at : {uint64_t{0}, uint64_t{1}, uint64_t{2}, n - 1}) {
          for (uint32_t v : {0x7E00u, 0xBC00u, 0x7C00u}) edits.push_back({"scale[", L.scale_off + 2 * at, v, 2});  // NaN, -1, inf
          for (uint32_t v : {0x7E00u, 0xFC00u}) edits.push_back({"zero[", L.zero_off + 2 * at, v, 2});  // NaN, -inf
        }
      } else {  // f32 scales; keys also have bf16 centres
        const uint64_t n = L.scale_bytes / 4;
        for (uint64_t at : {uint64_t{0}, n - 1}) {
          for (float v : {kNan, -1.0f, kInf}) {
            edits.push_back({"scale[", L.scale_off + 4 * at, std::bit_cast<uint32_t>(v), 4});
          }
        }
        if (!is_value) {
          // NaN, -inf, and finite centres beyond +-2^126 that no encoder writes (0x7F7F
          // with an ordinary scale decoded to inf, status OK).
          for (uint32_t v : {0x7FC0u, 0xFF80u, 0x7F7Fu, 0xFEC0u, 0x7E81u}) {
            edits.push_back({"mid[", L.zero_off + L.zero_bytes - 2, v, 2});
          }
        }
      }
      for (const Edit& e : edits) {
        SCOPED_TRACE(testing::Message() << CodecName(c) << " segment " << s << " " << e.field << " bits "
                                        << e.bits);
        std::vector<uint8_t> bad = enc;
        if (e.width == 4) {
          PutU32(&bad[seg + e.at], e.bits);
        } else {
          PutU16(&bad[seg + e.at], static_cast<uint16_t>(e.bits));
        }
        bad = Reseal(std::move(bad));
        for (KernelChoice k : {KernelChoice::kSimd, KernelChoice::kScalar}) {
          DecodeOptions o;
          o.kernels = k;
          absl::Status st = Decode(bad, KvMutableView{b.shape, out.data(), out.size()}, o);
          EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
          EXPECT_NE(st.message().find(absl::StrCat("layer ", s / 2, is_value ? " values" : " keys")),
                    std::string::npos)
              << st;
          EXPECT_NE(st.message().find(e.field), std::string::npos) << st;
        }
      }
    }
    // A scale of -0 equals 0: accepted.
    std::vector<uint8_t> negzero = enc;
    const SegLayout L = Layout(c, b.shape, true, h->group_size, h->sink_tokens);
    const uint64_t seg = BlockHeader::kSize + GetU64(enc.data() + BlockHeader::kSize + 16 * 1);
    if (IsKivi(c)) {
      PutU16(&negzero[seg + L.scale_off], 0x8000);
    } else {
      PutU32(&negzero[seg + L.scale_off], 0x80000000u);
    }
    EXPECT_TRUE(Decode(Reseal(negzero), KvMutableView{b.shape, out.data(), out.size()}).ok()) << CodecName(c);
  }
}

// Sink tokens are the tokens at absolute positions < sink_tokens (at most
// kMaxSinkTokens = 1024): an encoder writes S > 0 sinks only when base_position +
// S <= 1024. A header that claims sinks further on is refused.
TEST(CodecTest, HeaderWithSinksPastPosition1024IsRefused) {
  Block b = MakeBlock(1, 2, 16, 32, 15);
  std::vector<uint8_t> out(b.shape.RawBytes());
  for (CodecId c : {CodecId::kFp8, CodecId::kKivi4}) {
    SCOPED_TRACE(CodecName(c));
    CodecParams p = Params(c, 32);
    p.sink_tokens = kMaxSinkTokens;
    // The encoder's extremes: 4 sinks at 1020, a block of sinks only at 992.
    for (int64_t base : {int64_t{1020}, int64_t{992}}) {
      const std::vector<uint8_t> enc = MustEncode(b.View(base), p);
      auto h = InspectBlock(enc);
      ASSERT_TRUE(h.ok()) << h.status();
      EXPECT_EQ(h->base_position + h->sink_tokens, 1024);
      EXPECT_TRUE(Decode(enc, KvMutableView{b.shape, out.data(), out.size()}).ok());
      // One position later, header resealed: no encoder writes that.
      std::vector<uint8_t> moved = enc;
      PutU64(moved.data() + 32, static_cast<uint64_t>(base + 1));
      moved = Reseal(std::move(moved));
      EXPECT_EQ(InspectBlock(moved).status().code(), absl::StatusCode::kInvalidArgument) << base;
      absl::Status st = Decode(moved, KvMutableView{b.shape, out.data(), out.size()});
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
      EXPECT_NE(st.message().find("sink tokens"), std::string::npos) << st;
    }
    // A block past the sinks has none, wherever it starts.
    auto h = InspectBlock(MustEncode(b.View(1024), p));
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->sink_tokens, 0);
  }
  CodecParams p = Params(CodecId::kInt8);
  p.sink_tokens = kMaxSinkTokens + 1;
  std::vector<uint8_t> enc;
  EXPECT_EQ(Encode(b.View(0), p, &enc).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CodecTest, PreRopeKeysReRotateToAnyPosition) {
  SyntheticKvConfig c;
  c.layers = 1;
  c.kv_heads = 2;
  c.tokens = 64;
  c.base_position = 1000;
  c.rope_base = 10000.0;
  auto at1000 = GenerateSyntheticKv(c);
  c.base_position = 5000;
  auto at5000 = GenerateSyntheticKv(c);  // same content (same seed), other positions
  ASSERT_TRUE(at1000.ok() && at5000.ok());
  for (RopePairing pairing : {RopePairing::kNeox}) {
    Block b{at1000->shape, at1000->kv};
    for (CodecId codec : {CodecId::kRaw, CodecId::kInt8, CodecId::kKivi4}) {
      CodecParams p = Params(codec);
      p.keys_pre_rope = true;
      KvView v = b.View(1000);
      v.rope_pairing = pairing;
      std::vector<uint8_t> enc = MustEncode(v, p);
      auto h = InspectBlock(enc);
      ASSERT_TRUE(h.ok());
      EXPECT_TRUE(h->keys_pre_rope());
      DecodeOptions o;
      o.target_position = 5000;
      std::vector<uint8_t> moved = MustDecode(enc, b.shape, o);
      // Keys now match the ones generated at position 5000 (up to rounding).
      std::vector<uint8_t> ref_k(at5000->kv.begin(), at5000->kv.begin() + b.shape.SegmentBytes());
      std::vector<uint8_t> got_k(moved.begin(), moved.begin() + b.shape.SegmentBytes());
      EXPECT_LT(RelL2(ref_k, got_k), codec == CodecId::kKivi4 ? 0.1 : 0.02) << CodecName(codec);
      // Default target: back at the original positions.
      std::vector<uint8_t> back = MustDecode(enc, b.shape);
      std::vector<uint8_t> orig_k(b.data.begin(), b.data.begin() + b.shape.SegmentBytes());
      std::vector<uint8_t> back_k(back.begin(), back.begin() + b.shape.SegmentBytes());
      EXPECT_LT(RelL2(orig_k, back_k), codec == CodecId::kKivi4 ? 0.1 : 0.02);
      // Values are untouched by rotation.
      if (codec == CodecId::kRaw) {
        EXPECT_EQ(0, std::memcmp(back.data() + b.shape.SegmentBytes(),
                                 b.data.data() + b.shape.SegmentBytes(), b.shape.SegmentBytes()));
      }
    }
  }
}

TEST(CodecTest, PositionsOutsideZeroToTwoPow52AreRefused) {
  // A negative or huge position is a caller's bug (token positions start at 0); it
  // used to be stored, and sink tokens were then chosen by it.
  Block b = MakeBlock(1, 2, 16, 64, 5);
  for (CodecId c : kAll) {
    std::vector<uint8_t> out;
    for (int64_t bad : {int64_t{-1}, int64_t{-5}, kMaxPosition + 1, std::numeric_limits<int64_t>::max()}) {
      absl::Status s = Encode(b.View(bad), Params(c), &out);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << CodecName(c) << " " << bad;
      EXPECT_NE(s.message().find("base_position"), absl::string_view::npos) << s.message();
    }
    std::vector<uint8_t> enc = MustEncode(b.View(kMaxPosition), Params(c));
    DecodeOptions o;
    o.target_position = -1;
    std::vector<uint8_t> raw(b.shape.RawBytes());
    absl::Status s = Decode(enc, KvMutableView{b.shape, raw.data(), raw.size()}, o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << CodecName(c);
    EXPECT_NE(s.message().find("target_position -1"), absl::string_view::npos) << s.message();
    o.target_position = 0;
    EXPECT_TRUE(Decode(enc, KvMutableView{b.shape, raw.data(), raw.size()}, o).ok()) << CodecName(c);
  }
}

// Rotating an inf or NaN key gives NaN in its pair (inf * sin 0), and rotating a key
// near bf16's largest can overflow: a block that would hold or serve such keys is
// refused, never stored or served with OK (raw with pre-RoPE keys turned a key
// (1, +inf) into (NaN, inf) and decoded it as (NaN, NaN)).
TEST(CodecTest, RotationThatMakesNonFiniteKeysIsRefused) {
  Block b = MakeBlock(1, 2, 16, 64, 6);
  std::vector<uint8_t> out;
  Block kinf = b;  // key row 3, channel 1: +inf
  kinf.data[2 * (3 * 2 * 16 + 1) + 1] = 0x7F;
  kinf.data[2 * (3 * 2 * 16 + 1)] = 0x80;
  CodecParams raw_pre = Params(CodecId::kRaw);
  raw_pre.keys_pre_rope = true;
  absl::Status s = Encode(kinf.View(), raw_pre, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("inf or NaN after rotation"), absl::string_view::npos) << s.message();
  Block huge = b;  // finite, but rotation overflows: 0x7F7F is bf16's largest
  for (size_t i = 0; i < huge.shape.SegmentElements(); ++i) {
    huge.data[2 * i] = 0x7F;
    huge.data[2 * i + 1] = 0x7F;
  }
  EXPECT_EQ(Encode(huge.View(100), raw_pre, &out).code(), absl::StatusCode::kInvalidArgument);
  // A raw block keeps inf keys as they are; moved to another position they would
  // be garbage, so that decode fails.
  std::vector<uint8_t> enc = MustEncode(kinf.View(), Params(CodecId::kRaw));
  std::vector<uint8_t> got(b.shape.RawBytes());
  EXPECT_TRUE(Decode(enc, KvMutableView{b.shape, got.data(), got.size()}).ok());
  EXPECT_EQ(got, kinf.data);
  DecodeOptions o;
  o.target_position = 1000;
  s = Decode(enc, KvMutableView{b.shape, got.data(), got.size()}, o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // Finite keys still move.
  enc = MustEncode(b.View(), raw_pre);
  EXPECT_TRUE(Decode(enc, KvMutableView{b.shape, got.data(), got.size()}, o).ok());
}

// Buffers at odd addresses (a Python memoryview sliced at byte 1) give the same
// bytes as aligned ones, on both kernels; the kernels used to read 16-bit values
// through misaligned pointers there (undefined behaviour; UBSan stops on it).
TEST(CodecTest, BuffersAtOddAddressesGiveTheSameBytes) {
  Block b = MakeBlock(2, 2, 16, 64, 12);
  for (KernelChoice k : {KernelChoice::kScalar, KernelChoice::kSimd}) {
    for (CodecId c : {CodecId::kKivi4, CodecId::kKivi2, CodecId::kFp8, CodecId::kInt8, CodecId::kLossless}) {
      CodecParams p = Params(c, c == CodecId::kKivi4 || c == CodecId::kKivi2 ? 32 : 0);
      p.kernels = k;
      const std::vector<uint8_t> want = MustEncode(b.View(), p);
      std::vector<uint8_t> odd_in(b.data.size() + 1);
      std::memcpy(odd_in.data() + 1, b.data.data(), b.data.size());
      KvView v = b.View();
      v.data = odd_in.data() + 1;
      std::vector<uint8_t> got;
      ASSERT_TRUE(Encode(v, p, &got).ok()) << CodecName(c);
      EXPECT_EQ(got, want) << CodecName(c);

      std::vector<uint8_t> odd_block(want.size() + 1);
      std::memcpy(odd_block.data() + 1, want.data(), want.size());
      std::vector<uint8_t> aligned_out(b.shape.RawBytes()), odd_out(b.shape.RawBytes() + 1);
      DecodeOptions o;
      o.kernels = k;
      ASSERT_TRUE(Decode(want, KvMutableView{b.shape, aligned_out.data(), aligned_out.size()}, o).ok());
      ASSERT_TRUE(Decode(absl::Span<const uint8_t>(odd_block.data() + 1, want.size()),
                         KvMutableView{b.shape, odd_out.data() + 1, aligned_out.size()}, o)
                      .ok())
          << CodecName(c);
      EXPECT_EQ(std::memcmp(odd_out.data() + 1, aligned_out.data(), aligned_out.size()), 0) << CodecName(c);
    }
  }
}

TEST(CodecTest, OutputBufferReuseGivesSameBytes) {
  Block b = MakeBlock(2, 2, 32, 64, 11);
  for (CodecId c : kAll) {
    std::vector<uint8_t> fresh = MustEncode(b.View(), Params(c));
    std::vector<uint8_t> reused(fresh.size() + 100, 0xAB);
    ASSERT_TRUE(Encode(b.View(), Params(c), &reused).ok());
    EXPECT_EQ(reused, fresh) << CodecName(c);
  }
}

}  // namespace
}  // namespace kvhub::codec
