#!/usr/bin/env bash
# Long fuzzing before a release: runs every libFuzzer target (or those named)
# for SECONDS each (default 3600) on JOBS processes (default: all cores),
# keeping a growing corpus per target in CORPUS_DIR/<name> (seeded from
# fuzz/corpus/<name>; reuse the same CORPUS_DIR across runs to build on it).
# At the end each target's corpus is minimised (-merge=1) and the executions
# per target are reported. Failing inputs are kept in CORPUS_DIR/<name>.findings;
# once fixed, copy them into fuzz/corpus/<name>/ (ctest replays that folder).
#   scripts/fuzz-long.sh CORPUS_DIR [SECONDS] [JOBS] [TARGET...]
#   scripts/fuzz-long.sh ~/keygate-corpus 14400 16          # 4 h per target
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
out="$(realpath -m "$1")"
seconds="${2:-3600}"
jobs="${3:-$(nproc)}"
shift $(($# < 3 ? $# : 3))
scripts/setup.sh
dir=build/fuzz
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DKEYGATE_FUZZ=ON -DKEYGATE_BUILD_TESTS=OFF -DKEYGATE_BUILD_BENCH=OFF \
  -DKEYGATE_BUILD_EXAMPLES=OFF -DKEYGATE_BUILD_CLI=OFF -DKEYGATE_SANITIZE=address,undefined >/dev/null
cmake --build "$dir" -j "$(nproc)" --target keygate_fuzzers
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for exe in "$dir"/fuzz/*_fuzz; do
    name="$(basename "$exe")"
    targets+=("${name%_fuzz}")
  done
fi

status=0
report=()
for name in "${targets[@]}"; do
  exe="$(realpath "$dir/fuzz/${name}_fuzz")"
  seeds="$(realpath "fuzz/corpus/$name")"
  corpus="$out/$name"
  findings="$out/$name.findings"
  logs="$out/$name.logs"
  mkdir -p "$corpus" "$findings"
  rm -rf "$logs" && mkdir -p "$logs"
  echo "fuzz-long: $name for ${seconds}s on $jobs jobs (logs in $logs)"
  # -jobs runs JOBS fuzzing processes side by side, each writing its log to
  # fuzz-<n>.log in the current directory and its new inputs to $corpus.
  failed=0
  (cd "$logs" && "$exe" -jobs="$jobs" -workers="$jobs" -max_total_time="$seconds" -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" "$seeds" >/dev/null 2>&1) ||
    failed=1
  execs="$(cat "$logs"/fuzz-*.log 2>/dev/null |
    awk '/stat::number_of_executed_units/ {n += $2} END {print n + 0}')"
  # Keep the corpus small: only inputs that add coverage survive.
  minimal="$(mktemp -d)"
  "$exe" -merge=1 "$minimal" "$corpus" >"$logs/merge.log" 2>&1 || true
  if [ -n "$(ls -A "$minimal")" ]; then
    rm -rf "$corpus" && mv "$minimal" "$corpus"
  else
    rm -rf "$minimal"
  fi
  line="$name: $execs executions in ${seconds}s x $jobs jobs, corpus $(find "$corpus" -type f | wc -l) inputs"
  if [ "$failed" -ne 0 ] || [ -n "$(ls -A "$findings")" ]; then
    line="$line, FAILURES in $findings (see $logs)"
    status=1
  fi
  echo "$line"
  report+=("$line")
done
echo
echo "fuzz-long summary:"
printf '  %s\n' "${report[@]}"
exit "$status"
