# Compiler settings shared by every keygate target.
#
# keygate_set_warnings(<target>) adds the project's warning set (and -Werror
# when KEYGATE_WERROR is ON). -Wnull-dereference is left out: g++ 12 reports
# false positives inside libstdc++'s own headers at -O2. Sanitizers apply to everything built in this
# tree when KEYGATE_SANITIZE is set, so that the library and its tests agree.
# KEYGATE_FUZZ compiles everything with libFuzzer's coverage instrumentation
# (-fsanitize=fuzzer-no-link) so that the fuzzers see the library's branches,
# not only their own; fuzz/CMakeLists.txt links the libFuzzer driver into the
# fuzz executables alone.

if(NOT CMAKE_CXX_STANDARD)
  set(CMAKE_CXX_STANDARD 20)
endif()
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)

function(keygate_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
    -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
    -Wimplicit-fallthrough)
  if(KEYGATE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

if(KEYGATE_SANITIZE)
  string(REPLACE "," ";" _keygate_sans "${KEYGATE_SANITIZE}")
  # Debug information comes from the build type (scripts/test.sh: line tables, all a report
  # needs).
  set(_keygate_san_flags -fsanitize=${KEYGATE_SANITIZE} -fno-omit-frame-pointer)
  if("undefined" IN_LIST _keygate_sans)
    list(APPEND _keygate_san_flags -fno-sanitize-recover=all)
  endif()
  add_compile_options(${_keygate_san_flags})
  add_link_options(-fsanitize=${KEYGATE_SANITIZE})
endif()

if(KEYGATE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "KEYGATE_FUZZ needs clang (libFuzzer)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
