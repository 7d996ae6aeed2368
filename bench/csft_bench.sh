#!/usr/bin/env bash
# C-SFT trainer throughput (pairs/s: encoder forward + backward, the three
# InfoNCE levels and Adam, one thread) on the synthetic default's pairs,
# for the default configuration and the negative-sampling ablations.
# Figures go to docs/BENCHMARKS.md.
#
#   bench/csft_bench.sh        # env: DATA_DIR PAIRS REPS
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-/tmp/csft_bench_data}
PAIRS=${PAIRS:-20000}
REPS=${REPS:-2}
OUT=$(mktemp -d /tmp/csft_bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

bazel build --jobs=2 //tools:gen_synthetic //worker/csft:csft 2>&1 | tail -1
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
