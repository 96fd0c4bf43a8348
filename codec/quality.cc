#include "codec/quality.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec/kernels.h"
#include "codec/numeric.h"

namespace kvhub::codec {
namespace {

Stat Summarize(std::vector<double> v) {
  Stat s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  size_t rank = static_cast<size_t>(std::ceil(0.99 * v.size()));
  s.p99 = v[std::max<size_t>(rank, 1) - 1];
  return s;
}

const uint16_t* Seg(const KvShape& sh, const uint8_t* kv, uint32_t s) {
  return reinterpret_cast<const uint16_t*>(kv + s * sh.SegmentBytes());
}

}  // namespace

std::string QualityReport::ToJson() const {
  auto one = [](const char* name, const Stat& s) {
    return absl::StrFormat("\"%s\":{\"median\":%.6g,\"p99\":%.6g}", name, s.median, s.p99);
  };
  return absl::StrCat("{", one("attn_rel_l2", attn_rel_l2), ",", one("one_minus_cos", one_minus_cos),
                      ",", one("kl", kl), ",", one("k_rel_l2", k_rel_l2), ",",
                      one("v_rel_l2", v_rel_l2), "}");
}

absl::StatusOr<QualityReport> CompareAttention(const KvShape& sh, const uint8_t* ref,
                                               const uint8_t* test, const Queries& qs) {
  if (auto s = sh.Validate(); !s.ok()) return s;
  if (sh.dtype != DType::kBf16) return absl::InvalidArgumentError("quality: bf16 only");
  const uint32_t L = sh.layers, H = sh.kv_heads, D = sh.head_dim, T = sh.tokens;
  const uint32_t NQ = qs.per_kv_head;
  if (NQ == 0 || qs.data.size() != size_t{L} * H * NQ * D) {
    return absl::InvalidArgumentError("quality: queries do not match the shape");
  }
  std::vector<double> attn, cosv, klv, kerr, verr;
  std::vector<double> lr(T), lt(T), o_r(D), o_t(D);
  std::vector<double> K(size_t{T} * D), Kt(size_t{T} * D), V(size_t{T} * D), Vt(size_t{T} * D);
  const double inv_sqrt_d = 1.0 / std::sqrt(double(D));
  for (uint32_t l = 0; l < L; ++l) {
    const uint16_t *kr = Seg(sh, ref, 2 * l), *vr = Seg(sh, ref, 2 * l + 1);
    const uint16_t *kt = Seg(sh, test, 2 * l), *vt = Seg(sh, test, 2 * l + 1);
    for (uint32_t h = 0; h < H; ++h) {
      double kn = 0, ke = 0, vn = 0, ve = 0;
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t d = 0; d < D; ++d) {
          size_t i = (size_t{t} * H + h) * D + d, j = size_t{t} * D + d;
          K[j] = Bf16ToFloat(kr[i]);
          Kt[j] = Bf16ToFloat(kt[i]);
          V[j] = Bf16ToFloat(vr[i]);
          Vt[j] = Bf16ToFloat(vt[i]);
          kn += K[j] * K[j];
          ke += (Kt[j] - K[j]) * (Kt[j] - K[j]);
          vn += V[j] * V[j];
          ve += (Vt[j] - V[j]) * (Vt[j] - V[j]);
        }
      }
      kerr.push_back(std::sqrt(ke / std::max(kn, 1e-300)));
      verr.push_back(std::sqrt(ve / std::max(vn, 1e-300)));
      double on = 0, oe = 0, cos_sum = 0, kl_sum = 0;
      for (uint32_t j = 0; j < NQ; ++j) {
        const float* q = &qs.data[((size_t{l} * H + h) * NQ + j) * D];
        double mr = -1e300, mt = -1e300;
        for (uint32_t t = 0; t < T; ++t) {
          double a = 0, b = 0;
          for (uint32_t d = 0; d < D; ++d) {
            a += q[d] * K[size_t{t} * D + d];
            b += q[d] * Kt[size_t{t} * D + d];
          }
          lr[t] = a * inv_sqrt_d;
          lt[t] = b * inv_sqrt_d;
          mr = std::max(mr, lr[t]);
          mt = std::max(mt, lt[t]);
        }
        double sr = 0, st = 0;
        for (uint32_t t = 0; t < T; ++t) {
          sr += std::exp(lr[t] - mr);
          st += std::exp(lt[t] - mt);
        }
        std::fill(o_r.begin(), o_r.end(), 0.0);
        std::fill(o_t.begin(), o_t.end(), 0.0);
        double kl = 0;
        for (uint32_t t = 0; t < T; ++t) {
          double pr = std::exp(lr[t] - mr) / sr, pt = std::exp(lt[t] - mt) / st;
          // log p - log p' computed from logits (stable).
          double lpr = lr[t] - mr - std::log(sr), lpt = lt[t] - mt - std::log(st);
          kl += pr * (lpr - lpt);
          for (uint32_t d = 0; d < D; ++d) {
            o_r[d] += pr * V[size_t{t} * D + d];
            o_t[d] += pt * Vt[size_t{t} * D + d];
          }
        }
        double dot = 0, nr = 0, nt = 0, e = 0;
        for (uint32_t d = 0; d < D; ++d) {
          dot += o_r[d] * o_t[d];
          nr += o_r[d] * o_r[d];
          nt += o_t[d] * o_t[d];
          e += (o_t[d] - o_r[d]) * (o_t[d] - o_r[d]);
        }
        on += nr;
        oe += e;
        // Both outputs zero (a zeroed head): identical, not orthogonal.
        cos_sum += nr == 0 && nt == 0 ? 0.0 : 1.0 - dot / std::max(std::sqrt(nr * nt), 1e-300);
        kl_sum += std::max(kl, 0.0);
      }
      attn.push_back(std::sqrt(oe / std::max(on, 1e-300)));
      cosv.push_back(cos_sum / NQ);
      klv.push_back(kl_sum / NQ);
    }
  }
  QualityReport r;
  r.attn_rel_l2 = Summarize(attn);
  r.one_minus_cos = Summarize(cosv);
  r.kl = Summarize(klv);
  r.k_rel_l2 = Summarize(kerr);
  r.v_rel_l2 = Summarize(verr);
  return r;
}

Queries ProxyQueriesFromKeys(const KvShape& sh, const uint8_t* kv, uint32_t n, uint64_t seed) {
  const uint32_t L = sh.layers, H = sh.kv_heads, D = sh.head_dim, T = sh.tokens;
  Queries q;
  q.per_kv_head = n;
  q.data.resize(size_t{L} * H * n * D);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  std::vector<double> mean(D);
  for (uint32_t l = 0; l < L; ++l) {
    const uint16_t* k = Seg(sh, kv, 2 * l);
    for (uint32_t h = 0; h < H; ++h) {
      std::fill(mean.begin(), mean.end(), 0.0);
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t d = 0; d < D; ++d) mean[d] += Bf16ToFloat(k[(size_t{t} * H + h) * D + d]);
      }
      for (double& m : mean) m /= T;
      for (uint32_t j = 0; j < n; ++j) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        uint32_t t = static_cast<uint32_t>(s % T);
        float* out = &q.data[((size_t{l} * H + h) * n + j) * D];
        for (uint32_t d = 0; d < D; ++d) {
          double kv_ = Bf16ToFloat(k[(size_t{t} * H + h) * D + d]);
          out[d] = static_cast<float>(mean[d] + 0.5 * (kv_ - mean[d]));
        }
      }
    }
  }
  return q;
}

absl::StatusOr<std::vector<uint8_t>> PerTokenInt4KeyAblation(const KvShape& sh, const uint8_t* kv, uint32_t G,
                                                             uint32_t sinks) {
  std::vector<uint8_t> out(kv, kv + sh.RawBytes());
  const Kernels& K = ScalarKernels();
  const uint32_t H = sh.kv_heads, D = sh.head_dim, T = sh.tokens;
  const uint32_t NG = (D + G - 1) / G;
  std::vector<int16_t> mn(NG), mx(NG);
  std::vector<uint8_t> codes(D);
  for (uint32_t l = 0; l < sh.layers; ++l) {
    uint16_t* k = reinterpret_cast<uint16_t*>(out.data() + 2 * l * sh.SegmentBytes());
    for (size_t r = size_t{std::min(sinks, T)} * H; r < size_t{T} * H; ++r) {
      uint16_t* row = k + r * D;
      K.group_min_max(row, D, G, mn.data(), mx.data());
      for (uint32_t j = 0; j < NG; ++j) {
        float lo = Bf16ToFloat(OrderKeyToBf16(mn[j])), hi = Bf16ToFloat(OrderKeyToBf16(mx[j]));
        uint16_t sh16 = 0, zh16 = 0;
        if (!FloatToHalf((hi - lo) / 15.0f, &sh16) || !FloatToHalf(lo, &zh16)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "int4 ablation: layer ", l, " key row ", r, " has a group whose minimum or range exceeds fp16 "
              "(as kivi4 refuses it)"));
        }
        float s = HalfToFloat(sh16), z = HalfToFloat(zh16);
        uint32_t c0 = j * G, len = std::min(D - c0, G);
        K.quant_affine1(row + c0, len, s > 0 ? 1.0f / s : 0.0f, z, 15.0f, codes.data());
        K.dequant_affine1(codes.data(), len, s, z, row + c0);
      }
    }
  }
  return out;
}

}  // namespace kvhub::codec
