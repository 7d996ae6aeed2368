#!/usr/bin/env bash
# A 30-minute soak of one shard (bench/ps_soak.cc): mixed Pull/Push/Upsert at
# a fixed rate, RSS and p50/p99 every 10 s. Writes OUT.csv, OUT.log and
# OUT.png (RSS and p99 over time). Not part of CI.
#
#   bench/ps_soak.sh [OUT_PREFIX] [ps_soak flags...]   (default /tmp/ps_soak)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/ps_soak}
shift || true
bazel build --jobs=2 //bench:ps_soak
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out.log"
rc=0
bazel-bin/bench/ps_soak --csv="$out.csv" "$@" 2>&1 | tee -a "$out.log" || rc=$?
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out.log"
/usr/bin/python3 bench/ps_soak_plot.py "$out.csv" "$out.png"
exit $rc
