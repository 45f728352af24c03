# The Redis rate limiter (keygate::redis), against a real redis-server that each test starts on
# a Unix socket (tests/redis_server.h). Without redis-server a test warns and passes outside CI;
# under CI it fails.
if(TARGET keygate_redis)
  keygate_add_test(redis_rate_limiter_test SOURCES redis_rate_limiter_test.cc
    LIBS keygate::redis LABELS redis concurrent TIMEOUT 240)
  # Alone, as redis_fleet_test below: its windows are stamped when Acquire returns, and a
  # parallel test that starves its threads shifts admissions between windows (seen: 526 in a
  # window bounded at 516 with the PostgreSQL tests beside it).
  set_tests_properties(redis_rate_limiter_test PROPERTIES RUN_SERIAL TRUE)

  # One process of the fleet test: a limiter hammered by a few threads, recording admissions
  # (or, for comparison, the peers' baseline of a Lua call per request: its own hiredis).
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(KEYGATE_TEST_HIREDIS REQUIRED IMPORTED_TARGET hiredis)
  add_executable(redis_fleet_helper redis_fleet_helper_main.cc)
  target_link_libraries(redis_fleet_helper PRIVATE keygate::redis keygate::keygate
    PkgConfig::KEYGATE_TEST_HIREDIS absl::strings absl::time)
  keygate_set_warnings(redis_fleet_helper)

  # Issue 16's guarantees, 4 processes x 3 threads on one key (about 30 s). Not labelled
  # concurrent: its threads run in the helper processes, and the TSan run (CI's time) is spent
  # on redis_rate_limiter_test and redis_e2e_shared, which run the same limiter code threaded.
  keygate_add_test(redis_fleet_test SOURCES redis_fleet_test.cc
    LIBS keygate::redis LABELS redis TIMEOUT 240)
  add_dependencies(redis_fleet_test redis_fleet_helper)
  # Alone: its bounds are on time windows, and its 13 threads and Redis share the machine's
  # cores; a parallel test starving them delays reconnects past the 1 s it checks.
  set_tests_properties(redis_fleet_test PROPERTIES RUN_SERIAL TRUE)
  target_compile_definitions(redis_fleet_test PRIVATE
    KEYGATE_REDIS_FLEET_HELPER="$<TARGET_FILE:redis_fleet_helper>")
endif()
