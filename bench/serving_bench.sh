#!/usr/bin/env bash
# The serving tier's benchmark, everything local on this machine:
#   1. build (-c opt) and copy the binaries under OUT/bin;
#   2. start 2 parameter-server shards;
#   3. generate the synthetic default dataset (tools/gen_synthetic);
#   4. train 64-d fastText content vectors with their encoder (--encoder_out)
#      and upsert them into the shards' content table;
#   5. train din_mim (32-d ID embeddings, --epochs, default 1) on the shards;
#   6. start //serving:server on that model (--metrics_port=0);
#   7. Predict load at rising QPS (tools/load_test, open loop) for
#      100 candidates x 50 behaviours and for 1000 x 50, --step_s seconds a
#      step, a series stopping once p99 passes --stop_p99_ms (or a request
#      fails), except that the 100-candidate series always runs up to
#      --target_qps (the target's rate) so that its figure exists;
#   8. the scoring part of a request, C++ (//bench:serving_score_bench) vs
#      the same model's forward in PyTorch (bench/serving_score_torch.py),
#      alternating rounds, rows from the shards, at 1 and 2 threads;
#   9. upsert-to-visible (load_test --mode=upsert_visible), idle and under a
#      background Predict load.
# Writes OUT/serving_bench.md (tables) and OUT/serving_bench.json, plus each
# step's own JSON under OUT/load/ and OUT/score/, and the logs.
#
# Usage: bench/serving_bench.sh [--out=DIR] [--step_s=10]
#          [--qps_100=50,100,...] [--qps_1000=10,20,...] [--stop_p99_ms=20]
#          [--target_qps=500]
#          [--rounds=5] [--reps=200] [--upserts=200] [--background_qps=200]
#          [--epochs=1] [--threads=1,2] [--openblas_threads=N]
#          [--openblas_coretype=NAME] [--skip_build]
# --openblas_threads=N starts the server with OPENBLAS_NUM_THREADS=N (default:
# not set, i.e. OpenBLAS's own default of one thread per core).
# --openblas_coretype=NAME sets OPENBLAS_CORETYPE (e.g. SKYLAKEX: AVX-512
# kernels) for the server and for both sides of the scoring comparison
# (default: not set, OpenBLAS picks; docs/BENCHMARKS.md "Serving" says why).
# Needs python3-torch (Debian) for step 8; the rest is the project's own.
set -euo pipefail
CALLER=$PWD
from_caller() { [[ "$1" == /* ]] && echo "$1" || echo "$CALLER/$1"; }
cd "$(dirname "$0")/.."
ROOT=$(pwd)

OUT=runs/serving_bench
STEP_S=10
QPS_100=50,100,200,300,500,750,1000,1500,2000,3000
QPS_1000=10,20,50,100,150,200,300,500,750,1000
STOP_P99_MS=20
TARGET_QPS=500
ROUNDS=5
REPS=200
UPSERTS=200
BACKGROUND_QPS=200
EPOCHS=1
THREADS=1,2
BUILD=1
OPENBLAS_THREADS=
OPENBLAS_CORE=
for arg in "$@"; do
  case "$arg" in
    --out=*) OUT=$(from_caller "${arg#--out=}") ;;
    --step_s=*) STEP_S=${arg#--step_s=} ;;
    --qps_100=*) QPS_100=${arg#--qps_100=} ;;
    --qps_1000=*) QPS_1000=${arg#--qps_1000=} ;;
    --stop_p99_ms=*) STOP_P99_MS=${arg#--stop_p99_ms=} ;;
    --target_qps=*) TARGET_QPS=${arg#--target_qps=} ;;
    --rounds=*) ROUNDS=${arg#--rounds=} ;;
    --reps=*) REPS=${arg#--reps=} ;;
    --upserts=*) UPSERTS=${arg#--upserts=} ;;
    --background_qps=*) BACKGROUND_QPS=${arg#--background_qps=} ;;
    --epochs=*) EPOCHS=${arg#--epochs=} ;;
    --threads=*) THREADS=${arg#--threads=} ;;
    --openblas_threads=*) OPENBLAS_THREADS=${arg#--openblas_threads=} ;;
    --openblas_coretype=*) OPENBLAS_CORE=${arg#--openblas_coretype=} ;;
    --skip_build) BUILD=0 ;;
    -h|--help) sed -n 2,34p "$ROOT/bench/serving_bench.sh"; exit 0 ;;
    *) echo "serving_bench: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

step() { echo; echo "== $(date +%H:%M:%S) $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"; }
PY=/usr/bin/python3
OPENBLAS=/usr/lib/x86_64-linux-gnu/libopenblas.so.0

TARGETS=(//ps:server //worker:trainer //tools:gen_synthetic //tools:content_vectors
         //tools:ingest_content //tools:ps_admin //serving:server //tools:load_test
         //bench:serving_score_bench)
if [[ $BUILD == 1 ]]; then
  step "build (-c opt)"
  bazel build -c opt --jobs=2 "${TARGETS[@]}" 2>&1 | tail -2
fi
rm -rf "$OUT"
mkdir -p "$OUT"/{bin,load,score,upsert}
OUT=$(cd "$OUT" && pwd)
# A copy, so another build of the tree cannot swap a binary mid-run.
# Named package_target (ps_server, serving_server, tools_load_test, ...).
for t in "${TARGETS[@]}"; do
  p=${t#//}
  cp "$ROOT/bazel-out/k8-opt/bin/${p/://}" "$OUT/bin/${p//[\/:]/_}"
done
BIN=$OUT/bin
{ echo "start $(date -Is)"; echo "host $(nproc) cores, $(uname -r)";
  echo "load_average_at_start $(cut -d' ' -f1-3 /proc/loadavg)";
  echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "server_env OPENBLAS_NUM_THREADS=${OPENBLAS_THREADS:-unset} OPENBLAS_CORETYPE=${OPENBLAS_CORE:-unset}"; } >"$OUT/meta.txt"
cat "$OUT/meta.txt"

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Waits for "<what> listening on ADDR" in a log; prints ADDR.
wait_listening() {
  local log=$1 what=$2 pid=$3 addr=""
  for _ in $(seq 1 600); do
    addr=$(sed -n "s|.*${what} listening on \([^ ]*\).*|\1|p" "$log" | head -1)
    [[ -n "$addr" ]] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "serving_bench: $log: process died" >&2; return 1; }
    sleep 0.1
  done
  echo "serving_bench: $log: no '$what listening on' within 60 s" >&2
  return 1
}

step "1/8 starting 2 parameter-server shards"
ADDRS=()
for i in 0 1; do
  "$BIN/ps_server" --port=0 --host=127.0.0.1 --shard_index=$i --num_shards=2 \
    --data_dir="$OUT/ps$i" >"$OUT/ps$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 0 1; do ADDRS+=("$(wait_listening "$OUT/ps$i.log" "ps shard $i/2" "${PIDS[$i]}")"); done
PS=$(IFS=,; echo "${ADDRS[*]}")
echo "shards: $PS"
"$BIN/tools_ps_admin" --ps="$PS" health

DATA=$OUT/data
step "2/8 generating the synthetic default dataset"
"$BIN/tools_gen_synthetic" --output_dir="$DATA"

step "3/8 fastText content vectors (64-d) with their encoder, ingested"
"$BIN/tools_content_vectors" --item_text="$DATA/item_text.tsv" --output="$DATA/content_vectors.tsv" \
  --encoder_out="$DATA/encoder" --dim=64 --threads=2
"$BIN/tools_ingest_content" --ps="$PS" --vectors="$DATA/content_vectors.tsv" \
  --table=item_content --content_version=1

step "4/8 training din_mim (32-d ID, $EPOCHS epoch(s)) on the shards"
"$BIN/worker_trainer" --ps="$PS" --train="$DATA/train.tsv" --test="$DATA/test.tsv" \
  --model=din_mim --id_dim=32 --epochs="$EPOCHS" --content_table=item_content \
  --content_encoder="$DATA/encoder" --threads=2 --progress=false \
  --metrics_out="$OUT/train_metrics.json" --model_dir="$OUT/model" 2>&1 | tail -5

step "5/8 starting //serving:server"
SERVER_ENV=()
[[ -n "$OPENBLAS_THREADS" ]] && SERVER_ENV+=(OPENBLAS_NUM_THREADS="$OPENBLAS_THREADS")
[[ -n "$OPENBLAS_CORE" ]] && SERVER_ENV+=(OPENBLAS_CORETYPE="$OPENBLAS_CORE")
env "${SERVER_ENV[@]}" "$BIN/serving_server" --port=0 --ps="$PS" --model_dir="$OUT/model" \
  --max_candidates=1000 --metrics_port=0 >"$OUT/serving.log" 2>&1 &
SERVER_PID=$!
PIDS+=($SERVER_PID)
TARGET=$(wait_listening "$OUT/serving.log" "serving" "$SERVER_PID")
echo "serving: $TARGET; $(grep -m1 'metrics listening' "$OUT/serving.log" || true)"

METRICS=$(sed -n 's|^metrics listening on \([^ ]*\).*|\1|p' "$OUT/serving.log" | head -1)

# One load step. Runs load_test and, around it, reads the CPU time of the
# server, the shards and load_test itself (/proc, rusage) and the server's
# /metrics (Predict and shard-pull histograms); writes <json>.tier.json and
# prints one line: qps achieved p50 p99 p999 errors, CPU ms per request of
# server shards load_test, ID pulls mean ms and count over 25 ms, content
# pulls mean ms.
load_step() {
  local cands=$1 qps=$2 json=$3
  $PY - "$json" "$SERVER_PID" "${PIDS[0]},${PIDS[1]}" "$METRICS" "$BIN/tools_load_test" \
    --target="$TARGET" --qps="$qps" --duration="$STEP_S" --candidates="$cands" \
    --behaviors=50 --genres=18 --json_out="$json" <<'EOF'
import json, os, re, resource, subprocess, sys, urllib.request
out, server, shards, metrics = sys.argv[1:5]
cmd = sys.argv[5:]
HZ = os.sysconf("SC_CLK_TCK")

def cpu_ms(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / HZ  # utime + stime

def histograms():
    """{(name, label): {"sum", "count", le: cumulative}} of the server."""
    h = {}
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    for m in re.finditer(r'^(mim_serving_shard_pull_seconds|mim_serving_request_seconds)'
                         r'_(bucket|sum|count)\{(\w+)="(\w+)"(?:,le="([^"]+)")?\} (\S+)$',
                         text, re.M):
        name, kind, _, label, le, v = m.groups()
        e = h.setdefault((name, label), {})
        e[kind if kind != "bucket" else float(le)] = float(v)
    return h

def snap():
    return {"server": cpu_ms(server), "shards": sum(cpu_ms(p) for p in shards.split(",")),
            "h": histograms() if metrics else {}}

def delta(a, b, key):
    x, y = a["h"].get(key, {}), b["h"].get(key, {})
    return {k: v - y.get(k, 0) for k, v in x.items()}

def quantile_le(h, q):
    """Upper bound in ms of the bucket holding quantile q (coarse)."""
    n = h.get("count", 0)
    for le in sorted(k for k in h if isinstance(k, float)):
        if n and h[le] >= q * n:
            return le * 1e3
    return 0.0

b = snap()
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out[:-5] + ".txt", "w") as so, open(out[:-5] + ".progress", "w") as se:
    rc = subprocess.call(cmd, stdout=so, stderr=se)
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
a = snap()
if rc != 0:
    sys.exit(f"load_test exited {rc}; see {out[:-5]}.progress")
j = json.load(open(out))
n = max(1, j["ok"] + j["error_total"])
pred = delta(a, b, ("mim_serving_request_seconds", "Predict"))
tier = {"requests": n,
        "cpu_ms_per_request": {
            "server": (a["server"] - b["server"]) / n,
            "shards": (a["shards"] - b["shards"]) / n,
            "load_test": ((r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)) * 1e3 / n},
        "server_predict_ms": {"mean": 1e3 * pred.get("sum", 0) / max(1, pred.get("count", 0)),
                              "p50_le": quantile_le(pred, 0.5), "p99_le": quantile_le(pred, 0.99)}}
for table in ("id", "content"):
    p = delta(a, b, ("mim_serving_shard_pull_seconds", table))
    cnt = p.get("count", 0)
    tier[f"{table}_pulls"] = {"count": cnt, "mean_ms": 1e3 * p.get("sum", 0) / max(1, cnt),
                              "over_25ms": cnt - p.get(0.025, 0)}
json.dump(tier, open(out[:-5] + ".tier.json", "w"), indent=2)
l = j["latency_ms"]
c = tier["cpu_ms_per_request"]
print(j["config"]["qps"], round(j["achieved_qps"], 1), l["p50"], l["p99"], l["p999"], j["error_total"],
      round(c["server"], 3), round(c["shards"], 3), round(c["load_test"], 3),
      round(tier["id_pulls"]["mean_ms"], 2), int(tier["id_pulls"]["over_25ms"]),
      round(tier["content_pulls"]["mean_ms"], 2))
EOF
}

step "6/8 Predict load at rising QPS (open loop, ${STEP_S} s a step, stop once p99 > ${STOP_P99_MS} ms)"
for cands in 100 1000; do
  list=$QPS_100; [[ $cands == 1000 ]] && list=$QPS_1000
  echo "-- $cands candidates x 50 behaviours: warm-up 3 s at 20 qps"
  "$BIN/tools_load_test" --target="$TARGET" --qps=20 --duration=3 --candidates="$cands" \
    --behaviors=50 --genres=18 >/dev/null 2>&1
  IFS=, read -r -a qs <<<"$list"
  for q in "${qs[@]}"; do
    la=$(cut -d' ' -f1 /proc/loadavg)
    read -r tq aq p50 p99 p999 errs cs cp cl idm ids cm < <(load_step "$cands" "$q" "$OUT/load/c${cands}_q${q}.json")
    [[ -n "$tq" ]] || { echo "serving_bench: load step $cands x $q failed" >&2; exit 1; }
    echo "$la" >"$OUT/load/c${cands}_q${q}.loadavg"
    printf '  %4s candidates  qps %6s -> %8s  p50 %8.3f  p99 %8.3f  p999 %8.3f ms  errors %s  (load avg before %s)\n' \
      "$cands" "$tq" "$aq" "$p50" "$p99" "$p999" "$errs" "$la"
    printf '        CPU ms/request: server %s, shards %s, load_test %s; shard pulls: ID mean %s ms (%s over 25 ms), content mean %s ms\n' \
      "$cs" "$cp" "$cl" "$idm" "$ids" "$cm"
    floor=0; [[ $cands == 100 ]] && floor=$TARGET_QPS
    if $PY -c "import sys; sys.exit(0 if (float('$p99') > $STOP_P99_MS or int('$errs') > 0) and float('$q') >= $floor else 1)"; then
      echo "  p99 past ${STOP_P99_MS} ms (or errors): series stops"
      break
    fi
  done
done

step "7/8 scoring: C++ Predict vs PyTorch forward, same batch, alternating rounds"
IFS=, read -r -a ths <<<"$THREADS"
for t in "${ths[@]}"; do
  echo "-- threads $t"
  SCORE_ENV=(LD_PRELOAD="$OPENBLAS")
  [[ -n "$OPENBLAS_CORE" ]] && SCORE_ENV+=(OPENBLAS_CORETYPE="$OPENBLAS_CORE")
  env "${SCORE_ENV[@]}" $PY bench/serving_score_torch.py --bench="$BIN/bench_serving_score_bench" \
    --model_dir="$OUT/model" --ps="$PS" --candidates=100,1000 --threads="$t" \
    --rounds="$ROUNDS" --reps="$REPS" --json_out="$OUT/score/threads$t.json" \
    | tee "$OUT/score/threads$t.txt"
done

step "8/8 upsert-to-visible ($UPSERTS new items; idle, then under ${BACKGROUND_QPS} qps of 100-candidate load)"
for bg in 0 "$BACKGROUND_QPS"; do
  "$BIN/tools_load_test" --target="$TARGET" --mode=upsert_visible --upserts="$UPSERTS" \
    --upsert_texts="$DATA/item_text.tsv" --upsert_item_base=$((2000000000 + bg * 100000)) \
    --candidates=100 --behaviors=50 --genres=18 --background_qps="$bg" \
    --json_out="$OUT/upsert/bg$bg.json" 2>"$OUT/upsert/bg$bg.progress" | tee "$OUT/upsert/bg$bg.txt"
done

echo "end $(date -Is)" >>"$OUT/meta.txt"
echo "load_average_at_end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.txt"

step "report"
$PY - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
meta = dict(l.split(" ", 1) for l in open(f"{out}/meta.txt").read().splitlines())
report = {"meta": meta, "load": [], "score": [], "upsert": []}
md = [f"# Serving benchmark ({meta['start']} .. {meta.get('end', '?')})", "",
      f"{meta['host']}; load average at start {meta['load_average_at_start']}, "
      f"at end {meta.get('load_average_at_end', '?')}; commit {meta['commit']}; "
      f"server {meta['server_env']}", ""]
md += ["## Predict load (open loop; latency from scheduled send, OK replies)", "",
       "| candidates | QPS target | achieved | p50 ms | p99 ms | p999 ms | errors | load avg before "
       "| CPU ms/request: server / shards / load_test | ID pulls: mean ms, over 25 ms | content pulls: mean ms |",
       "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
def key(p):
    b = os.path.basename(p)[1:-5].split("_q")
    return int(b[0]), float(b[1])
for p in sorted((p for p in glob.glob(f"{out}/load/c*_q*.json") if not p.endswith(".tier.json")), key=key):
    j = json.load(open(p))
    la = open(p[:-5] + ".loadavg").read().strip()
    t = json.load(open(p[:-5] + ".tier.json"))
    c = t["cpu_ms_per_request"]
    l = j["latency_ms"]
    row = {"candidates": j["config"]["candidates"], "qps": j["config"]["qps"],
           "achieved_qps": j["achieved_qps"], "p50_ms": l["p50"],
           "p99_ms": l["p99"], "p999_ms": l["p999"], "max_ms": l["max"],
           "errors": j["error_total"], "row_hit_rate": j["replies"]["row_hit_rate"],
           "load_avg_before": float(la), "tier": t}
    report["load"].append(row)
    md.append(f"| {row['candidates']} | {row['qps']:g} | {row['achieved_qps']:.1f} | "
              f"{l['p50']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | {row['errors']} | {la} | "
              f"{c['server']:.2f} / {c['shards']:.2f} / {c['load_test']:.2f} | "
              f"{t['id_pulls']['mean_ms']:.2f}, {t['id_pulls']['over_25ms']:.0f} of {t['id_pulls']['count']:.0f} | "
              f"{t['content_pulls']['mean_ms']:.2f} |")
md += ["", "## Scoring: C++ Predict vs PyTorch forward (same batch, same weights)", "",
       "| candidates | threads | C++ ms (median) | torch ms (median) | ratio (median) | range | C++ ms (min) | torch ms (min) | ratio (min/min) | C++ build ms |",
       "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for p in sorted(glob.glob(f"{out}/score/threads*.json")):
    j = json.load(open(p))
    for s in j["summary"]:
        report["score"].append(dict(s, torch=j["torch"], blas=j["blas"], rows=j["rows"]))
        md.append(f"| {s['candidates']} | {s['threads']} | {s['cpp_ms_median']:.3f} | "
                  f"{s['torch_ms_median']:.3f} | {s['ratio_median']:.2f} | "
                  f"{s['ratio_min']:.2f}-{s['ratio_max']:.2f} | {s['cpp_ms_min']:.3f} | "
                  f"{s['torch_ms_min']:.3f} | {s['min_ratio']:.2f} | {s['build_ms_median']:.3f} |")
md += ["", "## Upsert-to-visible (UpsertItem with a text, then Predict until the new item's score changes)", "",
       "| background qps | items | p50 ms | p99 ms | max ms | UpsertItem p50 / p99 ms | Predicts after upsert (mean / max) | not visible | failed |",
       "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for p in sorted(glob.glob(f"{out}/upsert/bg*.json"), key=lambda p: float(os.path.basename(p)[2:-5])):
    j = json.load(open(p))
    v, u, n = j["visible_ms"], j["upsert_rpc_ms"], j["predicts_after_upsert"]
    report["upsert"].append(j)
    md.append(f"| {j['config']['background_qps']:g} | {v['count']} | {v['p50']:.2f} | {v['p99']:.2f} | "
              f"{v['max']:.2f} | {u['p50']:.2f} / {u['p99']:.2f} | {n['mean']:.2f} / {n['max']} | "
              f"{j['not_visible']} | {j['failed']} |")
open(f"{out}/serving_bench.md", "w").write("\n".join(md) + "\n")
json.dump(report, open(f"{out}/serving_bench.json", "w"), indent=2)
print("\n".join(md))
EOF
echo
echo "written: $OUT/serving_bench.md $OUT/serving_bench.json"
