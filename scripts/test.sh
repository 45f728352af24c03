#!/usr/bin/env bash
# Builds keygate and runs its tests. The README's test command.
#
#   scripts/test.sh                         # g++, warnings as errors, all tests
#   scripts/test.sh --sanitize address,undefined [--compiler clang++]
#   scripts/test.sh --sanitize thread --label concurrent
#
# Each configuration builds in its own directory under build/.
#
# Under CI ($CI set and not "false") nothing may be left out: a missing test
# dependency fails the configuration (KEYGATE_REQUIRE_ALL_TESTS), and so do a
# test file that is not registered with ctest and a test that did not run
# (skipped, disabled, missing files). Outside CI those are warnings.
set -euo pipefail
cd "$(dirname "$0")/.."

compiler="g++"
sanitize=""
label=""
jobs="$(nproc)"
while [ $# -gt 0 ]; do
  case "$1" in
    --compiler) compiler="$2"; shift 2 ;;
    --sanitize) sanitize="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    *) echo "usage: $0 [--compiler CXX] [--sanitize LIST] [--label LABEL]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh

ci=""
if [ -n "${CI:-}" ] && [ "${CI}" != "false" ]; then ci=1; fi
# complain MESSAGE: an error under CI, a warning otherwise.
complain() {
  if [ -n "$ci" ]; then
    echo "test.sh: error: $*" >&2
    return 1
  fi
  echo "test.sh: warning: $*" >&2
}

name="$(basename "$compiler")${sanitize:+-${sanitize//,/-}}"
dir="build/test-$name"
build_type="RelWithDebInfo"
# Line tables only: enough for backtraces and sanitizer reports with file and line, and a
# fifth less compile time than full debug information.
debug_info="-g1"
case "$(basename "$compiler")" in clang*) debug_info="-gline-tables-only" ;; esac
extra=()
if [ -n "$sanitize" ]; then
  # Sanitized builds only need the tests; benchmarks are timed elsewhere.
  extra+=(-DKEYGATE_BUILD_BENCH=OFF)
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" -DCMAKE_CXX_COMPILER="$compiler" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 $debug_info -DNDEBUG" \
  -DKEYGATE_WERROR=ON -DKEYGATE_SANITIZE="$sanitize" \
  -DKEYGATE_REQUIRE_ALL_TESTS="$([ -n "$ci" ] && echo ON || echo OFF)" "${extra[@]}" >/dev/null

# Every test file is registered: tests/<name>_test.cc is the test <name>_test
# and tests/e2e/<name>_test.sh the tests <name>_*, except those a
# configuration leaves out on purpose (tests/*.cmake says why).
left_out=()
case ",$sanitize," in *,thread,*) left_out+=(verifier_alloc_test) ;; esac
registered=$(ctest --test-dir "$dir" -N | sed -n 's/^ *Test *#[0-9]*: //p')
unregistered=()
for f in tests/*_test.cc; do
  t=$(basename "$f" .cc)
  if [[ " ${left_out[*]} " == *" $t "* ]]; then continue; fi
  grep -qx -- "$t" <<<"$registered" || unregistered+=("$t")
done
for f in tests/e2e/*_test.sh; do
  t=$(basename "$f" _test.sh)
  grep -q -- "^${t}_" <<<"$registered" || unregistered+=("${t}_* (tests/e2e)")
done
for f in tests/browser/*_test.mjs; do
  t=$(basename "$f" _test.mjs)_browser
  grep -qx -- "$t" <<<"$registered" || unregistered+=("$t (tests/browser)")
done
if [ ${#unregistered[@]} -gt 0 ]; then
  complain "tests not registered in $dir (a dependency missing?): ${unregistered[*]}"
fi
if [ -n "$label" ]; then
  # Build only what the selected tests need: the target of each test's name
  # (its executable, or for a script a custom target naming what it runs);
  # a test without one needs the whole build.
  all_targets=$(cmake --build "$dir" --target help | sed -n 's/^\([A-Za-z0-9_.+-]*\): .*/\1/p')
  targets=()
  for t in $(ctest --test-dir "$dir" -N -L "$label" | sed -n 's/^ *Test *#[0-9]*: //p'); do
    if grep -qx -- "$t" <<<"$all_targets"; then targets+=("$t"); else targets=(all); break; fi
  done
  cmake --build "$dir" -j "$jobs" --target "${targets[@]}"
else
  cmake --build "$dir" -j "$jobs"
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
selected=$(ctest --test-dir "$dir" -N ${label:+-L "$label"} | sed -n 's/^ *Test *#[0-9]*: //p')
if [ -z "$selected" ]; then
  complain "no tests in $dir${label:+ with label $label}"
fi
junit="$PWD/$dir/ctest-junit.xml"
rm -f "$junit"
status=0
ctest --test-dir "$dir" --output-on-failure -j "$jobs" ${label:+-L "$label"} \
  --output-junit "$junit" || status=$?

# A test that did not run (skipped with exit 77, disabled, required files
# missing) passes ctest; under CI it fails the run.
not_run=$(sed -n 's/^.*<testcase name="\([^"]*\)".* status="\(notrun\|disabled\)".*$/\1 (\2)/p' \
  "$junit" 2>/dev/null || true)
if [ -n "$not_run" ]; then
  complain "tests that did not run: $(tr '\n' ' ' <<<"$not_run")" || status=1
fi
ran=$(grep -c '<testcase ' "$junit" 2>/dev/null || true)
expected=$(grep -c . <<<"$selected" || true)
if [ "${ran:-0}" != "$expected" ]; then
  complain "ctest reported ${ran:-0} tests, $expected were selected" || status=1
fi
exit "$status"
