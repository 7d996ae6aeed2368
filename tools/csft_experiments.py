#!/usr/bin/env python3
"""C-SFT evaluation of docs/RESULTS.md (C-SFT section), end to end on real shards.

  /usr/bin/python3 tools/csft_experiments.py --data_dir=runs/csft_ml/data \
      --out=runs/csft_ml --seeds=1,2,3

data_dir holds train.tsv, test.tsv (tools/prepare_movielens) and
content_vectors.tsv (tools/content_vectors). Per seed: //worker/csft:csft
trains on train.tsv only (selection on held-out items), evaluates retrieval
on test.tsv's pairs (warm vs new positive items, plain vs C-SFT) and upserts
its vectors into item_content_csft_s<seed>; then din, din_ct and din_mim
train with the plain table and with the C-SFT table and are evaluated on
test.tsv. Writes csft_s<seed>.json, runs/<name>.json and summary.md.
Needs the binaries built (bazel build).
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from experiments import BIN, Shards, log, run  # noqa: E402

MODELS = ["din", "din_ct", "din_mim"]


def ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--csft_flags", default="", help="extra flags for csft, space-separated")
    ap.add_argument("--tag", default="csft", help="name of this C-SFT variant in the outputs")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--skip_plain", action="store_true", help="train CTR models on C-SFT vectors only")
    args = ap.parse_args()
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    d = args.data_dir
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    shards = Shards(args.out)
    try:
        run([f"{BIN}/tools/ingest_content", f"--ps={shards.addresses}",
             f"--vectors={d}/content_vectors.tsv", "--table=item_content",
             "--content_version=1"])
        retrieval, ctr = {}, {}
        for seed in seeds:
            table = f"item_content_{args.tag}_s{seed}"
            metrics = os.path.join(args.out, f"{args.tag}_s{seed}.json")
            run([f"{BIN}/worker/csft/csft", f"--train={d}/train.tsv",
                 f"--vectors={d}/content_vectors.tsv", f"--genres_from={d}/test.tsv",
                 f"--eval_samples={d}/test.tsv", f"--seed={seed}",
                 f"--out_vectors={args.out}/{args.tag}_s{seed}.vec",
                 f"--encoder_out={args.out}/{args.tag}_s{seed}.encoder",
                 f"--metrics_out={metrics}", f"--ps={shards.addresses}",
                 f"--table={table}", "--content_version=1"]
                + args.csft_flags.split())
            retrieval[seed] = json.load(open(metrics))
            for model in models:
                variants = [("plain", "item_content"), (args.tag, table)]
                if args.skip_plain or model == "din":
                    variants = variants[1:] if model != "din" else variants[:1]
                for vname, vtable in variants:
                    name = f"{model}_{vname}_s{seed}"
                    out = os.path.join(args.out, "runs", f"{name}.json")
                    if not os.path.exists(out):
                        cmd = [f"{BIN}/worker/trainer", f"--ps={shards.addresses}",
                               f"--train={d}/train.tsv", f"--test={d}/test.tsv",
                               f"--model={model}", f"--seed={seed}", "--threads=2",
                               f"--table_prefix={name}_", f"--metrics_out={out}",
                               "--progress=false"]
                        if model != "din":
                            cmd.append(f"--content_table={vtable}")
                        run(cmd)
                    ctr.setdefault((model, vname), []).append(json.load(open(out)))
    finally:
        shards.close()

    lines = [f"C-SFT variant `{args.tag}` ({args.csft_flags or 'defaults'}), seeds {args.seeds}", "",
             "Retrieval on the test period's pairs (recall over all items):", "",
             "| positive items | pairs | plain @10 | C-SFT @10 | plain @50 | C-SFT @50 |",
             "|---|---|---|---|---|---|"]
    for kind in ["warm", "new"]:
        t = [retrieval[s]["test"][kind] for s in seeds]
        lines.append(f"| {kind} | {t[0]['plain']['pairs']} | {ms([x['plain']['recall_at_10'] for x in t])} | "
                     f"{ms([x['csft']['recall_at_10'] for x in t])} | {ms([x['plain']['recall_at_50'] for x in t])} | "
                     f"{ms([x['csft']['recall_at_50'] for x in t])} |")
    v0 = [retrieval[s]["epochs"][0] for s in seeds]
    vb = [retrieval[s]["epochs"][retrieval[s]["best_epoch"]] for s in seeds]
    lines += ["", "Held-out validation (training period; selection on `valid_new`):", "",
              "| set | plain @50 | selected @50 | selected epochs |", "|---|---|---|---|",
              f"| valid_new | {ms([x['valid_new']['recall_at_50'] for x in v0])} | "
              f"{ms([x['valid_new']['recall_at_50'] for x in vb])} | "
              f"{', '.join(str(retrieval[s]['best_epoch']) for s in seeds)} |",
              f"| valid_warm | {ms([x['valid_warm']['recall_at_50'] for x in v0])} | "
              f"{ms([x['valid_warm']['recall_at_50'] for x in vb])} | |",
              f"", f"C-SFT training pairs/s: {ms([retrieval[s]['pairs_per_second'] for s in seeds])}", "",
              "| model | vectors | AUC | GAUC | logloss | cold AUC |", "|---|---|---|---|---|---|"]
    for (model, vname), runs in sorted(ctr.items()):
        lines.append(f"| {model} | {vname} | {ms([r.get('auc') for r in runs])} | {ms([r.get('gauc') for r in runs])} | "
                     f"{ms([r.get('logloss') for r in runs])} | {ms([r.get('cold_auc') for r in runs])} |")
    open(os.path.join(args.out, f"summary_{args.tag}.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
