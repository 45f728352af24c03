#!/usr/bin/env bash
# Installs the Debian 12 packages keygate needs to build, test and run its demo.
# Idempotent and quiet when everything is present. Run as root or with sudo.
#
#   scripts/setup.sh            # build, test and demo dependencies
#   scripts/setup.sh --bench    # also wrk for bench/http
set -euo pipefail

packages=(
  g++ clang clang-format clang-tidy libclang-rt-14-dev lld cmake ninja-build pkg-config make
  libssl-dev libabsl-dev libboost-dev zlib1g-dev
  catch2 libbenchmark-dev
  libsqlite3-dev sqlite3 libcli11-dev
  libcpp-httplib-dev ca-certificates curl openssl python3
  redis-server libhiredis-dev libcurl4-openssl-dev
  postgresql-15 libpq-dev postgresql-contrib
  nlohmann-json3-dev python3-jsonschema
  chromium fonts-dejavu-core
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(wrk)
fi
# The console's browser test runs on Node.js (18 or later). Debian's only where the machine has
# none of its own: Debian's npm conflicts with other builds of nodejs.
if ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The console's browser test drives Chromium with puppeteer-core and checks it with axe-core,
# both pinned by tests/browser/package-lock.json (Node.js and npm come with the machine).
browser_modules() {
  local dir tests_dir
  tests_dir="$(dirname "$0")/../tests/browser"
  dir="$tests_dir/node_modules"
  if ! command -v npm >/dev/null; then
    echo "setup: npm not found: the console's browser test cannot run" >&2
    return 0
  fi
  if [ ! -f "$dir/.package-lock.json" ] || [ "$tests_dir/package-lock.json" -nt "$dir/.package-lock.json" ]; then
    echo "setup: npm ci (tests/browser)" >&2
    # Not fatal: the rest builds and tests without it; the browser test then says why it
    # cannot run (and fails under CI).
    if ! (cd "$tests_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
      echo "setup: npm ci failed in tests/browser: the console's browser test cannot run" >&2
    fi
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  browser_modules
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
browser_modules
