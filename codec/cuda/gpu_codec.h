#pragma once
// CUDA codecs (docs/gpu.md): encode a block straight from a vLLM-style paged
// KV cache on the GPU, and decode a block straight into one, with the RoPE
// re-rotation codec::Decode applies. Blocks are byte-identical to
// codec::Encode's for fp8, int8, kivi4 and kivi2 (lossless stays on the CPU).
//
// The kernels write the block body on the device; the segment table, the body
// checksum and the header are written on the host (block_plan.h) from the
// body copied back through a pinned staging buffer. Decode verifies the whole
// block on the host (header, checksum, segment table) before anything is
// written to the pages, so a corrupted block never touches the cache.
//
// Ownership: a GpuCodec owns a CUDA stream, device workspace and pinned
// staging memory, grown on demand and reused. The cache pointers are the
// caller's device memory and must stay valid for the call.
// Thread safety: one GpuCodec per thread (calls are synchronous on its stream).
// Each call makes the codec's device current and gives the calling thread its
// own current device back when it returns.
// Failure: INVALID_ARGUMENT for bad input (as the CPU codecs), DATA_LOSS for
// checksum failures, FAILED_PRECONDITION when there is no usable device,
// INTERNAL for CUDA errors (with the CUDA error string).

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/codec.h"
#include "codec/cuda/block_plan.h"

namespace kvhub::codec::cuda {

// Number of CUDA devices, or FAILED_PRECONDITION "no CUDA device: <reason>".
absl::StatusOr<int> CudaDeviceCount();

class GpuCodec {
 public:
  struct Options {
    // kivi4/kivi2 through the tiled kernels where the shape allows (head_dim
    // a power-of-two multiple of 8 up to 256); false forces the per-element
    // kernels, which take every shape. Both give the same bytes; the switch
    // exists for tests and benchmarks (docs/gpu.md).
    bool kivi_tiles = true;
  };

  // FAILED_PRECONDITION if `device` does not exist or cannot be used.
  static absl::StatusOr<std::unique_ptr<GpuCodec>> Create(int device = 0) {
    return Create(device, Options());
  }
  static absl::StatusOr<std::unique_ptr<GpuCodec>> Create(int device, const Options& options);
  ~GpuCodec();
  GpuCodec(const GpuCodec&) = delete;
  GpuCodec& operator=(const GpuCodec&) = delete;

  // Encodes the block held by pages `page_ids` (host array) of `cache`
  // (device pointers) into *out (host).
  absl::Status EncodeFromPages(const PagedKv& cache, absl::Span<const int32_t> page_ids,
                               const PagedEncodeParams& params, std::vector<uint8_t>* out);

  // Several blocks (e.g. the blocks of one prompt a prefill node publishes),
  // block i from pages page_ids[i] with params[i], into (*out)[i], in one
  // upload, one launch where the blocks share a shape, and one
  // synchronization. On error nothing is returned (the status names the
  // first failing block). At most kMaxBlocksPerCall blocks per call.
  absl::Status EncodeManyFromPages(const PagedKv& cache,
                                   absl::Span<const absl::Span<const int32_t>> page_ids,
                                   absl::Span<const PagedEncodeParams> params,
                                   std::vector<std::vector<uint8_t>>* out);

  // Verifies `block` (host memory) and decodes it into pages `page_ids` of
  // `cache`; nothing is written unless the block verifies. When moving keys to
  // options.target_position makes one inf or NaN (as codec::Decode refuses),
  // INVALID_ARGUMENT after the pages were written: do not use them.
  absl::Status DecodeToPages(absl::Span<const uint8_t> block, const PagedKv& cache,
                             absl::Span<const int32_t> page_ids, const DecodeOptions& options = {});

  // Several blocks (host memory; e.g. the blocks of one fetched prefix), block
  // i into pages page_ids[i] with options[i] (empty: defaults for all), in one
  // upload, one launch where the blocks share a shape, and one
  // synchronization. Nothing is written unless every block verifies; no page
  // may appear in two blocks. A rotation to inf/NaN fails the call (status
  // names the block) after writing: the pages of every block are then
  // unusable. At most kMaxBlocksPerCall blocks per call.
  static constexpr size_t kMaxBlocksPerCall = 4096;
  absl::Status DecodeManyToPages(absl::Span<const absl::Span<const uint8_t>> blocks,
                                 const PagedKv& cache,
                                 absl::Span<const absl::Span<const int32_t>> page_ids,
                                 absl::Span<const DecodeOptions> options = {});

  // Device-resident halves, for benchmarks and the gpu tier. EncodeOnDevice
  // leaves the body in device_block() + 128 (header and table not written)
  // and returns the plan FinishBlock needs; it synchronizes to check errors.
  absl::StatusOr<BlockPlan> EncodeOnDevice(const PagedKv& cache, absl::Span<const int32_t> page_ids,
                                           const PagedEncodeParams& params);
  // EncodeOnDevice of several blocks: block i's body at
  // device_block() + offsets[i] + 128; returns the plans and offsets.
  struct DeviceBlocks {
    std::vector<BlockPlan> plans;
    std::vector<uint64_t> offsets;
  };
  absl::StatusOr<DeviceBlocks> EncodeManyOnDevice(const PagedKv& cache,
                                                  absl::Span<const absl::Span<const int32_t>> page_ids,
                                                  absl::Span<const PagedEncodeParams> params);
  // Decodes a block already verified by PlanDecode whose bytes are at
  // `device_block` (device memory). Synchronizes.
  absl::Status DecodeOnDevice(const BlockPlan& plan, const uint8_t* device_block,
                              const PagedKv& cache, absl::Span<const int32_t> page_ids);
  // DecodeOnDevice of several blocks (see DecodeManyToPages).
  absl::Status DecodeManyOnDevice(absl::Span<const BlockPlan> plans,
                                  absl::Span<const uint8_t* const> device_blocks,
                                  const PagedKv& cache,
                                  absl::Span<const absl::Span<const int32_t>> page_ids);

  uint8_t* device_block() const { return block_.ptr; }
  // GPU time of the kernels of the last successful EncodeOnDevice or
  // DecodeOnDevice (CUDA events around the launches; metadata upload and
  // host work excluded), in seconds. For benchmarks.
  double last_kernel_seconds() const { return last_kernel_seconds_; }
  void* stream() const { return stream_; }
  int device() const { return device_; }

 private:
  struct DeviceBuffer {
    uint8_t* ptr = nullptr;
    size_t size = 0;
  };
  GpuCodec(int device, const Options& options) : device_(device), options_(options) {}
  absl::Status Reserve(DeviceBuffer* b, size_t bytes, bool pinned_host);
  // Metadata of one call in the pinned staging buffer: the K/V pointer array,
  // each block's segment offsets, page ids and RoPE table, and `tail_bytes`
  // for the caller at tail_host (device address tail_device). FlushMeta
  // copies it to the device on the stream.
  struct StagedMeta {
    std::vector<BlockGeom> geoms;  // pointing at the device copies
    uint16_t* const* ptrs = nullptr;
    uint8_t* tail_host = nullptr;
    uint8_t* tail_device = nullptr;
    uint64_t bytes = 0;
  };
  absl::StatusOr<StagedMeta> StageMeta(absl::Span<const BlockPlan* const> plans, const PagedKv& cache,
                                       absl::Span<const absl::Span<const int32_t>> page_ids,
                                       uint64_t tail_bytes);
  absl::Status FlushMeta(const StagedMeta& meta);
  absl::Status Sync(const char* what);
  // `error`, after waiting for what the stream already holds (kernels of earlier
  // blocks of a failed batch must not write pages after the call returns).
  absl::Status FailAfterEnqueue(absl::Status error);
  // Records the kernel events around `launch` (which returns a cudaError_t).
  absl::Status Launch(const char* what, const std::function<int()>& launch);
  void RecordKernelTime();  // after the stream synchronized

  int device_;
  Options options_;
  void* stream_ = nullptr;  // cudaStream_t
  DeviceBuffer block_, scratch_, meta_, error_;
  DeviceBuffer staging_, meta_staging_;  // pinned host
  void* kernel_start_ = nullptr;          // cudaEvent_t
  void* kernel_end_ = nullptr;
  double last_kernel_seconds_ = 0;
};

}  // namespace kvhub::codec::cuda
