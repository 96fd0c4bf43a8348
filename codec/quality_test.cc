#include "codec/quality.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "codec/codec.h"
#include "codec/numeric.h"
#include "codec/synthetic_kv.h"
#include "gtest/gtest.h"

namespace kvhub::codec {
namespace {

struct Eval {
  QualityReport q;
  double ratio = 0;
};

class QualityTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    SyntheticKvConfig c;
    c.layers = 4;
    c.kv_heads = 4;
    auto g = GenerateSyntheticKv(c);
    ASSERT_TRUE(g.ok());
    data_ = new SyntheticKv(std::move(*g));
  }
  static void TearDownTestSuite() { delete data_; }

  static Eval Run(CodecId codec, uint32_t group = 64) {
    CodecParams p;
    p.codec = codec;
    p.group_size = group;
    KvView v = data_->View(500000.0, RopePairing::kNeox);
    std::vector<uint8_t> block;
    EXPECT_TRUE(Encode(v, p, &block).ok());
    std::vector<uint8_t> out(v.size);
    EXPECT_TRUE(Decode(block, KvMutableView{v.shape, out.data(), out.size()}).ok());
    auto r = CompareAttention(v.shape, v.data, out.data(),
                              Queries{data_->queries_per_kv_head, data_->queries});
    EXPECT_TRUE(r.ok());
    return Eval{*r, double(v.size) / block.size()};
  }
  static SyntheticKv* data_;
};
SyntheticKv* QualityTest::data_ = nullptr;

TEST_F(QualityTest, IdenticalDataHasZeroError) {
  Eval e = Run(CodecId::kLossless);
  EXPECT_EQ(e.q.attn_rel_l2.p99, 0.0);
  EXPECT_EQ(e.q.kl.p99, 0.0);
  EXPECT_EQ(e.q.k_rel_l2.p99, 0.0);
  EXPECT_GT(e.ratio, 1.2);
}

TEST_F(QualityTest, OrderingOnTheGenerator) {
  Eval int8 = Run(CodecId::kInt8), fp8 = Run(CodecId::kFp8);
  Eval k4 = Run(CodecId::kKivi4), k2 = Run(CodecId::kKivi2);
  // More bits, less error.
  EXPECT_LT(int8.q.attn_rel_l2.p99, k4.q.attn_rel_l2.p99);
  EXPECT_LT(k4.q.attn_rel_l2.p99, k2.q.attn_rel_l2.p99);
  EXPECT_LT(k4.q.kl.median, k2.q.kl.median);
  // 8-bit values are far more precise than 4-bit ones.
  EXPECT_LT(int8.q.v_rel_l2.p99 * 4, k4.q.v_rel_l2.p99);
  EXPECT_LT(fp8.q.v_rel_l2.p99 * 3, k4.q.v_rel_l2.p99);
  // Metrics are consistent: nonzero and finite.
  for (const Eval* e : {&int8, &fp8, &k4, &k2}) {
    EXPECT_GT(e->q.attn_rel_l2.median, 0.0);
    EXPECT_TRUE(std::isfinite(e->q.kl.p99));
    EXPECT_LE(e->q.attn_rel_l2.median, e->q.attn_rel_l2.p99);
  }
}

// Issue #3: 8-bit codecs at <= 1/4 of kivi4's p99 attention error. int8 meets
// it with centered keys (format v2); fp8 cannot (e4m3's 3-bit mantissa,
// docs/results-codec.md) but must stay well below kivi4.
TEST_F(QualityTest, Int8AttentionErrorIsBelowAQuarterOfKivi4) {
  Eval int8 = Run(CodecId::kInt8), fp8 = Run(CodecId::kFp8), k4 = Run(CodecId::kKivi4);
  EXPECT_LE(int8.q.attn_rel_l2.p99 * 4, k4.q.attn_rel_l2.p99)
      << int8.q.attn_rel_l2.p99 << " vs " << k4.q.attn_rel_l2.p99;
  EXPECT_LE(int8.q.attn_rel_l2.median * 4, k4.q.attn_rel_l2.median);
  EXPECT_LT(fp8.q.attn_rel_l2.p99 * 2, k4.q.attn_rel_l2.p99)
      << fp8.q.attn_rel_l2.p99 << " vs " << k4.q.attn_rel_l2.p99;
  EXPECT_GT(int8.ratio, 1.9);
  EXPECT_GT(fp8.ratio, 1.95);
}

TEST_F(QualityTest, PerChannelKeysBeatPerTokenInt4ByThreeTimes) {
  for (uint32_t g : {32u, 64u, 128u}) {
    Eval k4 = Run(CodecId::kKivi4, g);
    KvView v = data_->View(500000.0, RopePairing::kNeox);
    absl::StatusOr<std::vector<uint8_t>> abl = PerTokenInt4KeyAblation(v.shape, v.data, g, 1);
    ASSERT_TRUE(abl.ok()) << abl.status();
    auto r = CompareAttention(v.shape, v.data, abl->data(),
                              Queries{data_->queries_per_kv_head, data_->queries});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->v_rel_l2.p99, 0.0);  // values untouched
    EXPECT_GT(r->k_rel_l2.median, 3.0 * k4.q.k_rel_l2.median) << "group " << g;
    EXPECT_GT(r->k_rel_l2.p99, 3.0 * k4.q.k_rel_l2.p99) << "group " << g;
  }
}

TEST_F(QualityTest, RatiosAtEachGroupSize) {
  // First block of a sequence (1 sink token included).
  EXPECT_GE(Run(CodecId::kKivi4, 64).ratio, 3.5);
  EXPECT_GE(Run(CodecId::kKivi2, 64).ratio, 6.0);
  EXPECT_LT(Run(CodecId::kKivi4, 32).ratio, Run(CodecId::kKivi4, 128).ratio);
}

// Little-endian bf16 bytes of `v`, as a .kvraw holds them.
std::vector<uint8_t> Bf16Bytes(std::initializer_list<float> v) {
  std::vector<uint8_t> out;
  for (float f : v) {
    const uint16_t b = FloatToBf16(f);
    out.push_back(static_cast<uint8_t>(b));
    out.push_back(static_cast<uint8_t>(b >> 8));
  }
  return out;
}

TEST(QualityHarnessTest, HandComputedAttention) {
  // One layer, one head, d=2, two tokens, one query: everything by hand.
  KvShape sh{1, 1, 2, 2, DType::kBf16};
  // K = [[1,0],[0,1]], V = [[1,0],[0,1]]; q = [sqrt(2)*ln 3, 0] -> p = [3/4, 1/4].
  std::vector<uint8_t> ref = Bf16Bytes({1, 0, 0, 1, 1, 0, 0, 1});
  // Test: V of token 1 doubled -> O' = [3/4, 1/2] vs O = [3/4, 1/4].
  std::vector<uint8_t> test = Bf16Bytes({1, 0, 0, 1, 1, 0, 0, 2});
  Queries q{1, {static_cast<float>(std::sqrt(2.0) * std::log(3.0)), 0.0f}};
  auto r = CompareAttention(sh, ref.data(), test.data(), q);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->attn_rel_l2.median, 0.25 / std::sqrt(0.5625 + 0.0625), 1e-3);
  EXPECT_NEAR(r->kl.median, 0.0, 1e-12);
  EXPECT_NEAR(r->v_rel_l2.median, 1.0 / std::sqrt(2.0), 1e-6);
  EXPECT_EQ(r->k_rel_l2.median, 0.0);
  EXPECT_FALSE(CompareAttention(sh, ref.data(), test.data(), Queries{2, {1, 2}}).ok());
}

TEST(SyntheticKvTest, ReproducesTheDocumentedStructure) {
  SyntheticKvConfig c;
  c.layers = 2;
  c.kv_heads = 2;
  auto g = GenerateSyntheticKv(c);
  ASSERT_TRUE(g.ok());
  auto again = GenerateSyntheticKv(c);
  EXPECT_EQ(g->kv, again->kv);  // deterministic
  const uint32_t H = 2, D = 128, T = 256;
  const uint16_t* K = reinterpret_cast<const uint16_t*>(g->kv.data());
  const uint16_t* V = reinterpret_cast<const uint16_t*>(g->kv.data() + g->shape.SegmentBytes());
  // Key channel magnitudes (head 0, tokens 1..): a few channels are 10x+ the median
  // and keep their sign; values have no such channel.
  std::vector<double> kmag(D), vmag(D);
  std::vector<int> kpos(D);
  for (uint32_t t = 1; t < T; ++t) {
    for (uint32_t d = 0; d < D; ++d) {
      float k = Bf16ToFloat(K[(size_t{t} * H) * D + d]);
      kmag[d] += std::fabs(k) / (T - 1);
      kpos[d] += k > 0;
      vmag[d] += std::fabs(Bf16ToFloat(V[(size_t{t} * H) * D + d])) / (T - 1);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double km = median(kmag), vm = median(vmag);
  int outliers = 0;
  for (uint32_t d = 0; d < D; ++d) {
    if (kmag[d] > 8 * km) {
      ++outliers;
      EXPECT_TRUE(kpos[d] == 0 || kpos[d] == int(T - 1)) << "outlier channel " << d << " flips sign";
      EXPECT_GE(d % (D / 2), D / 2 - D / 16) << "outlier outside the low-frequency RoPE dims";
    }
    EXPECT_LT(vmag[d], 4 * vm) << "value channel " << d;
  }
  EXPECT_GE(outliers, 2);
  EXPECT_LE(outliers, 8);
  // The sink (token 0) draws most attention of the provided queries.
  double sink_mass = 0;
  const uint32_t NQ = g->queries_per_kv_head;
  for (uint32_t j = 0; j < NQ; ++j) {
    const float* q = &g->queries[size_t{j} * D];
    std::vector<double> lg(T);
    double mx = -1e300;
    for (uint32_t t = 0; t < T; ++t) {
      double s = 0;
      for (uint32_t d = 0; d < D; ++d) s += q[d] * Bf16ToFloat(K[(size_t{t} * H) * D + d]);
      lg[t] = s / std::sqrt(double(D));
      mx = std::max(mx, lg[t]);
    }
    double sum = 0;
    for (double l : lg) sum += std::exp(l - mx);
    sink_mass += std::exp(lg[0] - mx) / sum / NQ;
  }
  EXPECT_GT(sink_mass, 0.4);
  // Neighbouring tokens are correlated (values, head 0, channel-averaged).
  double num = 0, den = 0;
  for (uint32_t t = 2; t < T; ++t) {
    for (uint32_t d = 0; d < D; ++d) {
      double a = Bf16ToFloat(V[(size_t{t} * H) * D + d]), b = Bf16ToFloat(V[(size_t{t - 1} * H) * D + d]);
      num += a * b;
      den += a * a;
    }
  }
  EXPECT_GT(num / den, 0.4);
  // Invalid configs are refused.
  c.head_dim = 7;
  EXPECT_FALSE(GenerateSyntheticKv(c).ok());
}

// Every head has key_outlier_pairs distinct outlier pairs: drawn with replacement, a
// pair drawn twice left 1/8 of the heads (D=128; 1/4 at D=64) with half of them.
TEST(SyntheticKvTest, EveryHeadHasItsConfiguredOutlierChannels) {
  for (uint32_t D : {64u, 128u}) {
    SyntheticKvConfig c;
    c.layers = 8;
    c.kv_heads = 32;
    c.head_dim = D;
    c.tokens = 32;
    auto g = GenerateSyntheticKv(c);
    ASSERT_TRUE(g.ok()) << g.status();
    const uint32_t H = c.kv_heads, T = c.tokens;
    int short_heads = 0;
    for (uint32_t l = 0; l < c.layers; ++l) {
      const uint16_t* K = reinterpret_cast<const uint16_t*>(g->kv.data() + 2 * l * g->shape.SegmentBytes());
      for (uint32_t h = 0; h < H; ++h) {
        std::vector<double> mag(D);
        for (uint32_t t = 1; t < T; ++t) {
          for (uint32_t d = 0; d < D; ++d) mag[d] += std::fabs(Bf16ToFloat(K[(size_t{t} * H + h) * D + d])) / (T - 1);
        }
        std::vector<double> sorted = mag;
        std::sort(sorted.begin(), sorted.end());
        const double median = sorted[D / 2];
        int outliers = 0;
        for (double m : mag) outliers += m > 8 * median;  // outliers: 10-20x the median scale
        short_heads += outliers != static_cast<int>(2 * c.key_outlier_pairs);
      }
    }
    EXPECT_EQ(short_heads, 0) << "D=" << D << ": heads without " << 2 * c.key_outlier_pairs << " outlier channels";
  }
  // The query count is checked in 64 bits (65536 x 65536 wrapped to 0 and passed).
  SyntheticKvConfig huge;
  huge.q_per_kv = 65536;
  huge.queries_per_q_head = 65536;
  EXPECT_FALSE(huge.Validate().ok());
}

// A view of data generated past position 0 says so (it claimed position 0: a sink
// token that is not there, and pre-RoPE keys de-rotated by the wrong positions).
TEST(SyntheticKvTest, TheViewCarriesTheBasePosition) {
  SyntheticKvConfig c;
  c.layers = 1;
  c.kv_heads = 1;
  c.tokens = 8;
  c.base_position = 256;
  auto g = GenerateSyntheticKv(c);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->View(c.rope_base, c.rope_pairing).base_position, 256);
}

// A head whose outputs are both zero is identical (1 - cos was 1, as if orthogonal);
// the int4 ablation refuses a group kivi4 refuses (it was left exact).
TEST(QualityHarnessTest, ZeroOutputsAgreeAndTheAblationRefusesWhatKiviRefuses) {
  KvShape sh{1, 1, 2, 2, DType::kBf16};
  std::vector<uint8_t> zero_v = Bf16Bytes({1, 0, 0, 1, 0, 0, 0, 0});  // K = I, V = 0
  auto r = CompareAttention(sh, zero_v.data(), zero_v.data(), Queries{1, {1.0f, 0.0f}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->one_minus_cos.median, 0.0);
  std::vector<uint8_t> wide = Bf16Bytes({1, 0, -70000, 1, 1, 0, 0, 1});  // token 1's key group: min past fp16
  EXPECT_EQ(PerTokenInt4KeyAblation(sh, wide.data(), 2, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvhub::codec
