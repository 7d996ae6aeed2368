#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz with clang and runs each for a
# bounded time (tests/fuzz/README.md).
#
# The project builds with Bazel and gcc; libFuzzer needs clang's
# -fsanitize=fuzzer, so the targets are built here, outside Bazel: the
# project sources they need are compiled with clang++ (AddressSanitizer,
# UBSan and libFuzzer's coverage instrumentation) into one static archive,
# against Debian's libraries with the link flags tools/build_defs/
# system_libs.bzl takes from pkg-config, and each target links that archive.
# Objects are rebuilt only when a source or a header it includes changed.
#
#   tools/fuzz.sh [--seconds=N] [--jobs=N] [--build-only] [--make-seeds]
#                 [TARGET...]
#
# --seconds   fuzzing time per target (default 15); 0 replays the corpus only
# --jobs      compile jobs and targets run side by side (default 2)
# --build-only  build, do not run
# --make-seeds  rewrite the generated seeds (tests/fuzz/corpus/*/seed-*)
#               with tests/fuzz/make_seeds.cc, then stop
# TARGET      run only these (default: every *_fuzz.cc in tests/fuzz)
#
# Each target starts from tests/fuzz/corpus/TARGET (read only) and a work
# corpus under the build directory, MIM_FUZZ_DIR (default
# ${TMPDIR:-/tmp}/mim-fuzz; one run at a time uses it, another waits). A
# crash, a leak, an input running over 10 s, a broken invariant (abort) or
# running out of memory fails the target and prints the reproducer's path
# and the command that replays it. The last
# line is "fuzz: N passed, N failed" (one case per target; a build failure
# fails every target). Exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_PER_TARGET=15
JOBS=2
BUILD_ONLY=0
MAKE_SEEDS=0
SELECTED=()
for arg in "$@"; do
  case "$arg" in
    --seconds=*) SECONDS_PER_TARGET=${arg#*=} ;;
    --jobs=*) JOBS=${arg#*=} ;;
    --build-only) BUILD_ONLY=1 ;;
    --make-seeds) MAKE_SEEDS=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown flag $arg (see --help)" >&2; exit 2 ;;
    *) SELECTED+=("$arg") ;;
  esac
done

ALL_TARGETS=()
for f in tests/fuzz/*_fuzz.cc; do
  t=$(basename "$f" .cc); ALL_TARGETS+=("${t%_fuzz}")
done
if ((${#SELECTED[@]} == 0)); then SELECTED=("${ALL_TARGETS[@]}"); fi
for t in "${SELECTED[@]}"; do
  if [[ ! -f tests/fuzz/${t}_fuzz.cc ]]; then
    echo "fuzz: no target '$t' (tests/fuzz/${t}_fuzz.cc); targets: ${ALL_TARGETS[*]}" >&2
    exit 2
  fi
done

# Every selected target fails when the build does: CI must not skip.
fail_all() {
  echo "FUZZ BUILD FAILED: $1"
  for t in "${SELECTED[@]}"; do echo "FUZZ FAIL $t: not built"; done
  echo "fuzz: 0 passed, ${#SELECTED[@]} failed"
  exit 1
}

CXX=""
for c in clang++-14 clang++; do
  if command -v "$c" >/dev/null; then CXX=$c; break; fi
done
[[ -n "$CXX" ]] || fail_all "no clang++ (tools/setup.sh installs clang-14, libclang-rt-14-dev and libfuzzer-14-dev)"

OUT=${MIM_FUZZ_DIR:-${TMPDIR:-/tmp}/mim-fuzz}
GEN=$OUT/gen
OBJ=$OUT/obj
BIN=$OUT/bin
mkdir -p "$GEN" "$OBJ" "$BIN" "$OUT/logs" || fail_all "cannot create $OUT"
# One run at a time per build directory: a second one waits (it would
# rebuild objects and wipe artifacts under the first one's feet).
exec 9>"$OUT/lock"
if ! flock -n 9; then
  echo "fuzz: waiting for another tools/fuzz.sh using $OUT (or set MIM_FUZZ_DIR)"
  flock 9
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CXXFLAGS="-std=c++17 -O1 -gline-tables-only -fno-omit-frame-pointer $SAN \
-fsanitize=fuzzer-no-link -Wno-deprecated-declarations -I$ROOT -I$GEN"

# A changed compiler or flags invalidate every object.
stamp="$($CXX --version | head -1) $CXXFLAGS"
if [[ "$(cat "$OUT/flags" 2>/dev/null)" != "$stamp" ]]; then
  rm -rf "$OBJ" && mkdir -p "$OBJ"
  echo "$stamp" >"$OUT/flags"
fi

# --- Link flags: the pkg-config modules of tools/build_defs/system_libs.bzl.
LIBS=$(python3 - "$ROOT/tools/build_defs/system_libs.bzl" <<'PY'
import ast, re, subprocess, sys
text = open(sys.argv[1]).read()
start = text.index("_LIBS = {") + len("_LIBS = ")
depth = 0
for i in range(start, len(text)):
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    if depth == 0:
        break
libs = ast.literal_eval(text[start:i + 1])
flags = []
for name in ["absl", "protobuf", "grpc", "rocksdb", "glog", "gflags",
             "openblas", "fasttext", "prometheus"]:
    modules, extra = libs[name]
    if modules:
        flags += subprocess.run(["pkg-config", "--libs"] + modules, check=True,
                                capture_output=True, text=True).stdout.split()
    flags += extra
print(" ".join(flags))
PY
) || fail_all "pkg-config failed (run tools/setup.sh)"

# --- Generated protobuf and gRPC code.
gen_proto() {  # PROTO [grpc]
  local proto=$1 base=${1%.proto}
  if [[ ! -f $GEN/$base.pb.cc || $proto -nt $GEN/$base.pb.cc ]]; then
    local plugin=()
    if [[ ${2:-} == grpc ]]; then
      plugin=(--plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" --grpc_out="$GEN")
    fi
    protoc -I. --cpp_out="$GEN" "${plugin[@]}" "$proto" || return 1
  fi
}
# Services (proto/, ps/) with their gRPC code; the fuzz inputs' own
# messages (tests/fuzz) without.
PROTOS=(proto/*.proto ps/*.proto tests/fuzz/*.proto)
for proto in "${PROTOS[@]}"; do
  if [[ $proto == tests/* ]]; then gen_proto "$proto"; else gen_proto "$proto" grpc; fi ||
    fail_all "protoc failed on $proto"
done

# --- The project sources: every library source of the packages the targets
# reach (not tests, not mains). The linker takes from the archive only what
# a target needs, so a new source file needs no change here.
LIB_SRCS=()
for src in base/*.cc embedding/*.cc embedding/storage/*.cc ps/*.cc \
           serving/*.cc worker/data/*.cc worker/model/*.cc kernels/*.cc \
           worker/csft/encoder.cc; do
  [[ $src == *_test.cc || $src == *_main.cc ]] || LIB_SRCS+=("$src")
done
for proto in "${PROTOS[@]}"; do
  LIB_SRCS+=("$GEN/${proto%.proto}.pb.cc")
  [[ $proto == tests/* ]] || LIB_SRCS+=("$GEN/${proto%.proto}.grpc.pb.cc")
done
HARNESS_SRCS=()
for t in "${ALL_TARGETS[@]}"; do HARNESS_SRCS+=("tests/fuzz/${t}_fuzz.cc"); done
HARNESS_SRCS+=(tests/fuzz/make_seeds.cc)

obj_of() {
  local src=${1#"$GEN"/}
  echo "$OBJ/${src%.cc}.o"
}

# Prints the sources whose object is missing or older than the source or
# any header it included (the compiler's .d file).
stale() {
  local src o d dep
  for src in "$@"; do
    o=$(obj_of "$src"); d=${o%.o}.d
    if [[ ! -f $o || ! -f $d ]]; then echo "$src"; continue; fi
    for dep in $(sed -e 's/\\$//' -e 's/^[^:]*://' "$d"); do
      if [[ ! -e $dep || $dep -nt $o ]]; then echo "$src"; break; fi
    done
  done
}

compile_one() {
  local src=$1 o d
  o=$(obj_of "$src"); d=${o%.o}.d
  mkdir -p "$(dirname "$o")"
  # shellcheck disable=SC2086
  if ! $CXX $CXXFLAGS -MMD -MF "$d" -c "$src" -o "$o" 2>"$o.log"; then
    echo "compile failed: $src"; cat "$o.log"; rm -f "$o"; return 1
  fi
}
export -f compile_one obj_of
export CXX CXXFLAGS OBJ GEN

build_start=$(date +%s)
mapfile -t todo < <(stale "${LIB_SRCS[@]}" "${HARNESS_SRCS[@]}")
if ((${#todo[@]})); then
  echo "fuzz: compiling ${#todo[@]} file(s) with $CXX (-j$JOBS)"
  printf '%s\n' "${todo[@]}" |
    xargs -P "$JOBS" -I{} bash -c 'compile_one "$1"' _ {} ||
    fail_all "compilation failed (see above)"
fi

lib_objs=()
for src in "${LIB_SRCS[@]}"; do lib_objs+=("$(obj_of "$src")"); done
archive=$OUT/libmim_fuzz.a
for o in "${lib_objs[@]}"; do
  if [[ ! -f $archive || $o -nt $archive ]]; then
    rm -f "$archive"
    ar rcs "$archive" "${lib_objs[@]}" || fail_all "ar failed"
    break
  fi
done

link() {  # NAME OBJECT [libFuzzer main: yes|no]
  local fuzzer=-fsanitize=fuzzer
  [[ ${3:-yes} == no ]] && fuzzer=""
  [[ -x $BIN/$1 && ! $archive -nt $BIN/$1 && ! $2 -nt $BIN/$1 ]] && return 0
  # shellcheck disable=SC2086
  $CXX $SAN $fuzzer "$2" "$archive" $LIBS -o "$BIN/$1" \
    >"$OUT/logs/link-$1.log" 2>&1 || {
    echo "link failed: $1"; head -40 "$OUT/logs/link-$1.log"; return 1; }
}

if ((MAKE_SEEDS)); then
  link make_seeds "$(obj_of tests/fuzz/make_seeds.cc)" no ||
    fail_all "make_seeds did not link"
  ASAN_OPTIONS=detect_leaks=0 "$BIN/make_seeds" "$ROOT/tests/fuzz/corpus"
  exit $?
fi

link_failed=()
for t in "${SELECTED[@]}"; do
  link "$t" "$(obj_of "tests/fuzz/${t}_fuzz.cc")" || link_failed+=("$t")
done
echo "fuzz: built ${#SELECTED[@]} target(s) in $(($(date +%s) - build_start)) s under $OUT"
((BUILD_ONLY)) && { ((${#link_failed[@]} == 0)); exit $?; }

# --- Run.
run_one() {  # TARGET: exit status 0 when the run found nothing
  local t=$1 work=$OUT/corpus/$1 art=$OUT/artifacts/$1/ tmp=$OUT/tmp/$1
  local dict=()
  rm -rf "$art" "$tmp" && mkdir -p "$work" "$art" "$tmp"
  [[ -f tests/fuzz/dict/$t.dict ]] && dict=(-dict="tests/fuzz/dict/$t.dict")
  # A fixed mutation seed (MIM_FUZZ_SEED, default 1): a run explores the
  # same sequence of inputs on every machine, only as far as its time
  # allows, so CI does not turn red by the luck of the draw; set it to 0
  # for a fresh random seed when hunting for bugs by hand.
  local limit=(-max_total_time="$SECONDS_PER_TARGET" -seed="${MIM_FUZZ_SEED:-1}")
  ((SECONDS_PER_TARGET == 0)) && limit=(-runs=0)
  TMPDIR=$tmp \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$BIN/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
      -artifact_prefix="$art" "${dict[@]}" "$work" "tests/fuzz/corpus/$t" \
      >"$OUT/logs/$t.log" 2>&1
  local rc=$?
  rm -rf "$tmp"
  return $rc
}
export -f run_one
export OUT BIN SECONDS_PER_TARGET

run_start=$(date +%s)
to_run=()
for t in "${SELECTED[@]}"; do
  [[ " ${link_failed[*]} " == *" $t "* ]] || to_run+=("$t")
done
echo "fuzz: running ${#to_run[@]} target(s), $SECONDS_PER_TARGET s each, $JOBS at a time"
printf '%s\n' "${to_run[@]}" |
  xargs -P "$JOBS" -I{} bash -c 'run_one "$1"; echo "$?" >"$OUT/logs/$1.rc"' _ {}

passed=0; failed=0
for t in "${SELECTED[@]}"; do
  if [[ " ${link_failed[*]} " == *" $t "* ]]; then
    echo "FUZZ FAIL $t: did not link"; failed=$((failed + 1)); continue
  fi
  rc=$(cat "$OUT/logs/$t.rc" 2>/dev/null || echo 1)
  stats=$(grep -E '^stat::number_of_executed_units' "$OUT/logs/$t.log" | awk '{print $2}')
  if [[ $rc == 0 ]]; then
    echo "FUZZ PASS $t (${stats:-?} runs)"; passed=$((passed + 1)); continue
  fi
  failed=$((failed + 1))
  repro=$(ls -t "$OUT/artifacts/$t/" 2>/dev/null | head -1)
  echo "FUZZ FAIL $t (exit $rc): $(grep -m1 -E 'ERROR: |fuzz invariant broken|runtime error' "$OUT/logs/$t.log")"
  if [[ -n $repro ]]; then
    echo "  reproducer: $OUT/artifacts/$t/$repro"
    echo "  replay:     $BIN/$t $OUT/artifacts/$t/$repro"
    echo "  keep it:    cp $OUT/artifacts/$t/$repro tests/fuzz/corpus/$t/regress-<what>"
  fi
  echo "  log: $OUT/logs/$t.log; its end:"
  tail -40 "$OUT/logs/$t.log" | sed 's/^/    /'
done
echo "fuzz: ran in $(($(date +%s) - run_start)) s"
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
