#!/usr/bin/env bash
# Predict latency when every row misses the cache, with the ID and content
# pulls one after the other (--fetch_threads=0) vs concurrent (the default,
# --fetch_threads=4), alternating rounds on one pair of shards.
#
# Reuses what the README's first command (tools/run_demo.sh) leaves in its
# output folder: the shards' data dirs (copied, the demo's own stay as they
# are) and the served din_mim model. The servers run with --cache_mb=0, so
# every request pulls its user's, behaviours' and candidates' rows from the
# shards, which is what a cold replica, a new user or a new item costs.
#
# Usage: bench/serving_fetch_overlap.sh [--demo=runs/demo]
#          [--out=runs/serving_fetch_overlap] [--bin=DIR] [--rounds=3]
#          [--qps=50] [--duration=10] [--candidates=100] [--behaviors=50]
# --bin: a folder with ps/server, serving/server and tools/load_test built
# with -c opt (e.g. a copy's bazel-bin); default: build them here (-c opt).
# Prints one line per run and the median of each variant's p50 and p99.
set -euo pipefail
CALLER=$PWD
from_caller() { [[ "$1" == /* ]] && echo "$1" || echo "$CALLER/$1"; }
cd "$(dirname "$0")/.."

DEMO=runs/demo
OUT=runs/serving_fetch_overlap
BIN=
ROUNDS=3
QPS=50
DURATION=10
CANDIDATES=100
BEHAVIORS=50
for arg in "$@"; do
  case "$arg" in
    --demo=*) DEMO=$(from_caller "${arg#--demo=}") ;;
    --out=*) OUT=$(from_caller "${arg#--out=}") ;;
    --bin=*) BIN=$(from_caller "${arg#--bin=}") ;;
    --rounds=*) ROUNDS=${arg#--rounds=} ;;
    --qps=*) QPS=${arg#--qps=} ;;
    --duration=*) DURATION=${arg#--duration=} ;;
    --candidates=*) CANDIDATES=${arg#--candidates=} ;;
    --behaviors=*) BEHAVIORS=${arg#--behaviors=} ;;
    *) echo "serving_fetch_overlap: unknown argument $arg" >&2; exit 2 ;;
  esac
done
MODEL=$DEMO/models/din_mim
for need in "$DEMO/ps0" "$DEMO/ps1" "$MODEL/manifest.json"; do
  if [[ ! -e "$need" ]]; then
    echo "serving_fetch_overlap: $need is missing; run tools/run_demo.sh first" >&2
    exit 2
  fi
done
if [[ -z "$BIN" ]]; then
  bazel build -c opt --jobs=2 //ps:server //serving:server //tools:load_test
  BIN=$(bazel info -c opt bazel-bin)
fi

rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The address a server prints as "<what> listening on HOST:PORT".
wait_listening() {
  local log=$1 what=$2 pid=$3
  for _ in $(seq 600); do
    local a
    a=$(sed -n "s|^$what listening on \([^ ]*\).*|\1|p" "$log" | head -1)
    if [[ -n "$a" ]]; then echo "$a"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "serving_fetch_overlap: $log:" >&2; tail -5 "$log" >&2; return 1; }
    sleep 0.1
  done
  echo "serving_fetch_overlap: no '$what listening on' in $log within 60 s" >&2
  return 1
}

ADDRS=()
for i in 0 1; do
  cp -a "$DEMO/ps$i" "$OUT/ps$i"
  "$BIN/ps/server" --port=0 --host=127.0.0.1 --shard_index=$i --num_shards=2 \
    --data_dir="$OUT/ps$i" --metrics_port=-1 >"$OUT/ps$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 0 1; do ADDRS+=("$(wait_listening "$OUT/ps$i.log" "ps shard $i/2" "${PIDS[$i]}")"); done
PS=$(IFS=,; echo "${ADDRS[*]}")
echo "host: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "shards: $PS; model: $MODEL; $CANDIDATES candidates x $BEHAVIORS behaviours, $QPS qps, ${DURATION}s a run"
printf '%-16s %5s %9s %9s %9s\n' fetch_threads round p50_ms p99_ms ok

for round in $(seq "$ROUNDS"); do
  for ft in 0 4; do
    log=$OUT/serving_${ft}_$round.log
    "$BIN/serving/server" --port=0 --ps="$PS" --model_dir="$MODEL" \
      --cache_mb=0 --fetch_threads=$ft --max_candidates=1000 \
      --metrics_port=-1 --content_poll_ms=0 >"$log" 2>&1 &
    pid=$!
    target=$(wait_listening "$log" serving "$pid")
    json=$OUT/load_${ft}_$round.json
    "$BIN/tools/load_test" --target="$target" --qps="$QPS" --duration="$DURATION" \
      --candidates="$CANDIDATES" --behaviors="$BEHAVIORS" --json_out="$json" \
      >"$OUT/load_${ft}_$round.txt" 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$json" "$ft" "$round" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
l = j["latency_ms"]
print(f"{sys.argv[2]:<16} {sys.argv[3]:>5} {l['p50']:9.3f} {l['p99']:9.3f} {j['ok']:9d}")
EOF
  done
done | tee "$OUT/runs.txt"

python3 - "$OUT/runs.txt" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l[:1].isdigit()]
med = {}
for ft in ("0", "4"):
    r = [x for x in rows if x[0] == ft]
    med[ft] = (statistics.median(float(x[2]) for x in r),
               statistics.median(float(x[3]) for x in r))
    print(f"median fetch_threads={ft}: p50 {med[ft][0]:.3f} ms, p99 {med[ft][1]:.3f} ms")
print(f"concurrent / sequential: p50 {med['4'][0] / med['0'][0]:.2f}, p99 {med['4'][1] / med['0'][1]:.2f}")
EOF
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
