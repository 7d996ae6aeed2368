#!/usr/bin/python3
"""The item-set summary of tools/csft_holdout_report.py (--sets): 3-seed
means per set, C-SFT - din and C-SFT - plain, the target check (both
halves at once) and the refusals of incomplete folders. Run by Bazel as an
sh_test (Debian's python3, unittest); no processes, small files in
$TEST_TMPDIR.
"""

import contextlib
import io
import json
import os
import sys
import unittest

SRCDIR = os.path.join(os.environ.get("TEST_SRCDIR", "."), "mim")
TMP = os.environ.get("TEST_TMPDIR", "/tmp/csft_holdout_report_test")
sys.path.insert(0, os.path.join(SRCDIR, "tools"))
import csft_holdout_report as hr  # noqa: E402

HELD = {5, 6}


# Scores of the two positives and the two negatives on held items for each
# held-out AUC the fixtures use: the count of (positive, negative) pairs
# ordered right, of 4.
SCORES = {0.0: ([0.1, 0.1], [0.9, 0.9]),
          0.25: ([0.4, 0.1], [0.3, 0.9]),
          0.5: ([0.9, 0.1], [0.5, 0.5]),
          0.75: ([0.9, 0.4], [0.3, 0.5]),
          1.0: ([0.9, 0.9], [0.1, 0.1])}


def predictions(held_auc):
    """Four predictions on held items (5, 6) whose AUC is `held_auc`, and
    one on an item that is not held (7: ignored)."""
    pos, neg = SCORES[held_auc]
    rows = [(5, 1, pos[0]), (6, 1, pos[1]), (5, 0, neg[0]), (6, 0, neg[1]),
            (7, 1, 0.0)]
    return "#user\titem\tlabel\tscore\n" + "".join(
        f"1\t{i}\t{l}\t{s}\n" for i, l, s in rows)


def make_set(name, runs):
    """runs: {run name: {seed: (auc, held-out auc)}} -> a folder."""
    out = os.path.join(TMP, name)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    with open(os.path.join(out, "holdout_items.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in sorted(HELD)))
    for run, seeds in runs.items():
        for seed, (auc, held) in seeds.items():
            base = os.path.join(out, "runs", f"{run}_s{seed}")
            with open(base + ".json", "w") as f:
                json.dump({"auc": auc, "gauc": auc - 0.01}, f)
            with open(base + ".pred.tsv", "w") as f:
                f.write(predictions(held))
    return out


class PredictionsTest(unittest.TestCase):
    def test_the_fixture_gives_the_asked_auc(self):
        os.makedirs(TMP, exist_ok=True)
        for target in (0.0, 0.25, 0.5, 0.75, 1.0):
            path = os.path.join(TMP, "p.tsv")
            with open(path, "w") as f:
                f.write(predictions(target))
            self.assertEqual(hr.holdout_auc(path, HELD), (target, 4, 2))


class SetsTest(unittest.TestCase):
    def test_means_and_differences_of_one_set(self):
        d = make_set("a", {
            "din_plain": {1: (0.68, 0.5), 2: (0.70, 0.5)},
            "din_mim_plain": {1: (0.69, 0.5), 2: (0.69, 0.75)},
            "din_mim_mdrop50": {1: (0.70, 0.75), 2: (0.72, 1.0)},
            "din_mim_other": {1: (0.5, 0.0)},  # another tag: not read
        })
        r = hr.set_summary(hr.collect(d)[0], "mdrop50", d)
        self.assertEqual(r["seeds"], [1, 2])
        self.assertAlmostEqual(r["din"][0], 0.69)
        self.assertEqual(r["din"][1], 0.5)
        self.assertAlmostEqual(r["csft"][0], 0.71)
        self.assertEqual(r["csft"][1], 0.875)
        self.assertAlmostEqual(r["csft-din"][0], 0.02)
        self.assertEqual(r["csft-din"][1], 0.375)
        self.assertAlmostEqual(r["csft-plain"][0], 0.02)
        self.assertEqual(r["csft-plain"][1], 0.25)

    def test_ctr_tag_picks_the_din_mim_runs_and_keeps_din(self):
        d = make_set("t", {
            "din_plain": {1: (0.68, 0.5)},
            "din_mim_plain": {1: (0.60, 0.0)},  # without the suffix: not read
            "din_mim_mdrop50": {1: (0.60, 0.0)},
            "din_mim_plain_knn30": {1: (0.69, 0.75)},
            "din_mim_mdrop50_knn30": {1: (0.70, 1.0)},
        })
        r = hr.set_summary(hr.collect(d)[0], "mdrop50", d, "_knn30")
        self.assertAlmostEqual(r["plain"][0], 0.69)
        self.assertEqual(r["csft"][1], 1.0)
        self.assertEqual(r["csft-din"][1], 0.5)
        with self.assertRaisesRegex(ValueError, r"no runs named din_mim_plain_knn3_s<seed>"):
            hr.set_summary(hr.collect(d)[0], "mdrop50", d, "_knn3")

    def test_a_missing_run_is_refused_with_the_folder_and_name(self):
        d = make_set("b", {"din_plain": {1: (0.68, 0.5)},
                           "din_mim_plain": {1: (0.69, 0.5)}})
        with self.assertRaisesRegex(ValueError, r"b: no runs named din_mim_mdrop50_s<seed>"):
            hr.set_summary(hr.collect(d)[0], "mdrop50", d)

    def test_runs_over_different_seeds_are_refused(self):
        d = make_set("c", {"din_plain": {1: (0.68, 0.5), 2: (0.68, 0.5)},
                           "din_mim_plain": {1: (0.69, 0.5), 2: (0.69, 0.5)},
                           "din_mim_mdrop50": {1: (0.70, 0.5)}})
        with self.assertRaisesRegex(ValueError, r"din_mim_mdrop50 has seeds \[1\]"):
            hr.set_summary(hr.collect(d)[0], "mdrop50", d)

    def test_target_needs_both_halves_at_once(self):
        self.assertTrue(hr.meets((0.004, 0.02), 0.004, 0.02))
        self.assertFalse(hr.meets((0.010, 0.019), 0.004, 0.02))
        self.assertFalse(hr.meets((0.0039, 0.05), 0.004, 0.02))

    def test_table_counts_the_sets_that_meet_the_target(self):
        def row(auc_diff, held_diff):
            base = (0.68, 0.6)
            csft = (base[0] + auc_diff, base[1] + held_diff)
            return {"din": base, "plain": base, "csft": csft,
                    "csft-din": (auc_diff, held_diff),
                    "csft-plain": (auc_diff, held_diff)}
        rows = [("s1", row(0.006, 0.03)), ("s2", row(0.006, -0.01)),
                ("s3", row(0.002, 0.05))]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            mean = hr.print_sets(rows, 0.004, 0.02)
        lines = buf.getvalue().splitlines()
        self.assertTrue(lines[2].startswith("| s1 |") and lines[2].endswith("| yes |"))
        self.assertTrue(lines[3].endswith("| no |") and lines[4].endswith("| no |"))
        # Mean +0.0047 / +0.0233: met on average, by one set of three.
        self.assertAlmostEqual(mean["csft-din"][0], 0.014 / 3)
        self.assertAlmostEqual(mean["csft-din"][1], 0.07 / 3)
        self.assertIn("| mean of 3 |", lines[5])
        self.assertTrue(lines[5].endswith("| yes (sets: 1 of 3) |"))
        # The spread between sets: AUC differences 0.006, 0.006, 0.002.
        self.assertTrue(lines[6].startswith("| sd over sets |"))
        self.assertIn("| 0.0023 / 0.0306 | 0.0023 / 0.0306 | |", lines[6])


if __name__ == "__main__":
    os.makedirs(TMP, exist_ok=True)
    unittest.main()
