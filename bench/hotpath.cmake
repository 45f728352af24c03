# Hot-path benchmarks (issue #3): the Verifier against BM_HashOnly (the floor)
# and two locked baselines, in one binary. See bench/README.md.
add_executable(verifier_bench ${CMAKE_CURRENT_LIST_DIR}/verifier_bench.cc)
target_link_libraries(verifier_bench PRIVATE keygate::keygate benchmark::benchmark
  absl::flat_hash_map absl::synchronization)
target_include_directories(verifier_bench PRIVATE ${PROJECT_SOURCE_DIR}/src)  # internal/canonical_token.h
keygate_set_warnings(verifier_bench)
