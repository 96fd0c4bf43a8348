// CUDA codec kernels: thin grid-stride wrappers around the unit functions of
// block_kernels.h (the same code the host emulation runs). blockIdx.y is the
// segment (2 * layer + K/V), so one launch covers the whole block.
#include "codec/cuda/kernels.h"

#include <algorithm>

namespace kvhub::codec::cuda {
namespace {

constexpr int kThreads = 256;

dim3 Grid(uint64_t units, uint32_t segments) {
  uint64_t x = (units + kThreads - 1) / kThreads;
  x = std::max<uint64_t>(1, std::min<uint64_t>(x, 1024));
  return dim3(static_cast<unsigned>(x), segments);
}

__device__ uint64_t GlobalThread() { return uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; }
__device__ uint64_t GlobalStride() { return uint64_t{gridDim.x} * blockDim.x; }

__global__ void ZeroPadsKernel(EncodeCtx c) {
  const uint64_t s = GlobalThread();
  if (s < 2ull * c.g.layers) EncodeZeroPads(c, static_cast<uint32_t>(s));
}

__global__ void SinkKernel(EncodeCtx c, uint64_t n) {
  const uint32_t s = blockIdx.y;
  for (uint64_t i = GlobalThread(); i < n; i += GlobalStride()) EncodeSinkElement(c, s, i);
}

// fp8/int8 keys: the per-(head, channel) centres (value segments return).
__global__ void KeyMidKernel(EncodeCtx c) {
  const uint32_t s = blockIdx.y;
  if (!c.g.Centered(s)) return;
  const uint64_t n = c.g.RowElements();
  for (uint64_t k = GlobalThread(); k < n; k += GlobalStride()) KeyMidStat(c, s, k);
}

// fp8: one thread block per (head, segment): max magnitude over the non-sink
// tokens x D (float bits; after KeyMidKernel for keys).
__global__ void Fp8AmaxKernel(EncodeCtx c) {
  __shared__ unsigned int amax;
  const uint32_t s = blockIdx.y, h = blockIdx.x;
  if (threadIdx.x == 0) amax = 0;
  __syncthreads();
  unsigned int m = 0;
  const uint64_t td = uint64_t{c.g.tokens - c.g.sinks} * c.g.dim;
  for (uint64_t k = threadIdx.x; k < td; k += blockDim.x) {
    const uint64_t t = c.g.sinks + k / c.g.dim, d = k % c.g.dim;
    m = max(m, static_cast<unsigned int>(AmaxBits(c, s, (t * c.g.heads + h) * c.g.dim + d)));
  }
  m = __reduce_max_sync(0xFFFFFFFFu, m);
  if ((threadIdx.x & 31) == 0) atomicMax(&amax, m);
  __syncthreads();
  if (threadIdx.x == 0) Fp8Finish(c, s, h, amax);
}

__global__ void Fp8QuantKernel(EncodeCtx c) {
  const uint32_t s = blockIdx.y;
  const uint64_t n = c.g.SegElements();
  for (uint64_t i = GlobalThread(); i < n; i += GlobalStride()) Fp8QuantElement(c, s, i);
}

// int8: one warp per row (token, head): max magnitude, scale, codes.
__global__ void Int8Kernel(EncodeCtx c) {
  const uint32_t s = blockIdx.y, lane = threadIdx.x & 31;
  const uint64_t rows = uint64_t{c.g.tokens} * c.g.heads;
  const uint64_t warp = GlobalThread() / 32, warps = GlobalStride() / 32;
  const uint64_t sink_rows = uint64_t{c.g.sinks} * c.g.heads;
  for (uint64_t r = warp; r < rows; r += warps) {
    unsigned int m = 0;
    if (r >= sink_rows) {
      for (uint32_t d = lane; d < c.g.dim; d += 32) {
        m = max(m, static_cast<unsigned int>(AmaxBits(c, s, r * c.g.dim + d)));
      }
    }
    m = __reduce_max_sync(0xFFFFFFFFu, m);
    float scale, inv;
    Int8RowScale(c.g, r, m, &scale, &inv);
    if (lane == 0) Int8Finish(c, s, r, m);
    for (uint32_t d = lane; d < c.g.dim; d += 32) Int8QuantElement(c, s, r * c.g.dim + d, inv);
  }
}

__global__ void KiviStatKernel(EncodeCtx c) {
  const uint32_t s = blockIdx.y;
  const uint64_t n = c.g.stat_count[s % 2];
  for (uint64_t k = GlobalThread(); k < n; k += GlobalStride()) {
    if (s % 2 == 0) {
      KiviKeyStat(c, s, k);
    } else {
      KiviValueStat(c, s, k);
    }
  }
}

__global__ void KiviQuantKernel(EncodeCtx c) {
  const uint32_t s = blockIdx.y;
  const uint64_t n = c.KiviQuantUnits(s);
  if (c.Chunked()) {
    for (uint64_t u = GlobalThread(); u < n; u += GlobalStride()) KiviQuantChunk8(c, s, u);
  } else {
    for (uint64_t b = GlobalThread(); b < n; b += GlobalStride()) KiviQuantByte(c, s, b);
  }
}

__global__ void DecodeKernel(DecodeCtx c) {
  const uint32_t s = blockIdx.y;
  const uint64_t n = c.Units(s);
  for (uint64_t u = GlobalThread(); u < n; u += GlobalStride()) DecodeUnit(c, s, u);
}

}  // namespace

cudaError_t LaunchEncode(const EncodeCtx& c, const KernelOptions& options, cudaStream_t stream) {
  const uint32_t nseg = 2 * c.g.layers;
  const uint64_t n = c.g.SegElements();
  if (options.kivi_tiles && KiviTileEncodeEligible(c)) {
    return LaunchKiviTileEncode(c, stream);  // padding and sinks included
  }
  ZeroPadsKernel<<<(nseg + kThreads - 1) / kThreads, kThreads, 0, stream>>>(c);
  const uint64_t sink = c.g.SinkElements();
  if (sink > 0) SinkKernel<<<Grid(sink, nseg), kThreads, 0, stream>>>(c, sink);
  switch (c.g.codec) {
    case kCodecFp8:
      KeyMidKernel<<<Grid(c.g.RowElements(), nseg), kThreads, 0, stream>>>(c);
      Fp8AmaxKernel<<<dim3(c.g.heads, nseg), kThreads, 0, stream>>>(c);
      Fp8QuantKernel<<<Grid(n, nseg), kThreads, 0, stream>>>(c);
      break;
    case kCodecInt8:
      KeyMidKernel<<<Grid(c.g.RowElements(), nseg), kThreads, 0, stream>>>(c);
      Int8Kernel<<<Grid(uint64_t{c.g.tokens} * c.g.heads * 32, nseg), kThreads, 0, stream>>>(c);
      break;
    default: {
      KiviStatKernel<<<Grid(std::max(c.g.stat_count[0], c.g.stat_count[1]), nseg), kThreads, 0,
                       stream>>>(c);
      KiviQuantKernel<<<Grid(std::max(c.KiviQuantUnits(0), c.KiviQuantUnits(1)), nseg),
                        kThreads, 0, stream>>>(c);
    }
  }
  return cudaGetLastError();
}

cudaError_t LaunchDecode(const DecodeCtx& c, const KernelOptions& options, cudaStream_t stream) {
  if ((c.g.codec == kCodecKivi4 || c.g.codec == kCodecKivi2) && options.kivi_tiles &&
      KiviTileDecodeEligible(c)) {
    return LaunchKiviTileDecode(c, stream);
  }
  const uint32_t nseg = 2 * c.g.layers;
  DecodeKernel<<<Grid(std::max(c.Units(0), c.Units(1)), nseg), kThreads, 0, stream>>>(c);
  return cudaGetLastError();
}

namespace {

template <typename Ctx, typename One, typename Batchable, typename Batch>
cudaError_t LaunchMany(const Ctx* device_ctxs, absl::Span<const Ctx> ctxs, const KernelOptions& options,
                       cudaStream_t stream, One one, Batchable batchable, Batch batch) {
  bool together = ctxs.size() > 1 && options.kivi_tiles;
  for (size_t i = 1; together && i < ctxs.size(); ++i) together = batchable(ctxs[0], ctxs[i]);
  if (together) return batch(device_ctxs, ctxs, stream);
  for (const Ctx& c : ctxs) {
    if (cudaError_t e = one(c, options, stream); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t LaunchEncodeMany(const EncodeCtx* device_ctxs, absl::Span<const EncodeCtx> ctxs,
                             const KernelOptions& options, cudaStream_t stream) {
  return LaunchMany(device_ctxs, ctxs, options, stream, LaunchEncode, KiviTileEncodeBatchable,
                    LaunchKiviTileEncodeBatch);
}

cudaError_t LaunchDecodeMany(const DecodeCtx* device_ctxs, absl::Span<const DecodeCtx> ctxs,
                             const KernelOptions& options, cudaStream_t stream) {
  return LaunchMany(device_ctxs, ctxs, options, stream, LaunchDecode, KiviTileDecodeBatchable,
                    LaunchKiviTileDecodeBatch);
}

}  // namespace kvhub::codec::cuda
