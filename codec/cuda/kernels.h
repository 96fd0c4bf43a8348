#pragma once
// Launchers of the CUDA codec kernels (kernels.cu). Every context is plain
// data whose pointers are device memory; the launchers enqueue on `stream`
// and return the launch status (kernel faults surface at the next sync).
// The host API is gpu_codec.h; this header is its private interface.

#include <cuda_runtime_api.h>

#include "absl/types/span.h"
#include "codec/cuda/block_kernels.h"

namespace kvhub::codec::cuda {

// Which kernels run where several produce the same bytes.
struct KernelOptions {
  // kivi4/kivi2 through the tiled kernels (kivi_tile_kernels.cu) where the
  // shape allows (head_dim a power-of-two multiple of 8 up to 256, 16-byte
  // aligned caches); false: always the element kernels (kernels.cu).
  bool kivi_tiles = true;
};

// All encode passes for every segment: padding, sinks, statistics, codes.
cudaError_t LaunchEncode(const EncodeCtx& ctx, const KernelOptions& options, cudaStream_t stream);

// Decode + scatter (+ RoPE) of every segment.
cudaError_t LaunchDecode(const DecodeCtx& ctx, const KernelOptions& options, cudaStream_t stream);

// Several blocks: one tiled launch when they all share a tile geometry (and
// options.kivi_tiles), else LaunchEncode/LaunchDecode per block.
// `device_ctxs` is a device copy of `ctxs`, read only by the one launch
// (may be null for a single block).
cudaError_t LaunchEncodeMany(const EncodeCtx* device_ctxs, absl::Span<const EncodeCtx> ctxs,
                             const KernelOptions& options, cudaStream_t stream);
cudaError_t LaunchDecodeMany(const DecodeCtx* device_ctxs, absl::Span<const DecodeCtx> ctxs,
                             const KernelOptions& options, cudaStream_t stream);

// The tiled kivi kernels (kivi_tile_kernels.cu): whether they take the block,
// and their launchers (the whole body: padding, sinks, statistics, codes).
bool KiviTileEncodeEligible(const EncodeCtx& ctx);
bool KiviTileDecodeEligible(const DecodeCtx& ctx);
cudaError_t LaunchKiviTileEncode(const EncodeCtx& ctx, cudaStream_t stream);
cudaError_t LaunchKiviTileDecode(const DecodeCtx& ctx, cudaStream_t stream);

// Several blocks in one encode launch: both eligible and of one tile geometry
// (codec, layers, tokens, heads, head_dim, group); `device_ctxs` is a device
// copy of `host_ctxs` (at most 65535 blocks).
bool KiviTileEncodeBatchable(const EncodeCtx& a, const EncodeCtx& b);
cudaError_t LaunchKiviTileEncodeBatch(const EncodeCtx* device_ctxs, absl::Span<const EncodeCtx> host_ctxs,
                                      cudaStream_t stream);

// Several blocks in one launch: both eligible and of one tile geometry
// (codec, layers, tokens, heads, head_dim, group, RoPE pairing).
bool KiviTileDecodeBatchable(const DecodeCtx& a, const DecodeCtx& b);
// `device_ctxs` is a device copy of `host_ctxs` (at most 65535 blocks); the
// host copy picks the kernel and the grid.
cudaError_t LaunchKiviTileDecodeBatch(const DecodeCtx* device_ctxs, absl::Span<const DecodeCtx> host_ctxs,
                                      cudaStream_t stream);

}  // namespace kvhub::codec::cuda
