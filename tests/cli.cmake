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
endif()
