#include "codec/cuda/gpu_codec.h"

#include <cuda_runtime_api.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/cuda/kernels.h"

namespace kvhub::codec::cuda {
namespace {

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::InternalError(absl::StrCat("cuda: ", what, ": ", cudaGetErrorString(e)));
}

cudaStream_t S(void* s) { return static_cast<cudaStream_t>(s); }

uint64_t Align256(uint64_t v) { return (v + 255) & ~uint64_t{255}; }

}  // namespace

absl::StatusOr<int> CudaDeviceCount() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: cudaGetDeviceCount: ", cudaGetErrorString(e)));
  }
  if (n == 0) return absl::FailedPreconditionError("no CUDA device: cudaGetDeviceCount returned 0");
  return n;
}

absl::StatusOr<std::unique_ptr<GpuCodec>> GpuCodec::Create(int device, const Options& options) {
  auto n = CudaDeviceCount();
  if (!n.ok()) return n.status();
  if (device < 0 || device >= *n) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: device ", device, " requested, ", *n, " present"));
  }
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: cudaSetDevice(", device, "): ", cudaGetErrorString(e)));
  }
  std::unique_ptr<GpuCodec> c(new GpuCodec(device, options));
  cudaStream_t s;
  if (cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); e != cudaSuccess) {
    return CudaError("cudaStreamCreate", e);
  }
  c->stream_ = s;
  for (void** ev : {&c->kernel_start_, &c->kernel_end_}) {
    cudaEvent_t e;
    if (cudaError_t err = cudaEventCreate(&e); err != cudaSuccess) return CudaError("cudaEventCreate", err);
    *ev = e;
  }
  if (auto st = c->Reserve(&c->error_, 256, false); !st.ok()) return st;
  return c;
}

GpuCodec::~GpuCodec() {
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(S(stream_));
  for (DeviceBuffer* b : {&block_, &scratch_, &meta_, &error_}) cudaFree(b->ptr);
  for (DeviceBuffer* b : {&staging_, &meta_staging_}) cudaFreeHost(b->ptr);
  for (void* e : {kernel_start_, kernel_end_}) {
    if (e != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(e));
  }
  if (stream_ != nullptr) cudaStreamDestroy(S(stream_));
}

absl::Status GpuCodec::Reserve(DeviceBuffer* b, size_t bytes, bool pinned_host) {
  if (b->size >= bytes) return absl::OkStatus();
  if (stream_ != nullptr) cudaStreamSynchronize(S(stream_));
  if (pinned_host) {
    cudaFreeHost(b->ptr);
  } else {
    cudaFree(b->ptr);
  }
  b->ptr = nullptr;
  b->size = 0;
  size_t want = bytes + bytes / 4;  // amortize growth
  void* p = nullptr;
  cudaError_t e = pinned_host ? cudaHostAlloc(&p, want, cudaHostAllocDefault) : cudaMalloc(&p, want);
  if (e != cudaSuccess) {
    return absl::ResourceExhaustedError(absl::StrCat("cuda: cannot allocate ", want, " bytes of ",
                                                     pinned_host ? "pinned host" : "device",
                                                     " memory: ", cudaGetErrorString(e)));
  }
  b->ptr = static_cast<uint8_t*>(p);
  b->size = want;
  return absl::OkStatus();
}

absl::Status GpuCodec::Sync(const char* what) {
  if (cudaError_t e = cudaStreamSynchronize(S(stream_)); e != cudaSuccess) return CudaError(what, e);
  return absl::OkStatus();
}

void GpuCodec::RecordKernelTime() {
  float ms = 0;
  if (cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(kernel_start_),
                           static_cast<cudaEvent_t>(kernel_end_)) == cudaSuccess) {
    last_kernel_seconds_ = ms / 1e3;
  }
}

absl::Status GpuCodec::Launch(const char* what, const std::function<int()>& launch) {
  cudaEvent_t a = static_cast<cudaEvent_t>(kernel_start_), b = static_cast<cudaEvent_t>(kernel_end_);
  if (cudaError_t e = cudaEventRecord(a, S(stream_)); e != cudaSuccess) return CudaError(what, e);
  if (cudaError_t e = static_cast<cudaError_t>(launch()); e != cudaSuccess) return CudaError(what, e);
  if (cudaError_t e = cudaEventRecord(b, S(stream_)); e != cudaSuccess) return CudaError(what, e);
  return absl::OkStatus();
}

absl::StatusOr<BlockGeom> GpuCodec::UploadMeta(const BlockPlan& plan, const PagedKv& cache,
                                               absl::Span<const int32_t> page_ids,
                                               uint16_t* const** ptrs) {
  const uint32_t L = plan.header.shape.layers;
  if (cache.k.size() != L || cache.v.size() != L) {
    return absl::InvalidArgumentError(absl::StrCat("paged kv: cache has ", cache.k.size(), "/",
                                                   cache.v.size(), " K/V layers, block ", L));
  }
  for (uint32_t l = 0; l < L; ++l) {
    if (cache.k[l] == nullptr || cache.v[l] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("paged kv: layer ", l, " pointer is null"));
    }
  }
  const uint64_t off_seg = 0;
  const uint64_t off_ptr = Align256(off_seg + 8 * plan.seg_off.size());
  const uint64_t off_ids = Align256(off_ptr + sizeof(void*) * 2 * L);
  const uint64_t off_cs = Align256(off_ids + 4 * page_ids.size());
  const uint64_t total = Align256(off_cs + 4 * plan.rope_cs.size());
  if (auto s = Reserve(&meta_, total, false); !s.ok()) return s;
  if (auto s = Reserve(&meta_staging_, total, true); !s.ok()) return s;
  // The staging buffer may still be read by a previous upload.
  if (auto s = Sync("previous call"); !s.ok()) return s;
  uint8_t* h = meta_staging_.ptr;
  std::memcpy(h + off_seg, plan.seg_off.data(), 8 * plan.seg_off.size());
  uint16_t** p = reinterpret_cast<uint16_t**>(h + off_ptr);
  for (uint32_t l = 0; l < L; ++l) {
    p[2 * l] = cache.k[l];
    p[2 * l + 1] = cache.v[l];
  }
  std::memcpy(h + off_ids, page_ids.data(), 4 * page_ids.size());
  if (!plan.rope_cs.empty()) std::memcpy(h + off_cs, plan.rope_cs.data(), 4 * plan.rope_cs.size());
  if (cudaError_t e = cudaMemcpyAsync(meta_.ptr, h, total, cudaMemcpyHostToDevice, S(stream_));
      e != cudaSuccess) {
    return CudaError("upload block metadata", e);
  }
  *ptrs = reinterpret_cast<uint16_t* const*>(meta_.ptr + off_ptr);
  return plan.Geom(reinterpret_cast<const uint64_t*>(meta_.ptr + off_seg),
                   reinterpret_cast<const int32_t*>(meta_.ptr + off_ids), cache.shape.page_tokens,
                   reinterpret_cast<const float*>(meta_.ptr + off_cs));
}

absl::StatusOr<BlockPlan> GpuCodec::EncodeOnDevice(const PagedKv& cache,
                                                   absl::Span<const int32_t> page_ids,
                                                   const PagedEncodeParams& params) {
  cudaSetDevice(device_);
  auto plan = PlanEncode(cache.shape, params);
  if (!plan.ok()) return plan.status();
  if (auto s = ValidatePages(cache.shape, page_ids, params.tokens, cache.shape.kv_heads,
                             cache.shape.head_dim, false);
      !s.ok()) {
    return s;
  }
  if (auto s = Reserve(&block_, plan->total_bytes(), false); !s.ok()) return s;
  if (auto s = Reserve(&scratch_, 8 * std::max<uint64_t>(1, plan->scratch_floats()), false); !s.ok()) {
    return s;
  }
  uint16_t* const* ptrs = nullptr;
  auto geom = UploadMeta(*plan, cache, page_ids, &ptrs);
  if (!geom.ok()) return geom.status();
  uint32_t* err = reinterpret_cast<uint32_t*>(error_.ptr);
  if (cudaError_t e = cudaMemsetAsync(err, 0, 4, S(stream_)); e != cudaSuccess) {
    return CudaError("memset", e);
  }
  float* scratch = reinterpret_cast<float*>(scratch_.ptr);
  std::vector<uint16_t*> all(cache.k.begin(), cache.k.end());
  all.insert(all.end(), cache.v.begin(), cache.v.end());
  EncodeCtx c{*geom, reinterpret_cast<const uint16_t* const*>(ptrs), block_.ptr + BlockHeader::kSize,
              scratch, scratch + plan->scratch_floats(), err, AllAligned16(all)};
  if (auto s = Launch("encode launch",
                      [&] { return static_cast<int>(LaunchEncode(c, KernelOptions{options_.kivi_tiles}, S(stream_))); });
      !s.ok()) {
    return s;
  }
  uint32_t bits = 0;
  if (cudaError_t e = cudaMemcpyAsync(&bits, err, 4, cudaMemcpyDeviceToHost, S(stream_));
      e != cudaSuccess) {
    return CudaError("read error flags", e);
  }
  if (auto s = Sync("encode"); !s.ok()) return s;
  if (auto s = KernelErrorStatus(bits, params.codec.codec); !s.ok()) return s;
  RecordKernelTime();
  return plan;
}

absl::Status GpuCodec::EncodeFromPages(const PagedKv& cache, absl::Span<const int32_t> page_ids,
                                       const PagedEncodeParams& params, std::vector<uint8_t>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("encode: out is null");
  auto plan = EncodeOnDevice(cache, page_ids, params);
  if (!plan.ok()) return plan.status();
  const uint64_t total = plan->total_bytes();
  if (auto s = Reserve(&staging_, total, true); !s.ok()) return s;
  if (cudaError_t e = cudaMemcpyAsync(staging_.ptr, block_.ptr, total, cudaMemcpyDeviceToHost,
                                      S(stream_));
      e != cudaSuccess) {
    return CudaError("copy block to host", e);
  }
  if (auto s = Sync("copy block to host"); !s.ok()) return s;
  out->resize(total);
  std::memcpy(out->data(), staging_.ptr, total);
  return FinishBlock(*plan, absl::MakeSpan(*out));
}

absl::Status GpuCodec::DecodeOnDevice(const BlockPlan& plan, const uint8_t* device_block,
                                      const PagedKv& cache, absl::Span<const int32_t> page_ids) {
  cudaSetDevice(device_);
  const KvShape& sh = plan.header.shape;
  if (auto s = ValidatePages(cache.shape, page_ids, sh.tokens, sh.kv_heads, sh.head_dim, true);
      !s.ok()) {
    return s;
  }
  uint16_t* const* ptrs = nullptr;
  auto geom = UploadMeta(plan, cache, page_ids, &ptrs);
  if (!geom.ok()) return geom.status();
  std::vector<uint16_t*> all(cache.k.begin(), cache.k.end());
  all.insert(all.end(), cache.v.begin(), cache.v.end());
  DecodeCtx c{*geom, device_block + BlockHeader::kSize, ptrs, AllAligned16(all)};
  if (auto s = Launch("decode launch",
                      [&] { return static_cast<int>(LaunchDecode(c, KernelOptions{options_.kivi_tiles}, S(stream_))); });
      !s.ok()) {
    return s;
  }
  if (auto s = Sync("decode"); !s.ok()) return s;
  RecordKernelTime();
  return absl::OkStatus();
}

absl::Status GpuCodec::DecodeToPages(absl::Span<const uint8_t> block, const PagedKv& cache,
                                     absl::Span<const int32_t> page_ids, const DecodeOptions& opt) {
  cudaSetDevice(device_);
  auto plan = PlanDecode(block, opt);
  if (!plan.ok()) return plan.status();
  const KvShape& sh = plan->header.shape;
  if (auto s = ValidatePages(cache.shape, page_ids, sh.tokens, sh.kv_heads, sh.head_dim, true);
      !s.ok()) {
    return s;
  }
  if (auto s = Reserve(&block_, block.size(), false); !s.ok()) return s;
  if (auto s = Reserve(&staging_, block.size(), true); !s.ok()) return s;
  if (auto s = Sync("previous call"); !s.ok()) return s;
  std::memcpy(staging_.ptr, block.data(), block.size());
  if (cudaError_t e = cudaMemcpyAsync(block_.ptr, staging_.ptr, block.size(),
                                      cudaMemcpyHostToDevice, S(stream_));
      e != cudaSuccess) {
    return CudaError("copy block to device", e);
  }
  return DecodeOnDevice(*plan, block_.ptr, cache, page_ids);
}

}  // namespace kvhub::codec::cuda
