#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for
# SECONDS (default 60) starting from its seed corpus in fuzz/corpus/<name>.
# New inputs go to a scratch directory, not into the repository.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
scripts/setup.sh
dir=build/fuzz
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DKEYGATE_FUZZ=ON -DKEYGATE_BUILD_TESTS=OFF -DKEYGATE_BUILD_BENCH=OFF \
  -DKEYGATE_BUILD_EXAMPLES=OFF -DKEYGATE_BUILD_CLI=OFF -DKEYGATE_SANITIZE=address,undefined >/dev/null
cmake --build "$dir" -j "$(nproc)" --target token_fuzz bearer_fuzz
for target in token_fuzz bearer_fuzz; do
  scratch="$(mktemp -d)"
  log="$scratch.log"
  if ! "$dir/fuzz/$target" -max_total_time="$seconds" -print_final_stats=1 "$scratch" \
      "fuzz/corpus/${target%_fuzz}" >"$log" 2>&1; then
    grep -m1 'Seed:' "$log" || true  # -seed=N replays the same mutation sequence
    tail -n 60 "$log"
    echo "fuzz: $target found a failure (reproducer in $scratch or the crash-* file above)" >&2
    exit 1
  fi
  echo "$target: $(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}') inputs in ${seconds}s, no findings"
  rm -rf "$scratch" "$log"
done
