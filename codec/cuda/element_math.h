#pragma once
// Per-element number formats of the codecs (docs/codecs.md), written once for
// both the CUDA kernels (device) and the host emulation that tests them
// without a GPU (codec/cuda/emulation_test.cc). Every function is the exact
// expression of codec/numeric.h and codec/kernels_scalar_inl.h, with each
// float32 multiply/add/subtract/divide spelled as an explicitly rounded
// operation: __fmul_rn & co. on the device (never contracted into an FMA),
// plain operators on the host (the host build uses -ffp-contract=off).
// Header-only, no CUDA dependency when compiled by a host compiler.

#include <cstdint>
#include <cstring>
#if !defined(__CUDACC__)
#include <cmath>
#endif

#if defined(__CUDACC__)
#define KVHUB_HD __host__ __device__ __forceinline__
#else
#define KVHUB_HD inline
#endif

namespace kvhub::codec::cuda {

KVHUB_HD uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
KVHUB_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Rounded float32 arithmetic (round-to-nearest-even, never fused).
KVHUB_HD float Mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KVHUB_HD float Add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KVHUB_HD float Sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KVHUB_HD float Div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Nearest-even to an integral float (std::nearbyint in the default mode).
KVHUB_HD float Rne(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::nearbyint(v);
#endif
}
// min(max(v, lo), hi) for non-NaN v; the sign of a zero result may differ
// from std::min/max, which never matters: every use rounds to an integer.
KVHUB_HD float Clamp(float v, float lo, float hi) {
  float a = v < lo ? lo : v;
  return hi < a ? hi : a;
}

KVHUB_HD float Bf16ToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

KVHUB_HD uint16_t FloatToBf16(float f) {
  if (f != f) return 0x7FC0;
  uint32_t u = FloatBits(f);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

KVHUB_HD float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0) {
    float v = Mul(static_cast<float>(man), 5.9604644775390625e-08f);
    return BitsFloat(FloatBits(v) | sign);
  }
  if (exp == 31) return BitsFloat(sign | 0x7F800000u | (man << 13));
  return BitsFloat(sign | ((exp + 112u) << 23) | (man << 13));
}

// false when f is not finite or rounds to fp16 infinity (|f| >= 65520).
KVHUB_HD bool FloatToHalf(float f, uint16_t* out) {
  uint32_t x = FloatBits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x477FF000u) return false;
  if (ax < 0x38800000u) {
    float m = Mul(BitsFloat(ax), 16777216.0f);
    *out = static_cast<uint16_t>(sign | static_cast<uint32_t>(Rne(m)));
    return true;
  }
  uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u);
  r -= 112u << 23;
  *out = static_cast<uint16_t>(sign | (r >> 13));
  return true;
}

KVHUB_HD uint8_t FloatToE4m3(float y) {
  uint32_t u = FloatBits(y);
  uint32_t sign = (u >> 24) & 0x80u;
  uint32_t au = u & 0x7FFFFFFFu;
  uint32_t code;
  if (au < 0x3C800000u) {
    code = static_cast<uint32_t>(Rne(Mul(BitsFloat(au), 512.0f)));
  } else {
    code = ((au + 0x7FFFFu + ((au >> 20) & 1u)) >> 20) - 960u;
  }
  if (code > 0x7Eu) code = 0x7Eu;
  return static_cast<uint8_t>(code | sign);
}

KVHUB_HD float E4m3ToFloat(uint8_t c) {
  uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  uint32_t mag = c & 0x7Fu;
  float v;
  if ((mag >> 3) == 0) {
    v = Mul(static_cast<float>(mag), 0.001953125f);
  } else {
    v = BitsFloat((mag << 20) + (120u << 23));
  }
  return BitsFloat(FloatBits(v) | sign);
}

KVHUB_HD int16_t Bf16OrderKey(uint16_t b) {
  int16_t s = static_cast<int16_t>(b);
  return static_cast<int16_t>(s ^ ((s >> 15) & 0x7FFF));
}
KVHUB_HD uint16_t OrderKeyToBf16(int16_t k) {
  return static_cast<uint16_t>(k ^ ((k >> 15) & 0x7FFF));
}

// Symmetric scale from the largest magnitude bits: scale = amax / qmax,
// inv = 1 / scale; both 0 when scale is not a normal float.
KVHUB_HD void SymScale(uint16_t amax_bits, float qmax, float* scale, float* inv) {
  float s = Div(Bf16ToFloat(amax_bits), qmax);
  if (!(s >= 1.17549435e-38f)) {
    *scale = 0.0f;
    *inv = 0.0f;
  } else {
    *scale = s;
    *inv = Div(1.0f, s);
  }
}

// Symmetric scale from the float bits of the largest magnitude (centered
// keys; for bf16 amax bits b this is SymScale(b) with bits b << 16).
KVHUB_HD void SymScaleF(uint32_t amax_bits, float qmax, float* scale, float* inv) {
  float s = Div(BitsFloat(amax_bits), qmax);
  if (!(s >= 1.17549435e-38f)) {
    *scale = 0.0f;
    *inv = 0.0f;
  } else {
    *scale = s;
    *inv = Div(1.0f, s);
  }
}

// Centre of a key channel from its min/max order keys: bf16(0.5*a + 0.5*b).
KVHUB_HD uint16_t MidBf16(int16_t kmn, int16_t kmx) {
  float a = Bf16ToFloat(OrderKeyToBf16(kmn)), b = Bf16ToFloat(OrderKeyToBf16(kmx));
  return FloatToBf16(Add(Mul(0.5f, a), Mul(0.5f, b)));
}
// Float bits of |x - mid| (>= 0x7F800000: not finite).
KVHUB_HD uint32_t CenteredAbsBits(uint16_t x, float mid) {
  return FloatBits(Sub(Bf16ToFloat(x), mid)) & 0x7FFFFFFFu;
}
KVHUB_HD uint8_t QuantFp8Centered(uint16_t x, float mid, float inv) {
  return FloatToE4m3(Mul(Sub(Bf16ToFloat(x), mid), inv));
}
KVHUB_HD uint16_t DequantFp8Centered(uint8_t q, float scale, float mid) {
  return FloatToBf16(Add(Mul(E4m3ToFloat(q), scale), mid));
}
KVHUB_HD int8_t QuantInt8Centered(uint16_t x, float mid, float inv) {
  return static_cast<int8_t>(Rne(Clamp(Mul(Sub(Bf16ToFloat(x), mid), inv), -127.0f, 127.0f)));
}
KVHUB_HD uint16_t DequantInt8Centered(int8_t q, float scale, float mid) {
  return FloatToBf16(Add(Mul(static_cast<float>(q), scale), mid));
}

KVHUB_HD uint8_t QuantFp8(uint16_t x, float inv) { return FloatToE4m3(Mul(Bf16ToFloat(x), inv)); }
KVHUB_HD uint16_t DequantFp8(uint8_t q, float scale) {
  return FloatToBf16(Mul(E4m3ToFloat(q), scale));
}

KVHUB_HD int8_t QuantInt8(uint16_t x, float inv) {
  return static_cast<int8_t>(Rne(Clamp(Mul(Bf16ToFloat(x), inv), -127.0f, 127.0f)));
}
KVHUB_HD uint16_t DequantInt8(int8_t q, float scale) {
  return FloatToBf16(Mul(static_cast<float>(q), scale));
}

KVHUB_HD uint8_t QuantAffine(uint16_t x, float inv, float zero, float qmax) {
  float d = Sub(Bf16ToFloat(x), zero);
  return static_cast<uint8_t>(Rne(Clamp(Mul(d, inv), 0.0f, qmax)));
}
KVHUB_HD uint16_t DequantAffine(uint8_t q, float scale, float zero) {
  return FloatToBf16(Add(Mul(static_cast<float>(q), scale), zero));
}

// KIVI statistics of one group from its min/max order keys. Returns false if
// a min/max is not finite or a result does not fit fp16.
KVHUB_HD bool KiviStats(int16_t kmn, int16_t kmx, float qmax, uint16_t* scale_h,
                        uint16_t* zero_h, float* inv, float* zero) {
  uint16_t bmn = OrderKeyToBf16(kmn), bmx = OrderKeyToBf16(kmx);
  bool ok = true;
  if ((bmn & 0x7FFF) >= 0x7F80 || (bmx & 0x7FFF) >= 0x7F80) ok = false;
  float mn = Bf16ToFloat(bmn), mx = Bf16ToFloat(bmx);
  float s = Div(Sub(mx, mn), qmax);
  uint16_t sh = 0, zh = 0;
  if (!ok || !FloatToHalf(s, &sh) || !FloatToHalf(mn, &zh)) {
    ok = false;
    sh = zh = 0;
  }
  *scale_h = sh;
  *zero_h = zh;
  float sf = HalfToFloat(sh);
  *zero = HalfToFloat(zh);
  *inv = sf > 0.0f ? Div(1.0f, sf) : 0.0f;
  return ok;
}

// One RoPE pair: x0' = x0*c - x1*s, x1' = x0*s + x1*c, each product and sum
// rounded, then bf16 (codec/rope.cc).
KVHUB_HD void RotatePair(uint16_t* a, uint16_t* b, float c, float s) {
  float x0 = Bf16ToFloat(*a), x1 = Bf16ToFloat(*b);
  float p0 = Mul(x0, c), p1 = Mul(x1, s), p2 = Mul(x0, s), p3 = Mul(x1, c);
  *a = FloatToBf16(Sub(p0, p1));
  *b = FloatToBf16(Add(p2, p3));
}

}  // namespace kvhub::codec::cuda
