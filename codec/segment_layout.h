#pragma once
// Byte layout of one segment of a fixed-size codec (docs/format.md, "Segments"),
// shared by the CPU codecs (codec.cc) and the CUDA codecs (codec/cuda/), so
// both place every array at the same offset. Pure functions; thread-safe.

#include <cstdint>

#include "codec/block_format.h"
#include "codec/kv_view.h"

namespace kvhub::codec {

constexpr uint64_t Align16(uint64_t v) { return (v + 15) & ~uint64_t{15}; }

inline bool IsKivi(CodecId c) { return c == CodecId::kKivi4 || c == CodecId::kKivi2; }
// Codecs that keep the first sink_tokens tokens exact (CodecParams::sink_tokens).
inline bool HasSinks(CodecId c) { return IsKivi(c) || c == CodecId::kFp8 || c == CodecId::kInt8; }
inline uint32_t KiviBits(CodecId c) { return c == CodecId::kKivi4 ? 4 : 2; }

struct SegLayout {
  uint64_t sink_bytes = 0;  // bf16 rows of sink tokens at offset 0
  uint64_t scale_off = 0, scale_bytes = 0;
  uint64_t zero_off = 0, zero_bytes = 0;
  uint64_t codes_off = 0, codes_bytes = 0;
  uint64_t size = 0;
};

// Layout of a K (is_value false) or V segment. For raw and lossless only
// codes_bytes (= the raw segment bytes) is meaningful. `group` matters for
// kivi only, `sinks` for kivi, fp8 and int8. fp8/int8 key segments carry the
// per-(head, channel) bf16 centres in zero_off/zero_bytes.
SegLayout Layout(CodecId codec, const KvShape& sh, bool is_value, uint32_t group, uint32_t sinks);

// Sink tokens inside a block that starts at `base_position`: tokens whose
// absolute position is < sink_tokens (kivi, fp8, int8; 0 for raw and lossless).
uint32_t SinksInBlock(CodecId codec, uint32_t sink_tokens, int64_t base_position, uint32_t tokens);

}  // namespace kvhub::codec
