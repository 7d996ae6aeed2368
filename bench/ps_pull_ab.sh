#!/bin/bash
# Pull-only A/B of two builds of the shard and ps_bench, measured the way a
# loaded shared machine allows: the shard's CPU per pulled key, which is
# less sensitive to other load than keys/s.
#
#   bench/ps_pull_ab.sh A_DIR B_DIR PS_ADMIN [ROUNDS] [BATCHES] [THREADS]
#
# Each DIR holds a `server` (//ps:server) and a `ps_bench` (//bench:ps_bench)
# of one build; PS_ADMIN is a //tools:ps_admin binary. One shard per build
# is started on loopback and filled once (ps_bench's rows; no pushes after
# that, so RocksDB works only on what the fill left, if anything, in the
# first runs).
# Then, ROUNDS times, for each batch size, A and B alternately: one ps_bench
# run of Pull only (3 reps), with the shard's CPU (utime + stime from
# /proc/PID/stat) and its table's pull counter (ps_admin stats) read around
# it. Printed per run: the 1-minute load average, shard CPU us per pulled
# key (warm-up and checked replies included), and ps_bench's own line.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,17p' "$0"
  exit 2
fi
declare -A DIR ENVS
DIR[A]=$1
DIR[B]=$2
PS_ADMIN=$3
ROUNDS=${4:-3}
BATCHES=${5:-"256 1024 4096 16384"}
THREADS=${6:-1}
AB_DEFAULT_PORT=47121
source "$(dirname "$0")/ab_shards.sh"
ab_start_shards
for v in A B; do ab_wait_and_fill $v; done
for r in $(seq "$ROUNDS"); do
  for b in $BATCHES; do
    for v in A B; do
      c0=$(cpu_ticks ${PID[$v]})
      k0=$(table_counter ${PORT[$v]} pulls)
      load=$(cut -d' ' -f1 /proc/loadavg)
      line=$("${DIR[$v]}/ps_bench" --ps=127.0.0.1:${PORT[$v]} --noredis \
        --nopush --noload --batches=$b --threads=$THREADS --reps=3 |
        grep '^pull')
      c1=$(cpu_ticks ${PID[$v]})
      k1=$(table_counter ${PORT[$v]} pulls)
      awk -v r=$r -v v=$v -v b=$b -v load=$load -v c=$((c1 - c0)) \
        -v k=$((k1 - k0)) -v tick=$TICK -v line="$line" 'BEGIN {
          printf "round %d %s batch %5d load %5s shard %.3f us/key (%d keys) | %s\n",
            r, v, b, load, c * 1e6 / tick / k, k, line }'
    done
  done
done
