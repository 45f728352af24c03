# The fuzz seed corpora replayed as regression tests with any compiler.
foreach(target token bearer)
  add_executable(${target}_fuzz_replay ${PROJECT_SOURCE_DIR}/fuzz/${target}_fuzz.cc
                 ${PROJECT_SOURCE_DIR}/fuzz/replay_main.cc)
  target_link_libraries(${target}_fuzz_replay PRIVATE keygate::keygate)
  target_include_directories(${target}_fuzz_replay PRIVATE ${PROJECT_SOURCE_DIR}/src)
  keygate_set_warnings(${target}_fuzz_replay)
  add_test(NAME ${target}_fuzz_replay
           COMMAND ${target}_fuzz_replay ${PROJECT_SOURCE_DIR}/fuzz/corpus/${target})
  set_tests_properties(${target}_fuzz_replay PROPERTIES LABELS "core;fuzz" TIMEOUT 120)
endforeach()
