# The lock-free hot path (issue #3): Verifier, RateLimiter, usage.
keygate_add_test(rate_limiter_test SOURCES rate_limiter_test.cc
  LABELS hotpath concurrent TIMEOUT 60)
# concurrent: readers during reload and growth, concurrent Shutdown, the feed
# thread (run under TSan in CI).
keygate_add_test(verifier_test SOURCES verifier_test.cc
  LABELS hotpath verifier concurrent TIMEOUT 300)
# The allocation-counting test replaces the global operator new/delete,
# which ThreadSanitizer's runtime defines itself (a link-time clash): it runs
# in the plain and ASan+UBSan builds, where it can count.
if(NOT KEYGATE_SANITIZE MATCHES "thread")
  keygate_add_test(verifier_alloc_test SOURCES verifier_alloc_test.cc
    LABELS hotpath verifier TIMEOUT 60)
endif()
# Histories of concurrent management and verification, checked for
# linearizability (tests/linearizability.h), on each store that is built.
keygate_add_test(verifier_stress_test SOURCES verifier_stress_test.cc
  LIBS keygate_linearizability LABELS hotpath verifier concurrent TIMEOUT 300)
if(TARGET keygate_sqlite)
  target_link_libraries(verifier_stress_test PRIVATE keygate::sqlite)
  target_compile_definitions(verifier_stress_test PRIVATE KEYGATE_TEST_SQLITE=1)
endif()
# concurrent: the rate-limit denial cells under concurrent adds and takes.
keygate_add_test(verifier_index_test SOURCES verifier_index_test.cc
  LABELS hotpath verifier concurrent TIMEOUT 60)
# The linearizability checker (tests/linearizability.h) on hand-built histories.
keygate_add_test(linearizability_test SOURCES linearizability_test.cc
  LIBS keygate_linearizability LABELS hotpath verifier TIMEOUT 60)
