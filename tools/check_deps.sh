#!/usr/bin/env bash
# Checks that every Bazel dependency points the way the arrows in
# docs/ARCHITECTURE.md ("Components and dependency direction") allow.
# Visibility keeps most wrong arrows from building at all; this catches the
# rest (a target visible to a whole package that only part of it may use,
# such as ps:client vs ps:server, or an arrow reached through another
# target).
#
# Each rule names a part of the project (FROM), what counts as the part
# itself (SELF), and what it may depend on (ALLOWED, with everything those
# depend on). Any other project target FROM reaches is a violation; the
# script names the edge that reaches it.
#
#   tools/check_deps.sh     exit 0: every rule holds
#                           exit 1: prints "wrong dependency: A -> B" lines
#                           exit 2: bazel query itself failed
set -uo pipefail
cd "$(dirname "$0")/.."

QUERY=(bazel query --noimplicit_deps --notool_deps --output=label)
# Build configuration, not code: //kernels selects its CUDA twins on it.
INFRA="//:cuda_enabled"
TOOLING="//tools/... + //tests/... + //bench/..."

failed=0
broken=0
err=$(mktemp)
trap 'rm -f "$err"' EXIT

query() {
  if ! "${QUERY[@]}" "$1" 2>"$err"; then
    echo "check_deps: bazel query failed: $1" >&2
    grep -E "ERROR|error" "$err" | head -5 >&2
    broken=1
    return 1
  fi
}

# True when every package pattern in "$1" (e.g. "//serving/... + //ps:client")
# has a BUILD file, so that queries on it can load.
exists() {
  local p dir
  for p in $(grep -oE '//[a-z_/]*' <<<"$1"); do
    dir=${p#//}
    dir=${dir%/}
    [[ -f "${dir:-.}/BUILD.bazel" || -f "${dir:-.}/BUILD" ]] || return 1
  done
}

# rule NAME FROM SELF ALLOWED: project rules in deps(FROM) must be in SELF,
# in deps(ALLOWED), or INFRA. ALLOWED may be empty.
rule() {
  local name=$1 from=$2 self=$3 allowed=$4
  if ! exists "$from"; then
    echo "check_deps: $name: skipped ($from has no BUILD file yet)"
    return
  fi
  local outside="kind(rule, deps($from)) - ($self) - $INFRA"
  [[ -n "$allowed" ]] && outside="$outside - deps($allowed)"
  local reached
  reached=$(query "$outside") || return
  reached=$(grep '^//' <<<"$reached")
  if [[ -z "$reached" ]]; then
    echo "check_deps: $name: ok"
    return
  fi
  failed=1
  # The wrong edges are those from a target the rule admits (SELF or
  # ALLOWED) into one it does not; what those reach is listed with them.
  local admitted="($self)"
  [[ -n "$allowed" ]] && admitted="$admitted + deps($allowed)"
  local target from_target
  for target in $reached; do
    for from_target in $(query "(rdeps(deps($from), $target, 1) - $target) intersect ($admitted)" | grep '^//'); do
      echo "wrong dependency: $from_target -> $target ($name)"
    done
  done
  echo "check_deps: $name: FAILED; reaches $(wc -w <<<"$reached") target(s) it may not: $(tr '\n' ' ' <<<"$reached")"
}

rule "kernels/ -> nothing in the project" \
  "//kernels/..." "//kernels/..." ""
rule "proto/ -> nothing in the project" \
  "//proto/..." "//proto/..." ""
rule "base/ -> nothing in the project" \
  "//base/..." "//base/..." ""
rule "embedding/ -> base/" \
  "//embedding/..." "//embedding/..." "//base/..."
rule "ps:client -> embedding:sharding, proto/, base/" \
  "//ps:client" "//ps/..." "//embedding:sharding + //proto/... + //base/..."
rule "ps:server -> embedding/, proto/, base/" \
  "//ps/..." "//ps/..." "//embedding/... + //proto/... + //base/..."
rule "worker/model, worker/data, worker/csft:encoder -> kernels/, base/" \
  "//worker/model/... + //worker/data/... + //worker/csft:encoder" \
  "//worker/model/... + //worker/data/... + //worker/csft:encoder" \
  "//kernels/... + //base/..."
rule "worker/ -> ps:client, embedding:sharding, kernels/, proto/, base/" \
  "//worker/..." "//worker/..." \
  "//ps:client + //embedding:sharding + //kernels/... + //proto/... + //base/..."
rule "serving/ -> worker/model, worker/data, worker/csft:encoder, ps:client, ps:health_service, embedding:sharding, kernels/, proto/, base/" \
  "//serving/..." "//serving/..." \
  "//worker/model/... + //worker/data/... + //worker/csft:encoder + //ps:client + //ps:health_service + //embedding:sharding + //kernels/... + //proto/... + //base/..."
# Nothing outside tools/, tests/ and bench/ depends on them (this also
# covers a new top-level package that has no rule above yet).
rule "nothing outside tools/, tests/, bench/ -> tools/, tests/, bench/" \
  "//... - ($TOOLING)" "//... - ($TOOLING)" ""

if (( broken )); then
  echo "check_deps: could not run every check (bazel query failed)"
  exit 2
fi
if (( failed )); then
  echo "check_deps: FAILED: dependencies against the arrows in docs/ARCHITECTURE.md"
  exit 1
fi
echo "check_deps: every dependency follows docs/ARCHITECTURE.md"
