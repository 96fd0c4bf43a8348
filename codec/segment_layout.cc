#include "codec/segment_layout.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/numeric.h"

namespace kvhub::codec {

SegLayout Layout(CodecId codec, const KvShape& sh, bool is_value, uint32_t group, uint32_t sinks) {
  SegLayout L;
  const uint64_t n = sh.SegmentElements();
  const uint64_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  switch (codec) {
    case CodecId::kRaw:
    case CodecId::kLossless:
      L.codes_bytes = sh.SegmentBytes();
      break;
    case CodecId::kFp8:
    case CodecId::kInt8:
      L.sink_bytes = 2ull * sinks * H * D;
      L.scale_bytes = codec == CodecId::kFp8 ? 4 * H : 4 * T * H;
      if (!is_value) L.zero_bytes = 2 * H * D;  // key channel centres (bf16)
      L.codes_bytes = n;
      break;
    case CodecId::kKivi4:
    case CodecId::kKivi2: {
      L.sink_bytes = 2ull * sinks * H * D;
      uint64_t stats = is_value ? T * H * ((D + group - 1) / group) : ((T + group - 1) / group) * H * D;
      L.scale_bytes = L.zero_bytes = 2 * stats;
      L.codes_bytes = (n * KiviBits(codec) + 7) / 8;
      break;
    }
  }
  L.scale_off = Align16(L.sink_bytes);
  L.zero_off = L.scale_off + Align16(L.scale_bytes);
  L.codes_off = L.zero_bytes ? L.zero_off + Align16(L.zero_bytes) : L.zero_off;
  if (L.scale_bytes == 0) L.codes_off = L.sink_bytes == 0 ? 0 : Align16(L.sink_bytes);
  L.size = L.codes_off + L.codes_bytes;
  return L;
}

uint32_t SinksInBlock(CodecId codec, uint32_t sink_tokens, int64_t base_position, uint32_t tokens) {
  if (!HasSinks(codec) || base_position >= static_cast<int64_t>(sink_tokens)) return 0;
  int64_t s = static_cast<int64_t>(sink_tokens) - std::max<int64_t>(base_position, 0);
  return static_cast<uint32_t>(std::min<int64_t>(s, tokens));
}

absl::Status CenteredKeyRangeError(CodecId codec) {
  return absl::InvalidArgumentError(absl::StrCat(
      "codec ", CodecName(codec), ": a key beyond +-2^126 (8.5e37) cannot be stored: ", CodecName(codec),
      " stores keys centred per channel, and such a key could decode to inf (bf16's largest is 3.4e38); "
      "no real model's KV comes near this (sink tokens are exempt; use lossless or raw for such data)"));
}

namespace {

absl::Status BadStat(const BlockHeader& h, uint32_t s, absl::string_view field, uint64_t index,
                     float value, absl::string_view rule) {
  return absl::DataLossError(absl::StrCat(
      "kv block: layer ", s / 2, " ", s % 2 == 0 ? "keys" : "values", " (segment ", s, "): ",
      CodecName(h.codec), " ", field, "[", index, "] is ", value, ", must be ", rule,
      " (the block was changed after its checksums were computed, or a faulty encoder wrote it)"));
}

bool F32Bad(uint32_t u, bool is_scale) {
  // inf/NaN: exponent all ones. A scale must also be >= 0 (-0 passes, as 0.0f).
  return (u & 0x7F800000u) == 0x7F800000u || (is_scale && u > 0x80000000u);
}
bool F16Bad(uint16_t v, bool is_scale) {
  return (v & 0x7C00u) == 0x7C00u || (is_scale && v > 0x8000u);
}
// F32Bad(is_scale) of two f32 lanes at once: nonzero when either is inf/NaN or
// below -0 (the same lane arithmetic as F16x4Bad below).
uint64_t F32x2Bad(uint64_t v) {
  constexpr uint64_t kExp = 0x7F8000007F800000u, kSign = 0x8000000080000000u, kLow = 0x7FFFFFFF7FFFFFFFu;
  const uint64_t e = ~v & kExp;
  const uint64_t inf_nan = ~((e + kLow) | e) & kSign;
  const uint64_t low_nonzero = ((v & kLow) + kLow) & kSign;
  return inf_nan | (v & kSign & low_nonzero);
}
// F16Bad of four fp16 lanes at once: nonzero when any lane is bad.
uint64_t F16x4Bad(uint64_t v, bool is_scale) {
  constexpr uint64_t kExp = 0x7C007C007C007C00u, kSign = 0x8000800080008000u, kLow = 0x7FFF7FFF7FFF7FFFu;
  // Lane exponent all ones: (v & kExp) == kExp, i.e. ~v has no exponent bit set there.
  const uint64_t e = ~v & kExp;                               // 0 in a lane iff inf/NaN
  const uint64_t inf_nan = ~((e + kLow) | e) & kSign;          // sign bit of each lane whose e is 0
  if (!is_scale) return inf_nan;
  const uint64_t low_nonzero = ((v & kLow) + kLow) & kSign;   // lanes with any of the low 15 bits
  return inf_nan | (v & kSign & low_nonzero);                  // or negative and not -0
}

}  // namespace

absl::Status CheckSegmentStats(const BlockHeader& h, uint32_t s, const uint8_t* seg) {
  if (h.codec == CodecId::kRaw || h.codec == CodecId::kLossless) return absl::OkStatus();
  // A branch-free pass (the compiler vectorises it) says whether any statistic is
  // bad; only then is the first one looked for, to name it. Read byte by byte
  // (GetU16/GetU32): the segment need not be aligned.
  const bool is_value = s % 2 == 1;
  const SegLayout L = Layout(h.codec, h.shape, is_value, h.group_size, h.sink_tokens);
  if (h.codec == CodecId::kFp8 || h.codec == CodecId::kInt8) {
    // f32 scale per head (fp8) or per (token, head) (int8), then the bf16 key centres.
    const uint8_t* sc = seg + L.scale_off;
    const uint8_t* mid = seg + L.zero_off;
    const uint64_t scales = L.scale_bytes / 4, mids = L.zero_bytes / 2;  // no mids in a value segment
    uint64_t bad = 0;
    uint64_t i = 0;
    for (; i + 2 <= scales; i += 2) {
      uint64_t v;
      std::memcpy(&v, sc + 4 * i, 8);  // two little-endian f32 lanes
      bad |= F32x2Bad(v);
    }
    for (; i < scales; ++i) bad |= static_cast<uint64_t>(F32Bad(GetU32(sc + 4 * i), true));
    // A centre beyond +-2^126 (inf and NaN included) is none an encoder writes, and
    // with an ordinary scale it decodes to inf.
    for (uint64_t j = 0; j < mids; ++j) bad |= static_cast<uint64_t>((GetU16(mid + 2 * j) & 0x7FFFu) > kCenteredKeyMaxBf16);
    if (bad == 0) return absl::OkStatus();
    for (uint64_t i = 0; i < scales; ++i) {
      const uint32_t u = GetU32(sc + 4 * i);
      if (F32Bad(u, true)) return BadStat(h, s, "scale", i, std::bit_cast<float>(u), "finite and >= 0");
    }
    for (uint64_t i = 0; i < mids; ++i) {
      const uint16_t b = GetU16(mid + 2 * i);
      if ((b & 0x7FFFu) > kCenteredKeyMaxBf16) {
        return BadStat(h, s, "mid", i, Bf16ToFloat(b), "finite and within +-2^126 (no encoder writes more)");
      }
    }
    return absl::OkStatus();
  }
  // kivi: fp16 scale and zero per statistic (Layout gives both arrays one size).
  // They are a fifth of a kivi2 block's bytes: checked four at a time.
  const uint8_t* sc = seg + L.scale_off;
  const uint8_t* zr = seg + L.zero_off;
  const uint64_t n = L.scale_bytes / 2;
  uint64_t bad = 0;
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint64_t vs, vz;
    std::memcpy(&vs, sc + 2 * i, 8);  // little-endian lanes, as GetU16 reads them
    std::memcpy(&vz, zr + 2 * i, 8);
    bad |= F16x4Bad(vs, true) | F16x4Bad(vz, false);
  }
  for (; i < n; ++i) {
    bad |= static_cast<uint64_t>(F16Bad(GetU16(sc + 2 * i), true)) |
           static_cast<uint64_t>(F16Bad(GetU16(zr + 2 * i), false));
  }
  if (bad == 0) return absl::OkStatus();
  for (uint64_t i = 0; i < n; ++i) {
    const uint16_t sv = GetU16(sc + 2 * i), zv = GetU16(zr + 2 * i);
    if (F16Bad(sv, true)) return BadStat(h, s, "scale", i, HalfToFloat(sv), "finite and >= 0");
    if (F16Bad(zv, false)) return BadStat(h, s, "zero", i, HalfToFloat(zv), "finite");
  }
  return absl::OkStatus();
}

}  // namespace kvhub::codec
