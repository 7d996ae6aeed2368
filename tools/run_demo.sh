#!/usr/bin/env bash
# The main job, end to end on one machine:
#   1. start two local parameter-server shards,
#   2. generate the built-in synthetic dataset (or prepare MovieLens),
#   3. train fastText content vectors on the item texts (representation center),
#   4. upsert them into the shards' content table,
#   5. train din, din_ct and din_mim with their embeddings on the shards,
#      and, with din_mim, C-SFT-tuned content vectors (//worker/csft:csft)
#      upserted as item_content_csft and din_mim trained on them,
#   6. print the comparison table and write runs/demo/compare.png,
#   7. serve din_mim (//serving:server): Predict calls through the Python
#      client, a brand-new item upserted and scored with its content at once,
#      and the measured upsert-to-visible time.
# Every process runs with security on (docs/OPERATIONS.md, "Security"): a
# test CA and certificates (tools/make_test_certs.sh) and bearer tokens are
# made under OUT/security; shards and the serving tier require TLS with
# client certificates and a token on every call; every client passes its
# certificate and token (admin for writers, read for the read-only calls).
#
# Usage: tools/run_demo.sh [--data=synthetic|movielens:DIR] [--scale=default|full]
#                          [--models=din,din_ct,din_mim] [--epochs=N] [--out=DIR]
set -euo pipefail
# --out and --data=movielens:DIR are relative to where the script was called
# from; the defaults and everything else are relative to the repository root.
CALLER=$PWD
from_caller() { [[ "$1" == /* ]] && echo "$1" || echo "$CALLER/$1"; }
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DATA=synthetic
SCALE=default
MODELS=din,din_ct,din_mim
EPOCHS=2
OUT=runs/demo
TEST_START=889000000
for arg in "$@"; do
  case "$arg" in
    --data=*) DATA=${arg#--data=} ;;
    --scale=*) SCALE=${arg#--scale=} ;;
    --models=*) MODELS=${arg#--models=} ;;
    --epochs=*) EPOCHS=${arg#--epochs=} ;;
    --out=*) OUT=${arg#--out=}
             [[ -n "$OUT" ]] || { echo "run_demo: --out is empty" >&2; exit 2; }
             OUT=$(from_caller "$OUT") ;;
    --test_start=*) TEST_START=${arg#--test_start=} ;;
    -h|--help) sed -n 2,16p "$ROOT/tools/run_demo.sh"; exit 0 ;;
    *) echo "run_demo: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ "$DATA" == movielens:?* ]]; then DATA=movielens:$(from_caller "${DATA#movielens:}"); fi
case "$SCALE" in default|full) ;; *) echo "run_demo: --scale must be default or full" >&2; exit 2 ;; esac

if [[ -t 1 ]]; then step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else step() { printf '\n== %s\n' "$*"; }; fi

step "setup (apt, only what is missing)"
tools/setup.sh

step "build"
bazel build --jobs=2 //ps:server //worker:trainer //tools:ps_admin //tools:gen_synthetic \
  //tools:prepare_movielens //tools:content_vectors //tools:ingest_content \
  //serving:server //worker/csft:csft 2>&1 | tail -2
BIN=$ROOT/bazel-bin

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Test CA, certificates and tokens (mode 600) for this run only.
SEC=$OUT/security
tools/make_test_certs.sh "$SEC"
(
  umask 077
  ADMIN_TOKEN=$(openssl rand -hex 32)
  READ_TOKEN=$(openssl rand -hex 32)
  printf '# ROLE TOKEN (docs/OPERATIONS.md, "Security")\nadmin %s\nread %s\n' \
    "$ADMIN_TOKEN" "$READ_TOKEN" >"$SEC/tokens.txt"
  echo "$ADMIN_TOKEN" >"$SEC/admin.token"
  echo "$READ_TOKEN" >"$SEC/read.token"
)
SERVER_SEC=(--tls_cert="$SEC/server.pem" --tls_key="$SEC/server.key"
            --tls_client_ca="$SEC/ca.pem" --auth_tokens="$SEC/tokens.txt")
TLS_CLIENT=(--tls_ca="$SEC/ca.pem" --tls_client_cert="$SEC/client.pem"
            --tls_client_key="$SEC/client.key")
ADMIN=("${TLS_CLIENT[@]}" --auth_token_file="$SEC/admin.token")
READER=("${TLS_CLIENT[@]}" --auth_token_file="$SEC/read.token")

step "1/7 starting 2 parameter-server shards"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
ADDRS=()
for i in 0 1; do
  "$BIN/ps/server" --port=0 --host=127.0.0.1 --shard_index=$i --num_shards=2 \
    --data_dir="$OUT/ps$i" "${SERVER_SEC[@]}" >"$OUT/ps$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 0 1; do
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$OUT/ps$i.log" | head -1)
    [[ -n "$addr" ]] && break
    kill -0 "${PIDS[$i]}" 2>/dev/null || { cat "$OUT/ps$i.log"; echo "shard $i died" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$addr" ]] || { echo "shard $i did not start" >&2; exit 1; }
  ADDRS+=("$addr")
done
PS=$(IFS=,; echo "${ADDRS[*]}")
echo "shards: $PS (TLS with client certificates, tokens)"
"$BIN/tools/ps_admin" --ps="$PS" "${READER[@]}" health

DATA_DIR=$OUT/data
if [[ "$DATA" == synthetic ]]; then
  step "2/7 generating synthetic data ($SCALE)"
  if [[ "$SCALE" == full ]]; then
    "$BIN/tools/gen_synthetic" --output_dir="$DATA_DIR" --num_samples=10000000 \
      --num_items=1000000 --num_users=100000
  else
    "$BIN/tools/gen_synthetic" --output_dir="$DATA_DIR"
  fi
elif [[ "$DATA" == movielens:* ]]; then
  step "2/7 preparing MovieLens from ${DATA#movielens:} (test_start=$TEST_START)"
  "$BIN/tools/prepare_movielens" --input_dir="${DATA#movielens:}" \
    --output_dir="$DATA_DIR" --test_start="$TEST_START"
else
  echo "run_demo: --data must be synthetic or movielens:DIR" >&2; exit 2
fi

step "3/7 training fastText content vectors on the item texts"
# One thread keeps the default run reproducible to the bit; the full-scale
# run (1M item texts) uses every core.
FT_THREADS=1
[[ "$SCALE" == full ]] && FT_THREADS=$(nproc)
"$BIN/tools/content_vectors" --item_text="$DATA_DIR/item_text.tsv" \
  --output="$DATA_DIR/content_vectors.tsv" --encoder_out="$DATA_DIR/encoder" \
  --threads="$FT_THREADS"  # dim, epochs: the tool's defaults (docs/RESULTS.md)

step "4/7 upserting content vectors into the shards"
"$BIN/tools/ingest_content" --ps="$PS" "${ADMIN[@]}" \
  --vectors="$DATA_DIR/content_vectors.tsv" --table=item_content --content_version=1
"$BIN/tools/ps_admin" --ps="$PS" "${READER[@]}" stats item_content

step "5/7 training ${MODELS//,/, } on the shards"
IFS=, read -r -a MODEL_LIST <<<"$MODELS"
METRICS=()
for m in "${MODEL_LIST[@]}"; do
  echo "-- $m"
  "$BIN/worker/trainer" --ps="$PS" "${ADMIN[@]}" \
    --train="$DATA_DIR/train.tsv" --test="$DATA_DIR/test.tsv" \
    --model="$m" --epochs="$EPOCHS" --content_table=item_content \
    --content_encoder="$DATA_DIR/encoder" --threads=2 \
    --metrics_out="$OUT/$m.json" --model_dir="$OUT/models/$m"
  METRICS+=("$OUT/$m.json")
done
if [[ ",$MODELS," == *",din_mim,"* ]]; then
  # C-SFT: tune the content vectors on the training pairs (selection on
  # held-out items), upsert them as a new table (csft carries the shards'
  # security flags) and train din_mim on it; the manifest names both
  # encoders, so a server of models/din_mim_csft encodes new items (text
  # and genres) into the tuned space.
  echo "-- C-SFT, then din_mim on its table (item_content_csft)"
  "$BIN/worker/csft/csft" --train="$DATA_DIR/train.tsv" \
    --vectors="$DATA_DIR/content_vectors.tsv" --eval_samples="$DATA_DIR/test.tsv" \
    --out_vectors="$OUT/csft_vectors.tsv" --encoder_out="$OUT/csft.encoder" \
    --metrics_out="$OUT/csft.json" --epochs=1 --max_train_pairs=50000 \
    --ps="$PS" "${ADMIN[@]}" --table=item_content_csft --content_version=1
  "$BIN/worker/trainer" --ps="$PS" "${ADMIN[@]}" \
    --train="$DATA_DIR/train.tsv" --test="$DATA_DIR/test.tsv" \
    --model=din_mim --epochs="$EPOCHS" --content_table=item_content_csft \
    --content_encoder="$DATA_DIR/encoder" --csft_encoder="$OUT/csft.encoder" \
    --table_prefix=csft_ --threads=2 --metrics_out="$OUT/din_mim_csft.json" \
    --model_dir="$OUT/models/din_mim_csft"
  METRICS+=("$OUT/din_mim_csft.json")
fi
"$BIN/tools/ps_admin" --ps="$PS" "${READER[@]}" tables

step "6/7 comparison"
/usr/bin/python3 tools/compare_metrics.py "${METRICS[@]}"
/usr/bin/python3 tools/plot_results.py --output="$OUT/compare.png" "${METRICS[@]}"
echo "plot: $OUT/compare.png"

SERVE=din_mim
[[ ",$MODELS," == *",$SERVE,"* ]] || SERVE=${MODEL_LIST[-1]}
step "7/7 serving $SERVE: Predict, a new item upserted and scored, upsert-to-visible"
# Admin token to the shards: UpsertItem writes to the content table.
"$BIN/serving/server" --port=0 --ps="$PS" --model_dir="$OUT/models/$SERVE" \
  --metrics_port=0 "${SERVER_SEC[@]}" --ps_tls_ca="$SEC/ca.pem" \
  --ps_tls_client_cert="$SEC/client.pem" --ps_tls_client_key="$SEC/client.key" \
  --ps_auth_token_file="$SEC/admin.token" >"$OUT/serving.out" 2>"$OUT/serving.log" &
PIDS+=($!)
SERVING=""
for _ in $(seq 1 600); do
  SERVING=$(sed -n 's/^serving listening on \([^ ]*\).*/\1/p' "$OUT/serving.out" | head -1)
  [[ -n "$SERVING" ]] && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$OUT/serving.log"; echo "serving died" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$SERVING" ]] || { echo "serving did not start" >&2; exit 1; }
echo "serving: $SERVING ($(sed -n 's/^metrics listening on /metrics: http:\/\//p' "$OUT/serving.out")/metrics)"
/usr/bin/python3 tools/serving_demo.py --target="$SERVING" --data="$DATA_DIR" "${ADMIN[@]}"
