# The fuzz corpora (seeds, and every input that once made a fuzzer fail)
# replayed as regression tests with any compiler: fuzz/targets.cmake.
include(${PROJECT_SOURCE_DIR}/fuzz/targets.cmake)
foreach(name ${KEYGATE_FUZZ_TARGETS})
  keygate_fuzz_target(${name}_fuzz_replay ${name} ${PROJECT_SOURCE_DIR}/fuzz/replay_main.cc)
  add_test(NAME ${name}_fuzz_replay
           COMMAND ${name}_fuzz_replay ${PROJECT_SOURCE_DIR}/fuzz/corpus/${name})
  set_tests_properties(${name}_fuzz_replay PROPERTIES LABELS "core;fuzz" TIMEOUT 120)
endforeach()
