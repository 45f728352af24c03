# The main job's demo (scripts/demo.sh): keys in the SQLite default store,
# verified by the hot-path Verifier, answered as HTTP. Also a smoke test.
if(TARGET keygate_sqlite)
  add_executable(keygate_demo demo.cc)
  target_link_libraries(keygate_demo PRIVATE keygate::keygate keygate::sqlite)
  keygate_set_warnings(keygate_demo)

  if(KEYGATE_BUILD_TESTS)
    # The demo refuses an existing database; the script starts each run from
    # a clean directory in the build tree.
    add_test(NAME example_demo COMMAND ${CMAKE_COMMAND} -DDEMO=$<TARGET_FILE:keygate_demo>
      -DDIR=${CMAKE_CURRENT_BINARY_DIR}/demo-test -P ${CMAKE_CURRENT_SOURCE_DIR}/run_demo.cmake)
    set_tests_properties(example_demo PROPERTIES LABELS "examples;sqlite" TIMEOUT 60)
  endif()
endif()
