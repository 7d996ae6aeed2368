#!/usr/bin/env python3
"""Plots trainer metrics JSON files (//worker:trainer --metrics_out) side by side.

Left: the training loss curve of each run (mean loss per --loss_every batches,
x = training samples seen). Right: test AUC per item-frequency decile (test
samples sorted by their item's training-sample count, 10 equal groups, rarest
first), with each run's cold-item AUC as a dashed line.

  python3 tools/plot_results.py --output=compare.png din.json din_mim.json
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label_of(path, metrics):
    """'<file stem>: <model>, N workers (AUC x)': runs of one model differ."""
    name = f"{os.path.splitext(os.path.basename(path))[0]}: {metrics.get('model', '?')}"
    workers = (metrics.get("worker") or {}).get("num_workers", 1)
    if workers > 1:
        name += f", {workers} workers"
    auc = metrics.get("auc")
    return f"{name} (AUC {auc:.4f})" if isinstance(auc, (int, float)) else name


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("metrics", nargs="+", help="metrics JSON files")
    args = parser.parse_args(argv)

    runs = []
    for path in args.metrics:
        with open(path) as f:
            runs.append((path, json.load(f)))

    fig, (loss_ax, decile_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (path, m) in enumerate(runs):
        color = f"C{i % 10}"
        label = label_of(path, m)
        curve = m.get("loss_curve") or []
        if curve:
            loss_ax.plot([p["samples"] for p in curve], [p["loss"] for p in curve],
                         color=color, label=label)
        groups = m.get("auc_by_item_frequency") or []
        xs = [g.get("group", gi) for gi, g in enumerate(groups)]
        ys = [g.get("auc") for g in groups]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            decile_ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                           color=color, label=label)
        cold = m.get("cold_auc")
        if isinstance(cold, dict):
            cold = cold.get("auc")
        if isinstance(cold, (int, float)):
            decile_ax.axhline(cold, color=color, linestyle="--", linewidth=1,
                              label=f"{label_of(path, m).split(' (')[0]} cold")
    loss_ax.set_xlabel("training samples (of worker 0 when data-parallel)")
    loss_ax.set_ylabel("training loss (window mean)")
    loss_ax.set_title("Training loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)

    if runs and runs[0][1].get("auc_by_item_frequency"):
        ticks = []
        for gi, g in enumerate(runs[0][1]["auc_by_item_frequency"]):
            lo, hi = g.get("min_count", 0), g.get("max_count", 0)
            ticks.append(f"{gi}\n{lo}" if lo == hi else f"{gi}\n{lo}-{hi}")
        decile_ax.set_xticks(range(len(ticks)))
        decile_ax.set_xticklabels(ticks, fontsize=7)
    decile_ax.set_xlabel("item-frequency decile (rarest first) / train count range")
    decile_ax.set_ylabel("test AUC")
    decile_ax.set_title("AUC by item training frequency")
    decile_ax.grid(alpha=0.3)
    decile_ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
