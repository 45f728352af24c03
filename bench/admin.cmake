# The admin API through cpp-httplib's TLS server on the SQLite store (issue 17's targets).
#   build-*/bench/admin_bench            (KEYGATE_BENCH_KEYS=N to resize; default 100,000)
if(TARGET keygate_admin AND TARGET keygate_httplib AND TARGET keygate_sqlite)
  add_executable(admin_bench admin_bench.cc)
  target_link_libraries(admin_bench PRIVATE keygate::admin keygate::httplib keygate::sqlite
    keygate::keygate benchmark::benchmark absl::strings absl::time)
  target_include_directories(admin_bench PRIVATE ${PROJECT_SOURCE_DIR}/src)  # self_signed_cert.h
  keygate_set_warnings(admin_bench)
endif()
