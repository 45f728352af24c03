#!/usr/bin/env bash
# Fails if any C++ file differs from clang-format's output (.clang-format).
#   scripts/check-format.sh         # check
#   scripts/check-format.sh --fix   # rewrite in place
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cpp')
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
clang-format --dry-run --Werror "${files[@]}"
echo "clang-format: ${#files[@]} files clean"
