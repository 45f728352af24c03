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
