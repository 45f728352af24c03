#!/usr/bin/env bash
# ctest driver for the consumer tests.
#   run_consumer.sh package      <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
#   run_consumer.sh subdirectory <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
#   run_consumer.sh pkgconfig    <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
# package and subdirectory build consumer/ (whose link lines are the README's
# CMake block); pkgconfig builds with the README's pkg-config command.
set -euo pipefail
mode="$1" build="$2" src="$3" work="$4" cxx="$5" flags="${6:-}"
rm -rf "$work"
mkdir -p "$work"

if [ "$mode" = pkgconfig ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  pc=$(find "$work/prefix" -path '*/pkgconfig/keygate.pc')
  test -n "$pc" && test -f "${pc%/*}/keygate-sqlite.pc"
  read -ra flag_args <<<"$flags"
  cd "$work"
  # The README's command. Only the installed tree is named: no -I/-L into the
  # source or build directory.
  export PKG_CONFIG_PATH="${pc%/*}"
  # shellcheck disable=SC2046  # pkg-config's output is meant to be split
  "$cxx" -std=c++20 "${flag_args[@]}" "$src/examples/quickstart.cc" $(pkg-config --cflags --libs keygate) \
    -o quickstart
  out=$(./quickstart)
  [[ "$out" == "Verdict(ok, "* ]] || { echo "quickstart printed: $out" >&2; exit 1; }
  # The .pc files are relocatable: move the prefix, then build the SQLite consumer.
  mv "$work/prefix" "$work/moved"
  export PKG_CONFIG_PATH="$work/moved/${PKG_CONFIG_PATH#"$work/prefix/"}"
  # shellcheck disable=SC2046
  "$cxx" -std=c++20 "${flag_args[@]}" "$src/tests/packaging/consumer/main.cc" \
    $(pkg-config --cflags --libs keygate-sqlite) -o consumer
  ./consumer
  exit 0
fi

args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags"
      -DKEYGATE_CONSUME="$mode" -DKEYGATE_README="$src/README.md")
if [ "$mode" = package ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  args+=(-DCMAKE_PREFIX_PATH="$work/prefix")
else
  args+=(-DKEYGATE_SOURCE_DIR="$src")
fi
cmake -S "$src/tests/packaging/consumer" -B "$work/build" "${args[@]}" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/app"
