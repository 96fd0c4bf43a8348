#!/usr/bin/env bash
# make demo: start a local cluster of 3 kvhubd shards on loopback (ephemeral
# ports), run the multi-turn chat workload (kvhub-demo) through the C++ client,
# print the numbers, then stop the shards with SIGTERM (graceful drain).
set -euo pipefail
BUILD_DIR=${1:-build}
BIN="$BUILD_DIR/bin"
SHARDS=${KVHUB_DEMO_SHARDS:-3}
CAPACITY=${KVHUB_DEMO_CAPACITY:-256MiB}   # per shard: small enough that eviction happens
# The demo's blocks are 2 MiB raw (kivi4: ~0.6 MiB). kvhubd's default 64 MiB limit would
# cut a 256 MiB tier into 4 slabs of 64 MiB (docs/storage.md); 8 MiB gives 32.
MAX_BLOCK=${KVHUB_DEMO_MAX_BLOCK:-8MiB}
# One host: the shards and the client talk UCX over shared memory (the shards'
# regions in /dev/shm, read one-sidedly). KVHUB_DEMO_UCX_TLS= (empty) for UCX's
# default transports, where the client keeps gRPC on loopback tcp.
UCX_TLS_DEMO=${KVHUB_DEMO_UCX_TLS-posix,cma}
for b in kvhubd kvhub-demo kvhub; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b is missing; run 'make build' first" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/kvhub-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== starting $SHARDS kvhubd shards ($CAPACITY host tier each) =="
for i in $(seq 0 $((SHARDS - 1))); do
  "$BIN/kvhubd" --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0 --node_id="shard-$i" \
    --capacity_bytes="$CAPACITY" --max_block_bytes="$MAX_BLOCK" --ready_file="$WORK/ready.$i" --log_level=warn \
    ${UCX_TLS_DEMO:+--ucx_tls="$UCX_TLS_DEMO"} \
    >"$WORK/kvhubd.$i.out" 2>"$WORK/kvhubd.$i.log" &
  PIDS+=($!)
done
MEMBERS=""
for i in $(seq 0 $((SHARDS - 1))); do
  for _ in $(seq 1 300); do
    [ -s "$WORK/ready.$i" ] && break
    kill -0 "${PIDS[$i]}" 2>/dev/null || break  # exited: its log says why
    sleep 0.1
  done
  if [ ! -s "$WORK/ready.$i" ]; then
    echo "demo: shard $i did not become ready:" >&2; cat "$WORK/kvhubd.$i.log" >&2; exit 1
  fi
  line=$(cat "$WORK/ready.$i"); echo "  $line"
  addr=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' <<<"$line")
  MEMBERS="${MEMBERS:+$MEMBERS,}$addr"
done

echo
echo "== workload: multi-turn chats through kvhub::Client =="
# A failed workload still shows the cluster's stats and how each shard ended.
rc=0
"$BIN/kvhub-demo" --members="$MEMBERS" --ucx_tls="$UCX_TLS_DEMO" "${@:2}" || rc=$?

echo
echo "== cluster stats (kvhub stats) =="
"$BIN/kvhub" stats --members="$MEMBERS" || true

echo
echo "== stopping shards (SIGTERM, graceful drain) =="
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for i in "${!PIDS[@]}"; do
  if wait "${PIDS[$i]}"; then
    echo "  shard-$i exited cleanly"
  else
    echo "  shard-$i exited with $?"
    [ "$rc" -ne 0 ] || rc=1
  fi
done
PIDS=()
exit $rc
