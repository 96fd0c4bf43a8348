#pragma once
// Host emulation of the CUDA codec kernels: runs the unit functions of
// block_kernels.h (the code the kernels run, compiled for the host) in plain
// loops over host memory, with the same passes as kernels.cu. Tests compare
// its bytes with the CPU codecs, which verifies the per-element math, the
// paged indexing and the layout of the GPU path on machines without a GPU.
// Not a production path (single-threaded). Thread-safe (no shared state).

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "codec/codec.h"
#include "codec/cuda/block_plan.h"

namespace kvhub::codec::cuda {

// As GpuCodec::EncodeFromPages, with `cache` in host memory.
absl::Status EmulateEncodeFromPages(const PagedKv& cache, absl::Span<const int32_t> page_ids,
                                    const PagedEncodeParams& params, std::vector<uint8_t>* out);

// As GpuCodec::DecodeToPages, with `cache` in host memory.
absl::Status EmulateDecodeToPages(absl::Span<const uint8_t> block, const PagedKv& cache,
                                  absl::Span<const int32_t> page_ids,
                                  const DecodeOptions& options = {});

}  // namespace kvhub::codec::cuda
