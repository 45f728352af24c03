#!/usr/bin/env bash
# Runs clang-tidy (.clang-tidy) over the library's and tools' sources using
# the compile commands of a configured build directory.
#   scripts/tidy.sh build/test-g++
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/test-g++}"
cmake -S . -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
mapfile -t files < <(git ls-files 'src/*.cc')
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -n 4 clang-tidy -p "$build" --quiet \
  --warnings-as-errors='*' 2> >(grep -v -E "warnings generated|Suppressed|Use -header-filter|NOLINT" >&2)
echo "clang-tidy: ${#files[@]} files clean"
