#!/usr/bin/env bash
# Builds keygate and runs its tests. The README's test command.
#
#   scripts/test.sh                         # g++, warnings as errors, all tests
#   scripts/test.sh --sanitize address,undefined [--compiler clang++]
#   scripts/test.sh --sanitize thread --label concurrent
#
# Each configuration builds in its own directory under build/.
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

name="$(basename "$compiler")${sanitize:+-${sanitize//,/-}}"
dir="build/test-$name"
build_type="RelWithDebInfo"
extra=()
if [ -n "$sanitize" ]; then
  # Sanitized builds only need the tests; benchmarks are timed elsewhere.
  extra+=(-DKEYGATE_BUILD_BENCH=OFF)
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" -DCMAKE_CXX_COMPILER="$compiler" \
  -DKEYGATE_WERROR=ON -DKEYGATE_SANITIZE="$sanitize" "${extra[@]}" >/dev/null
if [ -n "$label" ]; then
  # Build only what the selected tests need when each is an executable of its
  # own; a test that is a script needs the whole build.
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
ctest --test-dir "$dir" --output-on-failure -j "$jobs" ${label:+-L "$label"}
