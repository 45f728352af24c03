# The fuzz targets, shared by fuzz/CMakeLists.txt (libFuzzer executables,
# clang) and tests/fuzz.cmake (corpus replay with any compiler). Target
# <name> is fuzz/<name>_fuzz.cc with its seed corpus in fuzz/corpus/<name>.
set(KEYGATE_FUZZ_TARGETS token bearer query address_filter cli_parse)
if(TARGET keygate_sqlite)
  find_package(SQLite3 REQUIRED)  # record_row_fuzz binds columns itself
  list(APPEND KEYGATE_FUZZ_TARGETS json record_row)
endif()
if(TARGET keygate_admin)
  list(APPEND KEYGATE_FUZZ_TARGETS admin_request)
endif()

# keygate_fuzz_target(<executable> <name> [sources...]): builds the harness
# of fuzz target <name> (plus the extra sources) into <executable>.
function(keygate_fuzz_target exe name)
  add_executable(${exe} ${PROJECT_SOURCE_DIR}/fuzz/${name}_fuzz.cc ${ARGN})
  target_link_libraries(${exe} PRIVATE keygate::keygate)
  target_include_directories(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  if(name STREQUAL "json" OR name STREQUAL "record_row")
    target_link_libraries(${exe} PRIVATE keygate::sqlite SQLite::SQLite3)
  elseif(name STREQUAL "admin_request")
    target_link_libraries(${exe} PRIVATE keygate::admin)
  elseif(name STREQUAL "cli_parse")
    # The CLI's parsers without the CLI (and without CLI11).
    target_sources(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/src/cli/format.cc
                                  ${PROJECT_SOURCE_DIR}/src/cli/parse.cc)
  endif()
  keygate_set_warnings(${exe})
endfunction()
