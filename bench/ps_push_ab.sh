#!/bin/bash
# Push-only A/B of two builds of the shard (or of one build under two
# environments), measured the way a loaded shared machine allows: the
# shard's CPU per pushed key, flushes and compactions included.
#
#   bench/ps_push_ab.sh A_DIR B_DIR PS_ADMIN [ROUNDS] [BATCHES] [THREADS] [REPS]
#
# Each DIR holds a `server` (//ps:server) and a `ps_bench` (//bench:ps_bench,
# one with --nopull) of one build; PS_ADMIN is a //tools:ps_admin binary.
# ENV_A / ENV_B, if set, are put in the environment of shard A / B (e.g.
# ENV_B="MIM_X=1" with A_DIR = B_DIR to compare settings of one build).
# One shard per build is started on loopback and filled once (ps_bench's
# 1M rows), then left until its CPU is idle (the fill's flushes done).
# Then, ROUNDS times, for each batch size, A and B alternately: one ps_bench
# run of Push only (REPS reps of 0.4 s, default 5), and after it the wait
# until the shard is idle again (RocksDB's flushes and compactions of what
# the run wrote, up to 120 s), with the shard's CPU (utime + stime of all
# its threads, /proc/PID/stat) and its table's push counter (ps_admin stats)
# read before the run and after that wait. Printed per run: the 1-minute
# load average, shard CPU us per pushed key over run and wait, of which
# RocksDB's background threads (flush and compaction, "rocksdb:*") and the
# rest (gRPC and the handlers: staging, the optimizer, encoding, the WAL
# append), the wait's seconds, and ps_bench's push line (Mkeys/s min med
# max | server us/key during the reps only, faults/call | client us/key,
# faults/call); at the
# end, each shard's CPU per pushed key over all its runs, and that split.
# The split is the steadier figure for a change to the handlers: which run
# pays for a compaction is chance, and one can double a run's total.
# A memtable fills over several runs, so a run may also pay for a flush of
# an earlier run's rows: compare over rounds, not single runs.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,30p' "$0"
  exit 2
fi
declare -A DIR ENVS TOTAL_TICKS TOTAL_KEYS TOTAL_BG
DIR[A]=$1
DIR[B]=$2
PS_ADMIN=$3
ROUNDS=${4:-3}
BATCHES=${5:-"256 1024 4096 16384"}
THREADS=${6:-1}
REPS=${7:-5}
ENVS[A]=${ENV_A:-}
ENVS[B]=${ENV_B:-}
AB_DEFAULT_PORT=47131
source "$(dirname "$0")/ab_shards.sh"
# Waits until the shard used at most one tick in each of two successive
# seconds (its background work is done), at most 120 s; prints the seconds.
settle() {
  local pid=$1 quiet=0 waited=0 c0 c1
  c0=$(cpu_ticks "$pid")
  while ((quiet < 2 && waited < 120)); do
    sleep 1
    waited=$((waited + 1))
    c1=$(cpu_ticks "$pid")
    if ((c1 - c0 <= 1)); then quiet=$((quiet + 1)); else quiet=0; fi
    c0=$c1
  done
  echo "$waited"
}
ab_start_shards
for v in A B; do
  ab_wait_and_fill $v
  settle "${PID[$v]}" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for b in $BATCHES; do
    for v in A B; do
      c0=$(cpu_ticks ${PID[$v]})
      g0=$(rocksdb_ticks ${PID[$v]})
      k0=$(table_counter ${PORT[$v]} pushes)
      load=$(cut -d' ' -f1 /proc/loadavg)
      line=$("${DIR[$v]}/ps_bench" --ps=127.0.0.1:${PORT[$v]} --noredis \
        --noload --nopull --batches=$b --threads=$THREADS --reps=$REPS |
        grep '^push')
      waited=$(settle ${PID[$v]})
      c1=$(cpu_ticks ${PID[$v]})
      g1=$(rocksdb_ticks ${PID[$v]})
      k1=$(table_counter ${PORT[$v]} pushes)
      TOTAL_TICKS[$v]=$((${TOTAL_TICKS[$v]:-0} + c1 - c0))
      TOTAL_KEYS[$v]=$((${TOTAL_KEYS[$v]:-0} + k1 - k0))
      TOTAL_BG[$v]=$((${TOTAL_BG[$v]:-0} + g1 - g0))
      awk -v r=$r -v v=$v -v b=$b -v load=$load -v c=$((c1 - c0)) \
        -v g=$((g1 - g0)) -v k=$((k1 - k0)) -v tick=$TICK -v w=$waited \
        -v line="$line" 'BEGIN {
          printf "round %d %s batch %5d load %5s shard %.3f us/key (rocksdb %.3f, rest %.3f; %d keys, settle %3d s) | %s\n",
            r, v, b, load, c * 1e6 / tick / k, g * 1e6 / tick / k,
            (c - g) * 1e6 / tick / k, k, w, line }'
    done
  done
done
for v in A B; do
  awk -v v=$v -v c=${TOTAL_TICKS[$v]} -v g=${TOTAL_BG[$v]} \
    -v k=${TOTAL_KEYS[$v]} -v tick=$TICK 'BEGIN {
      printf "all runs %s: shard %.3f us/key (rocksdb %.3f, rest %.3f; %d keys, %.1f s CPU)\n",
        v, c * 1e6 / tick / k, g * 1e6 / tick / k, (c - g) * 1e6 / tick / k,
        k, c / tick }'
done
