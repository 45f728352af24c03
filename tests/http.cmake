# HTTP integration (issue #5): the framework-agnostic request check, the
# Beast and cpp-httplib adapters, and end-to-end tests that drive the example
# HTTPS server with curl.
keygate_add_test(http_request_test SOURCES http_request_test.cc LABELS http)

# The adapters, each when its target is built.
set(_keygate_adapter_libs "")
set(_keygate_adapter_defs "")
if(TARGET keygate_beast)
  list(APPEND _keygate_adapter_libs keygate::beast)
  list(APPEND _keygate_adapter_defs KEYGATE_TEST_BEAST)
endif()
if(TARGET keygate_httplib)
  list(APPEND _keygate_adapter_libs keygate::httplib)
  list(APPEND _keygate_adapter_defs KEYGATE_TEST_HTTPLIB)
endif()
if(_keygate_adapter_libs)
  keygate_add_test(adapters_test SOURCES adapters_test.cc LIBS ${_keygate_adapter_libs}
    LABELS http concurrent TIMEOUT 120)  # concurrent: the servers run on threads
  target_compile_definitions(adapters_test PRIVATE ${_keygate_adapter_defs})
endif()

# End-to-end: the example server (examples/server) driven by curl over HTTPS,
# keys made with the `keygate` CLI. The examples are added after the tests,
# so the server's target is named by generator expression.
# Without curl the script skips (exit 77); under KEYGATE_REQUIRE_ALL_TESTS
# curl is required at configure time and a skip would be a failure.
find_program(KEYGATE_CURL curl)
if(KEYGATE_BUILD_EXAMPLES AND TARGET keygate_cli AND TARGET keygate_beast AND TARGET keygate_sqlite)
  foreach(verifier hotpath reference)
    add_test(NAME http_e2e_${verifier}
      COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/http_e2e_test.sh
        $<TARGET_FILE:keygate_example_server> $<TARGET_FILE:keygate_cli> ${verifier})
    # concurrent: the server's threads run under TSan too (a TSan report
    # makes the server exit non-zero, which the script checks at SIGTERM).
    set_tests_properties(http_e2e_${verifier} PROPERTIES LABELS "http;e2e;concurrent" TIMEOUT 300)
    if(KEYGATE_SANITIZE)
      # Reaching a sanitized server takes longer than the default 5 s grace.
      set_tests_properties(http_e2e_${verifier} PROPERTIES ENVIRONMENT KEYGATE_E2E_GRACE_S=20)
    endif()
    # A target of the test's name builds what it runs (scripts/test.sh builds
    # the targets named by the tests it selects).
    add_custom_target(http_e2e_${verifier})
    add_dependencies(http_e2e_${verifier} keygate_example_server keygate_cli)
    if(NOT KEYGATE_REQUIRE_ALL_TESTS)
      set_tests_properties(http_e2e_${verifier} PROPERTIES SKIP_RETURN_CODE 77)
    endif()
  endforeach()
  # Two servers sharing a key's rate limit through a Redis started by the
  # script (--redis); skipped without redis-server outside CI.
  if(TARGET keygate_redis)
    add_test(NAME redis_e2e_shared
      COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/redis_e2e_test.sh
        $<TARGET_FILE:keygate_example_server> $<TARGET_FILE:keygate_cli>)
    set_tests_properties(redis_e2e_shared PROPERTIES LABELS "http;e2e;redis;concurrent" TIMEOUT 120)
    add_custom_target(redis_e2e_shared)
    add_dependencies(redis_e2e_shared keygate_example_server keygate_cli)
    if(NOT KEYGATE_REQUIRE_ALL_TESTS)
      set_tests_properties(redis_e2e_shared PROPERTIES SKIP_RETURN_CODE 77)
    endif()
  endif()
  # Four servers and the CLI on one PostgreSQL started by the script
  # (tests/e2e/pg_temp.sh): a revoke reaches every server through NOTIFY, the
  # servers serve from memory while PostgreSQL is down and follow again when it
  # is back; one polls without LISTEN (--db-no-listen). Skipped without the
  # PostgreSQL binaries outside CI.
  if(TARGET keygate_postgres)
    add_test(NAME postgres_e2e_shared
      COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/postgres_e2e_test.sh
        $<TARGET_FILE:keygate_example_server> $<TARGET_FILE:keygate_cli>)
    set_tests_properties(postgres_e2e_shared PROPERTIES
      LABELS "http;e2e;postgres;concurrent" TIMEOUT 180)
    if(KEYGATE_SANITIZE)
      # A request to a sanitized server takes longer than to a plain one: the bound on a
      # revoke reaching every server is checked with that margin.
      set_tests_properties(postgres_e2e_shared PROPERTIES
        ENVIRONMENT KEYGATE_E2E_PROPAGATION_MS=3000)
    endif()
    add_custom_target(postgres_e2e_shared)
    add_dependencies(postgres_e2e_shared keygate_example_server keygate_cli)
    if(NOT KEYGATE_REQUIRE_ALL_TESTS)
      set_tests_properties(postgres_e2e_shared PROPERTIES SKIP_RETURN_CODE 77)
    endif()
  endif()
  # Attacks on the server's HTTP layer (issue 19): trailers, framing,
  # connection floods, descriptor exhaustion. Python's sockets and ssl.
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  set(hardening_cases "")
  if(KEYGATE_SANITIZE)
    # Every case but emfile: with no descriptor left, the sanitizer runtime
    # cannot open the pipe it probes memory with, and UBSan's vptr check
    # stops the server (the unchanged server too). The unsanitized g++ run
    # covers emfile.
    set(hardening_cases trailer_crash trailer_memory trailer_auth transfer_coding limits
      connection_cap)
  endif()
  add_test(NAME http_hardening
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/http_hardening_test.py
      $<TARGET_FILE:keygate_example_server> $<TARGET_FILE:keygate_cli> ${hardening_cases})
  # Not labelled concurrent (no TSan run): its cases measure the server's
  # resources (RSS growth, descriptors), which TSan's shadow memory and
  # descriptors distort; the server's threads run under TSan in http_e2e_*.
  set_tests_properties(http_hardening PROPERTIES LABELS "http;e2e" TIMEOUT 120)
endif()
