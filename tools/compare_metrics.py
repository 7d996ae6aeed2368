#!/usr/bin/env python3
"""Prints a comparison table of trainer metrics JSON files (one per model)."""
import json
import os
import sys


def main(paths):
    loaded = []
    for p in paths:
        with open(p) as f:
            loaded.append((p, json.load(f)))
    # A run is labelled by its model; runs of one model (e.g. din_mim on the
    # plain and on the C-SFT table) by their file name instead.
    models = [m.get("model", p) for p, m in loaded]
    rows = []
    for (p, m), model in zip(loaded, models):
        stem = os.path.splitext(os.path.basename(p))[0]
        rows.append((stem if models.count(model) > 1 else model, m))
    width = max(14, max(len(name) for name, _ in rows) + 2)
    cols = ["auc", "gauc", "logloss", "cold_auc", "train_samples_per_sec"]
    print(f"{'model':<{width}}" + "".join(f"{c:>24}" for c in cols))
    for name, m in rows:
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(f"{v:>24.4f}" if isinstance(v, (int, float)) else f"{'-':>24}")
        print(f"{name:<{width}}" + "".join(cells))
    base = dict(rows).get("din")
    if base and isinstance(base.get("auc"), (int, float)):
        for name, m in rows:
            if name != "din" and isinstance(m.get("auc"), (int, float)):
                print(f"{name}: AUC {m['auc'] - base['auc']:+.4f} vs din, "
                      f"cold AUC {(m.get('cold_auc') or 0) - (base.get('cold_auc') or 0):+.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: compare_metrics.py METRICS.json...")
    main(sys.argv[1:])
