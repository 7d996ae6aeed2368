#!/usr/bin/env bash
# Training throughput, batch 1024, one worker, 2 cores: the C++ model
# (bench/train_bench, local in-process ID table) against the same din /
# din_mim in PyTorch (bench/train_bench_torch.py, Debian python3-torch) on
# the same samples, alternating C++ and torch, REPS repetitions; torch runs
# under both BLAS libraries, pinned with LD_PRELOAD (the update-alternatives
# link decides otherwise, so "default" would mean different things on
# different machines):
#   ref:      /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 (reference BLAS)
#   openblas: /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
# The torch script prints the BLAS mapped into its process and a 512^3
# matmul GFLOP/s, so the setting is verified, not assumed.
# Then, if //worker:trainer and //ps:server build, the end-to-end trainer
# against one local PS shard on the same samples ("with the parameter
# server"). Prints a table of samples/s and C++ / best torch.
#
#   bench/train_bench.sh            # env: DATA_DIR REPS STEPS SKIP
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3  # Debian's torch is only visible to this interpreter
DATA_DIR=${DATA_DIR:-/tmp/train_bench_data}
REPS=${REPS:-2}
STEPS=${STEPS:-40}
WARMUP=${WARMUP:-5}
SKIP=${SKIP:-120000}
MODELS=din,din_mim
REF_BLAS=/usr/lib/x86_64-linux-gnu/blas/libblas.so.3
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
OUT=$(mktemp -d /tmp/train_bench.XXXXXX)
LOG=$OUT/results.txt

BAZEL_OPTS=(-c opt --jobs=2)
bazel build "${BAZEL_OPTS[@]}" //tools:gen_synthetic //bench:train_bench
BIN=$(bazel info "${BAZEL_OPTS[@]}" bazel-bin 2>/dev/null)

if [[ ! -f $DATA_DIR/train.tsv || ! -f $DATA_DIR/item_vectors.tsv ]]; then
  "$BIN/tools/gen_synthetic" --output_dir="$DATA_DIR"
fi
SAMPLES=$DATA_DIR/train.tsv
VECTORS=$DATA_DIR/item_vectors.tsv
COMMON=(--skip="$SKIP" --steps="$STEPS" --warmup="$WARMUP" --threads=2)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "samples: $SAMPLES [$SKIP, $SKIP + ($WARMUP + $STEPS) * 1024), vectors: $VECTORS"
for rep in $(seq 1 "$REPS"); do
  echo "== repetition $rep"
  "$BIN/bench/train_bench" --samples="$SAMPLES" --vectors="$VECTORS" \
      --models=$MODELS --table=flat "${COMMON[@]}" | sed 's/^RESULT /RESULT rep='"$rep"' /' | tee -a "$LOG"
  for blas in ref openblas; do
    lib=$REF_BLAS
    [[ $blas == openblas ]] && lib=$OPENBLAS
    LD_PRELOAD=$lib "$PY" bench/train_bench_torch.py --samples "$SAMPLES" \
        --vectors "$VECTORS" --models $MODELS --skip "$SKIP" \
        --steps "$STEPS" --warmup "$WARMUP" --threads 2 |
      sed 's/^\(RESULT\|INFO\) /\1 rep='"$rep"' blas='"$blas"' /' | tee -a "$LOG"
  done
  "$BIN/bench/train_bench" --samples="$SAMPLES" --vectors="$VECTORS" \
      --models=$MODELS --table=ps "${COMMON[@]}" | sed 's/^RESULT /RESULT rep='"$rep"' /' | tee -a "$LOG"
done

# End to end: //worker:trainer against one local //ps:server shard, on the
# same samples (a file holding exactly the timed window, so the behaviour
# lengths match), content vectors ingested into the shard first.
if bazel build "${BAZEL_OPTS[@]}" //ps:server //worker:trainer \
    //tools:ingest_content >"$OUT/build_ps.log" 2>&1; then
  N=$(( (WARMUP + STEPS) * 1024 ))
  sed -n "1p;$((SKIP + 2)),$((SKIP + 1 + N))p;$((SKIP + 2 + N))q" "$SAMPLES" \
      >"$OUT/window.tsv"
  # The trainer insists on a test file; a tiny one keeps evaluation short
  # (it runs after the timed training pass).
  head -n 1025 "$OUT/window.tsv" >"$OUT/test.tsv"
  for rep in $(seq 1 "$REPS"); do
    rm -rf "$OUT/ps_data"
    mkdir -p "$OUT/ps_data"
    "$BIN/ps/server" --port=0 --threads=32 --data_dir="$OUT/ps_data" \
        >"$OUT/ps.out" 2>"$OUT/ps.err" &
    ps_pid=$!
    for _ in $(seq 1 300); do
      grep -q listening "$OUT/ps.out" && break
      kill -0 $ps_pid 2>/dev/null || break
      sleep 0.1
    done
    addr=$(grep -o 'listening on [^ ]*' "$OUT/ps.out" | awk '{print $3}' | sed 's/^0.0.0.0/127.0.0.1/')
    # --threads=32: at the default 8 the trainer gets RESOURCE_EXHAUSTED
    # "Server Threadpool Exhausted" (concurrent pulls and pushes).
    # The trainer refuses a content model without a content table, so
    # din_mim is skipped (reported NA) when the ingest fails.
    models=(din din_mim)
    if ! "$BIN/tools/ingest_content" --ps="$addr" --vectors="$VECTORS" \
        --table=item_content >"$OUT/ingest.log" 2>&1; then
      echo "ingest_content failed ($(head -c 200 "$OUT/ingest.log")); din_mim skipped"
      models=(din)
    fi
    content=ingested
    for model in "${models[@]}"; do
      line=$("$BIN/worker/trainer" --ps="$addr" --train="$OUT/window.tsv" \
          --test="$OUT/test.tsv" --model=$model --content_table=item_content \
          --batch_size=1024 \
          --threads=2 --progress=false --table_prefix="${model}_" \
          2>"$OUT/trainer.err" | tail -n 1) || true
      sps=$(echo "$line" | grep -o '([0-9.e+]* samples/s)' | tr -d '(' | awk '{print $1}')
      echo "RESULT rep=$rep side=trainer_ps model=$model content=$content samples_per_s=${sps:-NA} ($line)" | tee -a "$LOG"
    done
    kill $ps_pid
    wait $ps_pid 2>/dev/null || true
  done
else
  echo "//worker:trainer or //ps:server did not build; see $OUT/build_ps.log"
fi

"$PY" - "$LOG" <<'EOF'
import collections, re, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if not line.startswith("RESULT"):
        continue
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if kv.get("samples_per_s", "NA") == "NA":
        continue
    side = kv["side"]
    if side == "cpp":
        side = "cpp_" + kv["table"]
    elif side == "torch":
        side = "torch_" + kv["blas"]
    rows[(kv["model"], side)].append(float(kv["samples_per_s"]))
labels = {"cpp_flat": "C++, flat local table",
          "cpp_ps": "C++, in-process EmbeddingTable",
          "torch_ref": "torch, reference BLAS",
          "torch_openblas": "torch, OpenBLAS",
          "trainer_ps": "C++ trainer + 1 PS shard (gRPC)"}
mean = lambda v: sum(v) / len(v)
print()
print(f"{'model':8} {'side':32} {'samples/s per rep':>20} {'mean':>7}")
for model in ("din", "din_mim"):
    for side, label in labels.items():
        v = rows.get((model, side))
        if v:
            per = " ".join(f"{x:.0f}" for x in v)
            print(f"{model:8} {label:32} {per:>20} {mean(v):7.0f}")
    torch = [mean(rows[(model, s)]) for s in ("torch_ref", "torch_openblas")
             if rows.get((model, s))]
    for side in ("cpp_flat", "trainer_ps"):
        if torch and rows.get((model, side)):
            print(f"{model:8} ratio {labels[side]} / best torch = "
                  f"{mean(rows[(model, side)]) / max(torch):.2f}x")
EOF
echo "raw results: $LOG"
