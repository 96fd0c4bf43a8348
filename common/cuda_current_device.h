#pragma once
// Makes a CUDA device current for a scope and gives the calling thread back exactly
// the context it had at the end (a library call must not leave the caller's thread
// on another GPU, nor give a thread that had no context one on GPU 0).
// For code built with CUDA only (it includes the CUDA runtime API): the GPU codec
// and the gpu storage tier. Not thread-shared: one per call, on the calling thread.

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

namespace kvhub {

class CurrentCudaDevice {
 public:
  explicit CurrentCudaDevice(int device) : device_(device) {
    const Driver& d = DriverCalls();
    // The caller's own context (null when it has none), given back as it was;
    // without the driver's context calls, its device (the behaviour before them).
    if (d.get != nullptr && d.set != nullptr && d.get(&saved_) == CUDA_SUCCESS) {
      restore_context_ = true;
    } else if (cudaGetDevice(&previous_) != cudaSuccess) {
      previous_ = -1;
    }
    error_ = cudaSetDevice(device);
  }
  ~CurrentCudaDevice() {
    if (restore_context_) {
      (void)DriverCalls().set(saved_);
    } else if (previous_ >= 0 && previous_ != device_) {
      (void)cudaSetDevice(previous_);
    }
  }
  CurrentCudaDevice(const CurrentCudaDevice&) = delete;
  CurrentCudaDevice& operator=(const CurrentCudaDevice&) = delete;
  // cudaSetDevice's result: the device is current only if cudaSuccess.
  cudaError_t error() const { return error_; }

 private:
  // cuCtxGetCurrent and cuCtxSetCurrent, looked up through the runtime (no link to
  // libcuda); null where the driver is missing or does not have them.
  struct Driver {
    PFN_cuCtxGetCurrent_v4000 get = nullptr;
    PFN_cuCtxSetCurrent_v4000 set = nullptr;
  };
  static const Driver& DriverCalls() {
    static const Driver driver = [] {
      Driver d;
      void* fn = nullptr;
      cudaDriverEntryPointQueryResult found{};
      if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &fn, 4000, cudaEnableDefault, &found) ==
              cudaSuccess &&
          found == cudaDriverEntryPointSuccess) {
        d.get = reinterpret_cast<PFN_cuCtxGetCurrent_v4000>(fn);
      }
      fn = nullptr;
      if (cudaGetDriverEntryPointByVersion("cuCtxSetCurrent", &fn, 4000, cudaEnableDefault, &found) ==
              cudaSuccess &&
          found == cudaDriverEntryPointSuccess) {
        d.set = reinterpret_cast<PFN_cuCtxSetCurrent_v4000>(fn);
      }
      return d;
    }();
    return driver;
  }

  const int device_;
  bool restore_context_ = false;
  CUcontext saved_ = nullptr;
  int previous_ = -1;
  cudaError_t error_ = cudaSuccess;
};

}  // namespace kvhub
