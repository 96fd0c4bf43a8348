#pragma once
// Host-side planning for the CUDA codecs: everything about a block except the
// per-element work. The kernels write segments into a body laid out by
// codec/segment_layout.h; FinishBlock then writes the segment table, the body
// checksum and the header with codec/block_format.h, exactly as codec::Encode
// does, so a GPU-encoded block is byte-identical to a CPU-encoded one.
// Pure host code (no CUDA); thread-safe (pure functions).

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/block_format.h"
#include "codec/codec.h"
#include "codec/cuda/block_kernels.h"
#include "codec/cuda/paged_layout.h"
#include "codec/kv_view.h"
#include "codec/segment_layout.h"

namespace kvhub::codec::cuda {

// What EncodeFromPages needs besides the pages: the codec parameters and the
// block's identity (as in KvView).
struct PagedEncodeParams {
  CodecParams codec;  // codec must be fp8, int8, kivi4 or kivi2; `kernels` is ignored
  uint32_t layers = 0;
  uint32_t tokens = 0;           // block tokens (<= pages * page_tokens)
  int64_t base_position = 0;
  double rope_base = 10000.0;
  RopePairing rope_pairing = RopePairing::kNeox;
  U128 fingerprint;
};

// One paged KV cache: per layer a K and a V base pointer (device memory for
// the CUDA codec, host memory for the emulation), each [num_pages][page_tokens]
// [kv_heads][head_dim] bf16. Not owned.
struct PagedKv {
  PagedShape shape;
  std::vector<uint16_t*> k, v;  // one per layer
};

// True for the codecs with CUDA kernels. lossless stays on the CPU
// (docs/gpu.md explains why); raw is a plain copy.
bool HasGpuKernels(CodecId codec);

struct BlockPlan {
  BlockHeader header;             // complete except body_checksum
  std::vector<uint64_t> seg_off;  // [2L] from the body start
  SegLayout layout[2];            // keys, values
  uint64_t stat_count[2] = {0, 0};
  std::vector<float> rope_cs;     // empty: no rotation
  uint32_t rope_step = 0;         // 1: one table row per token, 0: one row for all

  uint64_t total_bytes() const { return header.total_bytes(); }
  uint64_t scratch_floats() const { return uint64_t{header.shape.layers} * (stat_count[0] + stat_count[1]); }
  // BlockGeom with the device (or host) copies of seg_off, page ids and the table.
  BlockGeom Geom(const uint64_t* seg_off_ptr, const int32_t* page_ids, uint32_t page_tokens,
                 const float* rope_cs_ptr) const;
};

// Plans the encoding of a block of `p.layers` x `p.tokens` tokens from pages of
// `pages` shape. INVALID_ARGUMENT for unsupported codecs or bad parameters.
absl::StatusOr<BlockPlan> PlanEncode(const PagedShape& pages, const PagedEncodeParams& p);

// Writes the segment table, body checksum and header into block[0, total_bytes),
// whose body (from byte 128 on, past the table) holds the kernel output.
absl::Status FinishBlock(const BlockPlan& plan, absl::Span<uint8_t> block);

// Parses and verifies `block` (header, length, body checksum unless disabled,
// segment table, segment sizes) and plans its decode with the RoPE rotation
// codec::Decode would apply for `options.target_position`.
absl::StatusOr<BlockPlan> PlanDecode(absl::Span<const uint8_t> block, const DecodeOptions& options);

// Checks that `page_ids` hold a block of `tokens` tokens of a cache of shape
// `pages` with `heads` x `dim` per token: one id per page the block spans, each
// in [0, num_pages); with `for_write`, no id twice (parallel scatter would race).
absl::Status ValidatePages(const PagedShape& pages, absl::Span<const int32_t> page_ids,
                           uint32_t tokens, uint32_t heads, uint32_t dim, bool for_write);

// 1 if every pointer is 16-byte aligned (DecodeCtx::dst_aligned16).
uint8_t AllAligned16(const std::vector<uint16_t*>& ptrs);

// The encode kernels' error bits as a status (OK for 0), with the CPU codecs' messages.
absl::Status KernelErrorStatus(uint32_t error_bits, CodecId codec);

// The decode kernels' error bits as a status (OK for 0), with codec/rope.cc's
// message. The pages were written: the caller must not use them.
absl::Status DecodeKernelErrorStatus(uint32_t error_bits);

}  // namespace kvhub::codec::cuda
