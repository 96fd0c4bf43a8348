#pragma once
// KV block codecs (DESIGN §3; element math in docs/codecs.md, bytes in
// docs/format.md). Encode turns one block's K/V tensors into a self-describing,
// checksummed payload; Decode turns it back.
//
// Failure semantics: Encode returns INVALID_ARGUMENT for bad parameters, shapes
// or data a codec cannot represent (non-finite values; kivi values beyond fp16
// range; fp8/int8 non-sink keys beyond +-2^126, which could decode to inf) and
// leaves *out unspecified. Decode returns INVALID_ARGUMENT for any malformed
// block and DATA_LOSS for checksum failures and for stored scales, key centres
// or kivi zeros that no encoder writes (NaN, inf, a negative scale: a block
// changed and resealed, or a faulty encoder's); it never reads outside
// the given span nor writes outside the given view, but may have written part
// of the view before failing (treat its content as garbage on error: a block
// that fails is a miss, never data).
// Thread safety: all functions are thread-safe; each thread keeps its own
// scratch buffers (grown on demand, reused across calls).

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/block_format.h"
#include "codec/kv_view.h"

namespace kvhub::codec {

// Which kernel implementation to run. Both produce identical bytes.
enum class KernelChoice : uint8_t { kSimd = 0, kScalar = 1 };

struct CodecParams {
  CodecId codec = CodecId::kKivi4;
  // kivi: tokens per key group and channels per value group: 32, 64 or 128.
  uint32_t group_size = 64;
  // kivi, fp8, int8: tokens whose absolute position is < sink_tokens are
  // stored in bf16 (the attention sink) and left out of every statistic.
  // Only the first block of a sequence has any. 0 .. kMaxSinkTokens (1024).
  // Default 1: the first (BOS) token, as KVQuant keeps; 4 as in StreamingLLM
  // costs 0.19 bit/element in the first block (kivi4 ratio 3.37x instead of 3.51x).
  uint32_t sink_tokens = 1;
  // Store keys de-rotated to position 0 so the decoder can place them at any
  // position. Needs an even head_dim and bf16; not allowed with lossless
  // (the rotation round trip is not bit-exact).
  bool keys_pre_rope = false;
  // lossless: zstd level (-7 .. 19; 1 is the fast default).
  int zstd_level = 1;
  KernelChoice kernels = KernelChoice::kSimd;

  absl::Status Validate() const;
};

struct DecodeOptions {
  // Position the decoded keys should have for token 0. Unset: the block's
  // base_position. Keys stored pre-RoPE are rotated to it; post-RoPE keys are
  // rotated by (target - base_position) when it differs. 0 .. kMaxPosition
  // (codec/rope.h); INVALID_ARGUMENT otherwise.
  std::optional<int64_t> target_position;
  // Fuzzing only: skip the body checksum so mutations reach the segment parsers.
  bool verify_checksum = true;
  KernelChoice kernels = KernelChoice::kSimd;
};

// What Decode reports about a block (its parsed header).
using DecodedInfo = BlockHeader;

// Encodes `kv` into `out` (resized to the block length; its previous content is
// discarded; capacity is reused). Buffers of any alignment work (Encode and
// Decode copy a buffer at an odd address first, to read 16-bit values aligned);
// aligned ones are not copied.
absl::Status Encode(const KvView& kv, const CodecParams& params, std::vector<uint8_t>* out);

// Parses and validates the header and the block's structure (exact length,
// segment table, segment sizes of the fixed-size codecs) without decoding or
// checksumming the body: use it to size the output buffer before Decode. A
// truncated or forged block fails here (INVALID_ARGUMENT; DATA_LOSS when the body
// checksum shows its bytes changed since it was made). raw_bytes is what the output needs, up
// to 2^34; lossless blocks compress, so a small one may legitimately need a lot:
// check raw_bytes against your own memory limit.
absl::StatusOr<BlockHeader> InspectBlock(absl::Span<const uint8_t> block);

// Decodes `block` into `out`, whose shape must equal the block's and whose size
// must be shape.RawBytes(). On success *info (if not null) holds the header.
// The whole body is checksummed before any segment is decoded.
absl::Status Decode(absl::Span<const uint8_t> block, const KvMutableView& out,
                    const DecodeOptions& options = {}, DecodedInfo* info = nullptr);

// Exact encoded size of a block of `shape` for the fixed-size codecs (all but
// lossless), header and table included; INVALID_ARGUMENT otherwise.
absl::StatusOr<uint64_t> EncodedSize(const KvShape& shape, const CodecParams& params,
                                     uint32_t sink_tokens_in_block);

}  // namespace kvhub::codec
