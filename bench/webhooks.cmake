# Webhook delivery (keygate::webhooks) end to end, issue 18's targets: commit-to-delivery
# latency, deliveries/s and memory under a backlog, with the bare sender as the baseline; an
# HTTPS receiver (cpp-httplib) runs in the benchmark's process.
#   build-*/bench/webhook_bench   (KEYGATE_BENCH_SAMPLES, _KEYS, _EVENTS, _SECONDS to resize)
if(TARGET keygate_webhooks AND TARGET keygate_httplib AND TARGET keygate_sqlite)
  find_package(SQLite3 REQUIRED)  # reads the dispatcher's state file after a run
  add_executable(webhook_bench webhook_bench.cc)
  target_link_libraries(webhook_bench PRIVATE keygate::webhooks keygate::httplib keygate::sqlite
    keygate::keygate SQLite::SQLite3 benchmark::benchmark absl::strings absl::time
    Threads::Threads)
  target_include_directories(webhook_bench PRIVATE ${PROJECT_SOURCE_DIR}/src)  # self_signed_cert.h
  keygate_set_warnings(webhook_bench)
endif()
