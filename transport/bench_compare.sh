#!/usr/bin/env bash
# Side-by-side UCX numbers from one run: kvhub's UCX data plane (kvhub-ucx-bench,
# get and put, AM and RMA) next to ucx_perftest (tag_bw, ucp_get) on the same
# UCX_TLS, for tcp and for shared memory. 1 MiB blocks, concurrency 4, loopback.
#
#   transport/bench_compare.sh [BUILD_DIR]       (default build-ucx)
set -u
BUILD=${1:-build-ucx}
BENCH=$BUILD/bin/kvhub-ucx-bench
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
PORT=${PORT:-13400}

perftest() {  # tls test (shared with kvhub-bench: transport/ucx_perftest_pair.sh)
  "$(dirname "$0")/ucx_perftest_pair.sh" "$1" "$2" 1048576 $((PORT++)) 4
}

for tls in tcp posix,cma; do
  for op in get put; do
    for path in am rma; do
      # A rendezvous AM put from a shared-memory (nofail) peer is refused by design
      # (docs/transport.md "Shared memory on UCX 1.13").
      [[ $tls != tcp && $op == put && $path == am ]] && continue
      "$BENCH" --tls=$tls --op=$op --path=$path --block=1048576 --concurrency=4 --seconds="$SECONDS_PER_RUN" 2>/dev/null | grep '^{'
    done
  done
  perftest "$tls" tag_bw
  perftest "$tls" ucp_get
done
