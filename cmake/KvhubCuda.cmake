# Optional CUDA: the GPU codecs (codec/cuda) and the gpu storage tier are built
# whenever nvcc is found (on PATH, $CUDACXX or /usr/local/cuda/bin/nvcc). The
# CPU build never needs nvcc or a GPU; -DKVHUB_CUDA=OFF skips the check. Under
# KVHUB_REQUIRE_ALL (what `make` configures) an nvcc that is there but cannot compile
# CUDA stops the configuration.
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
  elseif(KVHUB_REQUIRE_ALL AND (KVHUB_NVCC_ON_PATH OR DEFINED ENV{CUDACXX}))
    # An nvcc that cannot build a CUDA program is a broken set-up: under `make` the CUDA
    # code would silently drop out of the build and its tests out of the run.
    unset(CMAKE_CUDA_COMPILER CACHE)  # check_language caches the failure: the next configure asks again
    message(FATAL_ERROR "kvhub: nvcc found ($ENV{CUDACXX}${KVHUB_NVCC_ON_PATH}) but CMake cannot compile "
                        "CUDA with it (see CMakeFiles/CMakeError.log); fix it or configure with -DKVHUB_CUDA=OFF")
  else()
    message(WARNING "kvhub: no nvcc (PATH, $CUDACXX, /usr/local/cuda/bin); the GPU codecs and the gpu tier "
                    "are not built and their tests report no CUDA")
  endif()
endif()
