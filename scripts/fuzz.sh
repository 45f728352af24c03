#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/targets.cmake) with clang, ASan + UBSan,
# the library instrumented for coverage, and for each target:
#   1. replays its corpus fuzz/corpus/<name> (seeds and past findings: the
#      regression tests, also run by ctest as <name>_fuzz_replay);
#   2. fuzzes it for SECONDS (default 60) starting from that corpus.
# Targets run PARALLEL at a time (default 2). New inputs go to a scratch
# directory, not into the repository; a failing input is kept and named.
#   scripts/fuzz.sh [SECONDS]            # CI: scripts/fuzz.sh 20
#   PARALLEL=1 scripts/fuzz.sh 60
#   FUZZ_TARGETS="query json" scripts/fuzz.sh 60
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
parallel="${PARALLEL:-2}"
scripts/setup.sh
dir=build/fuzz
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
  -DKEYGATE_FUZZ=ON -DKEYGATE_BUILD_TESTS=OFF -DKEYGATE_BUILD_BENCH=OFF \
  -DKEYGATE_BUILD_EXAMPLES=OFF -DKEYGATE_BUILD_CLI=OFF -DKEYGATE_SANITIZE=address,undefined >/dev/null
cmake --build "$dir" -j "$(nproc)" --target keygate_fuzzers
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  targets=()
  for exe in "$dir"/fuzz/*_fuzz; do
    name="$(basename "$exe")"
    targets+=("${name%_fuzz}")
  done
fi

# Runs one target; prints one summary line, or the failure and its input.
fuzz_one() {
  local name="$1" exe="$dir/fuzz/$1_fuzz" corpus="fuzz/corpus/$1"
  local scratch log
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$name.XXXXXX")"
  log="$scratch/log"
  mkdir "$scratch/new"
  if ! "$exe" -runs=0 "$corpus" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $name fails on its own corpus $corpus (log: $log)" >&2
    return 1
  fi
  if ! "$exe" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$scratch/" "$scratch/new" "$corpus" >"$log" 2>&1; then
    grep -m1 'Seed:' "$log" || true  # -seed=N replays the same mutation sequence
    tail -n 60 "$log"
    echo "fuzz: $name found a failure; the input is" \
      "$(find "$scratch" -maxdepth 1 -type f ! -name log | tr '\n' ' ')" >&2
    echo "fuzz: after the fix, add it to $corpus/ (a regression test)" >&2
    return 1
  fi
  local execs counters covered
  execs="$(awk '/stat::number_of_executed_units/ {print $2}' "$log")"
  counters="$(grep -o -m1 '[0-9]* inline 8-bit counters' "$log" | awk '{print $1}' || true)"
  covered="$(grep -o 'DONE *cov: [0-9]*' "$log" | awk '{print $3}' || true)"
  echo "$name: $execs inputs in ${seconds}s, edges covered $covered of $counters," \
    "corpus $(find "$corpus" -type f | wc -l) seeds + $(find "$scratch/new" -type f | wc -l) new," \
    "no findings"
  rm -rf "$scratch"
}

status=0
running=()
for name in "${targets[@]}"; do
  fuzz_one "$name" &
  running+=("$!")
  if [ "${#running[@]}" -ge "$parallel" ]; then
    wait "${running[0]}" || status=1
    running=("${running[@]:1}")
  fi
done
for pid in "${running[@]}"; do wait "$pid" || status=1; done
exit "$status"
