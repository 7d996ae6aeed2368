#!/usr/bin/env python3
"""Tables and plot of the item-held-out C-SFT evaluation (docs/RESULTS.md,
C-SFT third round), from the output folders of
`tools/csft_experiments.py --holdout_item_fraction=F`:

  /usr/bin/python3 tools/csft_holdout_report.py --val=runs/csft11_val \
      --test=runs/csft11_test --png=docs/results_csft_holdout.png

Per folder and CTR run name (<model>_<vectors>_s<seed>): AUC, GAUC and the
AUC on the held-out items' samples (from the run's predictions), mean ± sd
over seeds; per C-SFT tag: warm / new recall@10 and @50. Prints markdown.
"""
import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from csft_experiments import holdout_auc  # noqa: E402


def ms(xs):
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m):
    return "-" if m[0] is None else f"{m[0]:.4f} ± {m[1]:.4f}"


def collect(out):
    held = {int(x) for x in open(os.path.join(out, "holdout_items.txt")) if x.strip()}
    ctr = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in sorted(glob.glob(os.path.join(out, "runs", "*_s[0-9]*.json"))):
        name = re.match(r"(.*)_s(\d+)\.json$", os.path.basename(path)).group(1)
        r = json.load(open(path))
        auc, n, pos = holdout_auc(path[:-len(".json")] + ".pred.tsv", held)
        ctr[name]["auc"].append(r["auc"])
        ctr[name]["gauc"].append(r["gauc"])
        ctr[name]["held"].append(auc)
        ctr[name]["n"] = (n, pos)
    ret = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in sorted(glob.glob(os.path.join(out, "*_s[0-9]*.json"))):
        tag = re.match(r"(.*)_s(\d+)\.json$", os.path.basename(path)).group(1)
        t = json.load(open(path))["test"]
        for kind in ("warm", "new"):
            for v in ("plain", "csft"):
                for k in ("recall_at_10", "recall_at_50"):
                    ret[tag][(kind, v, k)].append(t[kind][v][k])
            ret[tag][(kind, "pairs")] = t[kind]["plain"]["pairs"]
    return ctr, ret


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--val", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    data = {"validation": collect(args.val), "test": collect(args.test)}
    for phase, (ctr, ret) in data.items():
        print(f"\n{phase}\n")
        print("| run | AUC | GAUC | held-out AUC | n (pos) |\n|---|---|---|---|---|")
        for name, m in sorted(ctr.items()):
            print(f"| {name} | {fmt(ms(m['auc']))} | {fmt(ms(m['gauc']))} | "
                  f"{fmt(ms(m['held']))} | {m['n'][0]} ({m['n'][1]}) |")
        print("\n| tag | warm @10 | warm @50 | new @10 | new @50 | pairs warm/new |"
              "\n|---|---|---|---|---|---|")
        for i, (tag, m) in enumerate(sorted(ret.items())):
            if i == 0:  # the plain vectors: the same in every tag
                print(f"| plain | " + " | ".join(
                    fmt(ms(m[(kd, 'plain', k)])) for kd in ("warm", "new")
                    for k in ("recall_at_10", "recall_at_50")) + " | |")
            print(f"| {tag} | " + " | ".join(
                fmt(ms(m[(kd, 'csft', k)])) for kd in ("warm", "new")
                for k in ("recall_at_10", "recall_at_50"))
                + f" | {m[('warm', 'pairs')]}/{m[('new', 'pairs')]} |")
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        for ax, (phase, (ctr, _)) in zip(axes, data.items()):
            for name, m in sorted(ctr.items()):
                if "_abl_" in name:  # ablations: in the tables only
                    continue
                a, h = ms(m["auc"]), ms(m["held"])
                ax.errorbar(a[0], h[0], xerr=a[1], yerr=h[1], fmt="o", capsize=3)
                ax.annotate(name, (a[0], h[0]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
            n, pos = next(iter(ctr.values()))["n"]
            ax.set_title(f"{phase}: mean ± sd, 3 seeds")
            ax.set_xlabel("AUC (all samples)")
            ax.set_ylabel(f"AUC on held-out items ({n} samples)")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
