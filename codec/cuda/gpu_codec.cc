#include "codec/cuda/gpu_codec.h"

#include <cuda_runtime_api.h>

#include <cstring>

#include "absl/container/flat_hash_set.h"

#include "absl/strings/str_cat.h"
#include "codec/cuda/kernels.h"
#include "common/cuda_current_device.h"

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
  const CurrentCudaDevice current(device);  // the caller's own device is current again after Create
  if (cudaError_t e = current.error(); e != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: cudaSetDevice(", device, "): ", cudaGetErrorString(e)));
  }
  // The kernels are built for sm_80 and sm_90 (warp reductions of sm_80): an older
  // GPU would take the codec and then fail every call with "no kernel image".
  int major = 0;
  if (cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
      e != cudaSuccess || major < 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device: device ", device, " has compute capability ", major,
        ".x; the codec kernels need 8.0 or newer", e != cudaSuccess ? absl::StrCat(" (", cudaGetErrorString(e), ")") : ""));
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
  const CurrentCudaDevice current(device_);  // best effort: nothing to report to
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
    (void)cudaGetLastError();  // an allocation failure is not sticky: do not let a later launch report it
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

absl::Status GpuCodec::FailAfterEnqueue(absl::Status error) {
  // Kernels already queued (the blocks before a failed launch) would go on writing
  // the caller's pages after the call returned: wait for them first.
  if (cudaError_t e = cudaStreamSynchronize(S(stream_)); e != cudaSuccess) {
    return absl::Status(error.code(), absl::StrCat(error.message(), "; then waiting for the work already queued: ",
                                                   cudaGetErrorString(e)));
  }
  return error;
}

void GpuCodec::RecordKernelTime() {
  float ms = 0;
  if (cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(kernel_start_),
                           static_cast<cudaEvent_t>(kernel_end_)) == cudaSuccess) {
    last_kernel_seconds_ = ms / 1e3;
  }
}

absl::Status GpuCodec::Launch(const char* what, const std::function<int()>& launch) {
  // The launchers report cudaGetLastError(): clear what an earlier call on this
  // thread left (a failed allocation) so it is not taken for this launch's.
  (void)cudaGetLastError();
  cudaEvent_t a = static_cast<cudaEvent_t>(kernel_start_), b = static_cast<cudaEvent_t>(kernel_end_);
  if (cudaError_t e = cudaEventRecord(a, S(stream_)); e != cudaSuccess) return CudaError(what, e);
  if (cudaError_t e = static_cast<cudaError_t>(launch()); e != cudaSuccess) {
    return FailAfterEnqueue(CudaError(what, e));
  }
  if (cudaError_t e = cudaEventRecord(b, S(stream_)); e != cudaSuccess) return FailAfterEnqueue(CudaError(what, e));
  return absl::OkStatus();
}

absl::StatusOr<GpuCodec::StagedMeta> GpuCodec::StageMeta(
    absl::Span<const BlockPlan* const> plans, const PagedKv& cache,
    absl::Span<const absl::Span<const int32_t>> page_ids, uint64_t tail_bytes) {
  const uint32_t L = plans[0]->header.shape.layers;
  for (const BlockPlan* plan : plans) {
    if (plan->header.shape.layers != L || cache.k.size() != L || cache.v.size() != L) {
      return absl::InvalidArgumentError(absl::StrCat("paged kv: cache has ", cache.k.size(), "/",
                                                     cache.v.size(), " K/V layers, block ",
                                                     plan->header.shape.layers));
    }
  }
  for (uint32_t l = 0; l < L; ++l) {
    if (cache.k[l] == nullptr || cache.v[l] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("paged kv: layer ", l, " pointer is null"));
    }
  }
  // Layout: K/V pointer array, then per block its segment offsets, page ids
  // and RoPE table, then the tail; every piece 256-byte aligned.
  const uint64_t off_ptr = 0;
  uint64_t pos = Align256(sizeof(void*) * 2 * L);
  std::vector<uint64_t> off_seg(plans.size()), off_ids(plans.size()), off_cs(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) {
    off_seg[i] = pos;
    off_ids[i] = Align256(off_seg[i] + 8 * plans[i]->seg_off.size());
    off_cs[i] = Align256(off_ids[i] + 4 * page_ids[i].size());
    pos = Align256(off_cs[i] + 4 * plans[i]->rope_cs.size());
  }
  const uint64_t off_tail = pos;
  const uint64_t total = Align256(off_tail + tail_bytes);
  if (auto s = Reserve(&meta_, total, false); !s.ok()) return s;
  if (auto s = Reserve(&meta_staging_, total, true); !s.ok()) return s;
  // The staging buffer may still be read by a previous upload.
  if (auto s = Sync("previous call"); !s.ok()) return s;
  uint8_t* h = meta_staging_.ptr;
  uint16_t** p = reinterpret_cast<uint16_t**>(h + off_ptr);
  for (uint32_t l = 0; l < L; ++l) {
    p[2 * l] = cache.k[l];
    p[2 * l + 1] = cache.v[l];
  }
  StagedMeta m;
  m.ptrs = reinterpret_cast<uint16_t* const*>(meta_.ptr + off_ptr);
  for (size_t i = 0; i < plans.size(); ++i) {
    const BlockPlan& plan = *plans[i];
    std::memcpy(h + off_seg[i], plan.seg_off.data(), 8 * plan.seg_off.size());
    std::memcpy(h + off_ids[i], page_ids[i].data(), 4 * page_ids[i].size());
    if (!plan.rope_cs.empty()) std::memcpy(h + off_cs[i], plan.rope_cs.data(), 4 * plan.rope_cs.size());
    m.geoms.push_back(plan.Geom(reinterpret_cast<const uint64_t*>(meta_.ptr + off_seg[i]),
                                reinterpret_cast<const int32_t*>(meta_.ptr + off_ids[i]),
                                cache.shape.page_tokens,
                                reinterpret_cast<const float*>(meta_.ptr + off_cs[i])));
  }
  m.tail_host = h + off_tail;
  m.tail_device = meta_.ptr + off_tail;
  m.bytes = total;
  return m;
}

absl::Status GpuCodec::FlushMeta(const StagedMeta& m) {
  if (cudaError_t e = cudaMemcpyAsync(meta_.ptr, meta_staging_.ptr, m.bytes, cudaMemcpyHostToDevice,
                                      S(stream_));
      e != cudaSuccess) {
    return CudaError("upload block metadata", e);
  }
  return absl::OkStatus();
}

absl::StatusOr<BlockPlan> GpuCodec::EncodeOnDevice(const PagedKv& cache,
                                                   absl::Span<const int32_t> page_ids,
                                                   const PagedEncodeParams& params) {
  const absl::Span<const int32_t> ids[] = {page_ids};
  auto many = EncodeManyOnDevice(cache, ids, absl::MakeConstSpan(&params, 1));
  if (!many.ok()) return many.status();
  return std::move(many->plans[0]);
}

absl::StatusOr<GpuCodec::DeviceBlocks> GpuCodec::EncodeManyOnDevice(
    const PagedKv& cache, absl::Span<const absl::Span<const int32_t>> page_ids,
    absl::Span<const PagedEncodeParams> params) {
  const CurrentCudaDevice current(device_);
  if (current.error() != cudaSuccess) return CudaError("cudaSetDevice", current.error());
  const size_t n = params.size();
  if (page_ids.size() != n || n == 0 || n > kMaxBlocksPerCall) {
    return absl::InvalidArgumentError(absl::StrCat("encode: ", n, " blocks and ", page_ids.size(),
                                                   " page id lists (1 .. ", kMaxBlocksPerCall,
                                                   " blocks per call)"));
  }
  auto prefixed = [n](size_t i, const absl::Status& s) {
    return n == 1 ? s : absl::Status(s.code(), absl::StrCat("block ", i, ": ", s.message()));
  };
  DeviceBlocks out;
  std::vector<uint64_t> scratch_off;
  uint64_t total = 0, scratch_total = 0;
  for (size_t i = 0; i < n; ++i) {
    auto plan = PlanEncode(cache.shape, params[i]);
    if (!plan.ok()) return prefixed(i, plan.status());
    if (auto s = ValidatePages(cache.shape, page_ids[i], params[i].tokens, cache.shape.kv_heads,
                               cache.shape.head_dim, false);
        !s.ok()) {
      return prefixed(i, s);
    }
    out.offsets.push_back(total);
    total = Align256(total + plan->total_bytes());
    scratch_off.push_back(scratch_total);
    scratch_total += 2 * std::max<uint64_t>(1, plan->scratch_floats());  // inv, zero
    out.plans.push_back(*std::move(plan));
  }
  if (auto s = Reserve(&block_, total, false); !s.ok()) return s;
  if (auto s = Reserve(&scratch_, 4 * scratch_total, false); !s.ok()) return s;
  if (auto s = Reserve(&error_, 4 * n, false); !s.ok()) return s;
  std::vector<const BlockPlan*> pp;
  for (const BlockPlan& p : out.plans) pp.push_back(&p);
  auto meta = StageMeta(pp, cache, page_ids, n > 1 ? sizeof(EncodeCtx) * n : 0);
  if (!meta.ok()) return meta.status();
  uint32_t* err = reinterpret_cast<uint32_t*>(error_.ptr);
  float* scratch = reinterpret_cast<float*>(scratch_.ptr);
  std::vector<uint16_t*> all(cache.k.begin(), cache.k.end());
  all.insert(all.end(), cache.v.begin(), cache.v.end());
  const uint8_t aligned = AllAligned16(all);
  std::vector<EncodeCtx> ctxs;
  for (size_t i = 0; i < n; ++i) {
    float* inv = scratch + scratch_off[i];
    ctxs.push_back(EncodeCtx{meta->geoms[i], reinterpret_cast<const uint16_t* const*>(meta->ptrs),
                             block_.ptr + out.offsets[i] + BlockHeader::kSize, inv,
                             inv + std::max<uint64_t>(1, out.plans[i].scratch_floats()), err + i,
                             aligned});
  }
  if (n > 1) std::memcpy(meta->tail_host, ctxs.data(), sizeof(EncodeCtx) * n);
  if (auto s = FlushMeta(*meta); !s.ok()) return s;
  if (cudaError_t e = cudaMemsetAsync(err, 0, 4 * n, S(stream_)); e != cudaSuccess) {
    return CudaError("memset", e);
  }
  if (auto s = Launch("encode launch", [&] {
        return static_cast<int>(LaunchEncodeMany(reinterpret_cast<const EncodeCtx*>(meta->tail_device),
                                                 ctxs, KernelOptions{options_.kivi_tiles}, S(stream_)));
      });
      !s.ok()) {
    return s;
  }
  std::vector<uint32_t> bits(n);
  if (cudaError_t e = cudaMemcpyAsync(bits.data(), err, 4 * n, cudaMemcpyDeviceToHost, S(stream_));
      e != cudaSuccess) {
    return FailAfterEnqueue(CudaError("read error flags", e));
  }
  if (auto s = Sync("encode"); !s.ok()) return s;
  for (size_t i = 0; i < n; ++i) {
    if (auto s = KernelErrorStatus(bits[i], params[i].codec.codec); !s.ok()) return prefixed(i, s);
  }
  RecordKernelTime();
  return out;
}

absl::Status GpuCodec::EncodeFromPages(const PagedKv& cache, absl::Span<const int32_t> page_ids,
                                       const PagedEncodeParams& params, std::vector<uint8_t>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("encode: out is null");
  const absl::Span<const int32_t> ids[] = {page_ids};
  std::vector<std::vector<uint8_t>> blocks;
  if (auto s = EncodeManyFromPages(cache, ids, absl::MakeConstSpan(&params, 1), &blocks); !s.ok()) {
    return s;
  }
  *out = std::move(blocks[0]);
  return absl::OkStatus();
}

absl::Status GpuCodec::EncodeManyFromPages(const PagedKv& cache,
                                           absl::Span<const absl::Span<const int32_t>> page_ids,
                                           absl::Span<const PagedEncodeParams> params,
                                           std::vector<std::vector<uint8_t>>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("encode: out is null");
  // Here too: the staging and copies below run after EncodeManyOnDevice returned.
  const CurrentCudaDevice current(device_);
  if (current.error() != cudaSuccess) return CudaError("cudaSetDevice", current.error());
  auto dev = EncodeManyOnDevice(cache, page_ids, params);
  if (!dev.ok()) return dev.status();
  const size_t n = dev->plans.size();
  const uint64_t total = dev->offsets[n - 1] + dev->plans[n - 1].total_bytes();
  if (auto s = Reserve(&staging_, total, true); !s.ok()) return s;
  if (cudaError_t e = cudaMemcpyAsync(staging_.ptr, block_.ptr, total, cudaMemcpyDeviceToHost,
                                      S(stream_));
      e != cudaSuccess) {
    return CudaError("copy blocks to host", e);
  }
  if (auto s = Sync("copy blocks to host"); !s.ok()) return s;
  std::vector<std::vector<uint8_t>> blocks(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t size = dev->plans[i].total_bytes();
    blocks[i].assign(staging_.ptr + dev->offsets[i], staging_.ptr + dev->offsets[i] + size);
    if (auto s = FinishBlock(dev->plans[i], absl::MakeSpan(blocks[i])); !s.ok()) return s;
  }
  *out = std::move(blocks);
  return absl::OkStatus();
}

absl::Status GpuCodec::DecodeOnDevice(const BlockPlan& plan, const uint8_t* device_block,
                                      const PagedKv& cache, absl::Span<const int32_t> page_ids) {
  const absl::Span<const int32_t> ids[] = {page_ids};
  return DecodeManyOnDevice(absl::MakeConstSpan(&plan, 1), absl::MakeConstSpan(&device_block, 1),
                            cache, ids);
}

absl::Status GpuCodec::DecodeManyOnDevice(absl::Span<const BlockPlan> plans,
                                          absl::Span<const uint8_t* const> device_blocks,
                                          const PagedKv& cache,
                                          absl::Span<const absl::Span<const int32_t>> page_ids) {
  const CurrentCudaDevice current(device_);
  if (current.error() != cudaSuccess) return CudaError("cudaSetDevice", current.error());
  const size_t n = plans.size();
  if (n == 0) return absl::OkStatus();
  if (device_blocks.size() != n || page_ids.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("decode: ", n, " plans, ", device_blocks.size(),
                                                   " blocks and ", page_ids.size(), " page id lists"));
  }
  if (n > kMaxBlocksPerCall) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode: ", n, " blocks in one call, at most ", kMaxBlocksPerCall));
  }
  absl::flat_hash_set<int32_t> seen;
  std::vector<const BlockPlan*> pp;
  for (size_t i = 0; i < n; ++i) {
    const KvShape& sh = plans[i].header.shape;
    if (auto s = ValidatePages(cache.shape, page_ids[i], sh.tokens, sh.kv_heads, sh.head_dim, true);
        !s.ok()) {
      return n == 1 ? s : absl::InvalidArgumentError(absl::StrCat("block ", i, ": ", s.message()));
    }
    for (int32_t id : page_ids[i]) {
      if (!seen.insert(id).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "paged kv: page id ", id, " is in two blocks; decode would write it twice"));
      }
    }
    if (device_blocks[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("decode: block ", i, " is null"));
    }
    // The kernels read scales and 16-bit codes through typed pointers: a misaligned
    // block would fault the device (and leave CUDA unusable for the process).
    if (reinterpret_cast<uintptr_t>(device_blocks[i]) % 16 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("decode: block ", i, " is not 16-byte aligned in device memory"));
    }
    pp.push_back(&plans[i]);
  }
  if (auto s = Reserve(&error_, 4 * n, false); !s.ok()) return s;
  auto meta = StageMeta(pp, cache, page_ids, n > 1 ? sizeof(DecodeCtx) * n : 0);
  if (!meta.ok()) return meta.status();
  std::vector<uint16_t*> all(cache.k.begin(), cache.k.end());
  all.insert(all.end(), cache.v.begin(), cache.v.end());
  const uint8_t aligned = AllAligned16(all);
  uint32_t* err = reinterpret_cast<uint32_t*>(error_.ptr);
  std::vector<DecodeCtx> ctxs;
  for (size_t i = 0; i < n; ++i) {
    ctxs.push_back(
        DecodeCtx{meta->geoms[i], device_blocks[i] + BlockHeader::kSize, meta->ptrs, aligned, err + i});
  }
  if (n > 1) std::memcpy(meta->tail_host, ctxs.data(), sizeof(DecodeCtx) * n);
  if (auto s = FlushMeta(*meta); !s.ok()) return s;
  if (cudaError_t e = cudaMemsetAsync(err, 0, 4 * n, S(stream_)); e != cudaSuccess) {
    return CudaError("memset", e);
  }
  if (auto s = Launch("decode launch", [&] {
        return static_cast<int>(LaunchDecodeMany(reinterpret_cast<const DecodeCtx*>(meta->tail_device),
                                                 ctxs, KernelOptions{options_.kivi_tiles}, S(stream_)));
      });
      !s.ok()) {
    return s;
  }
  std::vector<uint32_t> bits(n);
  if (cudaError_t e = cudaMemcpyAsync(bits.data(), err, 4 * n, cudaMemcpyDeviceToHost, S(stream_));
      e != cudaSuccess) {
    return FailAfterEnqueue(CudaError("read error flags", e));
  }
  if (auto s = Sync("decode"); !s.ok()) return s;
  RecordKernelTime();
  for (size_t i = 0; i < n; ++i) {
    if (auto s = DecodeKernelErrorStatus(bits[i]); !s.ok()) {
      return n == 1 ? s : absl::InvalidArgumentError(absl::StrCat("block ", i, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status GpuCodec::DecodeToPages(absl::Span<const uint8_t> block, const PagedKv& cache,
                                     absl::Span<const int32_t> page_ids, const DecodeOptions& opt) {
  const absl::Span<const int32_t> ids[] = {page_ids};
  return DecodeManyToPages(absl::MakeConstSpan(&block, 1), cache, ids, absl::MakeConstSpan(&opt, 1));
}

absl::Status GpuCodec::DecodeManyToPages(absl::Span<const absl::Span<const uint8_t>> blocks,
                                         const PagedKv& cache,
                                         absl::Span<const absl::Span<const int32_t>> page_ids,
                                         absl::Span<const DecodeOptions> options) {
  const CurrentCudaDevice current(device_);
  if (current.error() != cudaSuccess) return CudaError("cudaSetDevice", current.error());
  const size_t n = blocks.size();
  if (page_ids.size() != n || (options.size() != n && !options.empty())) {
    return absl::InvalidArgumentError(absl::StrCat("decode: ", n, " blocks, ", page_ids.size(),
                                                   " page id lists and ", options.size(),
                                                   " options"));
  }
  if (n > kMaxBlocksPerCall) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode: ", n, " blocks in one call, at most ", kMaxBlocksPerCall));
  }
  if (n == 0) return absl::OkStatus();
  std::vector<uint64_t> offsets;
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    offsets.push_back(total);
    total = Align256(total + blocks[i].size());
  }
  if (auto s = Reserve(&block_, total, false); !s.ok()) return s;
  if (auto s = Reserve(&staging_, total, true); !s.ok()) return s;
  if (auto s = Sync("previous call"); !s.ok()) return s;
  // Every block verifies (header, checksum, segment table) before any byte moves
  // to the device or any page is written; it is verified in the staging copy, the
  // bytes that go to the device (the caller's buffer could still change: a
  // receive landing, another thread).
  std::vector<BlockPlan> plans;
  std::vector<const uint8_t*> device_blocks;
  for (size_t i = 0; i < n; ++i) {
    // An empty block (data() may be null) is refused by PlanDecode: nothing to copy.
    if (!blocks[i].empty()) std::memcpy(staging_.ptr + offsets[i], blocks[i].data(), blocks[i].size());
    auto plan = PlanDecode(absl::MakeConstSpan(staging_.ptr + offsets[i], blocks[i].size()),
                           options.empty() ? DecodeOptions() : options[i]);
    if (!plan.ok()) {
      return n == 1 ? plan.status()
                    : absl::Status(plan.status().code(),
                                   absl::StrCat("block ", i, ": ", plan.status().message()));
    }
    plans.push_back(*std::move(plan));
    device_blocks.push_back(block_.ptr + offsets[i]);
  }
  if (cudaError_t e = cudaMemcpyAsync(block_.ptr, staging_.ptr, total, cudaMemcpyHostToDevice,
                                      S(stream_));
      e != cudaSuccess) {
    return CudaError("copy blocks to device", e);
  }
  return DecodeManyOnDevice(plans, device_blocks, cache, page_ids);
}

}  // namespace kvhub::codec::cuda
