// GpuTier over a CUDA memory pool (cudaMemPoolCreate + cudaMallocFromPoolAsync)
// with one pinned staging buffer (cudaHostAlloc) for host <-> device copies.
#include <cuda_runtime_api.h>

#include <cstring>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/cuda_current_device.h"
#include "storage/gpu_tier.h"

namespace kvhub::storage {
namespace {

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::InternalError(absl::StrCat("gpu tier: ", what, ": ", cudaGetErrorString(e)));
}

std::string MapKey(absl::string_view ns, const BlockKey& key) {
  return absl::StrCat(ns, "/", key.hi, ":", key.lo);
}

class CudaGpuTier final : public GpuTier {
 public:
  CudaGpuTier(const GpuTierConfig& c, std::string name) : config_(c), name_(std::move(name)) {}

  ~CudaGpuTier() override {
    const CurrentCudaDevice current(config_.device);  // best effort: nothing to report to
    for (auto& [k, b] : blocks_) cudaFreeAsync(b.ptr, stream_);
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    if (pool_ != nullptr) cudaMemPoolDestroy(pool_);
    if (staging_ != nullptr) cudaFreeHost(staging_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    const CurrentCudaDevice current(config_.device);  // the caller's device is current again after
    if (cudaError_t e = current.error(); e != cudaSuccess) return CudaError("set device", e);
    if (cudaError_t e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); e != cudaSuccess) {
      return CudaError("create stream", e);
    }
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = config_.device;
    if (cudaError_t e = cudaMemPoolCreate(&pool_, &props); e != cudaSuccess) return CudaError("create pool", e);
    // Keep freed memory in the pool up to the capacity instead of returning it.
    uint64_t keep = config_.capacity_bytes;
    if (cudaError_t e = cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep);
        e != cudaSuccess) {
      return CudaError("pool release threshold", e);
    }
    if (cudaError_t e = cudaHostAlloc(&staging_, config_.staging_bytes, cudaHostAllocDefault);
        e != cudaSuccess) {
      return CudaError("allocate pinned staging buffer", e);
    }
    return absl::OkStatus();
  }

  absl::Status Put(absl::string_view ns, const BlockKey& key, absl::Span<const uint8_t> bytes) override {
    if (bytes.empty()) return absl::InvalidArgumentError("gpu tier: empty block");
    absl::MutexLock l(&mu_);
    const std::string k = MapKey(ns, key);
    if (blocks_.contains(k)) return absl::AlreadyExistsError("gpu tier: block already stored");
    if (bytes.size() > config_.capacity_bytes - used_) {
      return absl::ResourceExhaustedError(absl::StrCat("gpu tier: ", bytes.size(), " bytes do not fit (",
                                                       used_, " of ", config_.capacity_bytes, " used)"));
    }
    const CurrentCudaDevice current(config_.device);
    if (cudaError_t e = current.error(); e != cudaSuccess) return CudaError("set device", e);
    void* p = nullptr;
    if (cudaError_t e = cudaMallocFromPoolAsync(&p, bytes.size(), pool_, stream_); e != cudaSuccess) {
      // Only an allocation that found no room is "full" (the tier then makes room);
      // anything else is a device error, counted toward device_error_limit.
      if (e != cudaErrorMemoryAllocation) return CudaError("pool allocation", e);
      (void)cudaGetLastError();  // not sticky: clear it for the next call
      return absl::ResourceExhaustedError(absl::StrCat("gpu tier: pool allocation of ", bytes.size(),
                                                       " bytes: ", cudaGetErrorString(e)));
    }
    uint8_t* dst = static_cast<uint8_t*>(p);
    for (uint64_t off = 0; off < bytes.size(); off += config_.staging_bytes) {
      const uint64_t n = std::min<uint64_t>(config_.staging_bytes, bytes.size() - off);
      std::memcpy(staging_, bytes.data() + off, n);
      cudaError_t e = cudaMemcpyAsync(dst + off, staging_, n, cudaMemcpyHostToDevice, stream_);
      if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);  // staging is reused next chunk
      if (e != cudaSuccess) {
        cudaFreeAsync(p, stream_);
        return CudaError("copy to device", e);
      }
    }
    blocks_[k] = Block{dst, bytes.size()};
    used_ += bytes.size();
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> Get(absl::string_view ns, const BlockKey& key, absl::Span<uint8_t> out) override {
    absl::MutexLock l(&mu_);
    auto it = blocks_.find(MapKey(ns, key));
    if (it == blocks_.end()) return absl::NotFoundError("gpu tier: block not stored");
    const Block& b = it->second;
    if (out.size() != b.size) {
      return absl::InvalidArgumentError(absl::StrCat("gpu tier: output is ", out.size(), " bytes, block ", b.size));
    }
    const CurrentCudaDevice current(config_.device);
    if (cudaError_t e = current.error(); e != cudaSuccess) return CudaError("set device", e);
    for (uint64_t off = 0; off < b.size; off += config_.staging_bytes) {
      const uint64_t n = std::min<uint64_t>(config_.staging_bytes, b.size - off);
      cudaError_t e = cudaMemcpyAsync(staging_, b.ptr + off, n, cudaMemcpyDeviceToHost, stream_);
      if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
      if (e != cudaSuccess) return CudaError("copy to host", e);
      std::memcpy(out.data() + off, staging_, n);
    }
    return b.size;
  }

  absl::StatusOr<uint64_t> Size(absl::string_view ns, const BlockKey& key) const override {
    absl::MutexLock l(&mu_);
    auto it = blocks_.find(MapKey(ns, key));
    if (it == blocks_.end()) return absl::NotFoundError("gpu tier: block not stored");
    return it->second.size;
  }

  absl::StatusOr<DeviceBytes> Find(absl::string_view ns, const BlockKey& key) const override {
    absl::MutexLock l(&mu_);
    auto it = blocks_.find(MapKey(ns, key));
    if (it == blocks_.end()) return absl::NotFoundError("gpu tier: block not stored");
    return DeviceBytes{it->second.ptr, it->second.size};
  }

  absl::Status Erase(absl::string_view ns, const BlockKey& key) override {
    absl::MutexLock l(&mu_);
    auto it = blocks_.find(MapKey(ns, key));
    if (it == blocks_.end()) return absl::NotFoundError("gpu tier: block not stored");
    const CurrentCudaDevice current(config_.device);
    if (cudaError_t e = current.error(); e != cudaSuccess) {
      return CudaError("set device", e);  // still stored; nothing changed
    }
    const cudaError_t e = cudaFreeAsync(it->second.ptr, stream_);
    // Forgotten either way (the key may be stored again); bytes a failed free may
    // still hold stay counted as used, so the tier never promises room it lacks.
    if (e == cudaSuccess) used_ -= it->second.size;
    blocks_.erase(it);
    if (e != cudaSuccess) return CudaError("free", e);
    return absl::OkStatus();
  }

  GpuTierStats Stats() const override {
    absl::MutexLock l(&mu_);
    return GpuTierStats{config_.capacity_bytes, used_, blocks_.size(), name_};
  }

 private:
  struct Block {
    uint8_t* ptr;
    uint64_t size;
  };
  const GpuTierConfig config_;
  const std::string name_;
  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  void* staging_ = nullptr;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Block> blocks_ ABSL_GUARDED_BY(mu_);
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuTier>> GpuTier::Create(const GpuTierConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  int n = 0;
  if (cudaError_t e = cudaGetDeviceCount(&n); e != cudaSuccess || n == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device: ", e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount returned 0"));
  }
  if (config.device >= n) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: device ", config.device, " requested, ", n, " present"));
  }
  cudaDeviceProp prop{};
  if (cudaError_t e = cudaGetDeviceProperties(&prop, config.device); e != cudaSuccess) {
    return CudaError("device properties", e);
  }
  int pools = 0;
  if (cudaError_t e = cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, config.device);
      e != cudaSuccess) {
    return CudaError("device attribute (memory pools)", e);
  }
  if (!pools) {
    return absl::FailedPreconditionError(
        absl::StrCat("gpu tier: device ", config.device, " (", prop.name, ") has no CUDA memory pools"));
  }
  if (config.capacity_bytes > prop.totalGlobalMem) {
    return absl::InvalidArgumentError(absl::StrCat("gpu tier: capacity ", config.capacity_bytes,
                                                   " bytes > device memory ", prop.totalGlobalMem));
  }
  auto tier = std::make_unique<CudaGpuTier>(config, prop.name);
  if (absl::Status s = tier->Init(); !s.ok()) return s;
  return tier;
}

}  // namespace kvhub::storage
