# The PostgreSQL store (issue 15) at a million keys: COPY inserts, Verifier load, trigram name
# search (with a no-index baseline), point reads, and BM_VerifyHit on a PostgreSQL-backed
# Verifier against a memory-backed one; and the cross-server revocation driver. Both start their
# own PostgreSQL server (tests/postgres_server.h). See bench/README.md.
#   build-*/bench/postgres_bench               (KEYGATE_BENCH_KEYS=N to resize)
#   build-*/bench/postgres_revocation_bench    (--help)
if(TARGET keygate_postgres)
  find_package(PkgConfig REQUIRED)
  # The baseline and EXPLAIN talk to the server directly (keygate_postgres links libpq privately).
  pkg_check_modules(KEYGATE_BENCH_LIBPQ REQUIRED IMPORTED_TARGET libpq)
  add_executable(postgres_bench ${CMAKE_CURRENT_LIST_DIR}/postgres_bench.cc)
  target_link_libraries(postgres_bench PRIVATE keygate::postgres keygate::keygate
    benchmark::benchmark PkgConfig::KEYGATE_BENCH_LIBPQ absl::flat_hash_map absl::strings
    absl::time)
  target_include_directories(postgres_bench PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  keygate_set_warnings(postgres_bench)
endif()
# Cross-server revocation: a driver and its follower processes (the same binary). It revokes
# through the keygate CLI when this build has one that takes a postgresql:// --db, else through
# KeyManager (its JSON says which).
if(TARGET keygate_postgres)
  add_executable(postgres_revocation_bench ${CMAKE_CURRENT_LIST_DIR}/postgres_revocation_bench.cc)
  target_link_libraries(postgres_revocation_bench PRIVATE keygate::postgres keygate::keygate
    absl::status absl::statusor absl::strings absl::time)
  target_include_directories(postgres_revocation_bench PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  if(TARGET keygate_cli)
    target_compile_definitions(postgres_revocation_bench PRIVATE
      KEYGATE_BENCH_CLI="$<TARGET_FILE:keygate_cli>")
    add_dependencies(postgres_revocation_bench keygate_cli)
  endif()
  keygate_set_warnings(postgres_revocation_bench)
endif()
