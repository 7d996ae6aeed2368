#!/usr/bin/env bash
# C-SFT trainer throughput (pairs/s: encoder forward + backward, the three
# InfoNCE levels and Adam, one thread) on the synthetic default's pairs,
# for the default configuration and the negative-sampling ablations, and
# two data-parallel workers (--num_workers=2) through one real shard on
# loopback, with and without the other worker's positives as negatives
# (each worker's pairs/s and their sum; the workers, the shard and this
# script share the machine's cores). Figures go to docs/BENCHMARKS.md.
#
#   bench/csft_bench.sh        # env: DATA_DIR PAIRS REPS
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-/tmp/csft_bench_data}
PAIRS=${PAIRS:-20000}
REPS=${REPS:-2}
OUT=$(mktemp -d /tmp/csft_bench.XXXXXX)
PS_PID=
trap '[[ -n "$PS_PID" ]] && kill "$PS_PID" 2>/dev/null; rm -rf "$OUT"' EXIT

bazel build --jobs=2 //tools:gen_synthetic //worker/csft:csft //ps:server 2>&1 | tail -1
BIN=bazel-bin
[[ -f "$DATA_DIR/train.tsv" ]] || "$BIN/tools/gen_synthetic" --output_dir="$DATA_DIR"

run() {  # name, extra flags...
  local name=$1
  shift
  for rep in $(seq "$REPS"); do
    "$BIN/worker/csft/csft" --train="$DATA_DIR/train.tsv" \
      --vectors="$DATA_DIR/item_vectors.tsv" --out_vectors="$OUT/v.tsv" \
      --metrics_out="$OUT/m.json" --epochs=1 --max_train_pairs="$PAIRS" \
      --max_eval_pairs=200 "$@" 2>/dev/null
    /usr/bin/python3 -c "import json,sys; m=json.load(open('$OUT/m.json')); print(f'| $name | {sys.argv[1]} | {m[\"pairs_per_second\"]:.0f} |')" "$rep"
  done
}

echo "| configuration | rep | pairs/s |"
echo "|---|---|---|"
run "default (in-batch + hard + queue 4, 3 levels, tensor fusion)"
run "no queue" --queue_batches=0
run "no hard negatives, no queue" --hard_negatives=false --queue_batches=0
run "concat fusion" --fusion=concat

# Two workers through one shard.
"$BIN/ps/server" --port=0 --host=127.0.0.1 --data_dir="$OUT/ps" >"$OUT/ps.out" 2>"$OUT/ps.log" &
PS_PID=$!
for _ in $(seq 200); do grep -q "listening on" "$OUT/ps.out" && break; sleep 0.05; done
ADDR=$(grep -o "listening on [^ ]*" "$OUT/ps.out" | awk '{print $3}')
[[ -n "$ADDR" ]] || { echo "shard did not start (see $OUT/ps.log)" >&2; exit 1; }
run_workers() {  # name, extra flags...
  local name=$1
  shift
  for rep in $(seq "$REPS"); do
    local common=(--train="$DATA_DIR/train.tsv" --vectors="$DATA_DIR/item_vectors.tsv"
      --epochs=1 --max_train_pairs="$PAIRS" --max_eval_pairs=200 --ps="$ADDR"
      --num_workers=2 --worker_prefix="bench_${rep}_$RANDOM" "$@")
    "$BIN/worker/csft/csft" "${common[@]}" --worker_index=1 --metrics_out="$OUT/m1.json" 2>/dev/null &
    local w1=$!
    "$BIN/worker/csft/csft" "${common[@]}" --worker_index=0 --out_vectors="$OUT/v.tsv" \
      --metrics_out="$OUT/m0.json" --table=bench_csft 2>/dev/null
    wait "$w1"
    /usr/bin/python3 -c "
import json, sys
a, b = (json.load(open(f'$OUT/m{w}.json')) for w in (0, 1))
s = a['pairs_per_second'] + b['pairs_per_second']
print(f'| {sys.argv[2]} | {sys.argv[1]} | {s:.0f} (worker 0 {a[\"pairs_per_second\"]:.0f} + worker 1 {b[\"pairs_per_second\"]:.0f}; peer rows {a[\"peer_rows\"]} + {b[\"peer_rows\"]}) |')" "$rep" "$name"
  done
}
run_workers "2 workers, one shard (default + the other worker's positives)"
run_workers "2 workers, one shard, --noworker_negatives" --noworker_negatives
