#!/usr/bin/env python3
"""Tables and plot of the item-held-out C-SFT evaluation (docs/RESULTS.md,
C-SFT third round), from the output folders of
`tools/csft_experiments.py --holdout_item_fraction=F`:

  /usr/bin/python3 tools/csft_holdout_report.py --val=runs/csft11_val \
      --test=runs/csft11_test --png=docs/results_csft_holdout.png

Per folder and CTR run name (<model>_<vectors>_s<seed>): AUC, GAUC and the
AUC on the held-out items' samples (from the run's predictions), mean ± sd
over seeds; per C-SFT tag: warm / new recall@10 and @50. Prints markdown.
--val may be left out (test folder only).

--sets=DIR,DIR,... (one test folder per held-out item set, each with the
runs din_plain, din_mim_plain and din_mim_<--tag> over the same seeds)
instead prints, per set and as the mean (and sd) over sets, the means over
seeds of AUC and held-out AUC and the differences C-SFT - din and C-SFT -
plain, and whether each set meets the target (C-SFT - din at least --target_auc on AUC
and at least --target_heldout on held-out AUC, both at once); --png then
plots each set's C-SFT - din differences against the target.
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
        m = re.match(r"(.*)_s(\d+)\.json$", os.path.basename(path))
        name = m.group(1)
        r = json.load(open(path))
        auc, n, pos = holdout_auc(path[:-len(".json")] + ".pred.tsv", held)
        ctr[name]["seeds"].append(int(m.group(2)))
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


def set_summary(ctr, tag, where, ctr_tag=""):
    """The means over seeds of one item set's din, plain-vector din_mim and
    C-SFT din_mim (`din_mim_<tag>`) runs, and the differences; with
    `ctr_tag` (csft_experiments.py --ctr_tag) the two din_mim runs are
    `din_mim_plain<ctr_tag>` and `din_mim_<tag><ctr_tag>`, `din` stays. Raises
    ValueError, naming `where`, when a run is missing, a held-out AUC could
    not be computed, or the three runs' seeds differ."""
    names = {"din": "din_plain", "plain": f"din_mim_plain{ctr_tag}",
             "csft": f"din_mim_{tag}{ctr_tag}"}
    seeds = None
    row = {}
    for key, name in names.items():
        if name not in ctr:
            raise ValueError(f"{where}: no runs named {name}_s<seed> "
                             f"(have: {', '.join(sorted(ctr)) or 'none'})")
        m = ctr[name]
        if seeds is None:
            seeds = sorted(m["seeds"])
        elif sorted(m["seeds"]) != seeds:
            raise ValueError(f"{where}: {name} has seeds {sorted(m['seeds'])}, "
                             f"{names['din']} has {seeds}; the means need the same seeds")
        if any(h is None for h in m["held"]):
            raise ValueError(f"{where}: {name} has a seed without a held-out AUC "
                             "(its held-out samples have one class only)")
        row[key] = (statistics.mean(m["auc"]), statistics.mean(m["held"]))
    for ref in ("din", "plain"):
        row[f"csft-{ref}"] = tuple(c - r for c, r in zip(row["csft"], row[ref]))
    row["seeds"] = seeds
    return row


def meets(diff, target_auc, target_heldout):
    """Whether a (AUC, held-out AUC) difference reaches both targets."""
    return diff[0] >= target_auc and diff[1] >= target_heldout


def print_sets(rows, target_auc, target_heldout):
    """Markdown: one line per item set, then the mean over sets."""
    print("| item set | din AUC / held-out | plain AUC / held-out | C-SFT AUC / held-out "
          "| C-SFT - din | C-SFT - plain | target met |\n|---|---|---|---|---|---|---|")
    for label, r in rows:
        cells = [f"{r[k][0]:.4f} / {r[k][1]:.4f}" for k in ("din", "plain", "csft")]
        cells += [f"{r[k][0]:+.4f} / {r[k][1]:+.4f}" for k in ("csft-din", "csft-plain")]
        ok = meets(r["csft-din"], target_auc, target_heldout)
        print(f"| {label} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    mean = {k: tuple(statistics.mean(r[k][i] for _, r in rows) for i in (0, 1))
            for k in ("din", "plain", "csft", "csft-din", "csft-plain")}
    n_ok = sum(meets(r["csft-din"], target_auc, target_heldout) for _, r in rows)
    cells = [f"{mean[k][0]:.4f} / {mean[k][1]:.4f}" for k in ("din", "plain", "csft")]
    cells += [f"{mean[k][0]:+.4f} / {mean[k][1]:+.4f}" for k in ("csft-din", "csft-plain")]
    ok = meets(mean["csft-din"], target_auc, target_heldout)
    print(f"| mean of {len(rows)} | " + " | ".join(cells)
          + f" | {'yes' if ok else 'no'} (sets: {n_ok} of {len(rows)}) |")
    if len(rows) > 1:  # the spread between item sets, not between seeds
        sd = {k: tuple(statistics.stdev(r[k][i] for _, r in rows) for i in (0, 1))
              for k in ("din", "plain", "csft", "csft-din", "csft-plain")}
        print("| sd over sets | " + " | ".join(
            f"{sd[k][0]:.4f} / {sd[k][1]:.4f}"
            for k in ("din", "plain", "csft", "csft-din", "csft-plain")) + " | |")
    return mean


def plot_sets(rows, mean, target_auc, target_heldout, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for label, r in rows:
        ax.plot(*r["csft-din"], "o", color="tab:blue")
        ax.annotate(label, r["csft-din"], fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.plot(*mean["csft-din"], "*", color="tab:red", markersize=14,
            label=f"mean of {len(rows)} item sets")
    ax.axvline(target_auc, color="gray", ls="--")
    ax.axhline(target_heldout, color="gray", ls="--", label="target (both at once: upper right)")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("C-SFT din_mim - din: AUC (3-seed means)")
    ax.set_ylabel("C-SFT din_mim - din: held-out-item AUC")
    ax.set_title("Test period, one point per held-out item set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--val", default=None)
    ap.add_argument("--test", default=None)
    ap.add_argument("--sets", default=None,
                    help="test folders, one per held-out item set, comma-separated")
    ap.add_argument("--tag", default="mdrop50", help="the C-SFT variant's tag (--sets)")
    ap.add_argument("--ctr_tag", default="",
                    help="the CTR runs' suffix (csft_experiments.py --ctr_tag; --sets)")
    ap.add_argument("--target_auc", type=float, default=0.004)
    ap.add_argument("--target_heldout", type=float, default=0.02)
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    if args.sets is not None:
        if args.val or args.test:
            sys.exit("--sets replaces --val and --test: give one or the other")
        dirs = [d for d in args.sets.split(",") if d]
        if not dirs:
            sys.exit("--sets: no folder given")
        rows = []
        try:
            for d in dirs:
                rows.append((os.path.basename(os.path.normpath(d)),
                             set_summary(collect(d)[0], args.tag, d, args.ctr_tag)))
        except (ValueError, OSError) as e:
            sys.exit(f"--sets: {e}")
        mean = print_sets(rows, args.target_auc, args.target_heldout)
        if args.png:
            plot_sets(rows, mean, args.target_auc, args.target_heldout, args.png)
        return
    if not args.test:
        sys.exit("need --test (and optionally --val), or --sets")
    data = {}
    if args.val:
        data["validation"] = collect(args.val)
    data["test"] = collect(args.test)
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
        fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 5), squeeze=False)
        for ax, (phase, (ctr, _)) in zip(axes[0], data.items()):
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
