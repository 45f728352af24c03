#!/usr/bin/env bash
# The main job: builds keygate and runs the narrated demo on the embedded
# SQLite default store.
#   1. examples/demo: the library in one process: keys issued into a SQLite
#      file (in a temporary directory it names), a Verifier following it,
#      each verdict and its HTTP answer;
#   2. scripts/demo_http.sh: the example HTTPS API server on a SQLite file,
#      keys managed with the keygate CLI while it runs, real requests with curl;
#      then two servers sharing a key's rate limit through Redis, and two
#      servers on one PostgreSQL database (a throwaway server the demo starts)
#      following a revoke made with the CLI.
# Exits 0 only if every step answered as expected; leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=build/release
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEYGATE_BUILD_BENCH=OFF \
  -DKEYGATE_BUILD_TESTS=OFF >/dev/null
echo "building keygate (Release) in $build ..."
cmake --build "$build" -j "$(nproc)" --target keygate_demo keygate_cli keygate_example_server \
  >/dev/null
echo
echo "################ Part 1: the library, in one process ################"
"$build/examples/keygate_demo"
echo
echo "################ Part 2: an HTTPS API protected by keygate ################"
KEYGATE_BUILD_DIR="$build" scripts/demo_http.sh
