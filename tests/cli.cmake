# The `keygate` command-line tool, driven as a separate process. format.cc is
# compiled in as well, for unit tests of its text escaping.
if(TARGET keygate_cli)
  keygate_add_test(cli_test SOURCES cli_test.cc ${PROJECT_SOURCE_DIR}/src/cli/format.cc
    LIBS keygate::sqlite LABELS cli sqlite concurrent TIMEOUT 300)  # concurrent: the store's poller
  add_dependencies(cli_test keygate_cli)
  target_compile_definitions(cli_test PRIVATE KEYGATE_CLI_BINARY="$<TARGET_FILE:keygate_cli>")
  if(TARGET keygate_postgres)  # the CLI takes a postgresql:// --db
    target_compile_definitions(cli_test PRIVATE KEYGATE_TEST_CLI_POSTGRES)
  endif()
  if(TARGET keygate_webhooks AND TARGET keygate_httplib)
    # `webhooks deliveries` on the log of a dispatcher run in the test against a local HTTPS
    # receiver (tests/webhook_receiver.h).
    target_link_libraries(cli_test PRIVATE keygate::webhooks keygate::httplib)
    target_compile_definitions(cli_test PRIVATE KEYGATE_TEST_CLI_WEBHOOKS)
  elseif(TARGET keygate_webhooks AND KEYGATE_REQUIRE_ALL_TESTS)
    message(FATAL_ERROR "cli_test's webhook cases need the cpp-httplib adapter for a receiver")
  endif()
endif()
# `keygate serve`: the admin API over HTTPS, driven by curl (tests/e2e/serve_test.sh).
if(TARGET keygate_cli AND TARGET keygate_admin AND TARGET keygate_httplib)
  add_test(NAME serve_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/serve_test.sh
                                  $<TARGET_FILE:keygate_cli>)
  set_tests_properties(serve_e2e PROPERTIES LABELS "cli;e2e;admin;concurrent" TIMEOUT 120)
  add_custom_target(serve_e2e)
  add_dependencies(serve_e2e keygate_cli)
  if(NOT KEYGATE_REQUIRE_ALL_TESTS)
    set_tests_properties(serve_e2e PROPERTIES SKIP_RETURN_CODE 77)
  endif()
endif()
