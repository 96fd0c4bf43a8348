#!/bin/bash
# Side-by-side: inline Get of 1 MiB blocks from kvhubd over gRPC (kvhubd_loadgen) vs
# redis-server GET of 1 MiB values (redis-benchmark), both on loopback, concurrency 4,
# interleaved ROUNDS times. Prints throughput and CPU seconds (server + client) per GiB,
# which is less sensitive than throughput to other load on a shared machine.
#   cachesvc/bench_get_vs_redis.sh BUILD_DIR [ROUNDS] [REQUESTS]
set -euo pipefail
B=${1:?build dir}/bin
ROUNDS=${2:-3}
N=${3:-4000}
GP=17580; HP=17581; RP=17590
cpu() { awk '{print $14+$15}' /proc/$1/stat; }   # utime+stime in clock ticks
TCK=$(getconf CLK_TCK)
$B/kvhubd --grpc_address=127.0.0.1:$GP --http_address=127.0.0.1:$HP --capacity_bytes=1GiB --log_level=warn >/dev/null 2>&1 &
K=$!
redis-server --port $RP --save "" --appendonly no >/dev/null 2>&1 &
R=$!
trap 'kill -TERM $K $R 2>/dev/null; wait 2>/dev/null' EXIT
sleep 1
redis-benchmark -p $RP -t set -d 1048576 -c 4 -n 200 -q >/dev/null 2>&1   # load the value
$B/kvhubd_loadgen --target=127.0.0.1:$GP --mode=get --block_bytes=1MiB --concurrency=4 --requests=100 >/dev/null
for r in $(seq 1 $ROUNDS); do
  s0=$(cpu $K); t0=$(date +%s.%N)
  c=$( { /usr/bin/time -f "%U %S" $B/kvhubd_loadgen --target=127.0.0.1:$GP --mode=get --block_bytes=1MiB \
         --concurrency=4 --requests=$N >/dev/null; } 2>&1 | tail -1)
  t1=$(date +%s.%N); s1=$(cpu $K)
  echo "$r kvhubd  $N $t0 $t1 $s0 $s1 $c" | awk -v tck=$TCK '{w=$5-$4; srv=($7-$6)/tck; cli=$8+$9; gib=$3/1024;
    printf "round %s %-7s %7.0f MiB/s  cpu/GiB: server %.3fs client %.3fs total %.3fs\n", $1, $2, $3/w, srv/gib, cli/gib, (srv+cli)/gib}'
  s0=$(cpu $R); t0=$(date +%s.%N)
  c=$( { /usr/bin/time -f "%U %S" redis-benchmark -p $RP -t get -d 1048576 -c 4 -n $N -q >/dev/null; } 2>&1 | tail -1)
  t1=$(date +%s.%N); s1=$(cpu $R)
  echo "$r redis  $N $t0 $t1 $s0 $s1 $c" | awk -v tck=$TCK '{w=$5-$4; srv=($7-$6)/tck; cli=$8+$9; gib=$3/1024;
    printf "round %s %-7s %7.0f MiB/s  cpu/GiB: server %.3fs client %.3fs total %.3fs\n", $1, $2, $3/w, srv/gib, cli/gib, (srv+cli)/gib}'
done
cat /proc/loadavg
