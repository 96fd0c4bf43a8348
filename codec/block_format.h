#pragma once
// The block payload (DESIGN §3, normative spec in docs/format.md): a fixed
// 128-byte little-endian header, a segment table with one entry per layer and
// tensor (K then V), then the segments. The header carries its own XXH3-64
// checksum and an XXH3-64 checksum of the body (table + segments).
//
// ParseHeader never reads past the span it is given and rejects anything
// malformed with INVALID_ARGUMENT (structure) or DATA_LOSS (checksum), naming
// the field. Thread-safe (pure functions).

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "codec/kv_view.h"
#include "common/model_spec.h"
#include "common/u128.h"

namespace kvhub::codec {

enum class CodecId : uint8_t {
  kRaw = 1,
  kLossless = 2,
  kFp8 = 3,
  kInt8 = 4,
  kKivi4 = 5,
  kKivi2 = 6,
};

absl::string_view CodecName(CodecId c);  // "raw", "lossless", "fp8", "int8", "kivi4", "kivi2"
absl::StatusOr<CodecId> ParseCodecName(absl::string_view name);
bool IsKnownCodec(uint8_t id);

inline constexpr uint8_t kFlagKeysPreRope = 1;  // keys stored de-rotated to position 0

// Largest CodecParams::sink_tokens: tokens at absolute positions < it are sinks.
// An encoder therefore stores sinks only in a block whose base_position +
// sink_tokens <= kMaxSinkTokens; ParseHeader refuses any other header with sinks.
inline constexpr uint32_t kMaxSinkTokens = 1024;

struct BlockHeader {
  static constexpr uint32_t kMagic = 0x42484B56;  // "KVHB" as bytes
  static constexpr uint16_t kVersion = 2;  // 2: fp8/int8 sinks and centered keys
  static constexpr size_t kSize = 128;
  static constexpr size_t kSegmentEntrySize = 16;  // u64 offset, u64 size
  // Decoders refuse blocks that claim more raw bytes than this (absurd sizes).
  static constexpr uint64_t kMaxRawBytes = 1ull << 34;  // 16 GiB

  CodecId codec = CodecId::kRaw;
  uint8_t flags = 0;
  uint16_t group_size = 0;   // kivi only; 0 otherwise
  uint16_t sink_tokens = 0;  // kivi, fp8, int8: leading tokens of this block kept exact (bf16)
  KvShape shape;
  int64_t base_position = 0;
  double rope_base = 10000.0;
  RopePairing rope_pairing = RopePairing::kNeox;
  U128 fingerprint;
  uint64_t raw_bytes = 0;    // == shape.RawBytes()
  uint64_t body_bytes = 0;   // segment table + segments
  uint64_t body_checksum = 0;

  bool keys_pre_rope() const { return (flags & kFlagKeysPreRope) != 0; }
  uint32_t segment_count() const { return 2 * shape.layers; }
  uint64_t table_bytes() const { return uint64_t{segment_count()} * kSegmentEntrySize; }
  uint64_t total_bytes() const { return kSize + body_bytes; }

  // Writes the 128 header bytes (computing the header checksum) to out[0..128).
  void Serialize(uint8_t* out) const;
};

struct SegmentRef {
  uint64_t offset = 0;  // from the start of the body
  uint64_t size = 0;
};

// Parses and validates the fixed header (magic, version, header checksum,
// known codec/dtype/pairing/flags, zero reserved bytes, dimensions in range,
// raw_bytes consistent and <= kMaxRawBytes, codec parameters plausible).
// Does not look at the body. `bytes` may be just the first 128 bytes.
absl::StatusOr<BlockHeader> ParseHeader(absl::Span<const uint8_t> bytes);

// Validates the whole block: header, exact total length, body checksum (unless
// verify_checksum is false: fuzzing only), and the segment table (segments in
// order, 16-byte aligned, inside the body, not overlapping the table).
// Returns the segment table.
absl::StatusOr<std::vector<SegmentRef>> ParseBlock(absl::Span<const uint8_t> bytes,
                                                   const BlockHeader& header,
                                                   bool verify_checksum = true);

// Little-endian helpers used by the format code.
inline void PutU16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void PutU32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i)); }
inline void PutU64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i)); }
inline uint16_t GetU16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace kvhub::codec
