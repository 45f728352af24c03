# The main job's demo (scripts/demo.sh): keys in the SQLite default store,
# verified by the hot-path Verifier, answered as HTTP. Also a smoke test.
if(TARGET keygate_sqlite)
  add_executable(keygate_demo demo.cc)
  target_link_libraries(keygate_demo PRIVATE keygate::keygate keygate::sqlite)
  keygate_set_warnings(keygate_demo)

  if(KEYGATE_BUILD_TESTS)
    # The demo refuses an existing database, so each run starts from a clean
    # file in the build tree.
    set(_keygate_demo_db ${CMAKE_CURRENT_BINARY_DIR}/demo-test/keygate.db)
    add_test(NAME example_demo_clean COMMAND ${CMAKE_COMMAND} -E rm -rf
      ${CMAKE_CURRENT_BINARY_DIR}/demo-test)
    add_test(NAME example_demo_mkdir COMMAND ${CMAKE_COMMAND} -E make_directory
      ${CMAKE_CURRENT_BINARY_DIR}/demo-test)
    add_test(NAME example_demo COMMAND keygate_demo ${_keygate_demo_db})
    set_tests_properties(example_demo_clean PROPERTIES FIXTURES_SETUP keygate_demo_clean)
    set_tests_properties(example_demo_mkdir PROPERTIES
      FIXTURES_SETUP keygate_demo_dir FIXTURES_REQUIRED keygate_demo_clean)
    set_tests_properties(example_demo PROPERTIES
      FIXTURES_REQUIRED "keygate_demo_clean;keygate_demo_dir" LABELS "examples;sqlite" TIMEOUT 60)
    set_tests_properties(example_demo_clean example_demo_mkdir PROPERTIES LABELS "examples;sqlite")
  endif()
endif()
