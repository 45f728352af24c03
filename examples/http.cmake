# The example HTTPS API server (issue #5): Boost.Beast + OpenSSL, keys in the
# SQLite file the `keygate` CLI manages. Driven by the end-to-end tests
# (tests/e2e/), the narrated demo (scripts/demo_http.sh) and the HTTP
# benchmark (bench/http/).
if(TARGET keygate_beast AND TARGET keygate_sqlite)
  add_executable(keygate_example_server
    server/main.cc
    server/server.cc
    server/tls.cc)
  target_link_libraries(keygate_example_server PRIVATE
    keygate::keygate keygate::beast keygate::sqlite OpenSSL::SSL OpenSSL::Crypto
    absl::strings absl::status absl::statusor absl::time Threads::Threads)
  target_include_directories(keygate_example_server PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/server)
  keygate_set_warnings(keygate_example_server)
endif()
