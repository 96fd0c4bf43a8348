#pragma once
// Makes a CUDA device current for a scope and gives the caller's own device back
// at its end (a library call must not leave the caller's thread on another GPU).
// For code built with CUDA only (it includes the CUDA runtime API): the GPU codec
// and the gpu storage tier. Not thread-shared: one per call, on the calling thread.

#include <cuda_runtime_api.h>

namespace kvhub {

class CurrentCudaDevice {
 public:
  explicit CurrentCudaDevice(int device) : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
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
  const int device_;
  int previous_ = -1;
  cudaError_t error_ = cudaSuccess;
};

}  // namespace kvhub
