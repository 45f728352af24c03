#!/usr/bin/env bash
# The main job: builds keygate and runs the narrated demo on the embedded
# SQLite default store (a keygate.db in a temporary directory it names).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEYGATE_BUILD_BENCH=OFF >/dev/null
cmake --build build/release -j "$(nproc)" --target keygate_demo
exec build/release/examples/keygate_demo "$@"
