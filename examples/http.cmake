# The example HTTPS API server (issue #5): Boost.Beast + OpenSSL, keys in the
# SQLite file (or, with keygate::postgres, the PostgreSQL database) the
# `keygate` CLI manages. Driven by the end-to-end tests
# (tests/e2e/), the narrated demo (scripts/demo_http.sh) and the HTTP
# benchmark (bench/http/).
find_package(CLI11 QUIET)
if(TARGET keygate_beast AND TARGET keygate_sqlite AND NOT TARGET CLI11::CLI11)
  message(STATUS "keygate: no CLI11 (libcli11-dev): the example server is not built")
endif()
if(TARGET keygate_beast AND TARGET keygate_sqlite AND TARGET CLI11::CLI11)
  add_executable(keygate_example_server
    server/main.cc
    server/server.cc)
  target_link_libraries(keygate_example_server PRIVATE
    keygate::keygate keygate::beast keygate::sqlite OpenSSL::SSL OpenSSL::Crypto
    CLI11::CLI11 absl::strings absl::status absl::statusor absl::time Threads::Threads)
  # server/ for its own headers; the library's src/ for its private helpers
  # (internal/json_string.h), as the CLI does.
  target_include_directories(keygate_example_server PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/server
    ${PROJECT_SOURCE_DIR}/src)
  keygate_set_warnings(keygate_example_server)
  if(TARGET keygate_postgres)  # --db postgresql://...
    target_link_libraries(keygate_example_server PRIVATE keygate::postgres)
    target_compile_definitions(keygate_example_server PRIVATE KEYGATE_EXAMPLE_WITH_POSTGRES)
  endif()
  if(TARGET keygate_admin)  # /admin/...
    target_link_libraries(keygate_example_server PRIVATE keygate::admin)
    target_compile_definitions(keygate_example_server PRIVATE KEYGATE_EXAMPLE_WITH_ADMIN)
  endif()
  if(TARGET keygate_webhooks)  # --webhook-state
    target_link_libraries(keygate_example_server PRIVATE keygate::webhooks)
    target_compile_definitions(keygate_example_server PRIVATE KEYGATE_EXAMPLE_WITH_WEBHOOKS)
  endif()
  if(TARGET keygate_redis)  # --redis
    target_link_libraries(keygate_example_server PRIVATE keygate::redis)
    target_compile_definitions(keygate_example_server PRIVATE KEYGATE_EXAMPLE_WITH_REDIS)
  endif()
endif()
