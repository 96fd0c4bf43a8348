# Optional CUDA: the GPU codecs (codec/cuda) and the gpu storage tier are built
# whenever nvcc is found (on PATH, $CUDACXX or /usr/local/cuda/bin/nvcc). The
# CPU build never needs nvcc or a GPU; -DKVHUB_CUDA=OFF skips the check.
# Sets KVHUB_HAVE_CUDA.
option(KVHUB_CUDA "Build the CUDA codecs and gpu tier when nvcc is found" ON)
set(KVHUB_HAVE_CUDA OFF)
if(KVHUB_CUDA)
  find_program(KVHUB_NVCC_ON_PATH nvcc)
  if(NOT KVHUB_NVCC_ON_PATH AND NOT DEFINED ENV{CUDACXX} AND NOT CMAKE_CUDA_COMPILER
     AND EXISTS /usr/local/cuda/bin/nvcc)
    set(ENV{CUDACXX} /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)  # A100, H100/H200
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 has no CUDA20 flags for nvcc 13; kernels need only C++17
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(KVHUB_HAVE_CUDA ON)
    message(STATUS "kvhub: CUDA ${CMAKE_CUDA_COMPILER_VERSION} found; GPU codecs for sm ${CMAKE_CUDA_ARCHITECTURES}")
  else()
    message(STATUS "kvhub: no nvcc; GPU codecs and the gpu tier are not built")
  endif()
endif()
