# Management side: deployment, stores, manager, reference verifier, events.
keygate_add_test(memory_key_store_test SOURCES memory_key_store_test.cc
  LABELS management store concurrent TIMEOUT 120)
keygate_add_test(key_manager_test SOURCES key_manager_test.cc
  LABELS management concurrent TIMEOUT 120)
keygate_add_test(reference_verifier_test SOURCES reference_verifier_test.cc
  LABELS management verifier TIMEOUT 60)
keygate_add_test(deployment_test SOURCES deployment_test.cc LABELS management TIMEOUT 60)
keygate_add_test(event_sink_test SOURCES event_sink_test.cc LABELS management concurrent TIMEOUT 60)
keygate_add_test(key_test SOURCES key_test.cc LABELS management TIMEOUT 60)
# The subscriber protocol every store composes (ChangeNotifier).
keygate_add_test(change_notifier_test SOURCES change_notifier_test.cc
  LABELS management store concurrent TIMEOUT 120)
# The conformance checks, each shown to fail on a store that breaks its rule.
keygate_add_test(broken_store_test SOURCES broken_store_test.cc
  LABELS management store concurrent TIMEOUT 120)
keygate_add_test(audit_relay_test SOURCES audit_relay_test.cc
  LABELS management concurrent TIMEOUT 120)
# The admin API over HTTP (keygate::admin).
if(TARGET keygate_admin)
  keygate_add_test(admin_api_test SOURCES admin_api_test.cc LIBS keygate::admin
    LABELS management admin TIMEOUT 120)
endif()
if(TARGET keygate_admin)
  if(KEYGATE_REQUIRE_ALL_TESTS)
    find_package(Python3 REQUIRED COMPONENTS Interpreter)
  else()
    find_package(Python3 COMPONENTS Interpreter)
  endif()
  if(Python3_FOUND)
    # Every response of every operation against the OpenAPI document's schemas.
    add_test(NAME admin_openapi
             COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/admin/check_openapi.py
                     $<TARGET_FILE:admin_api_test> ${PROJECT_SOURCE_DIR}/src/admin/openapi.json)
    set_tests_properties(admin_openapi PROPERTIES LABELS "management;admin" TIMEOUT 120
                         SKIP_RETURN_CODE 77)
  endif()
endif()
if(TARGET keygate_admin AND TARGET keygate_beast AND TARGET keygate_httplib)
  # The admin API mounted in a Beast and a cpp-httplib server.
  keygate_add_test(admin_adapters_test SOURCES admin_adapters_test.cc
    LIBS keygate::admin keygate::beast keygate::httplib
    LABELS management admin http concurrent TIMEOUT 120)  # concurrent: httplib's threads
endif()
