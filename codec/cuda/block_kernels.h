#pragma once
// The bodies of the CUDA codec kernels (codec/cuda/kernels.cu), as functions
// of one "unit" of work (an element, a packed byte, a statistics group) so the
// very same code runs on the device, one unit per thread, and on the host in
// plain loops (codec/cuda/emulation.h), where tests compare its bytes with
// the CPU codecs. Layout and math: docs/format.md, docs/codecs.md, docs/gpu.md.
//
// Segment s = 2 * layer + (0 keys, 1 values). Element i of a segment is the
// flattened [token][head][dim] index, as in the CPU codecs. Inputs and outputs
// live in a paged cache (paged_layout.h). All structs are plain data so they
// can be passed to kernels by value.

#include <cstdint>

#include "codec/cuda/element_math.h"
#include "codec/cuda/paged_layout.h"

namespace kvhub::codec::cuda {

// Error bits a kernel reports (OR-ed into *error).
inline constexpr uint32_t kErrNonFinite = 1;   // encode: inf/NaN input; decode: a rotated key is inf/NaN
inline constexpr uint32_t kErrKiviRange = 2;   // kivi min or range beyond fp16
inline constexpr uint32_t kErrKeyRange = 4;    // fp8/int8: a non-sink key beyond +-2^126
// Largest |non-sink key| fp8/int8 encode, as bf16 bits (2^126): beyond it a
// centred key could decode to inf. codec/segment_layout.h kCenteredKeyMaxBf16
// explains the bound; block_plan.cc checks the two are equal.
inline constexpr uint16_t kCenteredKeyMaxBits = 0x7E80;

// Codec ids as in codec/block_format.h (kept numeric: no host headers here).
inline constexpr uint8_t kCodecFp8 = 3, kCodecInt8 = 4, kCodecKivi4 = 5, kCodecKivi2 = 6;

struct SegLayoutPod {  // codec/segment_layout.h SegLayout, offsets from the segment start
  uint64_t sink_bytes, scale_off, scale_bytes, zero_off, zero_bytes, codes_off, codes_bytes, size;
};

// Geometry shared by encode and decode.
struct BlockGeom {
  uint32_t layers, tokens, heads, dim;  // L, T, H, D
  uint8_t codec;
  uint32_t group;                       // kivi G
  uint32_t sinks;                       // sink tokens in this block (kivi, fp8, int8)
  SegLayoutPod layout[2];               // keys, values
  uint64_t stat_count[2];               // statistics per key / value segment (scratch floats)
  const uint64_t* seg_off;              // [2L] segment offsets from the body start
  const int32_t* page_ids;              // block token t -> page_ids[t / page_tokens]
  uint32_t page_tokens;
  // RoPE table (rope.h RopeCosSinTable): row (rope_step ? t : 0) of D/2 {cos, sin}
  // pairs; null = no rotation. Applies to keys only.
  const float* rope_cs;
  uint32_t rope_step;
  uint8_t rope_interleaved;

  KVHUB_HD uint64_t SegElements() const { return uint64_t{tokens} * heads * dim; }
  KVHUB_HD uint64_t RowElements() const { return uint64_t{heads} * dim; }  // one token
  KVHUB_HD uint64_t SinkElements() const { return uint64_t{sinks} * heads * dim; }
  // fp8/int8 key segments store values relative to per-(head, channel) centres.
  KVHUB_HD bool Centered(uint32_t s) const {
    return s % 2 == 0 && (codec == kCodecFp8 || codec == kCodecInt8);
  }
  KVHUB_HD uint32_t ValueGroups() const { return (dim + group - 1) / group; }
  KVHUB_HD float Qmax() const { return codec == kCodecKivi4 ? 15.0f : codec == kCodecKivi2 ? 3.0f : codec == kCodecInt8 ? 127.0f : 448.0f; }
  KVHUB_HD uint64_t ScratchBase(uint32_t s) const {
    return uint64_t{s / 2} * (stat_count[0] + stat_count[1]) + (s % 2 ? stat_count[0] : 0);
  }
  // Paged offset of segment element i.
  KVHUB_HD uint64_t PagedOffset(uint64_t i) const {
    const uint64_t hd = uint64_t{heads} * dim;
    const uint32_t t = static_cast<uint32_t>(i / hd);
    return PagedElementOffset(page_ids, page_tokens, hd, t, i - t * hd);
  }
  // RoPE partner of element i of a key row and whether i is the first of the pair.
  KVHUB_HD uint64_t RopePartner(uint64_t i, bool* first) const {
    const uint32_t c = static_cast<uint32_t>(i % dim), half = dim / 2;
    if (rope_interleaved) {
      *first = (c & 1u) == 0;
      return *first ? i + 1 : i - 1;
    }
    *first = c < half;
    return *first ? i + half : i - half;
  }
  KVHUB_HD void RopeCosSin(uint64_t i, float* c, float* s) const {
    const uint32_t cc = static_cast<uint32_t>(i % dim), half = dim / 2;
    const uint32_t k = rope_interleaved ? cc / 2 : (cc < half ? cc : cc - half);
    const uint64_t t = rope_step ? i / (uint64_t{heads} * dim) : 0;
    const float* row = rope_cs + t * half * 2;
    *c = row[2 * k];
    *s = row[2 * k + 1];
  }
};

KVHUB_HD void SetError(uint32_t* error, uint32_t bit) {
#if defined(__CUDA_ARCH__)
  atomicOr(error, bit);
#else
  *error |= bit;
#endif
}

// Decode: flags a rotated key pair with an inf or NaN, as codec/rope.cc refuses
// it (a sink or dequantised key near bf16's largest can overflow when rotated).
KVHUB_HD void CheckRotatedFinite(uint32_t* error, uint16_t a, uint16_t b) {
  if ((a & 0x7F80) == 0x7F80 || (b & 0x7F80) == 0x7F80) SetError(error, kErrNonFinite);
}

KVHUB_HD float LoadF32(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const float*>(p);
#else
  float f;
  std::memcpy(&f, p, 4);
  return f;
#endif
}
KVHUB_HD uint16_t LoadU16(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint16_t*>(p);
#else
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
#endif
}
KVHUB_HD void StoreF32(uint8_t* p, float f) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<float*>(p) = f;
#else
  std::memcpy(p, &f, 4);
#endif
}
KVHUB_HD void StoreU16(uint8_t* p, uint16_t v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint16_t*>(p) = v;
#else
  std::memcpy(p, &v, 2);
#endif
}

// Centre k (= head * D + channel) of a centered key segment, as float.
KVHUB_HD float KeyMid(const uint8_t* seg, const SegLayoutPod& L, uint64_t k) {
  return Bf16ToFloat(LoadU16(seg + L.zero_off + 2 * k));
}

// ------------------------------------------------------------------ encode --

struct EncodeCtx {
  BlockGeom g;
  const uint16_t* const* src;  // [2L] K / V cache base of each layer
  uint8_t* body;               // the block body (segment table written by the host)
  float* inv;                  // scratch: per-statistic inverse scale
  float* zero;                 // scratch: per-statistic zero (kivi)
  uint32_t* error;
  uint8_t src_aligned16;  // every src[s] is 16-byte aligned (enables 16-byte loads)

  KVHUB_HD uint8_t* Seg(uint32_t s) const { return body + g.seg_off[s]; }
  // kivi codes in 8-element chunks (head_dim % 8 == 0): a chunk lies in one
  // row and one value group; read with one 16-byte load unless keys rotate.
  KVHUB_HD bool Chunked() const { return g.dim % 8 == 0; }
  KVHUB_HD uint64_t KiviQuantUnits(uint32_t s) const {
    return Chunked() ? g.SegElements() / 8 : g.layout[s % 2].codes_bytes;
  }
  // Input elements i0 .. i0+8 of one row (i0 % 8 == 0, head_dim % 8 == 0).
  KVHUB_HD void X8(uint32_t s, uint64_t i0, uint16_t x[8]) const {
    if (s % 2 == 0 && g.rope_cs != nullptr) {
      for (int k = 0; k < 8; ++k) x[k] = X(s, i0 + k);
      return;
    }
    const uint16_t* p = src[s] + g.PagedOffset(i0);
#if defined(__CUDA_ARCH__)
    if (src_aligned16) {
      const uint4 v = *reinterpret_cast<const uint4*>(p);
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
      for (int k = 0; k < 4; ++k) {
        x[2 * k] = static_cast<uint16_t>(w[k]);
        x[2 * k + 1] = static_cast<uint16_t>(w[k] >> 16);
      }
      return;
    }
#endif
    for (int k = 0; k < 8; ++k) x[k] = p[k];
  }
  KVHUB_HD const SegLayoutPod& L(uint32_t s) const { return g.layout[s % 2]; }
  // Input element i of segment s as the CPU codec sees it (keys de-rotated
  // to position 0 when the block is stored pre-RoPE).
  KVHUB_HD uint16_t X(uint32_t s, uint64_t i) const {
    const uint16_t* base = src[s];
    uint16_t x = base[g.PagedOffset(i)];
    if (s % 2 == 0 && g.rope_cs != nullptr) {
      bool first;
      uint64_t j = g.RopePartner(i, &first);
      uint16_t y = base[g.PagedOffset(j)];
      float c, sn;
      g.RopeCosSin(i, &c, &sn);
      if (first) {
        RotatePair(&x, &y, c, sn);
      } else {
        RotatePair(&y, &x, c, sn);
      }
    }
    return x;
  }
};

// Zero padding of segment s: the gap before it and its internal align16 gaps.
KVHUB_HD void EncodeZeroPads(const EncodeCtx& c, uint32_t s) {
  const uint64_t prev_end =
      s == 0 ? uint64_t{2} * c.g.layers * 16 : c.g.seg_off[s - 1] + c.L(s - 1).size;
  for (uint64_t p = prev_end; p < c.g.seg_off[s]; ++p) c.body[p] = 0;
  const SegLayoutPod& L = c.L(s);
  uint8_t* seg = c.Seg(s);
  const uint64_t gaps[3][2] = {{L.sink_bytes, L.scale_off},
                               {L.scale_off + L.scale_bytes, L.zero_off},
                               {L.zero_off + L.zero_bytes, L.codes_off}};
  for (const auto& gap : gaps) {
    for (uint64_t p = gap[0]; p < gap[1]; ++p) seg[p] = 0;
  }
}

// kivi, fp8, int8: copy sink element i (< sinks * H * D) as bf16.
KVHUB_HD void EncodeSinkElement(const EncodeCtx& c, uint32_t s, uint64_t i) {
  uint16_t x = c.X(s, i);
  if ((x & 0x7FFF) >= 0x7F80) SetError(c.error, kErrNonFinite);
  StoreU16(c.Seg(s) + 2 * i, x);
}

// fp8/int8 keys: centre k = (head, channel) from the min and max over the
// non-sink tokens (0 without any), stored as bf16 in the zero array. Flags a
// channel whose min or max is not finite (kErrNonFinite) or beyond +-2^126
// (kErrKeyRange), as codec.cc's KeyCentres refuses it.
KVHUB_HD void KeyMidStat(const EncodeCtx& c, uint32_t s, uint64_t k) {
  const uint64_t hd = c.g.RowElements();
  uint16_t mid = 0;
  if (c.g.sinks < c.g.tokens) {
    int16_t mn = INT16_MAX, mx = INT16_MIN;
    for (uint32_t t = c.g.sinks; t < c.g.tokens; ++t) {
      int16_t key = Bf16OrderKey(c.X(s, t * hd + k));
      mn = key < mn ? key : mn;
      mx = key > mx ? key : mx;
    }
    const uint16_t amn = static_cast<uint16_t>(OrderKeyToBf16(mn) & 0x7FFFu);
    const uint16_t amx = static_cast<uint16_t>(OrderKeyToBf16(mx) & 0x7FFFu);
    const uint16_t amax = amn > amx ? amn : amx;
    if (amax >= 0x7F80u) {
      SetError(c.error, kErrNonFinite);
    } else if (amax > kCenteredKeyMaxBits) {
      SetError(c.error, kErrKeyRange);
    }
    mid = MidBf16(mn, mx);
  }
  StoreU16(c.Seg(s) + c.L(s).zero_off + 2 * k, mid);
}

// fp8/int8: float bits of the magnitude element i contributes to its scale
// (|x - centre| for keys, |x| for values); >= 0x7F800000 is not finite.
// Keys need the centres (KeyMidStat) first.
KVHUB_HD uint32_t AmaxBits(const EncodeCtx& c, uint32_t s, uint64_t i) {
  const uint16_t x = c.X(s, i);
  if (c.g.Centered(s)) return CenteredAbsBits(x, KeyMid(c.Seg(s), c.L(s), i % c.g.RowElements()));
  return static_cast<uint32_t>(x & 0x7FFF) << 16;
}

// fp8: finish head h from the max magnitude bits over its non-sink tokens.
KVHUB_HD void Fp8Finish(const EncodeCtx& c, uint32_t s, uint32_t h, uint32_t amax) {
  if (amax >= 0x7F800000u) SetError(c.error, kErrNonFinite);
  float scale, inv;
  SymScaleF(amax, 448.0f, &scale, &inv);
  StoreF32(c.Seg(s) + c.L(s).scale_off + 4 * h, scale);
  c.inv[c.g.ScratchBase(s) + h] = inv;
}
// Element i of head h = (i / D) % H; sink rows get code 0.
KVHUB_HD void Fp8QuantElement(const EncodeCtx& c, uint32_t s, uint64_t i) {
  uint8_t* seg = c.Seg(s);
  uint8_t q = 0;
  if (i >= c.g.SinkElements()) {
    const uint32_t h = static_cast<uint32_t>((i / c.g.dim) % c.g.heads);
    const float inv = c.inv[c.g.ScratchBase(s) + h];
    q = c.g.Centered(s)
            ? QuantFp8Centered(c.X(s, i), KeyMid(seg, c.L(s), i % c.g.RowElements()), inv)
            : QuantFp8(c.X(s, i), inv);
  }
  seg[c.L(s).codes_off + i] = q;
}

// int8: scale of row r = (token, head) from its max magnitude bits; sink
// rows get scale 0 (and inv 0, hence code 0).
KVHUB_HD void Int8RowScale(const BlockGeom& g, uint64_t r, uint32_t amax, float* scale, float* inv) {
  if (r < uint64_t{g.sinks} * g.heads) {
    *scale = *inv = 0.0f;
    return;
  }
  SymScaleF(amax, 127.0f, scale, inv);
}
KVHUB_HD float Int8Finish(const EncodeCtx& c, uint32_t s, uint64_t r, uint32_t amax) {
  if (r >= uint64_t{c.g.sinks} * c.g.heads && amax >= 0x7F800000u) SetError(c.error, kErrNonFinite);
  float scale, inv;
  Int8RowScale(c.g, r, amax, &scale, &inv);
  StoreF32(c.Seg(s) + c.L(s).scale_off + 4 * r, scale);
  return inv;
}
KVHUB_HD void Int8QuantElement(const EncodeCtx& c, uint32_t s, uint64_t i, float inv) {
  uint8_t* seg = c.Seg(s);
  int8_t q = 0;
  if (i >= c.g.SinkElements()) {
    q = c.g.Centered(s)
            ? QuantInt8Centered(c.X(s, i), KeyMid(seg, c.L(s), i % c.g.RowElements()), inv)
            : QuantInt8(c.X(s, i), inv);
  }
  seg[c.L(s).codes_off + i] = static_cast<uint8_t>(q);
}

KVHUB_HD void KiviFinishStat(const EncodeCtx& c, uint32_t s, uint64_t k, int16_t mn, int16_t mx) {
  uint16_t sh, zh;
  float inv, zero;
  if (!KiviStats(mn, mx, c.g.Qmax(), &sh, &zh, &inv, &zero)) SetError(c.error, kErrKiviRange);
  uint8_t* seg = c.Seg(s);
  StoreU16(seg + c.L(s).scale_off + 2 * k, sh);
  StoreU16(seg + c.L(s).zero_off + 2 * k, zh);
  c.inv[c.g.ScratchBase(s) + k] = inv;
  c.zero[c.g.ScratchBase(s) + k] = zero;
}

// kivi keys: statistic k = (token group, head, dim) over the group's non-sink tokens.
KVHUB_HD void KiviKeyStat(const EncodeCtx& c, uint32_t s, uint64_t k) {
  const uint64_t hd = uint64_t{c.g.heads} * c.g.dim;
  const uint32_t grp = static_cast<uint32_t>(k / hd);
  const uint64_t e = k - grp * hd;
  const uint32_t t0 = grp * c.g.group;
  const uint32_t t1 = t0 + c.g.group < c.g.tokens ? t0 + c.g.group : c.g.tokens;
  const uint32_t r0 = t0 > c.g.sinks ? t0 : c.g.sinks;
  int16_t mn = 0, mx = 0;
  if (r0 < t1) {
    mn = INT16_MAX;
    mx = INT16_MIN;
    for (uint32_t t = r0; t < t1; ++t) {
      int16_t key = Bf16OrderKey(c.X(s, t * hd + e));
      mn = key < mn ? key : mn;
      mx = key > mx ? key : mx;
    }
  }
  KiviFinishStat(c, s, k, mn, mx);
}

// kivi values: statistic k = (token, head, channel group) over the group's channels.
KVHUB_HD void KiviValueStat(const EncodeCtx& c, uint32_t s, uint64_t k) {
  const uint32_t ng = c.g.ValueGroups();
  const uint64_t r = k / ng;
  const uint32_t j = static_cast<uint32_t>(k - r * ng);
  int16_t mn = 0, mx = 0;
  if (r >= uint64_t{c.g.sinks} * c.g.heads) {
    mn = INT16_MAX;
    mx = INT16_MIN;
    const uint32_t c0 = j * c.g.group;
    const uint32_t c1 = c0 + c.g.group < c.g.dim ? c0 + c.g.group : c.g.dim;
    for (uint32_t ch = c0; ch < c1; ++ch) {
      int16_t key = Bf16OrderKey(c.X(s, r * c.g.dim + ch));
      mn = key < mn ? key : mn;
      mx = key > mx ? key : mx;
    }
  }
  KiviFinishStat(c, s, k, mn, mx);
}

KVHUB_HD uint64_t KiviStatIndex(const BlockGeom& g, bool is_value, uint64_t i) {
  if (is_value) {
    const uint64_t r = i / g.dim;
    return r * g.ValueGroups() + static_cast<uint32_t>(i - r * g.dim) / g.group;
  }
  const uint64_t hd = uint64_t{g.heads} * g.dim;
  const uint64_t t = i / hd;
  return (t / g.group) * hd + (i - t * hd);
}

// kivi: packed code byte b (2 codes for kivi4, 4 for kivi2).
KVHUB_HD void KiviQuantByte(const EncodeCtx& c, uint32_t s, uint64_t b) {
  const uint32_t bits = c.g.codec == kCodecKivi4 ? 4 : 2;
  const uint32_t per = 8 / bits;
  const uint64_t n = c.g.SegElements();
  const float qmax = c.g.Qmax();
  const uint64_t base = c.g.ScratchBase(s);
  uint32_t v = 0;
  for (uint32_t k = 0; k < per; ++k) {
    const uint64_t i = b * per + k;
    if (i >= n) break;
    const uint64_t st = base + KiviStatIndex(c.g, s % 2 == 1, i);
    v |= static_cast<uint32_t>(QuantAffine(c.X(s, i), c.inv[st], c.zero[st], qmax)) << (bits * k);
  }
  c.Seg(s)[c.L(s).codes_off + b] = static_cast<uint8_t>(v);
}

// kivi: codes of chunk u (elements 8u .. 8u+8 of one row; Chunked()):
// 4 bytes for kivi4, 2 for kivi2. Same bytes as KiviQuantByte.
KVHUB_HD void KiviQuantChunk8(const EncodeCtx& c, uint32_t s, uint64_t u) {
  const uint64_t i0 = 8 * u;
  uint16_t x[8];
  c.X8(s, i0, x);
  const float qmax = c.g.Qmax();
  const uint64_t k0 = c.g.ScratchBase(s) + KiviStatIndex(c.g, s % 2 == 1, i0);
  uint8_t q[8];
  for (int k = 0; k < 8; ++k) {
    const uint64_t st = s % 2 == 1 ? k0 : k0 + k;  // values: one group; keys: per channel
    q[k] = QuantAffine(x[k], c.inv[st], c.zero[st], qmax);
  }
  uint8_t* codes = c.Seg(s) + c.L(s).codes_off;
  if (c.g.codec == kCodecKivi4) {
    uint32_t v = 0;
    for (int k = 0; k < 8; ++k) v |= uint32_t{q[k]} << (4 * k);
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<uint32_t*>(codes + 4 * u) = v;  // codes_off is 16-aligned
#else
    std::memcpy(codes + 4 * u, &v, 4);
#endif
  } else {
    uint16_t v = 0;
    for (int k = 0; k < 8; ++k) v = static_cast<uint16_t>(v | (q[k] << (2 * k)));
    StoreU16(codes + 2 * u, v);
  }
}

// ------------------------------------------------------------------ decode --

struct DecodeCtx {
  BlockGeom g;
  const uint8_t* body;   // verified block body
  uint16_t* const* dst;  // [2L] K / V cache base of each layer
  uint8_t dst_aligned16;  // every dst[s] is 16-byte aligned (enables 16-byte stores)
  uint32_t* error;        // kErrNonFinite when a rotated key came out inf/NaN

  KVHUB_HD const uint8_t* Seg(uint32_t s) const { return body + g.seg_off[s]; }
  KVHUB_HD const SegLayoutPod& L(uint32_t s) const { return g.layout[s % 2]; }
  KVHUB_HD bool Rotates(uint32_t s) const { return s % 2 == 0 && g.rope_cs != nullptr; }
  // Rows of 8-element chunks (head_dim % 8 == 0, no rotation): a chunk never
  // crosses a row or a statistics group, so its index math is done once and
  // it is stored as one 16-byte write.
  KVHUB_HD bool Chunked(uint32_t s) const {
    return dst_aligned16 && !Rotates(s) && g.dim % 8 == 0;
  }
  // Units of segment s: key pairs when rotating, 8-element chunks when
  // Chunked, else groups of 4 elements.
  KVHUB_HD uint64_t Units(uint32_t s) const {
    if (Rotates(s)) return g.SegElements() / 2;
    return Chunked(s) ? g.SegElements() / 8 : (g.SegElements() + 3) / 4;
  }
};

// bf16 of element i of segment s, before any rotation.
KVHUB_HD uint16_t DecodeElement(const DecodeCtx& c, uint32_t s, uint64_t i) {
  const uint8_t* seg = c.Seg(s);
  const SegLayoutPod& L = c.L(s);
  const BlockGeom& g = c.g;
  if (i < g.SinkElements()) return LoadU16(seg + 2 * i);
  switch (g.codec) {
    case kCodecFp8: {
      const uint32_t h = static_cast<uint32_t>((i / g.dim) % g.heads);
      const float scale = LoadF32(seg + L.scale_off + 4 * h);
      if (g.Centered(s)) {
        return DequantFp8Centered(seg[L.codes_off + i], scale, KeyMid(seg, L, i % g.RowElements()));
      }
      return DequantFp8(seg[L.codes_off + i], scale);
    }
    case kCodecInt8: {
      const float scale = LoadF32(seg + L.scale_off + 4 * (i / g.dim));
      const int8_t q = static_cast<int8_t>(seg[L.codes_off + i]);
      if (g.Centered(s)) return DequantInt8Centered(q, scale, KeyMid(seg, L, i % g.RowElements()));
      return DequantInt8(q, scale);
    }
    default: {
      uint8_t q;
      if (g.codec == kCodecKivi4) {
        q = (seg[L.codes_off + i / 2] >> ((i & 1) * 4)) & 0xF;
      } else {
        q = (seg[L.codes_off + i / 4] >> ((i & 3) * 2)) & 3;
      }
      const uint64_t k = KiviStatIndex(g, s % 2 == 1, i);
      return DequantAffine(q, HalfToFloat(LoadU16(seg + L.scale_off + 2 * k)),
                           HalfToFloat(LoadU16(seg + L.zero_off + 2 * k)));
    }
  }
}

// Pair u of a rotated key segment: element indices (a, b).
KVHUB_HD void RopePairElements(const BlockGeom& g, uint64_t u, uint64_t* a, uint64_t* b) {
  const uint32_t half = g.dim / 2;
  const uint64_t row = u / half;
  const uint32_t k = static_cast<uint32_t>(u - row * half);
  if (g.rope_interleaved) {
    *a = row * g.dim + 2 * k;
    *b = *a + 1;
  } else {
    *a = row * g.dim + k;
    *b = *a + half;
  }
}

// Elements i0 .. i0+8 of one row (i0 % 8 == 0, head_dim % 8 == 0), decoded
// with the index math done once per chunk; same values as DecodeElement.
KVHUB_HD void DecodeChunk8(const DecodeCtx& c, uint32_t s, uint64_t i0, uint16_t y[8]) {
  const uint8_t* seg = c.Seg(s);
  const SegLayoutPod& L = c.L(s);
  const BlockGeom& g = c.g;
  const uint64_t row = i0 / g.dim;  // (token, head)
  if (row < uint64_t{g.sinks} * g.heads) {
    for (int k = 0; k < 8; ++k) y[k] = LoadU16(seg + 2 * (i0 + k));
    return;
  }
  const uint64_t m0 = i0 % g.RowElements();  // first centre of a centered key chunk
  switch (g.codec) {
    case kCodecFp8: {
      const float scale = LoadF32(seg + L.scale_off + 4 * (row % g.heads));
      if (g.Centered(s)) {
        for (int k = 0; k < 8; ++k) {
          y[k] = DequantFp8Centered(seg[L.codes_off + i0 + k], scale, KeyMid(seg, L, m0 + k));
        }
      } else {
        for (int k = 0; k < 8; ++k) y[k] = DequantFp8(seg[L.codes_off + i0 + k], scale);
      }
      return;
    }
    case kCodecInt8: {
      const float scale = LoadF32(seg + L.scale_off + 4 * row);
      if (g.Centered(s)) {
        for (int k = 0; k < 8; ++k) {
          y[k] = DequantInt8Centered(static_cast<int8_t>(seg[L.codes_off + i0 + k]), scale,
                                     KeyMid(seg, L, m0 + k));
        }
      } else {
        for (int k = 0; k < 8; ++k) {
          y[k] = DequantInt8(static_cast<int8_t>(seg[L.codes_off + i0 + k]), scale);
        }
      }
      return;
    }
    default: {
      uint8_t q[8];
      if (g.codec == kCodecKivi4) {
        for (int k = 0; k < 4; ++k) {
          const uint8_t b = seg[L.codes_off + i0 / 2 + k];
          q[2 * k] = b & 0xF;
          q[2 * k + 1] = b >> 4;
        }
      } else {
        for (int k = 0; k < 2; ++k) {
          const uint8_t b = seg[L.codes_off + i0 / 4 + k];
          for (int j = 0; j < 4; ++j) q[4 * k + j] = (b >> (2 * j)) & 3;
        }
      }
      const uint64_t k0 = KiviStatIndex(g, s % 2 == 1, i0);
      if (s % 2 == 1) {  // values: the 8 channels share one group (G % 8 == 0)
        const float sc = HalfToFloat(LoadU16(seg + L.scale_off + 2 * k0));
        const float z = HalfToFloat(LoadU16(seg + L.zero_off + 2 * k0));
        for (int k = 0; k < 8; ++k) y[k] = DequantAffine(q[k], sc, z);
      } else {  // keys: one statistic per channel, consecutive
        for (int k = 0; k < 8; ++k) {
          y[k] = DequantAffine(q[k], HalfToFloat(LoadU16(seg + L.scale_off + 2 * (k0 + k))),
                               HalfToFloat(LoadU16(seg + L.zero_off + 2 * (k0 + k))));
        }
      }
    }
  }
}

// 8 bf16 to dst[0..8); dst is 16-byte aligned (a chunk of a row in a
// cudaMalloc'ed cache: every offset is a multiple of 8 elements).
KVHUB_HD void Store8(uint16_t* dst, const uint16_t y[8]) {
#if defined(__CUDA_ARCH__)
  uint4 v;
  v.x = y[0] | (uint32_t{y[1]} << 16);
  v.y = y[2] | (uint32_t{y[3]} << 16);
  v.z = y[4] | (uint32_t{y[5]} << 16);
  v.w = y[6] | (uint32_t{y[7]} << 16);
  *reinterpret_cast<uint4*>(dst) = v;
#else
  std::memcpy(dst, y, 16);
#endif
}

// Decodes unit u of segment s and scatters it into the pages.
KVHUB_HD void DecodeUnit(const DecodeCtx& c, uint32_t s, uint64_t u) {
  uint16_t* dst = c.dst[s];
  if (c.Chunked(s)) {
    uint16_t y[8];
    DecodeChunk8(c, s, 8 * u, y);
    Store8(dst + c.g.PagedOffset(8 * u), y);
    return;
  }
  if (c.Rotates(s)) {
    uint64_t a, b;
    RopePairElements(c.g, u, &a, &b);
    uint16_t xa = DecodeElement(c, s, a), xb = DecodeElement(c, s, b);
    float cs, sn;
    c.g.RopeCosSin(a, &cs, &sn);
    RotatePair(&xa, &xb, cs, sn);
    CheckRotatedFinite(c.error, xa, xb);
    dst[c.g.PagedOffset(a)] = xa;
    dst[c.g.PagedOffset(b)] = xb;
    return;
  }
  const uint64_t n = c.g.SegElements();
  for (uint64_t i = 4 * u; i < 4 * u + 4 && i < n; ++i) {
    dst[c.g.PagedOffset(i)] = DecodeElement(c, s, i);
  }
}

}  // namespace kvhub::codec::cuda
