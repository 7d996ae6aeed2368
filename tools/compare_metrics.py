#!/usr/bin/env python3
"""Prints a comparison table of trainer metrics JSON files (one per model)."""
import json
import sys


def main(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            m = json.load(f)
        rows.append((m.get("model", p), m))
    cols = ["auc", "gauc", "logloss", "cold_auc", "train_samples_per_sec"]
    print(f"{'model':<14}" + "".join(f"{c:>24}" for c in cols))
    for name, m in rows:
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(f"{v:>24.4f}" if isinstance(v, (int, float)) else f"{'-':>24}")
        print(f"{name:<14}" + "".join(cells))
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
