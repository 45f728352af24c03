# The admin console in Debian's Chromium (tests/browser/console_test.mjs): puppeteer-core and
# axe-core from tests/browser/package-lock.json (scripts/setup.sh runs npm ci), driving
# `keygate serve`, with the example server on the same database. Not labelled concurrent, so
# not in CI's TSan run: the browser does the work here, and serve_e2e runs the server there.
# The examples are added after the tests (tests/http.cmake): the server is named by generator
# expression, and needs what it is built from.
if(KEYGATE_BUILD_EXAMPLES AND TARGET keygate_cli AND TARGET keygate_admin AND
   TARGET keygate_httplib AND TARGET keygate_beast AND TARGET keygate_sqlite)
  find_program(KEYGATE_NODE node)
  if(KEYGATE_NODE)
    add_test(NAME console_browser
             COMMAND ${KEYGATE_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/browser/console_test.mjs
                     $<TARGET_FILE:keygate_cli> $<TARGET_FILE:keygate_example_server>
                     ${CMAKE_CURRENT_BINARY_DIR}/console-screenshots)
    set_tests_properties(console_browser PROPERTIES LABELS "admin;e2e;browser" TIMEOUT 180)
    if(KEYGATE_SANITIZE)
      # A sanitized server answers more slowly: longer waits (the test's default is 5 s).
      set_tests_properties(console_browser PROPERTIES ENVIRONMENT KEYGATE_E2E_GRACE_S=20)
    endif()
    add_custom_target(console_browser)
    add_dependencies(console_browser keygate_cli keygate_example_server)
    if(NOT KEYGATE_REQUIRE_ALL_TESTS)
      set_tests_properties(console_browser PROPERTIES SKIP_RETURN_CODE 77)
    endif()
  elseif(KEYGATE_REQUIRE_ALL_TESTS)
    message(FATAL_ERROR "the console's browser test needs Node.js (node) on the PATH")
  endif()
endif()
