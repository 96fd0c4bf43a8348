#pragma once
// Byte layout of one segment of a fixed-size codec (docs/format.md, "Segments"),
// shared by the CPU codecs (codec.cc) and the CUDA codecs (codec/cuda/), so
// both place every array at the same offset. Pure functions; thread-safe.

#include <cstdint>

#include "absl/status/status.h"
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

// Largest magnitude of a non-sink key that fp8 and int8 accept, as bf16 bits:
// 2^126 (~8.5e37). Their keys are stored centred and decode as
// bf16(q * scale + mid) (docs/codecs.md), and near bf16's largest (3.39e38) the
// rounding of mid to bf16 and of the code (e4m3 rounds the residual by up to
// 1/16) can carry that sum past it to inf: a channel {0x7C03, 0x7F7F} decoded
// its 0x7F7F as inf. With every key of a channel within +-2^126, |mid| <= 2^126,
// every residual |x - mid| <= 2^127, scale <= 2^127 / qmax, and
// |q * scale + mid| <= 2^127 * (128/127) * (1 + 2^-23) + 2^126 < 1.51 * 2^127
// (even for int8 code -128, which no encoder writes), far below the 1.996 * 2^127
// that rounds to bf16 inf. Values are not centred and need no bound (their
// decode is at most the largest input); sink tokens are stored as they are.
// CPU and CUDA encoders refuse a larger key with CenteredKeyRangeError.
inline constexpr uint16_t kCenteredKeyMaxBf16 = 0x7E80;

// INVALID_ARGUMENT for a non-sink fp8/int8 key beyond kCenteredKeyMaxBf16.
absl::Status CenteredKeyRangeError(CodecId codec);

// Checks the statistics segment `s` of block `h` stores, before its codes are
// decoded: fp8/int8 f32 scales and bf16 key centres (mid), kivi fp16 scales and
// zeros. Every one must be finite and every scale >= 0 (-0 passes), as every
// encoder writes them; a NaN or inf one decodes to NaN/inf. A block whose
// checksums pass and whose statistics do not was altered and resealed, or written
// by a faulty encoder: DATA_LOSS naming the layer, keys or values, the field and
// its index. fp8/int8 key centres beyond +-2^126 (kCenteredKeyMaxBf16), which no
// encoder writes, are refused too (a forged 0x7F7F centre with an ordinary scale
// decoded to inf). With these checks no dequantised element is NaN (sink rows are
// copied as stored); a forged finite fp8/int8 scale near FLT_MAX can still give
// inf (bounding it would need the codes: int8's -128, which no encoder writes,
// exceeds any bound that keeps the encoder's own largest scale). Reads the
// statistics only (O(statistics), not O(elements)). OK for raw and lossless.
// `seg` points at the segment, which the caller has checked to be
// Layout(h.codec, h.shape, s % 2 == 1, h.group_size, h.sink_tokens).size bytes.
// Used by codec::Decode and by the CUDA decode's host-side PlanDecode.
absl::Status CheckSegmentStats(const BlockHeader& h, uint32_t s, const uint8_t* seg);

}  // namespace kvhub::codec
