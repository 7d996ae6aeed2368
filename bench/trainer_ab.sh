#!/usr/bin/env bash
# A/B of the whole trainer against one local shard for two builds, rounds
# alternating so both see the same load on a shared machine.
#
#   bench/trainer_ab.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]
#
# Each BIN_DIR holds `server`, `trainer` and `ingest_content` (copies of
# bazel-bin/ps/server, worker/trainer, tools/ingest_content of a -c opt
# build; build an older commit in a `git worktree` for OLD). Samples are
# the window bench/train_bench.sh uses: WINDOW (default: the newest
# /tmp/train_bench.*/window.tsv) and VECTORS (default:
# /tmp/train_bench_data/item_vectors.tsv). Prints samples/s per round.
set -euo pipefail
OLD=${1:?old bin dir}; NEW=${2:?new bin dir}; ROUNDS=${3:-3}
WINDOW=${WINDOW:-$(ls -t /tmp/train_bench.*/window.tsv 2>/dev/null | head -1)}
VECTORS=${VECTORS:-/tmp/train_bench_data/item_vectors.tsv}
[[ -f "$WINDOW" && -f "$VECTORS" ]] || { echo "run bench/train_bench.sh first (or set WINDOW, VECTORS)" >&2; exit 2; }
TEST=$(mktemp)
head -n 1025 "$WINDOW" >"$TEST"

one() {  # one() BIN_DIR -> "din N din_mim N"
  local bin=$1 out pid addr line
  out=$(mktemp -d)
  "$bin/server" --port=0 --threads=32 --data_dir="$out/ps" >"$out/ps.out" 2>"$out/ps.err" &
  pid=$!
  for _ in $(seq 1 300); do grep -q listening "$out/ps.out" && break; sleep 0.1; done
  addr=$(grep -o 'listening on [^ ]*' "$out/ps.out" | awk '{print $3}' | sed 's/^0.0.0.0/127.0.0.1/')
  "$bin/ingest_content" --ps="$addr" --vectors="$VECTORS" --table=item_content >"$out/ingest.log" 2>&1
  for m in din din_mim; do
    line=$("$bin/trainer" --ps="$addr" --train="$WINDOW" --test="$TEST" --model=$m \
        --content_table=item_content --batch_size=1024 --threads=2 --progress=false \
        --table_prefix="${m}_" 2>"$out/trainer.err" | tail -n 1)
    echo -n "$m $(echo "$line" | grep -o '([0-9.e+]* samples/s)' | tr -d '(' | awk '{print $1}') "
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$out"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r old: $(one "$OLD")"
  echo "round $r new: $(one "$NEW")"
done
rm -f "$TEST"
