#!/usr/bin/python3
"""Plots a bench/ps_soak CSV: shard RSS (top) and p99 latency per op (bottom)
over the run.

  python3 bench/ps_soak_plot.py soak.csv soak.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: ps_soak_plot.py SOAK.csv OUT.png")
    with open(sys.argv[1]) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no samples")
    minutes = [float(r["seconds"]) / 60 for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    top.plot(minutes, [float(r["rss_mb"]) for r in rows], color="black")
    top.set_ylabel("shard RSS (MB)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    for op in ("pull", "push", "upsert"):
        if f"{op}_p99_ms" in rows[0]:
            bottom.plot(minutes, [float(r[f"{op}_p99_ms"]) for r in rows],
                        label=f"{op} p99")
    bottom.set_ylabel("latency per 10 s window (ms)")
    bottom.set_xlabel("minutes")
    bottom.set_yscale("log")
    bottom.grid(alpha=0.3)
    bottom.legend()
    errors = sum(int(r[f"{op}_errors"]) for r in rows
                 for op in ("pull", "push", "upsert") if f"{op}_errors" in r)
    fig.suptitle(f"ps_soak: {len(rows)} samples, {errors} errors")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
