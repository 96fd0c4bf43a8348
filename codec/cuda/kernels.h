#pragma once
// Launchers of the CUDA codec kernels (kernels.cu). Every context is plain
// data whose pointers are device memory; the launchers enqueue on `stream`
// and return the launch status (kernel faults surface at the next sync).
// The host API is gpu_codec.h; this header is its private interface.

#include <cuda_runtime_api.h>

#include "codec/cuda/block_kernels.h"

namespace kvhub::codec::cuda {

// All encode passes for every segment: padding, sinks, statistics, codes.
cudaError_t LaunchEncode(const EncodeCtx& ctx, cudaStream_t stream);

// Decode + scatter (+ RoPE) of every segment.
cudaError_t LaunchDecode(const DecodeCtx& ctx, cudaStream_t stream);

}  // namespace kvhub::codec::cuda
