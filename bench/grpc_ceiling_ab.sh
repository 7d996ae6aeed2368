#!/bin/bash
# gRPC's own Pull ceiling (bench/grpc_ceiling) and mim's Pull against a
# real shard (bench/ps_bench), alternately in one session, so that one
# can be stated as a fraction of the other at similar load.
#
#   bench/grpc_ceiling_ab.sh DIR [ROUNDS] [THREADS] [BATCHES]
#
# DIR holds `grpc_ceiling`, `ps_bench` and `server` (//ps:server) of one
# -c opt build. One shard is started on loopback and filled once with
# ps_bench's 1M rows (no pushes after that). Then, ROUNDS times (default
# 3): grpc_ceiling, then ps_bench Pull only (--noload --noredis --nopush),
# with the same threads (default "1,2") and batches (default
# "256,1024,4096,16384"). The 1-minute load average is printed before and
# after each run.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  sed -n '2,14p' "$0"
  exit 2
fi
DIR=$1
ROUNDS=${2:-3}
THREADS=${3:-1,2}
BATCHES=${4:-256,1024,4096,16384}
SCRATCH=$(mktemp -d /tmp/grpc_ceiling_ab.XXXXXX)
PID=""
cleanup() {
  if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
mkdir "$SCRATCH/data"
"$DIR/server" --port=0 --shard_index=0 --num_shards=1 --metrics_port=-1 \
  --max_keys_per_request=65536 --data_dir="$SCRATCH/data" \
  >"$SCRATCH/server.log" 2>&1 &
PID=$!
if ! timeout 60 grep -q -m1 'listening on' \
    <(tail -f -n +1 "$SCRATCH/server.log"); then
  echo "shard $DIR/server did not start:" >&2
  cat "$SCRATCH/server.log" >&2
  exit 1
fi
ADDRESS=$(grep -o -m1 'listening on [^ ]*' "$SCRATCH/server.log" | cut -d' ' -f3)
"$DIR/ps_bench" --ps="$ADDRESS" --noredis --nopush --batches=1024 \
  --threads=1 --reps=1 --rep_seconds=0.1 >/dev/null
load() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
for r in $(seq "$ROUNDS"); do
  echo "=== round $r: grpc_ceiling, $(load)"
  "$DIR/grpc_ceiling" --threads="$THREADS" --batches="$BATCHES" |
    grep -E '^(grpc|copy|psclient) '
  echo "=== round $r: ps_bench pull (shard $ADDRESS), $(load)"
  "$DIR/ps_bench" --ps="$ADDRESS" --noload --noredis --nopush \
    --threads="$THREADS" --batches="$BATCHES" | grep '^pull'
  echo "=== round $r done, $(load)"
done
