#pragma once
// Scalar reference kernels (see kernels.h for the contract). Header-only so
// the SIMD kernels can reuse them for tails shorter than one vector.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "codec/numeric.h"

namespace kvhub::codec::scalar {

inline uint16_t AbsMaxBits(const uint16_t* x, size_t n) {
  uint16_t m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max<uint16_t>(m, x[i] & 0x7FFF);
  return m;
}

inline void ColMinMax(const uint16_t* x, size_t rows, size_t stride, size_t n, int16_t* mn,
                      int16_t* mx) {
  for (size_t r = 0; r < rows; ++r) {
    const uint16_t* row = x + r * stride;
    for (size_t c = 0; c < n; ++c) {
      int16_t k = Bf16OrderKey(row[c]);
      mn[c] = std::min(mn[c], k);
      mx[c] = std::max(mx[c], k);
    }
  }
}

inline void GroupMinMax(const uint16_t* x, size_t n, size_t g, int16_t* mn, int16_t* mx) {
  for (size_t j = 0, start = 0; start < n; ++j, start += g) {
    size_t end = std::min(n, start + g);
    int16_t lo = INT16_MAX, hi = INT16_MIN;
    for (size_t i = start; i < end; ++i) {
      int16_t k = Bf16OrderKey(x[i]);
      lo = std::min(lo, k);
      hi = std::max(hi, k);
    }
    mn[j] = lo;
    mx[j] = hi;
  }
}

inline float ClampF(float v, float lo, float hi) { return std::min(std::max(v, lo), hi); }

inline void QuantInt8(const uint16_t* x, size_t n, float inv, int8_t* q) {
  for (size_t i = 0; i < n; ++i) {
    float v = ClampF(Bf16ToFloat(x[i]) * inv, -127.0f, 127.0f);
    q[i] = static_cast<int8_t>(std::nearbyint(v));
  }
}

inline void DequantInt8(const int8_t* q, size_t n, float scale, uint16_t* y) {
  for (size_t i = 0; i < n; ++i) y[i] = FloatToBf16(static_cast<float>(q[i]) * scale);
}

inline void QuantFp8(const uint16_t* x, size_t n, float inv, uint8_t* q) {
  for (size_t i = 0; i < n; ++i) q[i] = FloatToE4m3(Bf16ToFloat(x[i]) * inv);
}

inline void DequantFp8(const uint8_t* q, size_t n, float scale, uint16_t* y) {
  for (size_t i = 0; i < n; ++i) y[i] = FloatToBf16(E4m3ToFloat(q[i]) * scale);
}

inline void QuantAffine(const uint16_t* x, size_t n, const float* inv, const float* zero,
                        float qmax, uint8_t* q) {
  for (size_t i = 0; i < n; ++i) {
    float d = Bf16ToFloat(x[i]) - zero[i];
    float v = ClampF(d * inv[i], 0.0f, qmax);
    q[i] = static_cast<uint8_t>(std::nearbyint(v));
  }
}

inline void DequantAffine(const uint8_t* q, size_t n, const float* scale, const float* zero,
                          uint16_t* y) {
  for (size_t i = 0; i < n; ++i) {
    float m = static_cast<float>(q[i]) * scale[i];
    y[i] = FloatToBf16(m + zero[i]);
  }
}

inline void QuantAffine1(const uint16_t* x, size_t n, float inv, float zero, float qmax,
                         uint8_t* q) {
  for (size_t i = 0; i < n; ++i) {
    float d = Bf16ToFloat(x[i]) - zero;
    float v = ClampF(d * inv, 0.0f, qmax);
    q[i] = static_cast<uint8_t>(std::nearbyint(v));
  }
}

inline void DequantAffine1(const uint8_t* q, size_t n, float scale, float zero, uint16_t* y) {
  for (size_t i = 0; i < n; ++i) {
    float m = static_cast<float>(q[i]) * scale;
    y[i] = FloatToBf16(m + zero);
  }
}

inline bool KiviStats(const int16_t* kmn, const int16_t* kmx, size_t n, float qmax,
                      uint16_t* scale_h, uint16_t* zero_h, float* inv, float* zero) {
  bool ok = true;
  for (size_t i = 0; i < n; ++i) {
    uint16_t bmn = OrderKeyToBf16(kmn[i]), bmx = OrderKeyToBf16(kmx[i]);
    if ((bmn & 0x7FFF) >= 0x7F80 || (bmx & 0x7FFF) >= 0x7F80) {
      ok = false;
      continue;
    }
    float mn = Bf16ToFloat(bmn), mx = Bf16ToFloat(bmx);
    float range = mx - mn;
    float s = range / qmax;
    uint16_t sh = 0, zh = 0;
    if (!FloatToHalf(s, &sh) || !FloatToHalf(mn, &zh)) ok = false;
    scale_h[i] = sh;
    zero_h[i] = zh;
    float sf = HalfToFloat(sh);
    zero[i] = HalfToFloat(zh);
    inv[i] = sf > 0.0f ? 1.0f / sf : 0.0f;
  }
  return ok;
}

inline void HalfToFloatN(const uint16_t* h, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = HalfToFloat(h[i]);
}

inline void Pack4(const uint8_t* q, size_t n, uint8_t* out) {
  size_t i = 0;
  for (; i + 1 < n; i += 2) out[i / 2] = static_cast<uint8_t>((q[i] & 0xF) | (q[i + 1] << 4));
  if (i < n) out[i / 2] = q[i] & 0xF;
}

inline void Unpack4(const uint8_t* in, size_t n, uint8_t* q) {
  for (size_t i = 0; i < n; ++i) q[i] = (in[i / 2] >> ((i & 1) * 4)) & 0xF;
}

inline void Pack2(const uint8_t* q, size_t n, uint8_t* out) {
  for (size_t b = 0; b < (n + 3) / 4; ++b) {
    uint8_t v = 0;
    for (size_t k = 0; k < 4 && b * 4 + k < n; ++k) v |= static_cast<uint8_t>((q[b * 4 + k] & 3) << (2 * k));
    out[b] = v;
  }
}

inline void Unpack2(const uint8_t* in, size_t n, uint8_t* q) {
  for (size_t i = 0; i < n; ++i) q[i] = (in[i / 4] >> ((i & 3) * 2)) & 3;
}

inline void SplitPlanes16(const uint16_t* x, size_t n, uint8_t* hi, uint8_t* lo) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t r = static_cast<uint16_t>((x[i] << 1) | (x[i] >> 15));
    hi[i] = static_cast<uint8_t>(r >> 8);
    lo[i] = static_cast<uint8_t>(r);
  }
}

inline void MergePlanes16(const uint8_t* hi, const uint8_t* lo, size_t n, uint16_t* x) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t r = static_cast<uint16_t>((hi[i] << 8) | lo[i]);
    x[i] = static_cast<uint16_t>((r >> 1) | (r << 15));
  }
}

inline uint32_t AbsMaxCentered(const uint16_t* x, const float* mid, size_t n) {
  uint32_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    float r = Bf16ToFloat(x[i]) - mid[i];
    m = std::max<uint32_t>(m, std::bit_cast<uint32_t>(r) & 0x7FFFFFFFu);
  }
  return m;
}

inline void QuantInt8Centered(const uint16_t* x, const float* mid, size_t n, float inv, int8_t* q) {
  for (size_t i = 0; i < n; ++i) {
    float r = Bf16ToFloat(x[i]) - mid[i];
    float v = ClampF(r * inv, -127.0f, 127.0f);
    q[i] = static_cast<int8_t>(std::nearbyint(v));
  }
}

inline void DequantInt8Centered(const int8_t* q, const float* mid, size_t n, float scale,
                                uint16_t* y) {
  for (size_t i = 0; i < n; ++i) {
    float m = static_cast<float>(q[i]) * scale;
    y[i] = FloatToBf16(m + mid[i]);
  }
}

inline void QuantFp8Centered(const uint16_t* x, const float* mid, size_t n, float inv, uint8_t* q) {
  for (size_t i = 0; i < n; ++i) {
    float r = Bf16ToFloat(x[i]) - mid[i];
    q[i] = FloatToE4m3(r * inv);
  }
}

inline void DequantFp8Centered(const uint8_t* q, const float* mid, size_t n, float scale,
                               uint16_t* y) {
  for (size_t i = 0; i < n; ++i) {
    float m = E4m3ToFloat(q[i]) * scale;
    y[i] = FloatToBf16(m + mid[i]);
  }
}

}  // namespace kvhub::codec::scalar
