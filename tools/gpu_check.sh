#!/usr/bin/env bash
# Builds every CUDA test, the GPU benchmark and the trainer with its tools
# with --config=cuda, packs them with the non-system shared libraries they
# need into .gpu_pack/ (git-ignored, kept under 64 MiB) and writes
# .gpu_pack/run_all.sh, which runs the tests (under compute-sanitizer too,
# when present), the GPU benchmark, and the trainer on a synthetic stream
# with --device=cpu and --device=cuda (strict fp32 with and without
# overlapped input copies, and TF32; samples/s and AUC of each), and
# writes $OUT/report.txt. Then prints the one device call to make.
#
#   bash tools/gpu_check.sh            # here: build + pack + dry run
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.gpu_pack
FLAGS=(--config=cuda --dynamic_mode=off -c opt --jobs=2)
TARGETS=(//kernels:kernels_cuda_test //kernels:kernels_cpu_test //bench:kernels_bench
         //kernels:backend_cuda_test //worker/model:ciubm_model_cuda_test
         //worker:trainer //ps:server //tools:gen_synthetic //tools:ingest_content)

bazel build "${FLAGS[@]}" "${TARGETS[@]}"
BIN=$(bazel info "${FLAGS[@]}" bazel-bin 2>/dev/null)

rm -rf "$PACK"
mkdir -p "$PACK/lib"
cp "$BIN/kernels/kernels_cuda_test" "$BIN/kernels/kernels_cpu_test" \
   "$BIN/bench/kernels_bench" "$BIN/kernels/backend_cuda_test" \
   "$BIN/worker/model/ciubm_model_cuda_test" "$BIN/worker/trainer" \
   "$BIN/tools/gen_synthetic" "$BIN/tools/ingest_content" "$PACK/"
cp "$BIN/ps/server" "$PACK/ps_server"
cp bench/kernels_bench_torch.py "$PACK/"
chmod u+w "$PACK"/*

# Shared libraries beyond glibc, libstdc++/libgcc and CUDA's own (the GPU
# image has CUDA 13.0; libcublasLt alone is 542 MB).
for b in "$PACK"/kernels_cuda_test "$PACK"/kernels_cpu_test "$PACK"/kernels_bench \
         "$PACK"/backend_cuda_test "$PACK"/ciubm_model_cuda_test "$PACK"/trainer \
         "$PACK"/ps_server "$PACK"/gen_synthetic "$PACK"/ingest_content; do
  ldd "$b" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    case "$name" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libstdc++.so*|\
      libgcc_s.so*|libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|\
      libnccl.so*) ;;
      *) cp -L -n "$path" "$PACK/lib/$name" ;;
    esac
  done
done

# The libraries go compressed (OpenBLAS alone is 36 MB; the shard's
# RocksDB and gRPC bring the pack past 64 MiB uncompressed).
tar -C "$PACK" -czf "$PACK/lib.tgz" lib
rm -rf "$PACK/lib"

cat > "$PACK/run_all.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine: bash .gpu_pack/run_all.sh (report in $OUT/report.txt).
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$HERE/out}"
mkdir -p "$OUT"
REPORT="$OUT/report.txt"
[ -d "$HERE/lib" ] || tar -C "$HERE" -xzf "$HERE/lib.tgz"
export LD_LIBRARY_PATH="$HERE/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
: > "$REPORT"
log() { echo "$@" | tee -a "$REPORT"; }
log "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | tee -a "$REPORT"
# Probe first: without a device, say so and stop.
probe=$("$HERE/kernels_bench" --gpu --probe 2>&1 | grep 'gpu skipped' || true)
if [ -n "$probe" ]; then
  log "FAILED: $probe"
  "$HERE/kernels_cuda_test" 2>&1 | tail -3 >> "$REPORT"
  exit 1
fi
rc=0
log "== kernels_cuda_test"
"$HERE/kernels_cuda_test" 2>&1 | tee -a "$REPORT" | tail -3; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
log "== kernels_cpu_test"
"$HERE/kernels_cpu_test" 2>&1 | tail -3 | tee -a "$REPORT"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$SAN" ]; then
  log "== compute-sanitizer memcheck (small and degenerate shapes)"
  "$SAN" --tool memcheck --error-exitcode 9 "$HERE/kernels_cuda_test" \
    --gtest_filter='*/0:*/1:*/3:Degenerate/*:CudaErrorsTest.*' 2>&1 | tail -5 | tee -a "$REPORT"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
else
  log "compute-sanitizer: not found"
fi
log "== backend_cuda_test (CudaBackend vs CpuBackend, op by op)"
"$HERE/backend_cuda_test" 2>&1 | tee -a "$REPORT" | tail -3; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
log "== ciubm_model_cuda_test (the model on the GPU vs the CPU, every variant)"
"$HERE/ciubm_model_cuda_test" 2>&1 | tee -a "$REPORT" | tail -3; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
log "== trainer: --device=cuda vs --device=cpu (din_mim, gen_synthetic ${MIM_GPU_SAMPLES:=100000} samples)"
T=$(mktemp -d)
"$HERE/gen_synthetic" --output_dir="$T/data" --num_samples="$MIM_GPU_SAMPLES" --seed=1 > "$T/gen.txt" 2>&1
# The shard prints "... listening on HOST:PORT" as its first line; read it
# from the pipe (waits for that line, at most 60 s).
exec 3< <("$HERE/ps_server" --data_dir="$T/shard" --port=0 --threads=16 2> "$T/shard.err")
SHARD_PID=$!
if read -r -t 60 line <&3 && [[ "$line" == *"listening on "* ]]; then
  PS_ADDR=${line##*listening on }
  "$HERE/ingest_content" --ps="$PS_ADDR" --vectors="$T/data/item_vectors.tsv" \
    --table=content --content_version=1 2>&1 | tail -1 | tee -a "$REPORT"
  # device:cuda_math:overlap_copies. TF32 against strict fp32 on the real
  # tensor cores (the emulator only models the operand rounding), and the
  # overlapped input copies' samples/s against copies at each step.
  for run in cpu:fp32:true cuda:fp32:false cuda:fp32:true cuda:tf32:true; do
    IFS=: read -r dev math overlap <<< "$run"
    name="${dev}_${math}_${overlap}"
    "$HERE/trainer" --ps="$PS_ADDR" --train="$T/data/train.tsv" --test="$T/data/test.tsv" \
      --content_table=content --device="$dev" --cuda_math="$math" --overlap_copies="$overlap" \
      --threads="$(nproc)" --progress=false \
      --table_prefix="${name}_" --metrics_out="$T/metrics_$name.json" > "$T/train_$name.txt" 2>&1
    trc=$?
    tail -2 "$T/train_$name.txt" | tee -a "$REPORT"
    if [ "$trc" = 0 ]; then
      python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("trainer --device=%s %s: %.0f samples/s, AUC %.5f, logloss %.5f (%d train samples)" % (m["device"], sys.argv[2], m["train_samples_per_sec"], m["auc"], m["logloss"], m["train_samples"]))' \
        "$T/metrics_$name.json" "--cuda_math=$math --overlap_copies=$overlap" | tee -a "$REPORT"
    else
      log "trainer $name FAILED (exit $trc)"; rc=1
    fi
  done
else
  log "FAILED: the shard did not start: $line $(tail -3 "$T/shard.err")"; rc=1
fi
kill "$SHARD_PID" 2>/dev/null; wait "$SHARD_PID" 2>/dev/null
log "== GPU benchmark (C++ CUDA twins vs PyTorch eager, same GPU)"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  python3 "$HERE/kernels_bench_torch.py" --bench "$HERE/kernels_bench" --gpu --skip-cpu \
    --threads "$(nproc)" 2>&1 | tee -a "$REPORT"
else
  log "PyTorch with CUDA not available; C++ only:"
  "$HERE/kernels_bench" --gpu --no-cpu 2>&1 | tee -a "$REPORT"
fi
log "== exit $rc"
exit $rc
RUN
chmod +x "$PACK/run_all.sh"

du -sh "$PACK"
SIZE=$(du -sb "$PACK" | cut -f1)
if [ "$SIZE" -gt $((64 * 1024 * 1024)) ]; then
  echo "pack is $SIZE bytes, over 64 MiB" >&2
  exit 1
fi
echo "Local dry run (expects 'no CUDA device' here):"
OUT=$(mktemp -d) bash "$PACK/run_all.sh" || echo "(dry run exited $? as expected without a GPU)"
echo
echo 'Device call to make:'
echo '  run(command="bash .gpu_pack/run_all.sh", carry=[".gpu_pack"])'
