#pragma once
// Scalar number-format conversions shared by every codec (and mirrored bit for
// bit by the SIMD kernels and the future CUDA kernels). All rounding is
// round-to-nearest-even; nothing here depends on the FPU rounding mode except
// std::nearbyint, which the library assumes is the default (nearest-even).
// Inputs are finite unless stated; the encoders reject non-finite data first.

#include <bit>
#include <cmath>
#include <cstdint>

namespace kvhub::codec {

inline float Bf16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// Round-to-nearest-even to bf16; values that round past the largest bf16
// become +-inf. Every NaN becomes the canonical 0x7FC0: compilers may swap the
// operands of a commutative operation, which changes which NaN payload
// propagates, so payloads are not reproducible across implementations (only
// corrupted blocks decode to NaN at all).
inline uint16_t FloatToBf16(float f) {
  if (f != f) return 0x7FC0;
  uint32_t u = std::bit_cast<uint32_t>(f);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float
    float v = static_cast<float>(man) * 5.9604644775390625e-08f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round-to-nearest-even to IEEE fp16. Returns false (and leaves *out alone)
// when f is not finite or rounds to infinity (|f| >= 65520).
inline bool FloatToHalf(float f, uint16_t* out) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x477FF000u) return false;  // >= 65520, inf or NaN
  if (ax < 0x38800000u) {               // below 2^-14: fp16 subnormal (or zero)
    float m = std::bit_cast<float>(ax) * 16777216.0f;  // exact: scale by 2^24
    *out = static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(m)));
    return true;
  }
  uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u);
  r -= 112u << 23;
  *out = static_cast<uint16_t>(sign | (r >> 13));
  return true;
}

// OCP FP8 E4M3 ("fn": no infinities, 0x7F/0xFF are NaN, max 448).
// Round-to-nearest-even with saturation to +-448; finite input only.
inline uint8_t FloatToE4m3(float y) {
  uint32_t u = std::bit_cast<uint32_t>(y);
  uint32_t sign = (u >> 24) & 0x80u;
  uint32_t au = u & 0x7FFFFFFFu;
  uint32_t code;
  if (au < 0x3C800000u) {  // |y| < 2^-6: subnormal grid of 2^-9 (|y| * 512 is exact)
    code = static_cast<uint32_t>(std::nearbyint(std::bit_cast<float>(au) * 512.0f));
  } else {
    code = ((au + 0x7FFFFu + ((au >> 20) & 1u)) >> 20) - 960u;  // rebias 127 -> 7
  }
  if (code > 0x7Eu) code = 0x7Eu;
  return static_cast<uint8_t>(code | sign);
}

inline float E4m3ToFloat(uint8_t c) {
  uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  uint32_t mag = c & 0x7Fu;
  float v;
  if ((mag >> 3) == 0) {
    v = static_cast<float>(mag) * 0.001953125f;  // 2^-9
  } else {
    v = std::bit_cast<float>((mag << 20) + (120u << 23));
  }
  return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
}

// Order-preserving map of bf16 bits to int16 (an involution): integer order of
// the keys is the numeric order of the values, with -0 just below +0. Min/max
// are taken on keys so scalar and SIMD agree on every tie.
inline int16_t Bf16OrderKey(uint16_t b) {
  int16_t s = static_cast<int16_t>(b);
  return static_cast<int16_t>(s ^ ((s >> 15) & 0x7FFF));
}
inline uint16_t OrderKeyToBf16(int16_t k) {
  return static_cast<uint16_t>(k ^ ((k >> 15) & 0x7FFF));
}

// Centre of a key channel for the centered fp8/int8 keys (docs/codecs.md):
// bf16_rne(0.5*a + 0.5*b) of the channel's min a and max b (order keys), each
// product and the sum rounded separately. Callers compile with
// -ffp-contract=off (kvhub_codec does).
inline uint16_t MidBf16(int16_t kmn, int16_t kmx) {
  float a = Bf16ToFloat(OrderKeyToBf16(kmn)), b = Bf16ToFloat(OrderKeyToBf16(kmx));
  float ha = 0.5f * a, hb = 0.5f * b;
  return FloatToBf16(ha + hb);
}

}  // namespace kvhub::codec
