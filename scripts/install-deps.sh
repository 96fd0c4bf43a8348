#!/usr/bin/env bash
# Installs the Debian packages kvhub needs to build, test and run its demo, and
# python3-matplotlib for the replay plots (docs/replay.md).
# Idempotent: re-running it installs nothing new. Needs root (or sudo) on Debian 12.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config
  clang libclang-rt-14-dev            # -Wthread-safety build, sanitizers, libFuzzer
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev                         # Status, Mutex, flags, containers
  libxxhash-dev                       # XXH3 keys and checksums (DESIGN §2, §3)
  libzstd-dev                         # lossless codec
  libhwy-dev                          # portable SIMD codecs
  libspdlog-dev libfmt-dev            # logging (absl 20220623 has no absl/log)
  nlohmann-json3-dev                  # test vectors, --json output, config files
  libcpp-httplib-dev                  # tests: HTTP client for /metrics and the probes
  libgtest-dev libgmock-dev libbenchmark-dev
  libucx-dev ucx-utils                # UCX data plane
  redis-server                        # baseline in kvhub-bench
  libhiredis-dev                      # kvhub-bench: redis SET/GET client for the baseline
  python3 python3-xxhash python3-numpy
  python3-matplotlib                  # bench/replay/plot_replay.py
  python3-yaml                        # tests: deploy/ manifests and Prometheus files
  prometheus                          # tests: promtool checks the alert rules (its service is not used)
  pybind11-dev python3-dev            # kvhub._native: the Python client module
  openssl                             # tests: a CA and certificates for the TLS / mTLS tests
  nodejs                              # tests: runs kvhubd's /dashboard script against a live shard
  libssl-dev                          # kvhubd: parses TLS certificates and keys it reloads
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o Acquire::Retries=3 update -q  # a network blip retried, not a red CI
$SUDO apt-get -o Acquire::Retries=3 install -y -q --no-install-recommends "${missing[@]}"
