#!/usr/bin/env python3
"""Runs the model comparison of docs/RESULTS.md end to end on real shards.

  /usr/bin/python3 tools/experiments.py --data=movielens:/path/to/movielens-100k \
      --out=runs/ml --seeds=1,2,3

Steps: prepare the samples (MovieLens construction of docs/DATA_FORMAT.md or
the synthetic generator), train fastText content vectors and upsert them,
choose the dense learning rate and the number of epochs on a validation tail
of the training period (never on the test part), then train every model and
ablation for each seed on the full training period and evaluate on the test
part. Writes every run's metrics JSON, summary.json, results.md (mean and std
over seeds) and results.png. Needs the binaries built (bazel build).
"""
import argparse
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bazel-bin")

BACKBONES = ["avgpool", "din", "sim"]
ABLATIONS = [("din_mim", []), ("din_mim", ["--no_id_interest"]),
             ("din_mim", ["--no_content_interest"]), ("din_mim", ["--no_fusion"])]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, **kw):
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


class Shards:
    """Two real //ps:server processes on loopback, killed on exit."""

    def __init__(self, out, n=2):
        self.procs, addrs = [], []
        for i in range(n):
            d = os.path.join(out, f"ps{i}")
            shutil.rmtree(d, ignore_errors=True)
            logf = open(os.path.join(out, f"ps{i}.log"), "w")
            p = subprocess.Popen([f"{BIN}/ps/server", "--port=0", "--host=127.0.0.1",
                                  f"--shard_index={i}", f"--num_shards={n}",
                                  f"--data_dir={d}"], stdout=subprocess.PIPE,
                                 stderr=logf, text=True)
            self.procs.append(p)
            line = p.stdout.readline()  # blocks until the shard prints its address
            m = re.search(r"listening on (\S+)", line)
            if not m:
                self.close()
                raise RuntimeError(f"shard {i} did not start: {line!r} (see {out}/ps{i}.log)")
            addrs.append(m.group(1))
        self.addresses = ",".join(addrs)

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


def prepare(args, data_dir):
    if args.data.startswith("movielens:"):
        run([f"{BIN}/tools/prepare_movielens", f"--input_dir={args.data[len('movielens:'):]}",
             f"--output_dir={data_dir}", f"--test_start={args.test_start}"])
    elif args.data == "synthetic":
        run([f"{BIN}/tools/gen_synthetic", f"--output_dir={data_dir}"])
    else:
        sys.exit("--data must be synthetic or movielens:DIR")
    run([f"{BIN}/tools/content_vectors", f"--item_text={data_dir}/item_text.tsv",
         f"--output={data_dir}/content_vectors.tsv", "--dim=64",
         f"--epoch={args.fasttext_epochs}"])


def train(args, shards, data_dir, out, name, model, seed, extra, lr, epochs,
          batch_size, validation=False):
    metrics = os.path.join(out, "runs", f"{name}.json")
    if os.path.exists(metrics) and not args.force:
        return json.load(open(metrics))
    cmd = [f"{BIN}/worker/trainer", f"--ps={shards.addresses}",
           f"--train={data_dir}/train.tsv", f"--model={model}", f"--seed={seed}",
           f"--lr={lr}", f"--epochs={epochs}", f"--batch_size={batch_size}",
           f"--threads={args.threads}",
           "--content_table=item_content", f"--table_prefix={name}_",
           f"--metrics_out={metrics}", "--progress=false"] + extra
    if validation:
        cmd.append(f"--validation_tail_fraction={args.validation_fraction}")
    else:
        cmd.append(f"--test={data_dir}/test.tsv")
    run(cmd)
    return json.load(open(metrics))


def auc_of(m, key):
    v = m.get(key)
    if isinstance(v, dict):
        v = v.get("auc")
    return v


def mean_std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    mu = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return mu, sd


def fmt(ms):
    mu, sd = ms
    return "-" if mu is None else f"{mu:.4f} ± {sd:.4f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="movielens:" + os.path.join(ROOT, "..", "shared", "data", "movielens-100k"))
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "experiments"))
    ap.add_argument("--test_start", default="889000000")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--lrs", default="0.001,0.003,0.01")
    ap.add_argument("--epoch_choices", default="1,2,4,8")
    ap.add_argument("--batch_sizes", default="256,1024")
    ap.add_argument("--validation_fraction", default="0.1")
    ap.add_argument("--fasttext_epochs", default="25")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--force", action="store_true", help="rerun runs whose metrics exist")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    data_dir = os.path.join(out, "data")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]

    if not os.path.exists(os.path.join(data_dir, "content_vectors.tsv")) or args.force:
        prepare(args, data_dir)
    shards = Shards(out)
    try:
        run([f"{BIN}/tools/ingest_content", f"--ps={shards.addresses}",
             f"--vectors={data_dir}/content_vectors.tsv", "--table=item_content", "--content_version=1"])

        # Hyperparameters on the validation tail of the training period only:
        # one setting for every model, the grid point with the best mean
        # validation AUC of din (ID only) and din_mim (CiUBM).
        grid = list(itertools.product(args.lrs.split(","), args.epoch_choices.split(","),
                                      args.batch_sizes.split(",")))
        scores = {}
        for lr, ep, bs in grid:
            aucs = []
            for family in ["din", "din_mim"]:
                m = train(args, shards, data_dir, out, f"val_{family}_lr{lr}_ep{ep}_bs{bs}",
                          family, 1, [], lr, ep, bs, validation=True)
                aucs.append(m.get("auc"))
            log(f"validation lr={lr} epochs={ep} batch={bs}: din {aucs[0]} din_mim {aucs[1]}")
            if None not in aucs:
                scores[(lr, ep, bs)] = sum(aucs) / len(aucs)
        if not scores:
            sys.exit("experiments: no validation run produced an AUC (see the run logs above)")
        (lr, epochs, batch_size), best = max(scores.items(), key=lambda kv: kv[1])
        choice = {f"lr={k[0]} epochs={k[1]} batch={k[2]}": round(v, 4) for k, v in scores.items()}
        log(f"chosen on validation: lr={lr} epochs={epochs} batch={batch_size} (mean AUC {best:.4f})")

        models = [f"{b}{s}" for b in BACKBONES for s in ["", "_ct", "_mim"]]
        results = {}
        for model in models:
            results[model] = [train(args, shards, data_dir, out, f"{model}_s{s}", model, s,
                                    [], lr, epochs, batch_size) for s in seeds]
        ablation = {}
        for model, extra in ABLATIONS:
            label = model + "".join(f" {e}" for e in extra)
            ablation[label] = [train(args, shards, data_dir, out,
                                     f"abl_{model}{''.join(e.replace('--', '_') for e in extra)}_s{s}",
                                     model, s, extra, lr, epochs, batch_size) for s in seeds]
    finally:
        shards.close()

    write_report(out, args, (lr, epochs, batch_size), choice, results, ablation)


def write_report(out, args, chosen, choice, results, ablation):
    lr, epochs, batch_size = chosen
    def row(name, runs):
        cells = [fmt(mean_std([auc_of(m, k) for m in runs])) for k in ["auc", "gauc"]]
        cells.append(fmt(mean_std([m.get("logloss") for m in runs])))
        cells.append(fmt(mean_std([auc_of(m, "cold_auc") for m in runs])))
        cells.append(f"{mean_std([m.get('train_samples_per_sec') for m in runs])[0] or 0:.0f}")
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [f"Data: `{args.data}`, test_start={args.test_start}; seeds {args.seeds}; "
             f"dense lr={lr}, epochs={epochs}, batch size {batch_size} chosen on the last "
             f"{args.validation_fraction} of the training period by the mean validation AUC "
             f"of din and din_mim.", "", "Validation grid (mean AUC of din and din_mim): " +
             ", ".join(f"{k}: {v}" for k, v in choice.items()), "",
             "| model | AUC | GAUC | logloss | cold AUC | train samples/s |",
             "|---|---|---|---|---|---|"]
    lines += [row(n, r) for n, r in results.items()]
    lines += ["", "Ablation (CiUBM on DIN):", "",
              "| variant | AUC | GAUC | logloss | cold AUC | train samples/s |",
              "|---|---|---|---|---|---|"]
    lines += [row(n, r) for n, r in ablation.items()]
    lines += ["", "AUC by target-item training frequency (10 groups, rarest first; mean over seeds):", ""]
    first = next(iter(results.values()))[0]
    groups = first.get("auc_by_item_frequency", [])
    hdr = "| model | " + " | ".join(f"{g['min_count']}-{g['max_count']} (n={g['n']})" for g in groups) + " |"
    lines += [hdr, "|---" * (len(groups) + 1) + "|"]
    for name, runs in results.items():
        cells = []
        for gi in range(len(groups)):
            cells.append(fmt(mean_std([(m["auc_by_item_frequency"][gi] or {}).get("auc")
                                       for m in runs if len(m.get("auc_by_item_frequency", [])) > gi]))[:6])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(out, "results.md"), "w").write(text)
    json.dump({"lr": lr, "epochs": epochs, "batch_size": batch_size, "validation": choice, "results": results, "ablation": ablation},
              open(os.path.join(out, "summary.json"), "w"))
    print(text)
    try:
        plot(out, results)
    except Exception as e:  # the table is the result; the plot is a convenience
        log(f"plot failed: {e}")


def plot(out, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5))
    for name, runs in results.items():
        ys = []
        n = len(runs[0].get("auc_by_item_frequency", []))
        for gi in range(n):
            ys.append(mean_std([runs_m["auc_by_item_frequency"][gi].get("auc") for runs_m in runs])[0])
        a1.plot(range(1, n + 1), [y if y is not None else float("nan") for y in ys], marker="o", label=name)
        a2.bar(name, mean_std([auc_of(m, "auc") for m in runs])[0] or 0)
    a1.set_xlabel("target item training-frequency group (1 = rarest)")
    a1.set_ylabel("AUC")
    a1.legend(fontsize=7)
    a2.set_ylabel("test AUC (mean over seeds)")
    a2.tick_params(axis="x", rotation=60)
    lo = min((mean_std([auc_of(m, 'auc') for m in r])[0] or 1) for r in results.values())
    a2.set_ylim(lo - 0.02, None)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "results.png"), dpi=100)


if __name__ == "__main__":
    main()
