# The README's usage example on the core library. It runs as a smoke test:
# it exits non-zero if keygate does not answer as it expects.
add_executable(keygate_quickstart quickstart.cc)
target_link_libraries(keygate_quickstart PRIVATE keygate::keygate)
keygate_set_warnings(keygate_quickstart)

if(KEYGATE_BUILD_TESTS)
  add_test(NAME example_quickstart COMMAND keygate_quickstart)
  set_tests_properties(example_quickstart PROPERTIES LABELS "examples" TIMEOUT 60)
endif()
