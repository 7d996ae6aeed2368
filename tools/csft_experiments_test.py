#!/usr/bin/python3
"""The item-held-out split of tools/csft_experiments.py: which items are
held out, what the filtered training file keeps, and the AUC over the
held-out items' predictions. Run by Bazel as an sh_test (Debian's python3,
unittest); no processes, small files in $TEST_TMPDIR.
"""

import os
import sys
import unittest

SRCDIR = os.path.join(os.environ.get("TEST_SRCDIR", "."), "mim")
TMP = os.environ.get("TEST_TMPDIR", "/tmp/csft_experiments_test")
sys.path.insert(0, os.path.join(SRCDIR, "tools"))
import csft_experiments as ce  # noqa: E402

HEADER = ("#mim-samples v1\tts\tuser\titem\tlabel\tage\tgender\toccupation"
          "\tgenres\tbehavior\n")


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def sample(ts, user, item, label, behaviour):
    return f"{ts}\t{user}\t{item}\t{label}\t2\t1\t19\t6,15\t{behaviour}\n"


class HoldoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(TMP, exist_ok=True)

    def test_items_are_a_seeded_fraction_of_the_targets_of_every_file(self):
        a = write("a.tsv", HEADER + "".join(
            sample(i, 1, 100 + i, 1, "") for i in range(30)))
        b = write("b.tsv", HEADER + "".join(
            sample(i, 1, 120 + i, 0, "7,8") for i in range(20)))
        held, n = ce.holdout_items([a, b], 0.2, seed=1)
        self.assertEqual(n, 40)  # 100..139; behaviour items are not targets
        self.assertEqual(len(held), 8)
        self.assertTrue(held <= set(range(100, 140)))
        self.assertEqual(held, ce.holdout_items([b, a], 0.2, seed=1)[0])
        self.assertNotEqual(held, ce.holdout_items([a, b], 0.2, seed=2)[0])

    def test_filter_drops_held_targets_and_strips_held_behaviours(self):
        src = write("train.tsv", HEADER
                    + sample(1, 1, 10, 1, "")
                    + sample(2, 1, 11, 1, "10")
                    + sample(3, 1, 12, 0, "11,10")
                    + sample(4, 2, 13, 1, "10"))
        out = os.path.join(TMP, "train_holdout.tsv")
        self.assertEqual(ce.filter_samples(src, out, {10, 12}), (2, 2, 2))
        with open(out) as f:
            self.assertEqual(f.read(), HEADER + sample(2, 1, 11, 1, "")
                             + sample(4, 2, 13, 1, ""))

    def test_auc_over_held_items_only_with_ties_counted_half(self):
        preds = write("preds.tsv", "#user\titem\tlabel\tscore\n"
                      "1\t5\t1\t0.9\n"
                      "1\t5\t0\t0.5\n"
                      "1\t6\t1\t0.5\n"   # ties the negative: half
                      "1\t6\t0\t0.2\n"
                      "1\t7\t0\t0.99\n")  # item 7 not held: ignored
        auc, n, positives = ce.holdout_auc(preds, {5, 6})
        # Pairs (positive, negative): (0.9, 0.5) 1, (0.9, 0.2) 1,
        # (0.5, 0.5) 0.5, (0.5, 0.2) 1: 3.5 of 4.
        self.assertEqual((auc, n, positives), (3.5 / 4, 4, 2))
        self.assertEqual(ce.holdout_auc(preds, {7}), (None, 1, 0))


if __name__ == "__main__":
    unittest.main()
