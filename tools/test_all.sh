#!/usr/bin/env bash
# Sets up what is missing (apt), builds everything (default and --config=cuda),
# runs every test with Bazel, and prints one final line "N passed, N failed"
# counted from Bazel's own results: gtest cases from each test's test.xml,
# plus one failure per test target that failed to build or left no result,
# one more if Bazel failed while every listed test passed (e.g. a
# non-test target that does not build: the summary alone would miss it),
# one if tools/check_deps.sh finds a dependency against the arrows of
# docs/ARCHITECTURE.md, and one case per libFuzzer target of tests/fuzz
# (tools/fuzz.sh, after the Bazel tests: each target fuzzed for
# MIM_FUZZ_SECONDS, default 15; a crash, leak, hang, broken invariant or a
# target that does not build fails it).
set -uo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp)
status=0

# The CUDA build only needs nvcc; skip it (with a note) where CUDA is absent.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "== bazel build --config=cuda (CUDA kernels and their tests, not run: no GPU here)"
  if ! bazel build --config=cuda --jobs=2 //... $(bazel query 'attr(tags, manual, //...)' 2>/dev/null | tr '\n' ' ') 2>&1 | tail -5; then
    echo "CUDA build failed"; status=1
  fi
else
  echo "== no /usr/local/cuda/bin/nvcc: skipping the --config=cuda build"
fi

echo "== tools/check_deps.sh (dependency direction, docs/ARCHITECTURE.md)"
deps_failed=0
if ! tools/check_deps.sh; then
  echo "DEPENDENCY CHECK FAILED: a dependency goes against the arrows in docs/ARCHITECTURE.md (the 'wrong dependency: A -> B' lines above; exit 2: bazel query failed)"
  deps_failed=1
fi

echo "== bazel test //..."
# --nocache_test_results: every test runs, every time. Without it a clone on a
# machine with a warm disk cache (~/.cache/bazel-disk) took most results from
# the cache ("(cached) PASSED"), so a run proved nothing about flakiness.
bazel test --jobs=2 --nocache_test_results --test_summary=short //... 2>&1 | tee "$log"
bazel_rc=${PIPESTATUS[0]}

echo "== tools/fuzz.sh (libFuzzer targets in tests/fuzz, ${MIM_FUZZ_SECONDS:-15} s each)"
fuzz_log=$(mktemp)
tools/fuzz.sh --seconds="${MIM_FUZZ_SECONDS:-15}" 2>&1 | tee "$fuzz_log"
# Its last line is "fuzz: N passed, N failed"; none means it broke: 1 failure.
fuzz_counts=$(sed -nE 's/^fuzz: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$fuzz_log" | tail -1)
[[ -n "$fuzz_counts" ]] || { echo "tools/fuzz.sh gave no result line"; fuzz_counts="0 1"; }
rm -f "$fuzz_log"

python3 - "$log" "$(bazel info bazel-testlogs 2>/dev/null)" "$status" "$bazel_rc" "$deps_failed" $fuzz_counts <<'PY'
import os, re, sys, glob
import xml.etree.ElementTree as ET
log, testlogs, cuda_failed, bazel_rc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
deps_failed = int(sys.argv[5])
fuzz_passed, fuzz_failed = int(sys.argv[6]), int(sys.argv[7])
text = open(log, errors="replace").read()
passed = failed = 0
targets = re.findall(r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|FLAKY|SKIPPED)", text, re.M)
for target, result in targets:
    rel = target[2:].replace(":", "/")
    xml = os.path.join(testlogs, rel, "test.xml")
    cases_p = cases_f = 0
    if result in ("PASSED", "FAILED", "FLAKY") and os.path.exists(xml):
        try:
            for tc in ET.parse(xml).getroot().iter("testcase"):
                if tc.find("failure") is not None or tc.find("error") is not None:
                    cases_f += 1
                else:
                    cases_p += 1
        except ET.ParseError:
            pass
    if cases_p + cases_f == 0:
        # No per-case result (a script test, or it never ran): count the target.
        if result == "PASSED": cases_p = 1
        else: cases_f = 1
    elif result not in ("PASSED", "FLAKY") and cases_f == 0:
        cases_f = 1  # crashed or timed out after its cases passed
    passed += cases_p; failed += cases_f
if not targets or (bazel_rc != 0 and failed == 0):
    failed += 1  # the build broke before any test ran, or beside the tests
failed += cuda_failed
if deps_failed:  # one failure, whatever tools/check_deps.sh found
    print("dependency check failed (tools/check_deps.sh, see above)")
    failed += 1
if fuzz_failed:
    print(f"fuzzing failed for {fuzz_failed} target(s) (tools/fuzz.sh, see above)")
passed += fuzz_passed; failed += fuzz_failed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
