#include "codec/synthetic_kv.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "codec/block_format.h"
#include "codec/numeric.h"

namespace kvhub::codec {
namespace {

// splitmix64 + Box-Muller: portable and deterministic.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return (Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Normal() {
    if (have_) {
      have_ = false;
      return spare_;
    }
    double u = 1.0 - Uniform(), v = Uniform();
    double r = std::sqrt(-2.0 * std::log(u));
    spare_ = r * std::sin(2 * M_PI * v);
    have_ = true;
    return r * std::cos(2 * M_PI * v);
  }
  double LogNormal(double sigma) { return std::exp(sigma * Normal()); }

 private:
  uint64_t s_;
  bool have_ = false;
  double spare_ = 0;
};

// Channel index pairs of RoPE frequency i.
std::pair<uint32_t, uint32_t> PairOf(uint32_t i, uint32_t D, RopePairing p) {
  return p == RopePairing::kNeox ? std::make_pair(i, i + D / 2) : std::make_pair(2 * i, 2 * i + 1);
}

// cos/sin of position p (row p - first) for every frequency, float64 angles.
std::vector<float> RopeTable(int64_t first, uint32_t count, uint32_t D, double base) {
  std::vector<float> cs(size_t{count} * D);
  for (uint32_t r = 0; r < count; ++r) {
    for (uint32_t i = 0; i < D / 2; ++i) {
      double a = static_cast<double>(first + r) * std::pow(base, -2.0 * i / D);
      cs[size_t{r} * D + 2 * i] = static_cast<float>(std::cos(a));
      cs[size_t{r} * D + 2 * i + 1] = static_cast<float>(std::sin(a));
    }
  }
  return cs;
}

void RotateFloat(float* x, uint32_t D, RopePairing pairing, const float* cs) {
  for (uint32_t i = 0; i < D / 2; ++i) {
    float c = cs[2 * i], s = cs[2 * i + 1];
    auto [ia, ib] = PairOf(i, D, pairing);
    float x0 = x[ia], x1 = x[ib];
    x[ia] = x0 * c - x1 * s;
    x[ib] = x0 * s + x1 * c;
  }
}

}  // namespace

absl::Status SyntheticKvConfig::Validate() const {
  KvShape s{layers, kv_heads, head_dim, tokens, DType::kBf16};
  if (auto st = s.Validate(); !st.ok()) return st;
  if (s.RawBytes() > BlockHeader::kMaxRawBytes) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic kv: ", s.RawBytes(),
                                                   " bytes of KV; the block format holds at most 2^34"));
  }
  if (head_dim % 2 != 0) return absl::InvalidArgumentError("synthetic kv: head_dim must be even");
  if (key_outlier_pairs > head_dim / 2) {
    return absl::InvalidArgumentError("synthetic kv: more outlier pairs than RoPE pairs");
  }
  if (!(key_outlier_min > 0 && key_outlier_max >= key_outlier_min)) {
    return absl::InvalidArgumentError("synthetic kv: bad outlier range");
  }
  if (!(token_rho >= 0 && token_rho < 1)) {
    return absl::InvalidArgumentError("synthetic kv: token_rho must be in [0, 1)");
  }
  if (q_per_kv == 0 || queries_per_q_head == 0 || uint64_t{q_per_kv} * queries_per_q_head > 4096) {
    return absl::InvalidArgumentError("synthetic kv: bad query counts");
  }
  if (!(sink_attention >= 0 && sink_attention < 1)) {
    return absl::InvalidArgumentError("synthetic kv: sink_attention must be in [0, 1)");
  }
  if (!(rope_base > 0 && std::isfinite(rope_base))) {
    return absl::InvalidArgumentError("synthetic kv: bad rope_base");
  }
  if (!(query_outlier_frac >= 0 && query_outlier_frac <= 100)) {
    return absl::InvalidArgumentError("synthetic kv: query_outlier_frac must be in [0, 100]");
  }
  if (base_position < 0 || base_position > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError("synthetic kv: base_position out of range");
  }
  return absl::OkStatus();
}

KvView SyntheticKv::View(double rope_base, RopePairing pairing) const {
  KvView v;
  v.shape = shape;
  v.data = kv.data();
  v.size = kv.size();
  v.rope_base = rope_base;
  v.rope_pairing = pairing;
  v.base_position = base_position;
  return v;
}

absl::StatusOr<SyntheticKv> GenerateSyntheticKv(const SyntheticKvConfig& c) {
  if (auto s = c.Validate(); !s.ok()) return s;
  const uint32_t L = c.layers, H = c.kv_heads, D = c.head_dim, T = c.tokens;
  const uint32_t NQ = c.QueriesPerKvHead();
  SyntheticKv out;
  out.shape = KvShape{L, H, D, T, DType::kBf16};
  out.kv.resize(out.shape.RawBytes());
  out.queries.resize(size_t{L} * H * NQ * D);
  out.queries_per_kv_head = NQ;
  out.base_position = c.base_position;
  const bool has_sink = c.base_position == 0;
  Rng rng(c.seed);
  const float rho = c.token_rho, innov = std::sqrt(1.0f - rho * rho);
  std::vector<float> k(size_t{T} * D), v(size_t{T} * D), q(size_t{NQ} * D);
  std::vector<float> kmean(D), kscale(D), vmean(D), vscale(D), z(D), qmean(D);
  std::vector<char> outlier(D);
  const uint32_t qpos = (NQ + c.q_per_kv - 1) / c.q_per_kv;
  const std::vector<float> rope = RopeTable(c.base_position, T + qpos, D, c.rope_base);
  for (uint32_t l = 0; l < L; ++l) {
    const float lk = static_cast<float>(rng.LogNormal(c.layer_sigma));
    const float lv = static_cast<float>(rng.LogNormal(c.layer_sigma));
    uint16_t* K = reinterpret_cast<uint16_t*>(out.kv.data() + (2 * l) * out.shape.SegmentBytes());
    uint16_t* V = reinterpret_cast<uint16_t*>(out.kv.data() + (2 * l + 1) * out.shape.SegmentBytes());
    for (uint32_t h = 0; h < H; ++h) {
      // Key channel statistics (pre-RoPE). Median channel scale = lk.
      std::fill(outlier.begin(), outlier.end(), 0);
      for (uint32_t d = 0; d < D; ++d) {
        kscale[d] = lk * static_cast<float>(rng.LogNormal(c.key_channel_sigma));
        kmean[d] = static_cast<float>(rng.Normal()) * c.key_mean_frac * kscale[d];
        qmean[d] = static_cast<float>(rng.Normal()) * 0.3f * c.query_scale;
      }
      // Outliers: key_outlier_pairs distinct pairs among the lowest-frequency eighth
      // of the pairs (at least the last pair; drawn without replacement: a pair drawn
      // twice left its head with fewer outlier channels than configured).
      const uint32_t low = std::max<uint32_t>(1, D / 16);
      const uint32_t candidates = std::max(low, c.key_outlier_pairs);
      std::vector<uint32_t> pool(candidates);
      for (uint32_t j = 0; j < candidates; ++j) pool[j] = D / 2 - 1 - j;
      for (uint32_t o = 0; o < c.key_outlier_pairs; ++o) {
        const uint32_t pick =
            o + std::min(candidates - o - 1, static_cast<uint32_t>(rng.Uniform() * (candidates - o)));
        std::swap(pool[o], pool[pick]);
        auto [a, b] = PairOf(pool[o], D, c.rope_pairing);
        for (uint32_t ch : {a, b}) {
          outlier[ch] = 1;
          float mag = c.key_outlier_min +
                      static_cast<float>(rng.Uniform()) * (c.key_outlier_max - c.key_outlier_min);
          float sign = rng.Uniform() < 0.5 ? -1.0f : 1.0f;
          kmean[ch] = sign * mag * lk;
          kscale[ch] = c.key_outlier_noise * lk;
          // Queries share the outlier channels (same sign pattern, large magnitude).
          qmean[ch] = sign * mag * c.query_outlier_frac * c.query_scale;
        }
      }
      for (uint32_t d = 0; d < D; ++d) {
        vscale[d] = lv * static_cast<float>(rng.LogNormal(c.value_channel_sigma));
        vmean[d] = static_cast<float>(rng.Normal()) * c.value_mean_frac * vscale[d];
      }
      // Keys and values, AR(1) along tokens.
      for (uint32_t d = 0; d < D; ++d) z[d] = static_cast<float>(rng.Normal());
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t d = 0; d < D; ++d) {
          if (t > 0) z[d] = rho * z[d] + innov * static_cast<float>(rng.Normal());
          k[size_t{t} * D + d] = kmean[d] + kscale[d] * z[d];
        }
      }
      for (uint32_t d = 0; d < D; ++d) z[d] = static_cast<float>(rng.Normal());
      float tokscale = 1.0f;
      for (uint32_t t = 0; t < T; ++t) {
        // Per-token scale, itself correlated along tokens.
        float ls = static_cast<float>(rng.Normal()) * c.value_token_sigma;
        tokscale = t == 0 ? std::exp(ls) : std::exp(rho * std::log(tokscale) + innov * ls);
        for (uint32_t d = 0; d < D; ++d) {
          if (t > 0) z[d] = rho * z[d] + innov * static_cast<float>(rng.Normal());
          v[size_t{t} * D + d] = tokscale * (vmean[d] + vscale[d] * z[d]);
        }
      }
      // Queries (pre-RoPE), then rotated to their positions after the block.
      for (uint32_t j = 0; j < NQ; ++j) {
        for (uint32_t d = 0; d < D; ++d) {
          q[size_t{j} * D + d] = qmean[d] + c.query_scale * static_cast<float>(rng.Normal());
        }
      }
      // RoPE: keys at base+t, queries at base+T+j/q_per_kv (decode steps after the block).
      for (uint32_t t = 0; t < T; ++t) {
        RotateFloat(&k[size_t{t} * D], D, c.rope_pairing, &rope[size_t{t} * D]);
      }
      for (uint32_t j = 0; j < NQ; ++j) {
        RotateFloat(&q[size_t{j} * D], D, c.rope_pairing, &rope[size_t{T + j / c.q_per_kv} * D]);
      }
      if (has_sink) {
        // Sink: token 0's key gets a component along the mean query direction
        // so that it draws sink_attention of the mass on average; its value is small.
        // Direction: the mean of this head's (rotated) queries.
        std::vector<double> u(D, 0.0);
        for (uint32_t j = 0; j < NQ; ++j) {
          for (uint32_t d = 0; d < D; ++d) u[d] += q[size_t{j} * D + d];
        }
        double qn = 0;
        for (uint32_t d = 0; d < D; ++d) qn += u[d] * u[d];
        qn = std::sqrt(std::max(qn, 1e-12));
        for (uint32_t d = 0; d < D; ++d) u[d] /= qn;
        const double inv_sqrt_d = 1.0 / std::sqrt(double(D));
        std::vector<double> base_logit(NQ), gain(NQ), rest(NQ);
        for (uint32_t j = 0; j < NQ; ++j) {
          const float* qj = &q[size_t{j} * D];
          double mx = -1e300;
          std::vector<double> lg(T);
          for (uint32_t t = 1; t < T; ++t) {
            double s = 0;
            for (uint32_t d = 0; d < D; ++d) s += double(qj[d]) * k[size_t{t} * D + d];
            lg[t] = s * inv_sqrt_d;
            mx = std::max(mx, lg[t]);
          }
          double sum = 0;
          for (uint32_t t = 1; t < T; ++t) sum += std::exp(lg[t] - mx);
          double b = 0, g = 0;
          for (uint32_t d = 0; d < D; ++d) {
            b += double(qj[d]) * k[d];
            g += double(qj[d]) * u[d];
          }
          base_logit[j] = b * inv_sqrt_d - mx;
          gain[j] = g * inv_sqrt_d;
          rest[j] = sum;
        }
        auto mass = [&](double gamma) {
          double m = 0;
          for (uint32_t j = 0; j < NQ; ++j) {
            double e = std::exp(std::min(base_logit[j] + gamma * gain[j], 700.0));
            m += e / (e + rest[j]);
          }
          return m / NQ;
        };
        double lo = 0, hi = 1;
        while (mass(hi) < c.sink_attention && hi < 1e6) hi *= 2;
        for (int it = 0; it < 60; ++it) {
          double mid = 0.5 * (lo + hi);
          (mass(mid) < c.sink_attention ? lo : hi) = mid;
        }
        for (uint32_t d = 0; d < D; ++d) {
          k[d] += static_cast<float>(hi * u[d]);
          v[d] *= 0.1f;
        }
      }
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t d = 0; d < D; ++d) {
          K[(size_t{t} * H + h) * D + d] = FloatToBf16(k[size_t{t} * D + d]);
          V[(size_t{t} * H + h) * D + d] = FloatToBf16(v[size_t{t} * D + d]);
        }
      }
      float* Q = &out.queries[(size_t{l} * H + h) * NQ * D];
      for (uint32_t j = 0; j < NQ; ++j) {
        std::copy(&q[size_t{j} * D], &q[size_t{j} * D] + D, Q + size_t{j} * D);
      }
    }
  }
  return out;
}

}  // namespace kvhub::codec
