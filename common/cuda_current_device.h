#pragma once
// Makes a CUDA device current for a scope and gives the caller's own device back
// at its end (a library call must not leave the caller's thread on another GPU);
// a thread that had no CUDA context keeps the device made current.
// For code built with CUDA only (it includes the CUDA runtime API): the GPU codec
// and the gpu storage tier. Not thread-shared: one per call, on the calling thread.

#include <cuda_runtime_api.h>

namespace kvhub {

class CurrentCudaDevice {
 public:
  explicit CurrentCudaDevice(int device) : device_(device) {
    // A thread with no context of its own (one that never used CUDA: cudaGetDevice
    // says 0 there) keeps `device` current afterwards: switching it "back" to 0 would
    // create a context on GPU 0, hundreds of MiB on a GPU it never meant to use.
    if (!ThreadHasContext() || cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    error_ = cudaSetDevice(device);
  }
  ~CurrentCudaDevice() {
    if (previous_ >= 0 && previous_ != device_) (void)cudaSetDevice(previous_);
  }
  CurrentCudaDevice(const CurrentCudaDevice&) = delete;
  CurrentCudaDevice& operator=(const CurrentCudaDevice&) = delete;
  // cudaSetDevice's result: the device is current only if cudaSuccess.
  cudaError_t error() const { return error_; }

 private:
  // Whether the calling thread has a current CUDA context (the driver's
  // cuCtxGetCurrent, looked up through the runtime: no link to libcuda). True when
  // that cannot be asked (the device is then given back, as it always was).
  static bool ThreadHasContext() {
    using GetCurrent = int (*)(void**);  // CUresult cuCtxGetCurrent(CUcontext*)
    static const GetCurrent get_current = [] {
      void* fn = nullptr;
      cudaDriverEntryPointQueryResult found{};
      if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &fn, 12000, cudaEnableDefault, &found) !=
              cudaSuccess ||
          found != cudaDriverEntryPointSuccess) {
        return static_cast<GetCurrent>(nullptr);
      }
      return reinterpret_cast<GetCurrent>(fn);
    }();
    if (get_current == nullptr) return true;
    void* context = nullptr;
    return get_current(&context) == 0 && context != nullptr;
  }

  const int device_;
  int previous_ = -1;
  cudaError_t error_ = cudaSuccess;
};

}  // namespace kvhub
