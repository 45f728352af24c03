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
  redis-server libhiredis-dev
  postgresql-15 libpq-dev postgresql-contrib
  nlohmann-json3-dev python3-jsonschema
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(wrk)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
