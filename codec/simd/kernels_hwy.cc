// Highway SIMD kernels with runtime dispatch (foreach_target). Each function
// matches the scalar reference (codec/kernels_scalar_inl.h) bit for bit: the
// same float32 operations in the same order, each rounded separately, and
// min/max on integer order keys. Tails shorter than a vector use the scalar code.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "codec/simd/kernels_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include "codec/kernels.h"
#include "codec/kernels_scalar_inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvhub::codec {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET != HWY_SCALAR

using DF = hn::ScalableTag<float>;
using DI32 = hn::RebindToSigned<DF>;
using DU32 = hn::RebindToUnsigned<DF>;
using DU16H = hn::Rebind<uint16_t, DF>;  // one u16 per float lane
using DU8Q = hn::Rebind<uint8_t, DF>;    // one u8 per float lane
using DI8Q = hn::Rebind<int8_t, DF>;

// bf16 bits (one per float lane) -> float.
HWY_INLINE hn::Vec<DF> LoadBf16(const uint16_t* p) {
  const DF df;
  const DU32 du32;
  const DU16H du16;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
}

// float -> bf16 (round to nearest even, NaN -> 0x7FC0), stored one u16 per lane.
HWY_INLINE void StoreBf16(hn::Vec<DF> v, uint16_t* p) {
  const DU32 du32;
  const DI32 di32;
  const DU16H du16;
  auto u = hn::BitCast(du32, v);
  auto r = hn::ShiftRight<16>(
      hn::Add(u, hn::Add(hn::Set(du32, 0x7FFFu), hn::And(hn::ShiftRight<16>(u), hn::Set(du32, 1u)))));
  r = hn::IfThenElse(hn::RebindMask(du32, hn::IsNaN(v)), hn::Set(du32, 0x7FC0u), r);
  hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di32, r)), du16, p);
}

HWY_INLINE hn::Vec<hn::ScalableTag<int16_t>> OrderKey(hn::Vec<hn::ScalableTag<int16_t>> s) {
  const hn::ScalableTag<int16_t> d;
  return hn::Xor(s, hn::And(hn::ShiftRight<15>(s), hn::Set(d, 0x7FFF)));
}

uint16_t AbsMaxBits(const uint16_t* x, size_t n) {
  const hn::ScalableTag<uint16_t> d;
  const size_t N = hn::Lanes(d);
  auto m = hn::Zero(d);
  const auto mask = hn::Set(d, 0x7FFF);
  size_t i = 0;
  for (; i + N <= n; i += N) m = hn::Max(m, hn::And(hn::LoadU(d, x + i), mask));
  uint16_t r = hn::GetLane(hn::MaxOfLanes(d, m));
  uint16_t t = scalar::AbsMaxBits(x + i, n - i);
  return r > t ? r : t;
}

void ColMinMax(const uint16_t* x, size_t rows, size_t stride, size_t n, int16_t* mn,
               int16_t* mx) {
  const hn::ScalableTag<int16_t> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const size_t N = hn::Lanes(d);
  size_t c = 0;
  for (; c + N <= n; c += N) {
    auto lo = hn::LoadU(d, mn + c);
    auto hi = hn::LoadU(d, mx + c);
    for (size_t r = 0; r < rows; ++r) {
      auto k = OrderKey(hn::BitCast(d, hn::LoadU(du, x + r * stride + c)));
      lo = hn::Min(lo, k);
      hi = hn::Max(hi, k);
    }
    hn::StoreU(lo, d, mn + c);
    hn::StoreU(hi, d, mx + c);
  }
  if (c < n) scalar::ColMinMax(x + c, rows, stride, n - c, mn + c, mx + c);
}

void GroupMinMax(const uint16_t* x, size_t n, size_t g, int16_t* mn, int16_t* mx) {
  const hn::ScalableTag<int16_t> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const size_t N = hn::Lanes(d);
  for (size_t j = 0, start = 0; start < n; ++j, start += g) {
    size_t end = start + g < n ? start + g : n;
    size_t i = start;
    int16_t lo = INT16_MAX, hi = INT16_MIN;
    if (end - start >= N) {
      auto vlo = hn::Set(d, INT16_MAX);
      auto vhi = hn::Set(d, INT16_MIN);
      for (; i + N <= end; i += N) {
        auto k = OrderKey(hn::BitCast(d, hn::LoadU(du, x + i)));
        vlo = hn::Min(vlo, k);
        vhi = hn::Max(vhi, k);
      }
      lo = hn::GetLane(hn::MinOfLanes(d, vlo));
      hi = hn::GetLane(hn::MaxOfLanes(d, vhi));
    }
    for (; i < end; ++i) {
      int16_t k = Bf16OrderKey(x[i]);
      lo = k < lo ? k : lo;
      hi = k > hi ? k : hi;
    }
    mn[j] = lo;
    mx[j] = hi;
  }
}

void QuantInt8(const uint16_t* x, size_t n, float inv, int8_t* q) {
  const DF df;
  const DI8Q di8;
  const size_t N = hn::Lanes(df);
  const auto vinv = hn::Set(df, inv);
  const auto lo = hn::Set(df, -127.0f), hi = hn::Set(df, 127.0f);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto v = hn::Min(hn::Max(hn::Mul(LoadBf16(x + i), vinv), lo), hi);
    hn::StoreU(hn::DemoteTo(di8, hn::NearestInt(v)), di8, q + i);
  }
  scalar::QuantInt8(x + i, n - i, inv, q + i);
}

void DequantInt8(const int8_t* q, size_t n, float scale, uint16_t* y) {
  const DF df;
  const DI32 di32;
  const DI8Q di8;
  const size_t N = hn::Lanes(df);
  const auto vs = hn::Set(df, scale);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto c = hn::PromoteTo(di32, hn::LoadU(di8, q + i));
    StoreBf16(hn::Mul(hn::ConvertTo(df, c), vs), y + i);
  }
  scalar::DequantInt8(q + i, n - i, scale, y + i);
}

// FloatToE4m3 (numeric.h) on a vector of finite floats: the code in the low
// 8 bits of each lane.
HWY_INLINE hn::Vec<DI32> E4m3CodeV(hn::Vec<DF> v) {
  const DF df;
  const DI32 di32;
  auto y = hn::BitCast(di32, v);
  auto sign = hn::And(hn::ShiftRight<24>(y), hn::Set(di32, 0x80));  // arithmetic shift; bit 7 kept
  auto au = hn::And(y, hn::Set(di32, 0x7FFFFFFF));
  auto sub = hn::NearestInt(hn::Mul(hn::BitCast(df, au), hn::Set(df, 512.0f)));
  auto rnd = hn::Add(hn::Set(di32, 0x7FFFF), hn::And(hn::ShiftRight<20>(au), hn::Set(di32, 1)));
  auto nrm = hn::Sub(hn::ShiftRight<20>(hn::Add(au, rnd)), hn::Set(di32, 960));
  auto code = hn::IfThenElse(hn::Lt(au, hn::Set(di32, 0x3C800000)), sub, nrm);
  return hn::Or(hn::Min(code, hn::Set(di32, 0x7E)), sign);
}

// E4m3ToFloat (numeric.h) of codes 0..255, one per lane.
HWY_INLINE hn::Vec<DF> E4m3ToFloatV(hn::Vec<DI32> c) {
  const DF df;
  const DI32 di32;
  auto mag = hn::And(c, hn::Set(di32, 0x7F));
  auto sign = hn::ShiftLeft<24>(hn::And(c, hn::Set(di32, 0x80)));
  auto sub = hn::Mul(hn::ConvertTo(df, mag), hn::Set(df, 0.001953125f));
  auto nrm = hn::BitCast(df, hn::Add(hn::ShiftLeft<20>(mag), hn::Set(di32, 120 << 23)));
  auto v = hn::IfThenElse(hn::RebindMask(df, hn::Lt(mag, hn::Set(di32, 8))), sub, nrm);
  return hn::Or(v, hn::BitCast(df, sign));
}

void QuantFp8(const uint16_t* x, size_t n, float inv, uint8_t* q) {
  const DF df;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  const auto vinv = hn::Set(df, inv);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(hn::DemoteTo(du8, E4m3CodeV(hn::Mul(LoadBf16(x + i), vinv))), du8, q + i);
  }
  scalar::QuantFp8(x + i, n - i, inv, q + i);
}

void DequantFp8(const uint8_t* q, size_t n, float scale, uint16_t* y) {
  const DF df;
  const DI32 di32;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  const auto vs = hn::Set(df, scale);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto v = E4m3ToFloatV(hn::PromoteTo(di32, hn::LoadU(du8, q + i)));
    StoreBf16(hn::Mul(v, vs), y + i);
  }
  scalar::DequantFp8(q + i, n - i, scale, y + i);
}

uint32_t AbsMaxCentered(const uint16_t* x, const float* mid, size_t n) {
  const DF df;
  const DU32 du32;
  const size_t N = hn::Lanes(df);
  const auto mask = hn::Set(du32, 0x7FFFFFFFu);
  auto m = hn::Zero(du32);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto r = hn::Sub(LoadBf16(x + i), hn::LoadU(df, mid + i));
    m = hn::Max(m, hn::And(hn::BitCast(du32, r), mask));
  }
  uint32_t v = hn::GetLane(hn::MaxOfLanes(du32, m));
  uint32_t t = scalar::AbsMaxCentered(x + i, mid + i, n - i);
  return v > t ? v : t;
}

void QuantInt8Centered(const uint16_t* x, const float* mid, size_t n, float inv, int8_t* q) {
  const DF df;
  const DI8Q di8;
  const size_t N = hn::Lanes(df);
  const auto vinv = hn::Set(df, inv);
  const auto lo = hn::Set(df, -127.0f), hi = hn::Set(df, 127.0f);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto r = hn::Sub(LoadBf16(x + i), hn::LoadU(df, mid + i));
    auto v = hn::Min(hn::Max(hn::Mul(r, vinv), lo), hi);
    hn::StoreU(hn::DemoteTo(di8, hn::NearestInt(v)), di8, q + i);
  }
  scalar::QuantInt8Centered(x + i, mid + i, n - i, inv, q + i);
}

void DequantInt8Centered(const int8_t* q, const float* mid, size_t n, float scale, uint16_t* y) {
  const DF df;
  const DI32 di32;
  const DI8Q di8;
  const size_t N = hn::Lanes(df);
  const auto vs = hn::Set(df, scale);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto c = hn::PromoteTo(di32, hn::LoadU(di8, q + i));
    auto m = hn::Mul(hn::ConvertTo(df, c), vs);
    StoreBf16(hn::Add(m, hn::LoadU(df, mid + i)), y + i);
  }
  scalar::DequantInt8Centered(q + i, mid + i, n - i, scale, y + i);
}

void QuantFp8Centered(const uint16_t* x, const float* mid, size_t n, float inv, uint8_t* q) {
  const DF df;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  const auto vinv = hn::Set(df, inv);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto r = hn::Sub(LoadBf16(x + i), hn::LoadU(df, mid + i));
    hn::StoreU(hn::DemoteTo(du8, E4m3CodeV(hn::Mul(r, vinv))), du8, q + i);
  }
  scalar::QuantFp8Centered(x + i, mid + i, n - i, inv, q + i);
}

void DequantFp8Centered(const uint8_t* q, const float* mid, size_t n, float scale, uint16_t* y) {
  const DF df;
  const DI32 di32;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  const auto vs = hn::Set(df, scale);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto m = hn::Mul(E4m3ToFloatV(hn::PromoteTo(di32, hn::LoadU(du8, q + i))), vs);
    StoreBf16(hn::Add(m, hn::LoadU(df, mid + i)), y + i);
  }
  scalar::DequantFp8Centered(q + i, mid + i, n - i, scale, y + i);
}

void QuantAffine(const uint16_t* x, size_t n, const float* inv, const float* zero, float qmax,
                 uint8_t* q) {
  const DF df;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  const auto lo = hn::Zero(df), hi = hn::Set(df, qmax);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto d = hn::Sub(LoadBf16(x + i), hn::LoadU(df, zero + i));
    auto v = hn::Min(hn::Max(hn::Mul(d, hn::LoadU(df, inv + i)), lo), hi);
    hn::StoreU(hn::DemoteTo(du8, hn::NearestInt(v)), du8, q + i);
  }
  scalar::QuantAffine(x + i, n - i, inv + i, zero + i, qmax, q + i);
}

void DequantAffine(const uint8_t* q, size_t n, const float* scale, const float* zero,
                   uint16_t* y) {
  const DF df;
  const DI32 di32;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto c = hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(du8, q + i)));
    auto m = hn::Mul(c, hn::LoadU(df, scale + i));
    StoreBf16(hn::Add(m, hn::LoadU(df, zero + i)), y + i);
  }
  scalar::DequantAffine(q + i, n - i, scale + i, zero + i, y + i);
}

void QuantAffine1(const uint16_t* x, size_t n, float inv, float zero, float qmax, uint8_t* q) {
  const DF df;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  const auto lo = hn::Zero(df), hi = hn::Set(df, qmax);
  const auto vinv = hn::Set(df, inv), vz = hn::Set(df, zero);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto d = hn::Sub(LoadBf16(x + i), vz);
    auto v = hn::Min(hn::Max(hn::Mul(d, vinv), lo), hi);
    hn::StoreU(hn::DemoteTo(du8, hn::NearestInt(v)), du8, q + i);
  }
  scalar::QuantAffine1(x + i, n - i, inv, zero, qmax, q + i);
}

void DequantAffine1(const uint8_t* q, size_t n, float scale, float zero, uint16_t* y) {
  const DF df;
  const DI32 di32;
  const DU8Q du8;
  const size_t N = hn::Lanes(df);
  const auto vs = hn::Set(df, scale), vz = hn::Set(df, zero);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto c = hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(du8, q + i)));
    StoreBf16(hn::Add(hn::Mul(c, vs), vz), y + i);
  }
  scalar::DequantAffine1(q + i, n - i, scale, zero, y + i);
}

// FloatToHalf (numeric.h) on a vector: fp16 bits in the low 16 bits of each
// lane; `bad` gets the lanes that would overflow.
HWY_INLINE hn::Vec<DI32> FloatToHalfV(hn::Vec<DF> f, hn::Mask<DI32>* bad) {
  const DF df;
  const DI32 di;
  auto x = hn::BitCast(di, f);
  auto sign = hn::And(hn::ShiftRight<16>(x), hn::Set(di, 0x8000));
  auto ax = hn::And(x, hn::Set(di, 0x7FFFFFFF));
  *bad = hn::Or(*bad, hn::Gt(ax, hn::Set(di, 0x477FEFFF)));
  auto sub = hn::NearestInt(hn::Mul(hn::BitCast(df, ax), hn::Set(df, 16777216.0f)));
  auto r = hn::Add(ax, hn::Add(hn::Set(di, 0xFFF), hn::And(hn::ShiftRight<13>(ax), hn::Set(di, 1))));
  auto nrm = hn::ShiftRight<13>(hn::Sub(r, hn::Set(di, 112 << 23)));
  return hn::Or(sign, hn::IfThenElse(hn::Lt(ax, hn::Set(di, 0x38800000)), sub, nrm));
}

// HalfToFloat (numeric.h) for fp16 bits in the low 16 bits of each lane,
// including inf/NaN (exponent 31), which only corrupted blocks contain.
HWY_INLINE hn::Vec<DF> HalfToFloatV(hn::Vec<DI32> h) {
  const DF df;
  const DI32 di;
  auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(di, 0x8000)));
  auto exp = hn::And(hn::ShiftRight<10>(h), hn::Set(di, 0x1F));
  auto man = hn::And(h, hn::Set(di, 0x3FF));
  auto sub = hn::Mul(hn::ConvertTo(df, man), hn::Set(df, 5.9604644775390625e-08f));
  auto nrm = hn::BitCast(df, hn::Or(hn::ShiftLeft<23>(hn::Add(exp, hn::Set(di, 112))),
                                    hn::ShiftLeft<13>(man)));
  auto special = hn::BitCast(df, hn::Or(hn::Set(di, 0x7F800000), hn::ShiftLeft<13>(man)));
  nrm = hn::IfThenElse(hn::RebindMask(df, hn::Eq(exp, hn::Set(di, 31))), special, nrm);
  auto v = hn::IfThenElse(hn::RebindMask(df, hn::Eq(exp, hn::Zero(di))), sub, nrm);
  return hn::Or(v, hn::BitCast(df, sign));
}

bool KiviStats(const int16_t* kmn, const int16_t* kmx, size_t n, float qmax, uint16_t* scale_h,
               uint16_t* zero_h, float* inv, float* zero) {
  const DF df;
  const DI32 di;
  const hn::Rebind<int16_t, DF> di16;
  const DU16H du16;
  const size_t N = hn::Lanes(df);
  auto bad = hn::FirstN(di, 0);
  const auto vq = hn::Set(df, qmax);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto kmn32 = hn::PromoteTo(di, hn::LoadU(di16, kmn + i));
    auto kmx32 = hn::PromoteTo(di, hn::LoadU(di16, kmx + i));
    // order key -> bf16 bits (low 16), then float
    auto bmn = hn::And(hn::Xor(kmn32, hn::And(hn::ShiftRight<15>(kmn32), hn::Set(di, 0x7FFF))),
                       hn::Set(di, 0xFFFF));
    auto bmx = hn::And(hn::Xor(kmx32, hn::And(hn::ShiftRight<15>(kmx32), hn::Set(di, 0x7FFF))),
                       hn::Set(di, 0xFFFF));
    bad = hn::Or(bad, hn::Gt(hn::And(bmn, hn::Set(di, 0x7FFF)), hn::Set(di, 0x7F7F)));
    bad = hn::Or(bad, hn::Gt(hn::And(bmx, hn::Set(di, 0x7FFF)), hn::Set(di, 0x7F7F)));
    auto mn = hn::BitCast(df, hn::ShiftLeft<16>(bmn));
    auto mx = hn::BitCast(df, hn::ShiftLeft<16>(bmx));
    auto s = hn::Div(hn::Sub(mx, mn), vq);
    auto sh = FloatToHalfV(s, &bad);
    auto zh = FloatToHalfV(mn, &bad);
    hn::StoreU(hn::DemoteTo(du16, sh), du16, scale_h + i);
    hn::StoreU(hn::DemoteTo(du16, zh), du16, zero_h + i);
    auto sf = HalfToFloatV(sh);
    hn::StoreU(HalfToFloatV(zh), df, zero + i);
    auto pos = hn::Gt(sf, hn::Zero(df));
    hn::StoreU(hn::IfThenElseZero(pos, hn::Div(hn::Set(df, 1.0f), hn::IfThenElse(pos, sf, hn::Set(df, 1.0f)))),
               df, inv + i);
  }
  bool ok = hn::AllFalse(di, bad);
  return scalar::KiviStats(kmn + i, kmx + i, n - i, qmax, scale_h + i, zero_h + i, inv + i,
                           zero + i) && ok;
}

void HalfToFloatN(const uint16_t* h, size_t n, float* out) {
  const DF df;
  const DI32 di;
  const DU32 du;
  const DU16H du16;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto v = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(du16, h + i)));
    hn::StoreU(HalfToFloatV(v), df, out + i);
  }
  scalar::HalfToFloatN(h + i, n - i, out + i);
}

void Pack4(const uint8_t* q, size_t n, uint8_t* out) {
  const hn::ScalableTag<uint16_t> d16;
  const hn::Repartition<uint8_t, decltype(d16)> d8;
  const hn::Rebind<uint8_t, decltype(d16)> d8h;
  const size_t step = 2 * hn::Lanes(d16);
  size_t i = 0;
  for (; i + step <= n; i += step) {
    auto v = hn::BitCast(d16, hn::LoadU(d8, q + i));
    auto p = hn::Or(hn::And(v, hn::Set(d16, 0xF)), hn::ShiftLeft<4>(hn::ShiftRight<8>(v)));
    hn::StoreU(hn::TruncateTo(d8h, p), d8h, out + i / 2);
  }
  scalar::Pack4(q + i, n - i, out + i / 2);
}

void Unpack4(const uint8_t* in, size_t n, uint8_t* q) {
  const hn::ScalableTag<uint16_t> d16;
  const hn::Repartition<uint8_t, decltype(d16)> d8;
  const hn::Rebind<uint8_t, decltype(d16)> d8h;
  const size_t step = 2 * hn::Lanes(d16);
  size_t i = 0;
  for (; i + step <= n; i += step) {
    auto b = hn::PromoteTo(d16, hn::LoadU(d8h, in + i / 2));
    auto v = hn::Or(hn::And(b, hn::Set(d16, 0xF)), hn::ShiftLeft<8>(hn::ShiftRight<4>(b)));
    hn::StoreU(hn::BitCast(d8, v), d8, q + i);
  }
  scalar::Unpack4(in + i / 2, n - i, q + i);
}

void Pack2(const uint8_t* q, size_t n, uint8_t* out) {
  const hn::ScalableTag<uint32_t> d32;
  const hn::Repartition<uint8_t, decltype(d32)> d8;
  const hn::Rebind<uint8_t, decltype(d32)> d8q;
  const size_t step = 4 * hn::Lanes(d32);
  size_t i = 0;
  for (; i + step <= n; i += step) {
    auto v = hn::BitCast(d32, hn::LoadU(d8, q + i));
    auto p = hn::Or(hn::Or(hn::And(v, hn::Set(d32, 0x3u)),
                           hn::And(hn::ShiftRight<6>(v), hn::Set(d32, 0xCu))),
                    hn::Or(hn::And(hn::ShiftRight<12>(v), hn::Set(d32, 0x30u)),
                           hn::And(hn::ShiftRight<18>(v), hn::Set(d32, 0xC0u))));
    hn::StoreU(hn::TruncateTo(d8q, p), d8q, out + i / 4);
  }
  scalar::Pack2(q + i, n - i, out + i / 4);
}

void Unpack2(const uint8_t* in, size_t n, uint8_t* q) {
  const hn::ScalableTag<uint32_t> d32;
  const hn::Repartition<uint8_t, decltype(d32)> d8;
  const hn::Rebind<uint8_t, decltype(d32)> d8q;
  const size_t step = 4 * hn::Lanes(d32);
  size_t i = 0;
  for (; i + step <= n; i += step) {
    auto b = hn::PromoteTo(d32, hn::LoadU(d8q, in + i / 4));
    auto v = hn::Or(hn::Or(hn::And(b, hn::Set(d32, 0x3u)),
                           hn::And(hn::ShiftLeft<6>(b), hn::Set(d32, 0x300u))),
                    hn::Or(hn::And(hn::ShiftLeft<12>(b), hn::Set(d32, 0x30000u)),
                           hn::And(hn::ShiftLeft<18>(b), hn::Set(d32, 0x3000000u))));
    hn::StoreU(hn::BitCast(d8, v), d8, q + i);
  }
  scalar::Unpack2(in + i / 4, n - i, q + i);
}

void SplitPlanes16(const uint16_t* x, size_t n, uint8_t* hi, uint8_t* lo) {
  const hn::ScalableTag<uint16_t> d16;
  const hn::Rebind<uint8_t, decltype(d16)> d8h;
  const size_t N = hn::Lanes(d16);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto v = hn::LoadU(d16, x + i);
    auto r = hn::Or(hn::ShiftLeft<1>(v), hn::ShiftRight<15>(v));
    hn::StoreU(hn::TruncateTo(d8h, hn::ShiftRight<8>(r)), d8h, hi + i);
    hn::StoreU(hn::TruncateTo(d8h, r), d8h, lo + i);
  }
  scalar::SplitPlanes16(x + i, n - i, hi + i, lo + i);
}

void MergePlanes16(const uint8_t* hi, const uint8_t* lo, size_t n, uint16_t* x) {
  const hn::ScalableTag<uint16_t> d16;
  const hn::Rebind<uint8_t, decltype(d16)> d8h;
  const size_t N = hn::Lanes(d16);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    auto h = hn::PromoteTo(d16, hn::LoadU(d8h, hi + i));
    auto l = hn::PromoteTo(d16, hn::LoadU(d8h, lo + i));
    auto r = hn::Or(hn::ShiftLeft<8>(h), l);
    hn::StoreU(hn::Or(hn::ShiftRight<1>(r), hn::ShiftLeft<15>(r)), d16, x + i);
  }
  scalar::MergePlanes16(hi + i, lo + i, n - i, x + i);
}

#else  // HWY_SCALAR: the fallback target (GCC < 12.3 has no EMU128) is the reference itself.

uint16_t AbsMaxBits(const uint16_t* x, size_t n) { return scalar::AbsMaxBits(x, n); }
void ColMinMax(const uint16_t* x, size_t rows, size_t stride, size_t n, int16_t* mn, int16_t* mx) {
  scalar::ColMinMax(x, rows, stride, n, mn, mx);
}
void GroupMinMax(const uint16_t* x, size_t n, size_t g, int16_t* mn, int16_t* mx) {
  scalar::GroupMinMax(x, n, g, mn, mx);
}
void QuantInt8(const uint16_t* x, size_t n, float inv, int8_t* q) { scalar::QuantInt8(x, n, inv, q); }
void DequantInt8(const int8_t* q, size_t n, float s, uint16_t* y) { scalar::DequantInt8(q, n, s, y); }
void QuantFp8(const uint16_t* x, size_t n, float inv, uint8_t* q) { scalar::QuantFp8(x, n, inv, q); }
void DequantFp8(const uint8_t* q, size_t n, float s, uint16_t* y) { scalar::DequantFp8(q, n, s, y); }
void QuantAffine(const uint16_t* x, size_t n, const float* inv, const float* zero, float qmax,
                 uint8_t* q) {
  scalar::QuantAffine(x, n, inv, zero, qmax, q);
}
void DequantAffine(const uint8_t* q, size_t n, const float* s, const float* z, uint16_t* y) {
  scalar::DequantAffine(q, n, s, z, y);
}
void QuantAffine1(const uint16_t* x, size_t n, float inv, float zero, float qmax, uint8_t* q) {
  scalar::QuantAffine1(x, n, inv, zero, qmax, q);
}
void DequantAffine1(const uint8_t* q, size_t n, float s, float z, uint16_t* y) {
  scalar::DequantAffine1(q, n, s, z, y);
}
bool KiviStats(const int16_t* mn, const int16_t* mx, size_t n, float qmax, uint16_t* sh,
               uint16_t* zh, float* inv, float* zero) {
  return scalar::KiviStats(mn, mx, n, qmax, sh, zh, inv, zero);
}
void HalfToFloatN(const uint16_t* h, size_t n, float* out) { scalar::HalfToFloatN(h, n, out); }
void Pack4(const uint8_t* q, size_t n, uint8_t* out) { scalar::Pack4(q, n, out); }
void Unpack4(const uint8_t* in, size_t n, uint8_t* q) { scalar::Unpack4(in, n, q); }
void Pack2(const uint8_t* q, size_t n, uint8_t* out) { scalar::Pack2(q, n, out); }
void Unpack2(const uint8_t* in, size_t n, uint8_t* q) { scalar::Unpack2(in, n, q); }
void SplitPlanes16(const uint16_t* x, size_t n, uint8_t* hi, uint8_t* lo) {
  scalar::SplitPlanes16(x, n, hi, lo);
}
void MergePlanes16(const uint8_t* hi, const uint8_t* lo, size_t n, uint16_t* x) {
  scalar::MergePlanes16(hi, lo, n, x);
}
uint32_t AbsMaxCentered(const uint16_t* x, const float* mid, size_t n) {
  return scalar::AbsMaxCentered(x, mid, n);
}
void QuantInt8Centered(const uint16_t* x, const float* mid, size_t n, float inv, int8_t* q) {
  scalar::QuantInt8Centered(x, mid, n, inv, q);
}
void DequantInt8Centered(const int8_t* q, const float* mid, size_t n, float s, uint16_t* y) {
  scalar::DequantInt8Centered(q, mid, n, s, y);
}
void QuantFp8Centered(const uint16_t* x, const float* mid, size_t n, float inv, uint8_t* q) {
  scalar::QuantFp8Centered(x, mid, n, inv, q);
}
void DequantFp8Centered(const uint8_t* q, const float* mid, size_t n, float s, uint16_t* y) {
  scalar::DequantFp8Centered(q, mid, n, s, y);
}

#endif  // HWY_TARGET != HWY_SCALAR

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace kvhub::codec
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvhub::codec {

HWY_EXPORT(AbsMaxBits);
HWY_EXPORT(ColMinMax);
HWY_EXPORT(GroupMinMax);
HWY_EXPORT(QuantInt8);
HWY_EXPORT(DequantInt8);
HWY_EXPORT(QuantFp8);
HWY_EXPORT(DequantFp8);
HWY_EXPORT(QuantAffine);
HWY_EXPORT(DequantAffine);
HWY_EXPORT(QuantAffine1);
HWY_EXPORT(DequantAffine1);
HWY_EXPORT(KiviStats);
HWY_EXPORT(HalfToFloatN);
HWY_EXPORT(Pack4);
HWY_EXPORT(Unpack4);
HWY_EXPORT(Pack2);
HWY_EXPORT(Unpack2);
HWY_EXPORT(SplitPlanes16);
HWY_EXPORT(MergePlanes16);
HWY_EXPORT(AbsMaxCentered);
HWY_EXPORT(QuantInt8Centered);
HWY_EXPORT(DequantInt8Centered);
HWY_EXPORT(QuantFp8Centered);
HWY_EXPORT(DequantFp8Centered);
HWY_EXPORT(TargetName);

const Kernels& SimdKernels() {
  static const Kernels k = [] {
    // Resolve the dispatch tables once, then keep plain function pointers.
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
    return Kernels{
        HWY_DYNAMIC_DISPATCH(TargetName)(),
        &HWY_DYNAMIC_DISPATCH(AbsMaxBits),
        &HWY_DYNAMIC_DISPATCH(ColMinMax),
        &HWY_DYNAMIC_DISPATCH(GroupMinMax),
        &HWY_DYNAMIC_DISPATCH(QuantInt8),
        &HWY_DYNAMIC_DISPATCH(DequantInt8),
        &HWY_DYNAMIC_DISPATCH(QuantFp8),
        &HWY_DYNAMIC_DISPATCH(DequantFp8),
        &HWY_DYNAMIC_DISPATCH(QuantAffine),
        &HWY_DYNAMIC_DISPATCH(DequantAffine),
        &HWY_DYNAMIC_DISPATCH(QuantAffine1),
        &HWY_DYNAMIC_DISPATCH(DequantAffine1),
        &HWY_DYNAMIC_DISPATCH(KiviStats),
        &HWY_DYNAMIC_DISPATCH(HalfToFloatN),
        &HWY_DYNAMIC_DISPATCH(Pack4),
        &HWY_DYNAMIC_DISPATCH(Unpack4),
        &HWY_DYNAMIC_DISPATCH(Pack2),
        &HWY_DYNAMIC_DISPATCH(Unpack2),
        &HWY_DYNAMIC_DISPATCH(SplitPlanes16),
        &HWY_DYNAMIC_DISPATCH(MergePlanes16),
        &HWY_DYNAMIC_DISPATCH(AbsMaxCentered),
        &HWY_DYNAMIC_DISPATCH(QuantInt8Centered),
        &HWY_DYNAMIC_DISPATCH(DequantInt8Centered),
        &HWY_DYNAMIC_DISPATCH(QuantFp8Centered),
        &HWY_DYNAMIC_DISPATCH(DequantFp8Centered),
    };
  }();
  return k;
}

}  // namespace kvhub::codec
#endif  // HWY_ONCE
