# Every third-party dependency is found here, once. docs/dependencies.md says why each is used.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(absl REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(OpenSSL REQUIRED)  # kvhubd checks TLS certificates and keys before serving them

# Debian's gRPC/protobuf are consumed via pkg-config (their CMake exports are incomplete on Debian 12).
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
pkg_check_modules(PROTOBUF REQUIRED IMPORTED_TARGET protobuf)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(HWY REQUIRED IMPORTED_TARGET libhwy)
pkg_check_modules(UCX IMPORTED_TARGET ucx)
# `make` configures with this on: scripts/install-deps.sh installed everything, so a
# missing optional library is a broken set-up, and the tests that need it must not
# silently drop out of the run (a plain cmake build keeps them optional).
option(KVHUB_REQUIRE_ALL "fail configuration when UCX or hiredis is missing" OFF)
if(KVHUB_REQUIRE_ALL)
  if(NOT UCX_FOUND)
    message(FATAL_ERROR "UCX (libucx-dev) not found; run scripts/install-deps.sh")
  endif()
  pkg_check_modules(HIREDIS_CHECK QUIET hiredis)
  if(NOT HIREDIS_CHECK_FOUND)
    message(FATAL_ERROR "hiredis (libhiredis-dev) not found; run scripts/install-deps.sh")
  endif()
endif()

find_program(PROTOC protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
find_path(HTTPLIB_INCLUDE_DIR httplib.h REQUIRED)

set(KVHUB_PYTHON /usr/bin/python3 CACHE FILEPATH "Debian python3 (has python3-xxhash, python3-numpy)")
find_package(nlohmann_json REQUIRED)
