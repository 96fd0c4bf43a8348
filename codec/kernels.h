#pragma once
// The per-element kernels every codec is built from, in two implementations
// that produce identical bytes: a scalar reference (kernels_scalar.cc) and a
// Highway SIMD version with runtime dispatch (simd/kernels_hwy.cc).
// The element math is specified in docs/codecs.md so a CUDA port can match it:
// float32 only, every multiply and add rounded separately (no FMA), rounding to
// nearest-even. All functions are thread-safe and allocation-free; pointers
// may be unaligned; inputs must be finite bf16 (encoders check first).

#include <cstddef>
#include <cstdint>

namespace kvhub::codec {

struct Kernels {
  const char* name;
  // max over i of (x[i] & 0x7FFF): the magnitude bits of the largest |x|.
  uint16_t (*abs_max_bits)(const uint16_t* x, size_t n);
  // For columns c < n: mn[c] = min(mn[c], key(x[r*stride + c])) over r < rows,
  // likewise mx; key = Bf16OrderKey.
  void (*col_min_max)(const uint16_t* x, size_t rows, size_t stride, size_t n, int16_t* mn,
                      int16_t* mx);
  // Per group of g consecutive values (the last one may be shorter):
  // mn[j], mx[j] = min/max order key of x[j*g .. min(n, (j+1)*g)).
  void (*group_min_max)(const uint16_t* x, size_t n, size_t g, int16_t* mn, int16_t* mx);
  // q = rne(clamp(x * inv, -127, 127))
  void (*quant_int8)(const uint16_t* x, size_t n, float inv, int8_t* q);
  // y = bf16(q * scale)
  void (*dequant_int8)(const int8_t* q, size_t n, float scale, uint16_t* y);
  // q = e4m3(x * inv)
  void (*quant_fp8)(const uint16_t* x, size_t n, float inv, uint8_t* q);
  // y = bf16(float(q) * scale)
  void (*dequant_fp8)(const uint8_t* q, size_t n, float scale, uint16_t* y);
  // q = rne(clamp((x - zero[i]) * inv[i], 0, qmax))
  void (*quant_affine)(const uint16_t* x, size_t n, const float* inv, const float* zero,
                       float qmax, uint8_t* q);
  // y = bf16(float(q) * scale[i] + zero[i])   (multiply, round, add, round)
  void (*dequant_affine)(const uint8_t* q, size_t n, const float* scale, const float* zero,
                         uint16_t* y);
  // Same with one scale/zero for all n values (KIVI value groups).
  void (*quant_affine1)(const uint16_t* x, size_t n, float inv, float zero, float qmax,
                        uint8_t* q);
  void (*dequant_affine1)(const uint8_t* q, size_t n, float scale, float zero, uint16_t* y);
  // KIVI group statistics from min/max order keys (see docs/codecs.md):
  // s_h = fp16((mx - mn) / qmax), z_h = fp16(mn), zero = float(z_h),
  // inv = float(s_h) > 0 ? 1 / float(s_h) : 0. Returns false (outputs
  // unspecified) if a min/max is not finite or a result overflows fp16.
  bool (*kivi_stats)(const int16_t* mn, const int16_t* mx, size_t n, float qmax,
                     uint16_t* scale_h, uint16_t* zero_h, float* inv, float* zero);
  // out[i] = HalfToFloat(h[i]) (IEEE fp16, inf/NaN included).
  void (*half_to_float)(const uint16_t* h, size_t n, float* out);
  // 4-bit: code i goes to byte i/2, low nibble for even i. n codes -> (n+1)/2 bytes.
  void (*pack4)(const uint8_t* q, size_t n, uint8_t* out);
  void (*unpack4)(const uint8_t* in, size_t n, uint8_t* q);
  // 2-bit: code i goes to byte i/4, bits 2*(i%4). n codes -> (n+3)/4 bytes.
  void (*pack2)(const uint8_t* q, size_t n, uint8_t* out);
  void (*unpack2)(const uint8_t* in, size_t n, uint8_t* q);
  // Lossless byte planes of 16-bit values: r = rotl16(x, 1); hi[i] = r >> 8
  // (the bf16 exponent), lo[i] = r & 0xFF (mantissa and sign).
  void (*split_planes16)(const uint16_t* x, size_t n, uint8_t* hi, uint8_t* lo);
  void (*merge_planes16)(const uint8_t* hi, const uint8_t* lo, size_t n, uint16_t* x);
  // Centered keys (fp8/int8 key segments; mid[i] = float of the channel's bf16
  // centre). r = float(x[i]) - mid[i], one rounded subtraction.
  // Returns max over i of (bits(r) & 0x7FFFFFFF): the float bits of the largest
  // |r| (0 for n == 0); >= 0x7F800000 means some r is inf or NaN. Integer order
  // of these bits is the numeric order, so every implementation agrees on ties.
  uint32_t (*abs_max_centered)(const uint16_t* x, const float* mid, size_t n);
  // q = rne(clamp(r * inv, -127, 127))
  void (*quant_int8_centered)(const uint16_t* x, const float* mid, size_t n, float inv, int8_t* q);
  // y = bf16(float(q) * scale + mid[i])   (multiply, round, add, round)
  void (*dequant_int8_centered)(const int8_t* q, const float* mid, size_t n, float scale,
                                uint16_t* y);
  // q = e4m3(r * inv)
  void (*quant_fp8_centered)(const uint16_t* x, const float* mid, size_t n, float inv, uint8_t* q);
  // y = bf16(e4m3_to_float(q) * scale + mid[i])   (multiply, round, add, round)
  void (*dequant_fp8_centered)(const uint8_t* q, const float* mid, size_t n, float scale,
                               uint16_t* y);
};

const Kernels& ScalarKernels();
// The best SIMD target of this CPU (Highway dynamic dispatch).
const Kernels& SimdKernels();

}  // namespace kvhub::codec
