// Tiled kivi4/kivi2 kernels (docs/gpu.md, "Tiled kivi kernels"): one thread
// block per (segment, token group, head) tile of G tokens x D channels. Encode
// gathers the tile from the pages into shared memory with 16-byte loads,
// de-rotates pre-RoPE keys in place, reduces the key (per channel) and value
// (per token and channel group) statistics there and writes the codes from it:
// one pass over the input instead of the statistics and quantization passes of
// the element kernels (kernels.cu), which re-read every input element and
// redo the paged index math per element. Decode stages the tile's statistics
// in shared memory and writes 16-byte chunks, rotating key pairs by the
// position delta in registers.
//
// The element math is element_math.h, the same as the element kernels and the
// CPU codecs, so the bytes are identical (codec_cuda_gpu_test compares them
// with the host emulation for tiled and untiled shapes).
#include <algorithm>
#include <type_traits>

#include "codec/cuda/kernels.h"

namespace kvhub::codec::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint32_t kMaxDim = 256;     // D/8 chunks per row must fit one warp
constexpr uint32_t kMaxGroup = 128;   // kivi group sizes are 32, 64, 128
constexpr uint32_t kMaxStats = 1024;  // >= max(D, G * ceil(D / G)) for D <= 256, G <= 128
constexpr uint32_t kInFlight = 4;     // encode: 16-byte loads a thread issues before using them
// decode: code loads a thread issues before using them. 1 measured best on an
// H100 (2 and 4 cost registers and occupancy: 43-44% of copy vs 47-48%).
constexpr uint32_t kDecodeInFlight = 1;

bool PowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

bool TileGeometry(const BlockGeom& g) {
  if (g.codec != kCodecKivi4 && g.codec != kCodecKivi2) return false;
  if (g.dim % 8 != 0 || g.dim > kMaxDim || !PowerOfTwo(g.dim / 8)) return false;
  if (g.group % 8 != 0 || g.group > kMaxGroup) return false;
  if (g.SegElements() >= (uint64_t{1} << 31)) return false;
  for (const SegLayoutPod& l : g.layout) {
    if (l.scale_off % 16 || l.zero_off % 16 || l.codes_off % 16) return false;
  }
  return true;
}

// Chunk q of a tile with `cpr` (a power of two) 8-element chunks per row.
struct TileChunk {
  uint32_t row, d0;
};
__device__ __forceinline__ TileChunk ChunkAt(uint32_t q, uint32_t cpr_log2) {
  return {q >> cpr_log2, (q & ((1u << cpr_log2) - 1)) * 8};
}

// The tile of a thread block: segment s, tokens t0 .. t0 + rows, head h.
struct Tile {
  uint32_t s, grp, h, t0, rows;
};
__device__ __forceinline__ Tile TileOf(const BlockGeom& g) {
  Tile t;
  t.s = blockIdx.y;
  t.grp = blockIdx.x / g.heads;
  t.h = blockIdx.x - t.grp * g.heads;
  t.t0 = t.grp * g.group;
  t.rows = min(g.group, g.tokens - t.t0);
  return t;
}

// RoPE cos/sin of pair index k (< D/2) of block token t (rope.h table rows).
__device__ __forceinline__ void CosSin(const BlockGeom& g, uint32_t t, uint32_t k, float* c, float* s) {
  const float* row = g.rope_cs + uint64_t{g.rope_step ? t : 0} * g.dim;  // D/2 {cos, sin} pairs
  *c = row[2 * k];
  *s = row[2 * k + 1];
}

// Element indices (a, b) of pair k of a row, and the pair's cos/sin index.
__device__ __forceinline__ void PairOf(const BlockGeom& g, uint32_t k, uint32_t* a, uint32_t* b) {
  if (g.rope_interleaved) {
    *a = 2 * k;
    *b = 2 * k + 1;
  } else {
    *a = k;
    *b = k + g.dim / 2;
  }
}

__device__ __forceinline__ void MinMax(int16_t key, int16_t* mn, int16_t* mx) {
  *mn = key < *mn ? key : *mn;
  *mx = key > *mx ? key : *mx;
}

// The 8 statistics of chunk st0 from shared memory: keys have one per
// channel (st0 .. st0 + 8, 16-byte aligned), values one for the chunk.
__device__ __forceinline__ void Stats8(const float* a, uint32_t st0, bool keys, float out[8]) {
  if (keys) {
    const float4 lo = *reinterpret_cast<const float4*>(a + st0);
    const float4 hi = *reinterpret_cast<const float4*>(a + st0 + 4);
    out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
    out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
    return;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) out[k] = a[st0];
}

__device__ __forceinline__ void Unpack8(const uint4& v, uint16_t y[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    y[2 * k] = static_cast<uint16_t>(w[k]);
    y[2 * k + 1] = static_cast<uint16_t>(w[k] >> 16);
  }
}

// Encodes the tile (blockIdx.x, blockIdx.y) of block `c`.
template <int kBits>
__device__ __forceinline__ void TileEncode(const EncodeCtx& c, uint32_t cpr_log2) {
  extern __shared__ uint4 smem[];
  uint16_t* tile = reinterpret_cast<uint16_t*>(smem);  // rows x D bf16
  __shared__ __align__(16) float inv[kMaxStats], zero[kMaxStats];
  __shared__ int16_t part_mn[kThreads], part_mx[kThreads];
  const BlockGeom& g = c.g;
  const Tile tl = TileOf(g);
  const uint32_t D = g.dim, HD = g.heads * g.dim;
  const uint32_t cpr = 1u << cpr_log2, nchunks = tl.rows * cpr;
  const bool keys = tl.s % 2 == 0;
  const uint16_t* src = c.src[tl.s];

  // Gather (row r is 2D contiguous bytes of one page slot), kInFlight
  // 16-byte loads issued before the first is used.
  for (uint32_t q0 = threadIdx.x; q0 < nchunks; q0 += kInFlight * kThreads) {
    uint4 v[kInFlight];
#pragma unroll
    for (uint32_t j = 0; j < kInFlight; ++j) {
      const uint32_t q = q0 + j * kThreads;
      if (q < nchunks) {
        const TileChunk ch = ChunkAt(q, cpr_log2);
        v[j] = *reinterpret_cast<const uint4*>(
            src + PagedElementOffset(g.page_ids, g.page_tokens, HD, tl.t0 + ch.row, tl.h * D + ch.d0));
      }
    }
#pragma unroll
    for (uint32_t j = 0; j < kInFlight; ++j) {
      if (q0 + j * kThreads < nchunks) smem[q0 + j * kThreads] = v[j];
    }
  }
  if (tl.grp == 0 && tl.h == 0 && threadIdx.x == 0) EncodeZeroPads(c, tl.s);
  __syncthreads();
  if (keys && g.rope_cs != nullptr) {  // pre-RoPE keys: rotate back to position 0
    const uint32_t half = D / 2;
    for (uint32_t p = threadIdx.x; p < tl.rows * half; p += kThreads) {
      const uint32_t r = p / half, k = p - r * half;
      uint32_t a, b;
      PairOf(g, k, &a, &b);
      float cs, sn;
      CosSin(g, tl.t0 + r, k, &cs, &sn);
      RotatePair(&tile[r * D + a], &tile[r * D + b], cs, sn);
    }
    __syncthreads();
  }
  uint8_t* seg = c.Seg(tl.s);
  // Sink tokens of the tile are stored as bf16 (after de-rotation), as
  // EncodeSinkElement does.
  const uint32_t sink_rows = g.sinks > tl.t0 ? min(g.sinks - tl.t0, tl.rows) : 0;
  for (uint32_t q = threadIdx.x; q < sink_rows * cpr; q += kThreads) {
    const TileChunk ch = ChunkAt(q, cpr_log2);
    const uint16_t* x = tile + ch.row * D + ch.d0;
    bool finite = true;
#pragma unroll
    for (int k = 0; k < 8; ++k) finite = finite && (x[k] & 0x7FFF) < 0x7F80;
    if (!finite) SetError(c.error, kErrNonFinite);
    const uint64_t i0 = uint64_t{tl.t0 + ch.row} * HD + tl.h * D + ch.d0;
    *reinterpret_cast<uint4*>(seg + 2 * i0) = smem[q];
  }

  // Statistics, stored as fp16 scale/zero; inv/zero kept for the codes.
  const SegLayoutPod& L = g.layout[tl.s % 2];
  const float qmax = kBits == 4 ? 15.0f : 3.0f;
  if (keys) {  // per channel over the group's non-sink tokens
    const uint32_t slices = kThreads / D, d = threadIdx.x % D, slice = threadIdx.x / D;
    const uint32_t r0 = g.sinks > tl.t0 ? g.sinks - tl.t0 : 0;
    int16_t mn = INT16_MAX, mx = INT16_MIN;
    for (uint32_t r = r0 + slice; r < tl.rows; r += slices) MinMax(Bf16OrderKey(tile[r * D + d]), &mn, &mx);
    part_mn[threadIdx.x] = mn;
    part_mx[threadIdx.x] = mx;
    __syncthreads();
    if (threadIdx.x < D) {
      for (uint32_t k = 1; k < slices; ++k) {
        mn = min(mn, part_mn[k * D + d]);
        mx = max(mx, part_mx[k * D + d]);
      }
      if (r0 >= tl.rows) mn = mx = 0;  // no non-sink token in the group
      uint16_t sh, zh;
      if (!KiviStats(mn, mx, qmax, &sh, &zh, &inv[d], &zero[d])) SetError(c.error, kErrKiviRange);
      const uint64_t k = uint64_t{tl.grp} * HD + tl.h * D + d;
      StoreU16(seg + L.scale_off + 2 * k, sh);
      StoreU16(seg + L.zero_off + 2 * k, zh);
    }
  } else {  // per (token, channel group); sink tokens get 0, 0
    const uint32_t G = g.group, ng = g.ValueGroups(), nstats = tl.rows * ng;
    for (uint32_t st = threadIdx.x; st < nstats; st += kThreads) {
      const uint32_t r = st / ng, j = st - r * ng;
      int16_t mn = 0, mx = 0;
      if (tl.t0 + r >= g.sinks) {
        mn = INT16_MAX;
        mx = INT16_MIN;
        const uint32_t c0 = j * G, chunks = min(G, D - c0) / 8;
        // 16-byte reads, each thread starting at another chunk: fewer
        // shared-memory bank conflicts.
        uint32_t k = threadIdx.x % chunks;
        for (uint32_t n = 0; n < chunks; ++n) {
          const uint4 v = smem[(r * D + c0) / 8 + k];
          const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            MinMax(Bf16OrderKey(static_cast<uint16_t>(w[e])), &mn, &mx);
            MinMax(Bf16OrderKey(static_cast<uint16_t>(w[e] >> 16)), &mn, &mx);
          }
          k = k + 1 == chunks ? 0 : k + 1;
        }
      }
      uint16_t sh, zh;
      if (!KiviStats(mn, mx, qmax, &sh, &zh, &inv[st], &zero[st])) SetError(c.error, kErrKiviRange);
      const uint64_t k = (uint64_t{tl.t0 + r} * g.heads + tl.h) * ng + j;
      StoreU16(seg + L.scale_off + 2 * k, sh);
      StoreU16(seg + L.zero_off + 2 * k, zh);
    }
  }
  __syncthreads();

  // Codes: 8 elements -> 4 bytes (kivi4) or 2 bytes (kivi2).
  uint8_t* codes = seg + L.codes_off;
  const uint32_t ng = g.ValueGroups();
  for (uint32_t q = threadIdx.x; q < nchunks; q += kThreads) {
    const TileChunk ch = ChunkAt(q, cpr_log2);
    uint16_t x[8];
    Unpack8(smem[q], x);
    const uint32_t st0 = keys ? ch.d0 : ch.row * ng + ch.d0 / g.group;
    float iv[8], zv[8];
    Stats8(inv, st0, keys, iv);
    Stats8(zero, st0, keys, zv);
    uint32_t v = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) v |= uint32_t{QuantAffine(x[k], iv[k], zv[k], qmax)} << (kBits * k);
    const uint64_t i0 = uint64_t{tl.t0 + ch.row} * HD + tl.h * D + ch.d0;
    if (kBits == 4) {
      *reinterpret_cast<uint32_t*>(codes + i0 / 2) = v;
    } else {
      *reinterpret_cast<uint16_t*>(codes + i0 / 4) = static_cast<uint16_t>(v);
    }
  }
}

// Chunk of decode unit q: a chunk, or with NeoX rotation the first chunk of
// a pair (d0 < D/2; its partner is d0 + D/2).
__device__ __forceinline__ TileChunk UnitChunk(uint32_t q, uint32_t cpr_log2, bool neox_pairs) {
  if (!neox_pairs) return ChunkAt(q, cpr_log2);
  return {q >> (cpr_log2 - 1), (q & ((1u << (cpr_log2 - 1)) - 1)) * 8};
}

template <int kBits>
__global__ void __launch_bounds__(kThreads) KiviTileEncodeKernel(EncodeCtx c, uint32_t cpr_log2) {
  TileEncode<kBits>(c, cpr_log2);
}

// Several blocks of one shape: blockIdx.z is the block.
template <int kBits>
__global__ void __launch_bounds__(kThreads) KiviTileEncodeBatchKernel(const EncodeCtx* __restrict__ ctxs,
                                                                      uint32_t cpr_log2) {
  TileEncode<kBits>(ctxs[blockIdx.z], cpr_log2);
}

// Codes of chunk i0 of a non-sink row: 4 bytes (kivi4) or 2 bytes (kivi2).
template <int kBits>
__device__ __forceinline__ uint32_t LoadCodes(const uint8_t* codes, uint64_t i0) {
  return kBits == 4 ? *reinterpret_cast<const uint32_t*>(codes + i0 / 2)
                    : *reinterpret_cast<const uint16_t*>(codes + i0 / 4);
}

// bf16 of chunk i0: the stored bf16 of a sink row, else its codes
// dequantized with statistics st0.. (keys) or st0 (values) from shared memory.
template <int kBits>
__device__ __forceinline__ void DecodeChunk(const uint8_t* seg, bool sink, uint64_t i0, uint32_t code,
                                            bool keys, const float* sc, const float* zr,
                                            uint32_t st0, uint16_t y[8]) {
  if (sink) {
    Unpack8(*reinterpret_cast<const uint4*>(seg + 2 * i0), y);
    return;
  }
  float sv[8], zv[8];
  Stats8(sc, st0, keys, sv);
  Stats8(zr, st0, keys, zv);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    y[k] = DequantAffine(static_cast<uint8_t>((code >> (kBits * k)) & ((1u << kBits) - 1)), sv[k], zv[k]);
  }
}

// Decodes the tile (blockIdx.x, blockIdx.y) of block `c`.
template <int kBits, bool kNeoxPairs>
__device__ __forceinline__ void TileDecode(const DecodeCtx& c, uint32_t cpr_log2) {
  __shared__ __align__(16) float sc[kMaxStats], zr[kMaxStats];
  const BlockGeom& g = c.g;
  const Tile tl = TileOf(g);
  const uint32_t D = g.dim, HD = g.heads * g.dim, ng = g.ValueGroups();
  const bool keys = tl.s % 2 == 0;
  const uint8_t* seg = c.Seg(tl.s);
  const SegLayoutPod& L = g.layout[tl.s % 2];
  const uint8_t* codes = seg + L.codes_off;
  uint16_t* dst = c.dst[tl.s];
  const uint32_t cpr = 1u << cpr_log2;
  // Key segments rotating with NeoX pairing decode chunk d0 with chunk
  // d0 + D/2 as one unit (kNeoxPairs: the launch may contain such blocks).
  const bool neox_pairs = kNeoxPairs && keys && g.rope_cs != nullptr && !g.rope_interleaved;
  const uint32_t units = neox_pairs ? tl.rows * cpr / 2 : tl.rows * cpr;

  // Codes of kDecodeInFlight units per thread are requested before any is
  // used; the first round before the statistics are staged.
  uint32_t code[kDecodeInFlight], code2[kDecodeInFlight];
  auto load_round = [&](uint32_t q0) {
#pragma unroll
    for (uint32_t j = 0; j < kDecodeInFlight; ++j) {
      const uint32_t q = q0 + j * kThreads;
      if (q >= units) break;
      const TileChunk ch = UnitChunk(q, cpr_log2, neox_pairs);
      const uint32_t t = tl.t0 + ch.row;
      if (t < g.sinks) continue;
      const uint64_t i0 = uint64_t{t} * HD + tl.h * D + ch.d0;
      code[j] = LoadCodes<kBits>(codes, i0);
      if (kNeoxPairs && neox_pairs) code2[j] = LoadCodes<kBits>(codes, i0 + D / 2);
    }
  };
  load_round(threadIdx.x);

  const uint32_t nstats = keys ? D : tl.rows * ng;
  for (uint32_t st = threadIdx.x; st < nstats; st += kThreads) {
    uint64_t k;
    if (keys) {
      k = uint64_t{tl.grp} * HD + tl.h * D + st;
    } else {
      const uint32_t r = st / ng;
      k = (uint64_t{tl.t0 + r} * g.heads + tl.h) * ng + (st - r * ng);
    }
    sc[st] = HalfToFloat(LoadU16(seg + L.scale_off + 2 * k));
    zr[st] = HalfToFloat(LoadU16(seg + L.zero_off + 2 * k));
  }
  __syncthreads();

  for (uint32_t q0 = threadIdx.x; q0 < units; q0 += kDecodeInFlight * kThreads) {
    if (q0 != threadIdx.x) load_round(q0);
#pragma unroll
    for (uint32_t j = 0; j < kDecodeInFlight; ++j) {
      const uint32_t q = q0 + j * kThreads;
      if (q >= units) break;
      const TileChunk ch = UnitChunk(q, cpr_log2, neox_pairs);
      const uint32_t t = tl.t0 + ch.row;
      const uint64_t i0 = uint64_t{t} * HD + tl.h * D + ch.d0;
      const uint32_t st0 = keys ? ch.d0 : ch.row * ng + ch.d0 / g.group;
      const bool sink = t < g.sinks;
      uint16_t y[8];
      DecodeChunk<kBits>(seg, sink, i0, code[j], keys, sc, zr, st0, y);
      const uint64_t out = PagedElementOffset(g.page_ids, g.page_tokens, HD, t, tl.h * D + ch.d0);
      if (keys && g.rope_cs != nullptr) {
        if (kNeoxPairs && neox_pairs) {
          uint16_t z[8];
          DecodeChunk<kBits>(seg, sink, i0 + D / 2, code2[j], keys, sc, zr, st0 + D / 2, z);
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            float cs, sn;
            CosSin(g, t, ch.d0 + k, &cs, &sn);
            RotatePair(&y[k], &z[k], cs, sn);
            CheckRotatedFinite(c.error, y[k], z[k]);
          }
          Store8(dst + out + D / 2, z);
        } else {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            float cs, sn;
            CosSin(g, t, ch.d0 / 2 + k, &cs, &sn);
            RotatePair(&y[2 * k], &y[2 * k + 1], cs, sn);
            CheckRotatedFinite(c.error, y[2 * k], y[2 * k + 1]);
          }
        }
      }
      Store8(dst + out, y);
    }
  }
}

template <int kBits, bool kNeoxPairs>
__global__ void __launch_bounds__(kThreads) KiviTileDecodeKernel(DecodeCtx c, uint32_t cpr_log2) {
  TileDecode<kBits, kNeoxPairs>(c, cpr_log2);
}

// Several blocks of one shape: blockIdx.z is the block.
template <int kBits, bool kNeoxPairs>
__global__ void __launch_bounds__(kThreads) KiviTileDecodeBatchKernel(const DecodeCtx* __restrict__ ctxs,
                                                                      uint32_t cpr_log2) {
  TileDecode<kBits, kNeoxPairs>(ctxs[blockIdx.z], cpr_log2);
}

uint32_t Log2(uint32_t v) { return 31 - __builtin_clz(v); }

dim3 TileGrid(const BlockGeom& g) {
  const uint32_t groups = (g.tokens + g.group - 1) / g.group;
  return dim3(groups * g.heads, 2 * g.layers);
}

// Lets `kernel` take the largest tile TileGeometry allows (kMaxGroup rows of
// kMaxDim bf16). The default limit is 48 KiB *minus the kernel's static shared
// memory*, so a tile just under 48 KiB failed to launch (kivi4, group 128, head_dim
// 256, 80 tokens: 40 KiB of tile plus 9 KiB of statics). Always the same value:
// a limit sized to each launch could be lowered by another thread between its
// set and our launch.
constexpr int kMaxTileSharedBytes = static_cast<int>(kMaxGroup * kMaxDim * 2);
template <typename K>
cudaError_t AllowSharedMemory(K kernel) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxTileSharedBytes);
}

}  // namespace

bool KiviTileEncodeEligible(const EncodeCtx& c) { return TileGeometry(c.g) && c.src_aligned16; }

bool KiviTileDecodeEligible(const DecodeCtx& c) {
  // NeoX rotation pairs whole chunks: D/2 must be a multiple of 8.
  const bool rope_ok = c.g.rope_cs == nullptr || c.g.rope_interleaved || c.g.dim % 16 == 0;
  return TileGeometry(c.g) && rope_ok && c.dst_aligned16 &&
         reinterpret_cast<uintptr_t>(c.body) % 16 == 0;
}

// Calls launch(bits) with the codec's bit width as a compile-time constant.
template <typename F>
void WithEncodeVariant(uint8_t codec, F launch) {
  if (codec == kCodecKivi4) {
    launch(std::integral_constant<int, 4>{});
  } else {
    launch(std::integral_constant<int, 2>{});
  }
}

cudaError_t LaunchKiviTileEncode(const EncodeCtx& c, cudaStream_t stream) {
  const size_t smem = size_t{std::min(c.g.group, c.g.tokens)} * c.g.dim * 2;
  const uint32_t cpr_log2 = Log2(c.g.dim / 8);
  cudaError_t e = cudaSuccess;
  WithEncodeVariant(c.g.codec, [&](auto bits) {
    e = AllowSharedMemory(KiviTileEncodeKernel<decltype(bits)::value>);
    if (e == cudaSuccess) {
      KiviTileEncodeKernel<decltype(bits)::value><<<TileGrid(c.g), kThreads, smem, stream>>>(c, cpr_log2);
    }
  });
  return e != cudaSuccess ? e : cudaGetLastError();
}

bool KiviTileEncodeBatchable(const EncodeCtx& a, const EncodeCtx& b) {
  return KiviTileEncodeEligible(a) && KiviTileEncodeEligible(b) && a.g.codec == b.g.codec &&
         a.g.layers == b.g.layers && a.g.tokens == b.g.tokens && a.g.heads == b.g.heads &&
         a.g.dim == b.g.dim && a.g.group == b.g.group;
}

cudaError_t LaunchKiviTileEncodeBatch(const EncodeCtx* device_ctxs, absl::Span<const EncodeCtx> host_ctxs,
                                      cudaStream_t stream) {
  const EncodeCtx& c = host_ctxs[0];
  const size_t smem = size_t{std::min(c.g.group, c.g.tokens)} * c.g.dim * 2;
  const uint32_t cpr_log2 = Log2(c.g.dim / 8);
  dim3 grid = TileGrid(c.g);
  grid.z = static_cast<unsigned>(host_ctxs.size());
  cudaError_t e = cudaSuccess;
  WithEncodeVariant(c.g.codec, [&](auto bits) {
    e = AllowSharedMemory(KiviTileEncodeBatchKernel<decltype(bits)::value>);
    if (e == cudaSuccess) {
      KiviTileEncodeBatchKernel<decltype(bits)::value><<<grid, kThreads, smem, stream>>>(device_ctxs, cpr_log2);
    }
  });
  return e != cudaSuccess ? e : cudaGetLastError();
}

bool NeoxRotating(const DecodeCtx& c) { return c.g.rope_cs != nullptr && !c.g.rope_interleaved; }

// Calls launch(bits, neox) with the codec's bit width and the NeoX pairing as
// compile-time constants (std::integral_constant), for the kernel templates.
template <typename F>
void WithDecodeVariant(uint8_t codec, bool neox, F launch) {
  using B4 = std::integral_constant<int, 4>;
  using B2 = std::integral_constant<int, 2>;
  if (codec == kCodecKivi4) {
    neox ? launch(B4{}, std::true_type{}) : launch(B4{}, std::false_type{});
  } else {
    neox ? launch(B2{}, std::true_type{}) : launch(B2{}, std::false_type{});
  }
}

cudaError_t LaunchKiviTileDecode(const DecodeCtx& c, cudaStream_t stream) {
  const uint32_t cpr_log2 = Log2(c.g.dim / 8);
  const dim3 grid = TileGrid(c.g);
  WithDecodeVariant(c.g.codec, NeoxRotating(c), [&](auto bits, auto neox) {
    KiviTileDecodeKernel<decltype(bits)::value, decltype(neox)::value><<<grid, kThreads, 0, stream>>>(c, cpr_log2);
  });
  return cudaGetLastError();
}

bool KiviTileDecodeBatchable(const DecodeCtx& a, const DecodeCtx& b) {
  return KiviTileDecodeEligible(a) && KiviTileDecodeEligible(b) && a.g.codec == b.g.codec &&
         a.g.layers == b.g.layers && a.g.tokens == b.g.tokens && a.g.heads == b.g.heads &&
         a.g.dim == b.g.dim && a.g.group == b.g.group && a.g.rope_interleaved == b.g.rope_interleaved;
}

cudaError_t LaunchKiviTileDecodeBatch(const DecodeCtx* device_ctxs, absl::Span<const DecodeCtx> host_ctxs,
                                      cudaStream_t stream) {
  const DecodeCtx& c = host_ctxs[0];
  const uint32_t cpr_log2 = Log2(c.g.dim / 8);
  bool neox = false;
  for (const DecodeCtx& x : host_ctxs) neox = neox || NeoxRotating(x);
  dim3 grid = TileGrid(c.g);
  grid.z = static_cast<unsigned>(host_ctxs.size());
  WithDecodeVariant(c.g.codec, neox, [&](auto bits, auto pairs) {
    KiviTileDecodeBatchKernel<decltype(bits)::value, decltype(pairs)::value><<<grid, kThreads, 0, stream>>>(device_ctxs, cpr_log2);
  });
  return cudaGetLastError();
}

}  // namespace kvhub::codec::cuda
