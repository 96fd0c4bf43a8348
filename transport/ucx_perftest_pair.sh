#!/usr/bin/env bash
# One ucx_perftest measurement on loopback: starts the server side, runs the
# client side, prints one JSON line {"tool":"ucx_perftest","tls":..,"test":..,"GBps":..}.
# Shared by transport/bench_compare.sh and kvhub-bench --transport ucx|both.
#
#   transport/ucx_perftest_pair.sh TLS TEST [SIZE_BYTES] [PORT] [OUTSTANDING]
#   e.g. transport/ucx_perftest_pair.sh tcp tag_bw 1048576 13400 4
set -u
tls=$1 test=$2 size=${3:-1048576} port=${4:-13400} outstanding=${5:-4}
command -v ucx_perftest >/dev/null || { echo "ucx_perftest not found (Debian ucx-utils)" >&2; exit 1; }
UCX_TLS=$tls ucx_perftest -p "$port" >/dev/null 2>&1 &
srv=$!
sleep 0.5
# -O: at most that many outstanding operations (the callers' concurrency).
iters=$(( (3 << 30) / size )); (( iters < 200 )) && iters=200; (( iters > 20000 )) && iters=20000
out=$(UCX_TLS=$tls ucx_perftest 127.0.0.1 -p "$port" -t "$test" -s "$size" -n "$iters" -w $((iters / 10)) \
      -O "$outstanding" 2>&1 | tail -1)
wait $srv 2>/dev/null
# Final line columns: ... bandwidth(MB/s) average, overall; message rate ...
echo "$out" | awk -v tls="$tls" -v t="$test" -v s="$size" \
  '{printf "{\"tool\":\"ucx_perftest\",\"tls\":\"%s\",\"test\":\"%s\",\"block_bytes\":%d,\"GBps\":%.3f}\n", tls, t, s, $(NF-2)*1048576/1e9}'
