#!/usr/bin/env bash
# ctest driver for the consumer tests.
#   run_consumer.sh package      <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
#   run_consumer.sh subdirectory <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
#   run_consumer.sh pkgconfig    <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
#   run_consumer.sh components   <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
#   run_consumer.sh custom_store <keygate build dir> <source dir> <work dir> <cxx> <cxx flags>
# package and subdirectory build consumer/ (whose link lines are the README's
# CMake block, plus the optional components: keygate::postgres, ::redis,
# ::beast when built); pkgconfig builds with the README's pkg-config command
# (and keygate-postgres.pc when installed);
# components configures (no build) projects that ask the installed package
# for a component whose dependency is missing (cpp-httplib hidden from
# pkg-config): optional, it is just not found; required, configuration stops
# and says why. custom_store copies custom_store/ (a KeyStore of its own) out
# of the tree, builds it against the installed package and runs the installed
# conformance suite on it.
# $KEYGATE_CONSUMER_EXPECT_POSTGRES=1 (set by ctest when keygate::postgres is
# built): the consumer must get the PostgreSQL store too.
set -euo pipefail
mode="$1" build="$2" src="$3" work="$4" cxx="$5" flags="${6:-}"
expect_postgres="${KEYGATE_CONSUMER_EXPECT_POSTGRES:-0}"
rm -rf "$work"
mkdir -p "$work"

if [ "$mode" = components ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  mkdir -p "$work/no-pkgconfig"
  # pkg-config searches only an empty directory: no cpp-httplib here.
  export PKG_CONFIG_LIBDIR="$work/no-pkgconfig" PKG_CONFIG_PATH=""
  # probe <name> <find_package arguments>: configures a project calling
  # find_package(keygate <arguments>); prints CMake's output, fails as it does.
  probe() {
    local name="$1"
    shift
    mkdir -p "$work/$name"
    cat >"$work/$name/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.20)
project(probe_$name LANGUAGES CXX)
find_package(keygate $*)
foreach(t httplib sqlite)
  if(TARGET keygate::\${t})
    set(target_\${t} yes)
  else()
    set(target_\${t} no)
  endif()
endforeach()
message(STATUS "probe: FOUND=[\${keygate_FOUND}] httplib=[\${keygate_httplib_FOUND}] \
sqlite=[\${keygate_sqlite_FOUND}] nosuch=[\${keygate_nosuch_FOUND}] \
target_httplib=\${target_httplib} target_sqlite=\${target_sqlite}")
CMAKE
    cmake -S "$work/$name" -B "$work/$name/build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$work/prefix" 2>&1
  }
  fail() {
    echo "components: $1" >&2
    exit 1
  }

  # Optional components that are missing: configuration goes on, the rest is there.
  out=$(probe optional REQUIRED COMPONENTS sqlite OPTIONAL_COMPONENTS httplib nosuch) ||
    fail "OPTIONAL_COMPONENTS httplib stopped configuration:"$'\n'"$out"
  grep -Eq 'probe: FOUND=\[(1|TRUE)\] httplib=\[(0|FALSE)\] sqlite=\[(1|TRUE)\] nosuch=\[(0|FALSE)\] target_httplib=no target_sqlite=yes' <<<"$out" ||
    fail "OPTIONAL_COMPONENTS: unexpected result:"$'\n'"$out"
  grep -q "optional component 'httplib' is not available" <<<"$out" ||
    fail "a missing optional component is not reported:"$'\n'"$out"

  # A required component, but find_package itself is not REQUIRED (QUIET):
  # keygate_FOUND is false, configuration goes on, nothing is printed.
  out=$(probe quiet QUIET COMPONENTS httplib) ||
    fail "QUIET COMPONENTS httplib stopped configuration:"$'\n'"$out"
  grep -Eq 'probe: FOUND=\[(0|FALSE)\] httplib=\[(0|FALSE)\]' <<<"$out" ||
    fail "QUIET COMPONENTS: unexpected result:"$'\n'"$out"
  if grep -q "httplib' is not available" <<<"$out"; then
    fail "QUIET printed a message:"$'\n'"$out"
  fi

  # REQUIRED: configuration stops and names the component and the cause.
  if out=$(probe required REQUIRED COMPONENTS httplib); then
    fail "REQUIRED COMPONENTS httplib configured without cpp-httplib:"$'\n'"$out"
  fi
  if [ -n "$(find "$work/prefix" -name keygate-httplibTargets.cmake)" ]; then
    cause="cpp-httplib was not found through pkg-config"
  else
    cause="this keygate was built without it"
  fi
  # CMake wraps the reason over lines.
  grep -q "component 'httplib' is not available: $cause" <<<"$(tr -s ' \n' '  ' <<<"$out")" ||
    fail "REQUIRED COMPONENTS httplib: no clear message:"$'\n'"$out"
  exit 0
fi

if [ "$mode" = custom_store ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  test -f "$work/prefix/include/keygate/testing/key_store_conformance.h"
  # Outside keygate's source tree: nothing but the installed prefix to find.
  cp -R "$src/tests/packaging/custom_store" "$work/project"
  cmake -S "$work/project" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_PREFIX_PATH="$work/prefix" \
    >/dev/null
  cmake --build "$work/build" >/dev/null
  "$work/build/custom_store_test"
  exit 0
fi

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
  # keygate-postgres.pc, when keygate was built with the PostgreSQL store.
  if [ "$expect_postgres" = 1 ]; then
    # shellcheck disable=SC2046
    "$cxx" -std=c++20 "${flag_args[@]}" -DKEYGATE_CONSUMER_POSTGRES \
      "$src/tests/packaging/consumer/main.cc" \
      $(pkg-config --cflags --libs keygate-sqlite keygate-postgres) -o consumer_postgres
    out=$(./consumer_postgres)
    grep -q "keygate::postgres linked" <<<"$out" || { echo "consumer_postgres: $out" >&2; exit 1; }
  fi
  exit 0
fi

# subdirectory compiles the whole library again: unoptimized and without debug information,
# which halves the time; what it checks is how the targets are put together, not the code.
build_type=RelWithDebInfo
if [ "$mode" = subdirectory ]; then build_type=""; fi
args=(-G Ninja -DCMAKE_BUILD_TYPE="$build_type" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags"
      -DKEYGATE_CONSUME="$mode" -DKEYGATE_README="$src/README.md")
if [ "$mode" = package ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  args+=(-DCMAKE_PREFIX_PATH="$work/prefix")
else
  args+=(-DKEYGATE_SOURCE_DIR="$src")
fi
cmake -S "$src/tests/packaging/consumer" -B "$work/build" "${args[@]}" >/dev/null
cmake --build "$work/build" >/dev/null
out=$("$work/build/app")
echo "$out"
if [ "$expect_postgres" = 1 ] && ! grep -q "keygate::postgres linked" <<<"$out"; then
  echo "$mode: keygate was built with keygate::postgres, but the consumer did not get it" >&2
  exit 1
fi
