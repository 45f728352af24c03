# The Redis rate limiter (issue 16): BM_VerifyHit with it against the local limiter, and a
# baseline of one GCRA Lua call per request over hiredis. Starts its own redis-server
# (tests/redis_server.h). See bench/README.md.
if(TARGET keygate_redis)
  find_package(PkgConfig REQUIRED)
  # The baseline's own client (keygate_redis links hiredis privately).
  pkg_check_modules(KEYGATE_BENCH_HIREDIS REQUIRED IMPORTED_TARGET hiredis)
  add_executable(redis_limiter_bench ${CMAKE_CURRENT_LIST_DIR}/redis_limiter_bench.cc)
  target_link_libraries(redis_limiter_bench PRIVATE keygate::redis keygate::keygate
    benchmark::benchmark PkgConfig::KEYGATE_BENCH_HIREDIS absl::status absl::statusor absl::time)
  target_include_directories(redis_limiter_bench PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  keygate_set_warnings(redis_limiter_bench)
endif()
