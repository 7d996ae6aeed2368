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
Needs the binaries built (bazel build; --bin=DIR for a copy of them).

--phase=validation makes every choice without the test file: C-SFT trains
on the training period before the trainer's validation tail (the last 10%
of its time span, written as train_head.tsv / train_tail.tsv; retrieval is
evaluated on the tail's pairs), and the CTR models train on train.tsv with
--validation_tail_fraction=0.1, so they are scored on the tail, whose cold
items neither C-SFT nor the CTR model saw. --concat also trains the content
models on [plain; C-SFT] / sqrt(2) (both vectors as one 2*dim input).

--holdout_item_fraction=F (e.g. 0.2) holds a seeded random fraction of the
items (--holdout_seed; the same set for every model seed and variant) out
of every training input: their samples are dropped from the CTR trainer's
training file and from C-SFT's (so no interest pair is mined with them),
and they are removed from the behaviour column of the remaining training
samples. The evaluation files are left whole, so the test period's (or the
validation tail's) samples on those items are new-item samples by
construction: about F of the evaluation samples instead of the few items
that are new by date. The text model (content_vectors.tsv) is not re-run:
an item's text exists when the item is ingested, so its plain vector is
available for held-out items too. With it, the validation phase trains on
the filtered head and evaluates on the whole tail (--train/--test, the
same cutoff as --validation_tail_fraction), and every CTR run writes its
predictions, from which the AUC on the held-out items' samples is computed
(`holdout_auc`, with its sample and positive counts).
"""
import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiments  # noqa: E402
from experiments import Shards, log, run  # noqa: E402

BIN = experiments.BIN
TAIL_FRACTION = 0.1


def read_vectors(path):
    rows = {}
    with open(path) as f:
        header = f.readline()
        for line in f:
            item, vals = line.rstrip("\n").split("\t")
            rows[int(item)] = [float(x) for x in vals.split(" ")]
    return header, rows


def write_concat(plain_path, tuned_path, out_path):
    """[plain; tuned] / sqrt(2) per item: both unit vectors, one unit row."""
    _, plain = read_vectors(plain_path)
    _, tuned = read_vectors(tuned_path)
    dim = len(next(iter(plain.values()))) + len(next(iter(tuned.values())))
    with open(out_path, "w") as f:
        f.write(f"#mim-vectors v1\tdim={dim}\tmodality=plain_csft\n")
        for item in sorted(plain):
            if item not in tuned:
                continue
            v = [x / math.sqrt(2) for x in plain[item] + tuned[item]]
            f.write(f"{item}\t" + " ".join(f"{x:.9g}" for x in v) + "\n")


def split_tail(train_path, out_dir):
    """train_head.tsv / train_tail.tsv at the trainer's validation cutoff
    (worker/trainer.cc ValidationCutoff: min + ceil(0.9 * span))."""
    with open(train_path) as f:
        header = f.readline()
        lines = f.readlines()
    ts = [int(l.split("\t", 1)[0]) for l in lines]
    lo, hi = min(ts), max(ts)
    cutoff = lo + math.ceil((1.0 - TAIL_FRACTION) * (hi - lo))
    head = os.path.join(out_dir, "train_head.tsv")
    tail = os.path.join(out_dir, "train_tail.tsv")
    with open(head, "w") as h, open(tail, "w") as t:
        h.write(header)
        t.write(header)
        for l, x in zip(lines, ts):
            (t if x >= cutoff else h).write(l)
    return head, tail

def holdout_items(paths, fraction, seed):
    """A seeded random `fraction` of the target items of `paths`, sorted
    first so the set depends on the seed and the data only."""
    items = set()
    for path in paths:
        with open(path) as f:
            f.readline()
            for line in f:
                items.add(int(line.split("\t", 3)[2]))
    items = sorted(items)
    k = round(fraction * len(items))
    return set(random.Random(seed).sample(items, k)), len(items)


def filter_samples(in_path, out_path, held):
    """Copies a mim-samples file without the samples whose target is in
    `held` and without `held` items in the behaviour column (the last).
    Returns (samples kept, samples dropped, behaviour entries dropped)."""
    kept = dropped = stripped = 0
    with open(in_path) as f, open(out_path, "w") as out:
        out.write(f.readline())
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if int(cols[2]) in held:
                dropped += 1
                continue
            behaviour = [b for b in cols[-1].split(",") if b]
            keep = [b for b in behaviour if int(b) not in held]
            stripped += len(behaviour) - len(keep)
            cols[-1] = ",".join(keep)
            out.write("\t".join(cols) + "\n")
            kept += 1
    return kept, dropped, stripped


def holdout_auc(predictions_path, held):
    """AUC (ties count half) over the predictions whose item is in `held`:
    (auc, samples, positives); auc None for one class only."""
    pos, neg = [], []
    with open(predictions_path) as f:
        f.readline()
        for line in f:
            user, item, label, score = line.split("\t")
            if int(item) in held:
                (pos if int(label) == 1 else neg).append(float(score))
    if not pos or not neg:
        return None, len(pos) + len(neg), len(pos)
    ranked = sorted([(x, 1) for x in pos] + [(x, 0) for x in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + j + 1) / 2.0  # mean 1-based rank of the tie group
        rank_sum += mid * sum(lab for _, lab in ranked[i:j])
        i = j
    auc = (rank_sum - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg))
    return auc, len(pos) + len(neg), len(pos)


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
    ap.add_argument("--phase", default="test", choices=["test", "validation"])
    ap.add_argument("--concat", action="store_true", help="also [plain; C-SFT] tables")
    ap.add_argument("--bin", default=None, help="directory of the binaries (default bazel-bin)")
    ap.add_argument("--holdout_item_fraction", type=float, default=0.0,
                    help="fraction of items held out of every training input (0: off)")
    ap.add_argument("--holdout_seed", type=int, default=1)
    ap.add_argument("--trainer_flags", default="",
                    help="extra flags for every CTR run, space-separated (e.g. --target_id_dropout=0.2)")
    ap.add_argument("--ctr_tag", default="",
                    help="suffix of the CTR run names, so runs with other --trainer_flags sit beside them")
    ap.add_argument("--csft_workers", type=int, default=1,
                    help="run C-SFT as this many data-parallel csft processes through the shards "
                         "(--num_workers; worker 0 writes the outputs)")
    ap.add_argument("--csft_from", default=None,
                    help="take <tag>_s<seed>.vec/.json from this earlier --out of the same phase, data and "
                         "holdout instead of training C-SFT again (the vectors are ingested as they are)")
    args = ap.parse_args()
    global BIN
    if args.bin:
        BIN = experiments.BIN = os.path.abspath(args.bin)
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    d = args.data_dir
    validation = args.phase == "validation"
    csft_train, eval_samples = f"{d}/train.tsv", f"{d}/test.tsv"
    genres_from = f"{d}/test.tsv"
    if validation:
        csft_train, eval_samples = split_tail(f"{d}/train.tsv", args.out)
        genres_from = f"{d}/train.tsv"
    ctr_train = f"{d}/train.tsv"
    ctr_split = (["--validation_tail_fraction=0.1"] if validation
                 else [f"--test={d}/test.tsv"])
    held = set()
    holdout_note = ""
    if args.holdout_item_fraction > 0:
        held, n_items = holdout_items([f"{d}/train.tsv", f"{d}/test.tsv"],
                                      args.holdout_item_fraction, args.holdout_seed)
        filtered = os.path.join(args.out, "train_holdout.tsv")
        kept, dropped, stripped = filter_samples(csft_train, filtered, held)
        csft_train = ctr_train = filtered
        ctr_split = [f"--test={eval_samples}"]
        # Genres are item metadata, like the text: from every file.
        genres_from = f"{d}/train.tsv,{d}/test.tsv"
        with open(eval_samples) as f:
            f.readline()
            ev = [l.split("\t", 5) for l in f]
        ev_held = [r for r in ev if int(r[2]) in held]
        holdout_note = (
            f"held out: {len(held)} of {n_items} items (seed {args.holdout_seed}); "
            f"training samples kept {kept}, dropped {dropped}, behaviour entries "
            f"removed {stripped}; evaluation samples {len(ev)}, on held-out items "
            f"{len(ev_held)} ({sum(int(r[3]) for r in ev_held)} positive)")
        log(holdout_note)
        with open(os.path.join(args.out, "holdout_items.txt"), "w") as f:
            f.write("\n".join(str(i) for i in sorted(held)) + "\n")
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
            if args.csft_from:
                src = os.path.join(args.csft_from, f"{args.tag}_s{seed}")
                run([f"{BIN}/tools/ingest_content", f"--ps={shards.addresses}",
                     f"--vectors={src}.vec", f"--table={table}", "--content_version=1"])
                retrieval[seed] = json.load(open(f"{src}.json"))
            else:
                common = [f"{BIN}/worker/csft/csft", f"--train={csft_train}",
                          f"--vectors={d}/content_vectors.tsv", f"--genres_from={genres_from}",
                          f"--seed={seed}", f"--ps={shards.addresses}"] + args.csft_flags.split()
                workers = []
                if args.csft_workers > 1:
                    group = [f"--num_workers={args.csft_workers}",
                             f"--worker_prefix=csftw_{args.tag}_s{seed}"]
                    common += group
                    for w in range(1, args.csft_workers):
                        cmd = common + [f"--worker_index={w}"]
                        log(" ".join(cmd))
                        workers.append(subprocess.Popen(cmd))
                try:
                    run(common + [f"--eval_samples={eval_samples}",
                                  f"--out_vectors={args.out}/{args.tag}_s{seed}.vec",
                                  f"--encoder_out={args.out}/{args.tag}_s{seed}.encoder",
                                  f"--metrics_out={metrics}", f"--table={table}",
                                  "--content_version=1"])
                except BaseException:
                    for p in workers:  # they would wait for worker 0 until their timeout
                        p.kill()
                    raise
                for w, p in enumerate(workers, start=1):
                    if p.wait() != 0:
                        raise RuntimeError(f"csft worker {w} exited {p.returncode}")
                retrieval[seed] = json.load(open(metrics))
            concat_table = f"item_content_{args.tag}_concat_s{seed}"
            if args.concat:
                cpath = f"{args.out}/{args.tag}_concat_s{seed}.vec"
                write_concat(f"{d}/content_vectors.tsv",
                             f"{args.out}/{args.tag}_s{seed}.vec", cpath)
                run([f"{BIN}/tools/ingest_content", f"--ps={shards.addresses}",
                     f"--vectors={cpath}", f"--table={concat_table}",
                     "--content_version=1"])
            for model in models:
                variants = [("plain", "item_content"), (args.tag, table)]
                if args.concat:
                    variants.append((f"{args.tag}_concat", concat_table))
                if args.skip_plain or model == "din":
                    variants = variants[1:] if model != "din" else variants[:1]
                for vname, vtable in variants:
                    name = f"{model}_{vname}{args.ctr_tag}_s{seed}"
                    out = os.path.join(args.out, "runs", f"{name}.json")
                    preds = os.path.join(args.out, "runs", f"{name}.pred.tsv")
                    if not os.path.exists(out):
                        cmd = [f"{BIN}/worker/trainer", f"--ps={shards.addresses}",
                               f"--train={ctr_train}", *ctr_split,
                               f"--model={model}", f"--seed={seed}", "--threads=2",
                               f"--table_prefix={name}_", f"--metrics_out={out}",
                               "--progress=false"] + args.trainer_flags.split()
                        if model != "din":
                            cmd.append(f"--content_table={vtable}")
                        if held:
                            cmd.append(f"--predictions_out={preds}")
                        run(cmd)
                    result = json.load(open(out))
                    if held:
                        (result["holdout_auc"], result["holdout_n"],
                         result["holdout_positives"]) = holdout_auc(preds, held)
                    ctr.setdefault((model, vname), []).append(result)
    finally:
        shards.close()

    period = "validation tail" if validation else "test period"
    lines = [f"C-SFT variant `{args.tag}` ({args.csft_flags or 'defaults'}), seeds {args.seeds}, {args.phase}"
             + (f"; CTR runs `{args.ctr_tag}` with {args.trainer_flags}" if args.trainer_flags else ""), "",
             *([holdout_note, ""] if holdout_note else []),
             f"Retrieval on the {period}'s pairs (recall over all items):", "",
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
              "| model | vectors | AUC | GAUC | logloss | cold AUC | held-out AUC (n, pos) |",
              "|---|---|---|---|---|---|---|"]
    for (model, vname), runs in sorted(ctr.items()):
        h = (f"{ms([r.get('holdout_auc') for r in runs])} ({runs[0]['holdout_n']}, "
             f"{runs[0]['holdout_positives']})" if held else "-")
        lines.append(f"| {model} | {vname} | {ms([r.get('auc') for r in runs])} | {ms([r.get('gauc') for r in runs])} | "
                     f"{ms([r.get('logloss') for r in runs])} | {ms([r.get('cold_auc') for r in runs])} | {h} |")
    open(os.path.join(args.out, f"summary_{args.tag}{args.ctr_tag}.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
