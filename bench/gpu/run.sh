#!/usr/bin/env bash
# GPU codec verification and benchmark (docs/gpu.md).
#
#   bench/gpu/run.sh [all]        build (cmake + nvcc) into build-gpu-bench/, then `run` it
#   bench/gpu/run.sh bundle [DIR] build, then pack the GPU test/bench binaries and the
#                                 shared libraries they need into DIR (default
#                                 build-gpu-bundle/) for a GPU machine without the
#                                 Debian -dev packages (gtest is linked statically)
#   bench/gpu/run.sh run [DIR]    on the GPU machine: run the GPU tests and the benchmark
#                                 from DIR (a bundle, or a build dir with tests/ and bin/)
#
# Carrying a bundle to the GPU machine: build-gpu-bundle/ is git-ignored (/build*/), so
# pass it explicitly, e.g. with the device tool: carry=["build-gpu-bundle"],
# command="bench/gpu/run.sh run build-gpu-bundle". The bundle holds the binaries (debug
# info stripped) plus lib/ (absl, hwy, zstd, libstdc++ from Debian 12); the GPU machine
# needs glibc >= 2.36 and an NVIDIA driver for CUDA 13 (cudart is linked statically).
#
# Output: gtest results (a test without a device SKIPs, saying why), then one table:
# encode+gather and decode+scatter GB/s per codec next to the device-to-device copy
# bandwidth measured in the same run on the same GPU, then (when ncu is installed)
# one kivi4 block's kernel durations from the profiler against that copy. Exit
# status: 0 when every test passed and the benchmark ran; 1 otherwise (including
# "no CUDA device").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${KVHUB_GPU_BUILD_DIR:-$ROOT/build-gpu-bench}
TESTS=(codec_cuda_gpu_test storage_gpu_tier_test storage_tiered_block_store_test
       kvhubd_gpu_tier_test codec_cuda_emulation_test)
BENCH=kvhub_gpu_bench
BINS=("$BENCH" kvhubd)  # kvhubd: for kvhubd_gpu_tier_test
JOBS=${JOBS:-2}

build() {
  local nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  [[ -x $nvcc ]] || { echo "run.sh: nvcc not found (set CUDACXX)" >&2; exit 1; }
  echo "== build: $BUILD ($("$nvcc" --version | tail -1))"
  CUDACXX=$nvcc cmake -S "$ROOT" -B "$BUILD" -G Ninja >/dev/null
  grep -q 'codec_cuda_gpu_test' "$BUILD/build.ninja" ||  # a target only a CUDA build has
    { echo "run.sh: CMake did not enable CUDA" >&2; exit 1; }
  local t0=$SECONDS
  ninja -C "$BUILD" -j"$JOBS" "${TESTS[@]}" "${BINS[@]}"
  echo "== build took $((SECONDS - t0)) s"
}

bundle() {
  local dir=${1:-$ROOT/build-gpu-bundle}
  build
  rm -rf "$dir" && mkdir -p "$dir/tests" "$dir/bin" "$dir/lib"
  for t in "${TESTS[@]}"; do objcopy --strip-debug "$BUILD/tests/$t" "$dir/tests/$t"; done
  for b in "${BINS[@]}"; do objcopy --strip-debug "$BUILD/bin/$b" "$dir/bin/$b"; done
  # Shared libraries outside glibc (libc, libm, libdl, libpthread, librt, ld-linux).
  for f in "$dir"/tests/* "$dir"/bin/*; do
    ldd "$f" | awk '$3 ~ /^\// {print $3}'
  done | sort -u | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$dir/lib/"; done
  echo "== bundle: $dir ($(du -sh "$dir" | cut -f1))"
}

run() {
  local dir=${1:-$BUILD}
  export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export KVHUB_SOURCE_DIR=$ROOT
  export KVHUB_BIN_DIR=$dir/bin
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  local rc=0
  local out
  for t in "${TESTS[@]}"; do
    echo "== $t"
    out=$("$dir/tests/$t" 2>&1) || rc=1
    grep -E '^\[ +(OK|FAILED|SKIPPED|PASSED) +\]|Skipped|no CUDA device' <<<"$out" | uniq || true
    # A test skipped for lack of a device is not a pass of this script (tests
    # that skip by design on a GPU machine say why, without "no CUDA device").
    if grep -q 'no CUDA device' <<<"$out"; then
      echo "run.sh: $t skipped tests: no usable CUDA device" >&2
      rc=1
    fi
  done
  echo "== $BENCH ${BENCH_ARGS[*]:-}"
  local table
  table=$("$dir/bin/$BENCH" "${BENCH_ARGS[@]}") || rc=1
  echo "$table"
  kernel_durations "$dir" "$table" || rc=1
  return $rc
}

# One kivi4 block's kernels timed by the profiler (launch excluded; caches
# flushed before each), against the 1 GiB copy of the table above. Skipped
# with a note when ncu is not installed.
kernel_durations() {
  local dir=$1 table=$2
  if ! command -v ncu >/dev/null; then
    echo "== kernel durations: ncu not found, skipped"
    return 0
  fi
  local copy
  copy=$(awk '/^d2d copy/ {print $7}' <<<"$table")  # the 1 GiB copy, CUDA events
  echo "== kivi4, one block, kernel duration (ncu --clock-control none; median of 10) vs the ${copy} GB/s copy"
  local k
  for k in KiviTileEncodeKernel KiviTileDecodeKernel; do
    local us
    us=$(ncu --clock-control none --kernel-name "$k" --launch-skip 5 --launch-count 10 \
             --metrics gpu__time_duration.sum "$dir/bin/$BENCH" --codec kivi4 --iters 20 \
             --blocks 8 --copy_mib 64 2>/dev/null |
         awk '/gpu__time_duration.sum/ {v = $NF; if ($(NF-1) == "ms") v *= 1000; print v}' |
         sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}')
    [[ -n $us ]] || { echo "run.sh: ncu gave no duration for $k" >&2; return 1; }
    # Bytes: 32 MiB of bf16 + the 9 MiB kivi4 block (default shape).
    awk -v k="$k" -v us="$us" -v copy="$copy" 'BEGIN {
      gbs = (32 + 9) * 1048576 / (us * 1e-6) / 1e9;
      printf "%-22s %8.1f us %9.1f GB/s %5.0f%% of copy\n", k, us, gbs, 100 * gbs / copy }'
  done
}

BENCH_ARGS=()
case "${1:-all}" in
  all) build; shift || true; BENCH_ARGS=("$@"); run "$BUILD" ;;
  bundle) shift; bundle "$@" ;;
  run) shift; dir=${1:-$BUILD}; shift || true; BENCH_ARGS=("$@"); run "$dir" ;;
  *) sed -n '2,24p' "$0"; exit 2 ;;
esac
