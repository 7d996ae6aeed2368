#!/usr/bin/python3
"""tools/serving_client.py (class and command line) and //tools:load_test
against a real //serving:server, itself on two real //ps:server shards on
loopback, serving a din_mim model that //worker:trainer trained for one
epoch on a small gen_synthetic dataset. Run by Bazel as an sh_test (Debian's
python3, unittest); writes per-case JUnit XML to $XML_OUTPUT_FILE.

Every child announces its address on stdout ("... listening on HOST:PORT");
the test blocks on that line, with a deadline, instead of sleeping.
"""

import json
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import unittest
import xml.etree.ElementTree as ET

SRCDIR = os.path.join(os.environ.get("TEST_SRCDIR", "."), "mim")
TMP = os.environ.get("TEST_TMPDIR", "/tmp/serving_client_test")
# Stubs of the Python client go to the test's own cache, not $HOME.
os.environ["XDG_CACHE_HOME"] = os.path.join(TMP, "xdg-cache")

sys.path.insert(0, os.path.join(SRCDIR, "tools"))
from serving_client import MimServingClient, ServingError  # noqa: E402

CLIENT = os.path.join(SRCDIR, "tools", "serving_client.py")
LOAD_TEST = os.path.join(SRCDIR, "tools", "load_test")
START_TIMEOUT_S = 120
MAX_CANDIDATES = 64
NUM_USERS = 100
NUM_ITEMS = 300
CONTENT_DIM = 16


def binary(path):
    return os.path.join(SRCDIR, path)


class Child:
    """A long-running child process whose stdout announces its address.
    Not thread-safe."""

    def __init__(self, name, argv, listen_re):
        self.name = name
        self.log_path = os.path.join(TMP, name + ".log")
        self._err = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True)
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = self._await_address(re.compile(listen_re))

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # EOF

    def _await_address(self, pattern):
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = []
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0))
            except queue.Empty:
                line = "timeout"
            if line is None or line == "timeout":
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not print its address "
                    f"({'timeout' if line else 'stdout closed'}, exit "
                    f"{self.proc.returncode}); stdout: {''.join(seen)!r}; "
                    f"stderr in {self.log_path}: {self.stderr_tail()}")
            seen.append(line)
            m = pattern.search(line)
            if m:
                return m.group(1)

    def stderr_tail(self):
        self._err.flush()
        with open(self.log_path) as f:
            return f.read()[-2000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def run(argv, check=True):
    """Runs a one-shot command; fails naming it and its stderr when
    `check` and it exits non-zero."""
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: "
                           f"{r.stderr[-3000:]}")
    return r


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


class Cluster:
    """Two shards, the trained model and the serving server."""

    def __init__(self):
        self.children = []
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        os.makedirs(TMP, exist_ok=True)
        for i in range(2):
            self.children.append(Child(
                f"shard{i}",
                [binary("ps/server"), "--host=127.0.0.1", "--port=0",
                 f"--shard_index={i}", "--num_shards=2",
                 f"--data_dir={TMP}/shard{i}", "--threads=8"],
                r"ps shard \d+/\d+ listening on (\S+)"))
        self.ps = ",".join(c.address for c in self.children)

        data = os.path.join(TMP, "data")
        run([binary("tools/gen_synthetic"), f"--output_dir={data}",
             "--num_samples=3000", f"--num_items={NUM_ITEMS}",
             f"--num_users={NUM_USERS}", f"--content_dim={CONTENT_DIM}"])
        self.encoder_dir = os.path.join(TMP, "encoder")
        run([binary("tools/content_vectors"),
             f"--item_text={data}/item_text.tsv",
             f"--output={data}/content_vectors.tsv",
             f"--dim={CONTENT_DIM}", "--epoch=2", "--threads=1",
             f"--encoder_out={self.encoder_dir}"])
        run([binary("tools/ingest_content"), f"--ps={self.ps}",
             f"--vectors={data}/content_vectors.tsv", "--table=item_content",
             "--content_version=1"])
        self.model_dir = os.path.join(TMP, "model")
        run([binary("worker/trainer"), f"--ps={self.ps}",
             f"--train={data}/train.tsv", f"--test={data}/test.tsv",
             "--model=din_mim", "--epochs=1", "--batch_size=256",
             "--threads=1", "--content_table=item_content",
             f"--content_encoder={self.encoder_dir}",
             f"--model_dir={self.model_dir}", "--progress=false"])
        with open(os.path.join(self.model_dir, "manifest.json")) as f:
            self.manifest = json.load(f)

        self.server = Child(
            "serving",
            [binary("serving/server"), "--host=127.0.0.1", "--port=0",
             f"--ps={self.ps}", f"--model_dir={self.model_dir}",
             f"--max_candidates={MAX_CANDIDATES}", "--metrics_port=-1"],
            r"^(?!metrics).*listening on (\S+)")
        self.children.append(self.server)
        self.target = self.server.address

    def stop(self):
        for c in reversed(self.children):
            c.stop()


cluster = None


def setUpModule():
    global cluster
    cluster = Cluster()


def tearDownModule():
    if cluster is not None:
        cluster.stop()


def cli(*args, check_rc=None):
    r = run([sys.executable, CLIENT, f"--target={cluster.target}", *args],
            check=False)
    if check_rc is not None and r.returncode != check_rc:
        raise AssertionError(f"serving_client {' '.join(args)} exited "
                             f"{r.returncode}, expected {check_rc}; stdout "
                             f"{r.stdout!r} stderr {r.stderr!r}")
    return r


class ClientTest(unittest.TestCase):

    def setUp(self):
        self.client = MimServingClient(cluster.target, timeout_s=30)

    def tearDown(self):
        self.client.close()

    def test_status_names_the_served_model(self):
        s = self.client.status()
        self.assertEqual(s["model_version"], cluster.manifest["model_version"])
        self.assertEqual(s["model_name"], "din_mim")
        self.assertEqual(s["content_table"], "item_content")

    def test_predict_scores_every_candidate_in_order(self):
        scores, version, stale = self.client.predict(
            1, {"age_bucket": 2, "gender": 1}, [1, 2, 3], [4, 5, 6],
            candidate_genres=[[1, 2], [3], []])
        self.assertEqual(len(scores), 3)
        for s in scores:
            self.assertTrue(0 < s < 1, scores)
        self.assertEqual(version, cluster.manifest["model_version"])
        self.assertFalse(stale)
        # Reordered candidates get their own scores back, reordered (to
        # float32 rounding: a row's place in the batch may change the GEMM
        # blocking).
        again, _, _ = self.client.predict(
            1, {"age_bucket": 2, "gender": 1}, [1, 2, 3], [6, 4, 5],
            candidate_genres=[[], [1, 2], [3]])
        for got, want in zip(again, [scores[2], scores[0], scores[1]]):
            self.assertAlmostEqual(got, want, delta=1e-6)

    def test_cli_json_matches_the_class(self):
        scores, version, _ = self.client.predict(
            7, {"occupation": 3}, [10, 11], [12, 13])
        r = cli("--json", "predict", "--user=7", "--features", "occupation=3",
                "--behaviors=10,11", "--candidates=12,13", check_rc=0)
        doc = json.loads(r.stdout)
        self.assertTrue(doc["ok"])
        self.assertEqual(doc["model_version"], version)
        self.assertEqual(doc["rows_unavailable"], 0)
        self.assertEqual([d["item"] for d in doc["scores"]], [12, 13])
        self.assertEqual([f32(d["score"]) for d in doc["scores"]], scores)

    def test_cli_text_output(self):
        r = cli("predict", "--user=1", "--features", "age_bucket=2,gender=1",
                "--behaviors=1,2,3", "--candidates=4,5,6", "--genres",
                "1,2;3;", check_rc=0)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith(
            f"model_version {cluster.manifest['model_version']}  stale=no"),
            lines[0])
        self.assertTrue(lines[0].endswith("  rows_unavailable=0"), lines[0])
        self.assertEqual([l.split()[0] for l in lines[2:]], ["4", "5", "6"])
        r = cli("status", check_rc=0)
        self.assertIn("model_name", r.stdout)
        self.assertIn("din_mim", r.stdout)

    def test_invalid_request_is_invalid_argument(self):
        with self.assertRaises(ServingError) as e:
            self.client.predict(1, {}, [], [])
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(ServingError) as e:
            self.client.predict(1, {"shoe_size": 3}, [], [1])
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("shoe_size", e.exception.message)
        with self.assertRaises(ServingError) as e:
            self.client.predict(1, {}, [], list(range(1, MAX_CANDIDATES + 2)))
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        r = cli("predict", "--user=1", "--candidates=", check_rc=1)
        self.assertIn("Predict failed: INVALID_ARGUMENT", r.stderr)
        r = cli("--json", "predict", "--user=1", "--candidates=", check_rc=1)
        doc = json.loads(r.stdout)
        self.assertEqual((doc["ok"], doc["code"]), (False, "INVALID_ARGUMENT"))

    def test_usage_errors_exit_2(self):
        r = cli("predict", "--user=1", "--candidates=1,2", "--genres", "1",
                check_rc=2)
        self.assertIn("--genres has 1 ';'-separated entries but there are 2 "
                      "candidates", r.stderr)
        r = cli("predict", "--user=1", "--candidates=1", "--features", "age",
                check_rc=2)
        self.assertIn("--features: 'age' is not NAME=INTEGER", r.stderr)
        cli("upsert", "--item=1", check_rc=2)

    def test_unreachable_target_is_unavailable(self):
        closed = cluster.children[0].address.rsplit(":", 1)[0] + ":1"
        r = run([sys.executable, CLIENT, f"--target={closed}", "status"],
                check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("GetStatus failed: UNAVAILABLE", r.stderr)

    def test_upsert_vector_is_read_by_the_next_predict(self):
        item = NUM_ITEMS + 1000  # never seen in training
        request = (5, {"age_bucket": 3}, [1, 2, 3, 4], [item])
        a = [1.0 if i == 0 else 0.0 for i in range(CONTENT_DIM)]
        b = [0.0 if i == 0 else 0.25 for i in range(CONTENT_DIM)]
        first = self.client.upsert_item(item, vector=a)
        self.assertEqual(first["encoder"], "caller")
        self.assertAlmostEqual(first["norm"], 1.0, places=5)
        score_a = self.client.predict(*request)[0]
        second = self.client.upsert_item(item, vector=b)
        self.assertGreater(second["content_version"],
                           first["content_version"])
        self.assertAlmostEqual(second["norm"], 0.0625 * (CONTENT_DIM - 1),
                               places=5)
        score_b = self.client.predict(*request)[0]
        self.assertNotEqual(score_a, score_b)
        # Back to `a`: the first score again.
        self.client.upsert_item(item, vector=a)
        self.assertAlmostEqual(self.client.predict(*request)[0], score_a,
                               delta=1e-6)

    def test_upsert_text_through_the_cli(self):
        r = cli("--json", "upsert", f"--item={NUM_ITEMS + 2000}", "--text",
                "a new item about space robots", check_rc=0)
        doc = json.loads(r.stdout)
        self.assertTrue(doc["ok"])
        # The server names the encoder by its id (content hash), the `id` of
        # the encoder directory's encoder.txt.
        with open(os.path.join(cluster.encoder_dir, "encoder.txt")) as f:
            ids = [l.strip()[3:] for l in f if l.startswith("id=")]
        self.assertEqual([doc["encoder"]], ids)
        self.assertGreater(doc["content_version"], 0)
        r = cli("upsert", f"--item={NUM_ITEMS + 2000}", "--vector",
                ",".join(["0.5"] * CONTENT_DIM), check_rc=0)
        self.assertRegex(r.stdout, rf"^item {NUM_ITEMS + 2000}: "
                                   r"content_version=\d+ encoder=caller")
        # --genres travels with the text; a fastText table ignores them (a
        # C-SFT one fuses them: tests/csft_integration_test).
        r = cli("--json", "upsert", f"--item={NUM_ITEMS + 2001}", "--text",
                "a new item about space robots", "--genres", "1,2",
                check_rc=0)
        self.assertEqual(json.loads(r.stdout)["encoder"], ids[0])
        cli("upsert", f"--item={NUM_ITEMS + 2001}", "--text", "x",
            "--genres", "1,b", check_rc=2)


class LoadTestTest(unittest.TestCase):

    def load_test(self, name, *flags):
        out = os.path.join(TMP, name + ".json")
        r = run([LOAD_TEST, f"--target={cluster.target}", f"--json_out={out}",
                 f"--users=1-{NUM_USERS}", f"--items=1-{NUM_ITEMS}",
                 "--deadline_ms=30000", *flags], check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out) as f:
            return json.load(f), r

    def test_open_loop_run_reports_every_request(self):
        report, r = self.load_test("run", "--qps=40", "--duration=2.5",
                                   "--candidates=10", "--behaviors=5",
                                   "--genres=8", "--seed=3")
        self.assertEqual(report["sent"], 100)
        self.assertEqual(report["errors"], {})
        self.assertEqual(report["ok"], 100)
        lat = report["latency_ms"]
        self.assertTrue(0 < lat["p50"] <= lat["p99"] <= lat["p999"]
                        <= lat["max"], lat)
        self.assertEqual(report["replies"]["model_versions"],
                         {cluster.manifest["model_version"]: 100})
        self.assertGreater(report["replies"]["cache_hits"]
                           + report["replies"]["rows_pulled"], 0)
        delta = report["server_status"]["delta"]
        self.assertEqual(delta["model_reloads"], 0)
        self.assertEqual(delta["requests"], 100)  # Predicts, this run only
        self.assertIn("no coordinated omission", r.stdout)
        self.assertIn("requests sent     100", r.stdout)
        # stderr is a pipe here: plain progress lines, no carriage returns.
        self.assertRegex(r.stderr, r"(?m)^\s*\d+s sent \d+")
        self.assertNotIn("\r", r.stderr)

    def test_refused_requests_are_counted_by_code(self):
        report, r = self.load_test("refused", "--qps=20", "--duration=1",
                                   f"--candidates={MAX_CANDIDATES + 1}",
                                   "--behaviors=2")
        self.assertEqual(report["sent"], 20)
        self.assertEqual(report["ok"], 0)
        self.assertEqual(report["errors"], {"INVALID_ARGUMENT": 20})
        self.assertIn("errors            20 (INVALID_ARGUMENT 20)", r.stdout)

    def test_unreachable_target_fails_before_sending(self):
        closed = cluster.children[0].address.rsplit(":", 1)[0] + ":1"
        r = run([LOAD_TEST, f"--target={closed}", "--connect_timeout_ms=2000",
                 "--qps=10", "--duration=1"], check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"could not connect to {closed}", r.stderr)

    def test_bad_flags_exit_2(self):
        r = run([LOAD_TEST, f"--target={cluster.target}", "--users=9-3"],
                check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--users='9-3' is not an id range", r.stderr)


def write_junit(result, path, elapsed):
    suite = ET.Element("testsuite", name="serving_client_test",
                       tests=str(result.testsRun),
                       failures=str(len(result.failures)),
                       errors=str(len(result.errors)),
                       time=f"{elapsed:.3f}")
    bad = {id(t): ("failure", tb) for t, tb in result.failures}
    bad.update({id(t): ("error", tb) for t, tb in result.errors})
    for test in result.ran:
        case = ET.SubElement(suite, "testcase", name=test._testMethodName,
                             classname=type(test).__name__)
        if id(test) in bad:
            kind, tb = bad[id(test)]
            ET.SubElement(case, kind, message=tb.splitlines()[-1]).text = tb
    # A failure in setUpModule has no test case of its own.
    for test, tb in result.errors:
        if not isinstance(test, unittest.TestCase):
            case = ET.SubElement(suite, "testcase", name=str(test),
                                 classname="setup")
            ET.SubElement(case, "error", message=tb.splitlines()[-1]).text = tb
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


class RecordingResult(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ran = []

    def startTest(self, test):
        super().startTest(test)
        self.ran.append(test)


def main():
    start = time.monotonic()
    suite = unittest.defaultTestLoader.loadTestsFromModule(
        sys.modules[__name__])
    runner = unittest.TextTestRunner(verbosity=2, resultclass=RecordingResult)
    result = runner.run(suite)
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        write_junit(result, xml, time.monotonic() - start)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
