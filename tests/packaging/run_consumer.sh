#!/usr/bin/env bash
# ctest driver for the consumer tests.
#   run_consumer.sh package      <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
#   run_consumer.sh subdirectory <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
set -euo pipefail
mode="$1" build="$2" src="$3" work="$4" cxx="$5" flags="${6:-}"
rm -rf "$work"
mkdir -p "$work"
args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags"
      -DKEYGATE_CONSUME="$mode")
if [ "$mode" = package ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  test -f "$work/prefix/lib/pkgconfig/keygate.pc" || test -f "$work"/prefix/lib/*/pkgconfig/keygate.pc
  args+=(-DCMAKE_PREFIX_PATH="$work/prefix")
else
  args+=(-DKEYGATE_SOURCE_DIR="$src")
fi
cmake -S "$src/tests/packaging/consumer" -B "$work/build" "${args[@]}" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
