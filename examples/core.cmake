# Examples on the core library. Both run as smoke tests: they exit non-zero
# if keygate does not answer as they expect.
add_executable(keygate_quickstart quickstart.cc)
target_link_libraries(keygate_quickstart PRIVATE keygate::keygate)
keygate_set_warnings(keygate_quickstart)

# The interim main job (in-memory store); the SQLite demo supersedes it.
add_executable(keygate_basic_demo basic_demo.cc)
target_link_libraries(keygate_basic_demo PRIVATE keygate::keygate)
keygate_set_warnings(keygate_basic_demo)

if(KEYGATE_BUILD_TESTS)
  add_test(NAME example_quickstart COMMAND keygate_quickstart)
  add_test(NAME example_basic_demo COMMAND keygate_basic_demo)
  set_tests_properties(example_quickstart example_basic_demo PROPERTIES
    LABELS "examples" TIMEOUT 60)
endif()
