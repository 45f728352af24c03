# Core value types: tokens, digests, secrets, scopes, Authorization parsing and
# the HTTP mapping.
find_package(ZLIB REQUIRED)  # the reference CRC-32 in token_test
keygate_add_test(token_test SOURCES token_test.cc LIBS ZLIB::ZLIB LABELS core)
keygate_add_test(secret_test SOURCES secret_test.cc LABELS core)
keygate_add_test(envelope_test SOURCES envelope_test.cc LIBS OpenSSL::Crypto LABELS core)
keygate_add_test(webhook_signature_test SOURCES webhook_signature_test.cc LIBS OpenSSL::Crypto
  LABELS core)
keygate_add_test(digest_test SOURCES digest_test.cc LABELS core concurrent)
keygate_add_test(scope_test SOURCES scope_test.cc LABELS core)
keygate_add_test(bearer_test SOURCES bearer_test.cc LABELS core)
keygate_add_test(canonical_token_test SOURCES canonical_token_test.cc LABELS core)
keygate_add_test(http_test SOURCES http_test.cc LABELS core)

# The README's usage example is examples/quickstart.cc, which CI builds and runs.
add_test(NAME readme_quickstart_in_sync
         COMMAND ${CMAKE_COMMAND} -DREADME=${PROJECT_SOURCE_DIR}/README.md
                 -DEXAMPLE=${PROJECT_SOURCE_DIR}/examples/quickstart.cc
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/readme_sync.cmake)
set_tests_properties(readme_quickstart_in_sync PROPERTIES LABELS core)
