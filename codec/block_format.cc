#include "codec/block_format.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace kvhub::codec {
namespace {

// Header layout (offsets), see docs/format.md.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffHeaderSize = 6;
constexpr size_t kOffCodec = 8;
constexpr size_t kOffDtype = 9;
constexpr size_t kOffPairing = 10;
constexpr size_t kOffFlags = 11;
constexpr size_t kOffGroup = 12;
constexpr size_t kOffSinks = 14;
constexpr size_t kOffLayers = 16;
constexpr size_t kOffHeads = 20;
constexpr size_t kOffHeadDim = 24;
constexpr size_t kOffTokens = 28;
constexpr size_t kOffBasePos = 32;
constexpr size_t kOffRopeBase = 40;
constexpr size_t kOffFingerprint = 48;
constexpr size_t kOffRawBytes = 64;
constexpr size_t kOffBodyBytes = 72;
constexpr size_t kOffBodyChecksum = 80;
constexpr size_t kOffSegCount = 88;
constexpr size_t kOffReserved = 92;   // 92 .. 120 must be zero
constexpr size_t kOffHeaderChecksum = 120;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("kv block: ", what));
}

}  // namespace

absl::string_view CodecName(CodecId c) {
  switch (c) {
    case CodecId::kRaw: return "raw";
    case CodecId::kLossless: return "lossless";
    case CodecId::kFp8: return "fp8";
    case CodecId::kInt8: return "int8";
    case CodecId::kKivi4: return "kivi4";
    case CodecId::kKivi2: return "kivi2";
  }
  return "unknown";
}

absl::StatusOr<CodecId> ParseCodecName(absl::string_view name) {
  for (uint8_t id = 1; id <= 6; ++id) {
    if (CodecName(static_cast<CodecId>(id)) == name) return static_cast<CodecId>(id);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown codec '", name, "' (expected raw, lossless, fp8, int8, kivi4 or kivi2)"));
}

bool IsKnownCodec(uint8_t id) { return id >= 1 && id <= 6; }

void BlockHeader::Serialize(uint8_t* out) const {
  std::memset(out, 0, kSize);
  PutU32(out + kOffMagic, kMagic);
  PutU16(out + kOffVersion, kVersion);
  PutU16(out + kOffHeaderSize, kSize);
  out[kOffCodec] = static_cast<uint8_t>(codec);
  out[kOffDtype] = static_cast<uint8_t>(shape.dtype);
  out[kOffPairing] = static_cast<uint8_t>(rope_pairing);
  out[kOffFlags] = flags;
  PutU16(out + kOffGroup, group_size);
  PutU16(out + kOffSinks, sink_tokens);
  PutU32(out + kOffLayers, shape.layers);
  PutU32(out + kOffHeads, shape.kv_heads);
  PutU32(out + kOffHeadDim, shape.head_dim);
  PutU32(out + kOffTokens, shape.tokens);
  PutU64(out + kOffBasePos, static_cast<uint64_t>(base_position));
  PutU64(out + kOffRopeBase, std::bit_cast<uint64_t>(rope_base));
  fingerprint.ToBytes(out + kOffFingerprint);
  PutU64(out + kOffRawBytes, raw_bytes);
  PutU64(out + kOffBodyBytes, body_bytes);
  PutU64(out + kOffBodyChecksum, body_checksum);
  PutU32(out + kOffSegCount, segment_count());
  PutU64(out + kOffHeaderChecksum, Xxh3_64(out, kOffHeaderChecksum));
}

absl::StatusOr<BlockHeader> ParseHeader(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < BlockHeader::kSize) {
    return Bad(absl::StrCat("truncated: ", bytes.size(), " bytes, header needs ",
                            BlockHeader::kSize));
  }
  const uint8_t* p = bytes.data();
  if (GetU32(p + kOffMagic) != BlockHeader::kMagic) return Bad("bad magic (not a kvhub block)");
  if (GetU16(p + kOffVersion) != BlockHeader::kVersion) {
    return Bad(absl::StrCat("unsupported format version ", GetU16(p + kOffVersion),
                            " (this decoder reads version ", BlockHeader::kVersion, ")"));
  }
  if (GetU16(p + kOffHeaderSize) != BlockHeader::kSize) {
    return Bad(absl::StrCat("header size ", GetU16(p + kOffHeaderSize), " != ",
                            BlockHeader::kSize));
  }
  if (Xxh3_64(p, kOffHeaderChecksum) != GetU64(p + kOffHeaderChecksum)) {
    return absl::DataLossError("kv block: header checksum mismatch");
  }
  for (size_t i = kOffReserved; i < kOffHeaderChecksum; ++i) {
    if (p[i] != 0) return Bad(absl::StrCat("reserved header byte ", i, " is not zero"));
  }
  BlockHeader h;
  if (!IsKnownCodec(p[kOffCodec])) return Bad(absl::StrCat("unknown codec id ", p[kOffCodec]));
  h.codec = static_cast<CodecId>(p[kOffCodec]);
  uint8_t dt = p[kOffDtype];
  if (dt < 1 || dt > 3) return Bad(absl::StrCat("unknown dtype ", dt));
  h.shape.dtype = static_cast<DType>(dt);
  uint8_t pr = p[kOffPairing];
  if (pr < 1 || pr > 2) return Bad(absl::StrCat("unknown rope pairing ", pr));
  h.rope_pairing = static_cast<RopePairing>(pr);
  h.flags = p[kOffFlags];
  if ((h.flags & ~kFlagKeysPreRope) != 0) return Bad(absl::StrCat("unknown flags ", h.flags));
  h.group_size = GetU16(p + kOffGroup);
  h.sink_tokens = GetU16(p + kOffSinks);
  h.shape.layers = GetU32(p + kOffLayers);
  h.shape.kv_heads = GetU32(p + kOffHeads);
  h.shape.head_dim = GetU32(p + kOffHeadDim);
  h.shape.tokens = GetU32(p + kOffTokens);
  if (auto s = h.shape.Validate(); !s.ok()) return Bad(s.message());
  h.base_position = static_cast<int64_t>(GetU64(p + kOffBasePos));
  // Encode writes positions in 0 .. 2^52 only (rope.h kMaxPosition; a decoded
  // block must round-trip through encode).
  if (h.base_position < 0 || h.base_position > (int64_t{1} << 52)) {
    return Bad(absl::StrCat("base_position ", h.base_position, " outside 0 .. 2^52"));
  }
  h.rope_base = std::bit_cast<double>(GetU64(p + kOffRopeBase));
  if (!std::isfinite(h.rope_base) || h.rope_base <= 0) return Bad("rope_base not finite and > 0");
  h.fingerprint = U128::FromBytes(p + kOffFingerprint);
  h.raw_bytes = GetU64(p + kOffRawBytes);
  h.body_bytes = GetU64(p + kOffBodyBytes);
  h.body_checksum = GetU64(p + kOffBodyChecksum);
  if (h.raw_bytes != h.shape.RawBytes()) {
    return Bad(absl::StrCat("raw_bytes ", h.raw_bytes, " != layers*2*tokens*heads*dim*dtype = ",
                            h.shape.RawBytes()));
  }
  if (h.raw_bytes > BlockHeader::kMaxRawBytes) {
    return Bad(absl::StrCat("raw size ", h.raw_bytes, " exceeds the limit ",
                            BlockHeader::kMaxRawBytes));
  }
  if (GetU32(p + kOffSegCount) != h.segment_count()) {
    return Bad(absl::StrCat("segment count ", GetU32(p + kOffSegCount), " != 2 * layers"));
  }
  if (h.body_bytes < h.table_bytes() || h.body_bytes > (uint64_t{1} << 40)) {
    return Bad(absl::StrCat("body size ", h.body_bytes, " implausible"));
  }
  const bool kivi = h.codec == CodecId::kKivi4 || h.codec == CodecId::kKivi2;
  const bool sinks = kivi || h.codec == CodecId::kFp8 || h.codec == CodecId::kInt8;
  if (kivi) {
    if (h.group_size != 32 && h.group_size != 64 && h.group_size != 128) {
      return Bad(absl::StrCat("kivi group size ", h.group_size, " not 32, 64 or 128"));
    }
  } else if (h.group_size != 0) {
    return Bad(absl::StrCat("group size set for codec ", CodecName(h.codec), ", which has none"));
  }
  if (sinks) {
    if (h.sink_tokens > h.shape.tokens) {
      return Bad(absl::StrCat("sink tokens ", h.sink_tokens, " > tokens ", h.shape.tokens));
    }
    // Sinks are the tokens at absolute positions < CodecParams::sink_tokens
    // (<= kMaxSinkTokens), so an encoder writes S > 0 sinks only when
    // base_position + S <= kMaxSinkTokens (SinksInBlock: S = min(P - base, tokens)
    // for a base below the setting P). base_position is already in 0 .. 2^52.
    if (h.sink_tokens > 0 && h.base_position + h.sink_tokens > int64_t{kMaxSinkTokens}) {
      return Bad(absl::StrCat("sink tokens ", h.sink_tokens, " at base_position ", h.base_position,
                              ": sinks end at absolute position ", kMaxSinkTokens, " at most"));
    }
  } else if (h.sink_tokens != 0) {
    return Bad(absl::StrCat("sink tokens set for codec ", CodecName(h.codec), ", which has none"));
  }
  if (h.codec != CodecId::kRaw && h.codec != CodecId::kLossless &&
      h.shape.dtype != DType::kBf16) {
    return Bad(absl::StrCat("codec ", CodecName(h.codec), " stores bf16 data only"));
  }
  if (h.keys_pre_rope() && (h.shape.head_dim % 2 != 0 || h.shape.dtype != DType::kBf16 ||
                            h.codec == CodecId::kLossless)) {
    return Bad("keys stored pre-RoPE need bf16, an even head_dim and a codec other than lossless");
  }
  return h;
}

absl::StatusOr<std::vector<SegmentRef>> ParseBlock(absl::Span<const uint8_t> bytes,
                                                   const BlockHeader& h, bool verify_checksum) {
  if (bytes.size() != h.total_bytes()) {
    return Bad(absl::StrCat("length ", bytes.size(), " != header + body = ", h.total_bytes(),
                            bytes.size() < h.total_bytes() ? " (truncated)" : " (trailing bytes)"));
  }
  const uint8_t* body = bytes.data() + BlockHeader::kSize;
  if (verify_checksum && Xxh3_64(body, h.body_bytes) != h.body_checksum) {
    return absl::DataLossError("kv block: body checksum mismatch");
  }
  std::vector<SegmentRef> segs(h.segment_count());
  uint64_t next = h.table_bytes();
  for (uint32_t s = 0; s < h.segment_count(); ++s) {
    const uint8_t* e = body + uint64_t{s} * BlockHeader::kSegmentEntrySize;
    segs[s].offset = GetU64(e);
    segs[s].size = GetU64(e + 8);
    // Packed: each segment starts at the first multiple of 16 at or after the
    // previous one's end (the first right after the table), so a block has one
    // byte string only.
    const uint64_t want = (next + 15) / 16 * 16;
    if (segs[s].offset != want || segs[s].offset > h.body_bytes || segs[s].size > h.body_bytes - segs[s].offset) {
      return Bad(absl::StrCat("segment ", s, " (offset ", segs[s].offset, ", size ", segs[s].size,
                              ") misplaced in a body of ", h.body_bytes, " bytes (expected at offset ", want, ")"));
    }
    for (uint64_t i = next; i < want; ++i) {
      if (body[i] != 0) return Bad(absl::StrCat("padding byte ", i, " before segment ", s, " is not zero"));
    }
    next = segs[s].offset + segs[s].size;
  }
  if (next != h.body_bytes) {
    return Bad(absl::StrCat("the last segment ends at ", next, " but the body holds ", h.body_bytes, " bytes"));
  }
  return segs;
}

}  // namespace kvhub::codec
