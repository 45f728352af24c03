# The SQLite store at a million keys: batch inserts, Verifier load, name
# search (with a naive LIKE-scan baseline), point reads, per-commit cost.
#   build-*/bench/sqlite_bench            (KEYGATE_BENCH_KEYS=N to resize)
if(TARGET keygate_sqlite)
  find_package(SQLite3 REQUIRED)  # the naive-search baseline talks to SQLite directly
  add_executable(sqlite_bench sqlite_bench.cc)
  target_link_libraries(sqlite_bench PRIVATE
    keygate::sqlite keygate::keygate SQLite::SQLite3 benchmark::benchmark
    absl::flat_hash_map absl::strings absl::time)
  keygate_set_warnings(sqlite_bench)
endif()
