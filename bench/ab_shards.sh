# Sourced by bench/ps_pull_ab.sh and bench/ps_push_ab.sh: two shards, A and
# B, on loopback, each filled once with ps_bench's rows, and the readings
# both scripts take around a run. Expects DIR[A], DIR[B] (each with a
# `server` and a `ps_bench`), PS_ADMIN, and optionally ENVS[A], ENVS[B]
# (NAME=VALUE words for that shard's environment) and PORT_BASE.

declare -A PID PORT
# PORT_BASE=N picks the two ports (N, N+1), so that two runs can share a
# machine.
PORT[A]=${PORT_BASE:-$AB_DEFAULT_PORT}
PORT[B]=$((PORT[A] + 1))
TICK=$(getconf CLK_TCK)
SCRATCH=$(mktemp -d "/tmp/$(basename "$0" .sh).XXXXXX")
ab_cleanup() {
  for v in A B; do
    if [[ -n "${PID[$v]:-}" ]]; then kill "${PID[$v]}" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  rm -rf "$SCRATCH"
}
trap ab_cleanup EXIT

# Starts both shards in the background.
ab_start_shards() {
  local v
  for v in A B; do
    mkdir "$SCRATCH/$v"
    # Created here, not by the background shard's redirection, which may
    # come after ab_wait_and_fill's tail has looked for the file.
    : >"$SCRATCH/$v.log"
    # shellcheck disable=SC2086  # ENVS holds NAME=VALUE words
    env ${ENVS[$v]:-} "${DIR[$v]}/server" --port=${PORT[$v]} --shard_index=0 \
      --num_shards=1 --data_dir="$SCRATCH/$v" >"$SCRATCH/$v.log" 2>&1 &
    PID[$v]=$!
  done
}

# Waits until shard $1 (A or B) prints "listening on" (it takes calls),
# then fills its table with ps_bench's rows.
ab_wait_and_fill() {
  local v=$1
  if ! timeout 60 grep -q -m1 'listening on' \
      <(tail -f -n +1 "$SCRATCH/$v.log"); then
    echo "shard ${DIR[$v]}/server did not start:" >&2
    cat "$SCRATCH/$v.log" >&2
    exit 1
  fi
  "${DIR[$v]}/ps_bench" --ps=127.0.0.1:${PORT[$v]} --noredis --nopush \
    --batches=1024 --threads=1 --reps=1 --rep_seconds=0.1 >/dev/null
}

# CPU ticks (utime + stime, all threads) of process $1.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# CPU ticks of process $1's RocksDB background threads (flushes and
# compactions: the threads named "rocksdb:*"), which are never reaped, so
# cpu_ticks minus this is the rest of the shard (gRPC and the handlers).
# The comm field is matched whole: a thread name never holds ") ".
rocksdb_ticks() {
  cat /proc/"$1"/task/*/stat 2>/dev/null |
    awk '{ c = $0; sub(/^[0-9]+ \(/, "", c); name = substr(c, 1, index(c, ") ") - 1)
           rest = substr(c, index(c, ") ") + 2); split(rest, f, " ")
           if (name ~ /^rocksdb:/) t += f[12] + f[13] }
         END { print t + 0 }'
}

# The bench table's counter $2 (pulls, pushes) on the shard at port $1.
table_counter() {
  "$PS_ADMIN" --ps=127.0.0.1:$1 stats bench | grep -o "$2=[0-9]*" |
    head -1 | cut -d= -f2
}
