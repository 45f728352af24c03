# The PostgreSQL KeyStore (keygate::postgres), against a real PostgreSQL server that each test
# binary starts in a temporary directory (tests/postgres_server.h). Without the server binaries
# a test warns and passes outside CI; under CI it fails.
if(TARGET keygate_postgres)
  keygate_add_test(postgres_conformance_test SOURCES postgres_conformance_test.cc
    LIBS keygate::postgres keygate::conformance LABELS postgres store concurrent TIMEOUT 600)
  keygate_add_test(postgres_key_store_test SOURCES postgres_key_store_test.cc
    LIBS keygate::postgres keygate::conformance LABELS postgres store concurrent TIMEOUT 600)
  # Each test case runs a server of its own that it kills, stops and freezes.
  keygate_add_test(postgres_fault_test SOURCES postgres_fault_test.cc
    LIBS keygate::postgres keygate::conformance LABELS postgres store TIMEOUT 600)
  set_tests_properties(postgres_fault_test PROPERTIES COST 500)  # long: started early
endif()
# Sanitized builds check memory and races, not durability: 10 SIGKILL trials and a 3 s outage
# there (the uninstrumented run makes the issue's 50 trials and 10 s), which keeps CI's time.
if(TARGET keygate_postgres AND KEYGATE_SANITIZE)
  set_tests_properties(postgres_fault_test PROPERTIES
    ENVIRONMENT "KEYGATE_PG_FAULT_TRIALS=10;KEYGATE_PG_FAULT_OUTAGE_S=3")
endif()
