# Webhook delivery (keygate::webhooks): attempts against a real local HTTPS receiver (cpp-httplib
# on 127.0.0.1 with a certificate made for the test).
if(TARGET keygate_webhooks AND TARGET keygate_httplib)
  keygate_add_test(webhook_sender_test SOURCES webhook_sender_test.cc
    LIBS keygate::webhooks keygate::httplib LABELS webhooks concurrent TIMEOUT 120)
elseif(TARGET keygate_webhooks AND KEYGATE_REQUIRE_ALL_TESTS)
  message(FATAL_ERROR "webhook_sender_test needs the cpp-httplib adapter for its receiver")
endif()
if(TARGET keygate_webhooks AND TARGET keygate_httplib)
  keygate_add_test(webhook_dispatcher_test SOURCES webhook_dispatcher_test.cc
    LIBS keygate::webhooks keygate::httplib LABELS webhooks concurrent TIMEOUT 180)
  keygate_add_test(webhook_events_test SOURCES webhook_events_test.cc
    LIBS keygate::webhooks keygate::sqlite keygate::httplib LABELS webhooks concurrent
    TIMEOUT 180)
endif()
if(TARGET keygate_webhooks AND TARGET keygate_httplib)
  # The dispatching process that webhook_crash_test kills.
  add_executable(webhook_test_helper webhook_helper_main.cc)
  target_link_libraries(webhook_test_helper PRIVATE keygate::webhooks keygate::sqlite
    keygate::keygate)
  keygate_set_warnings(webhook_test_helper)
  keygate_add_test(webhook_crash_test SOURCES webhook_crash_test.cc
    LIBS keygate::webhooks keygate::sqlite keygate::httplib LABELS webhooks crash TIMEOUT 240)
  add_dependencies(webhook_crash_test webhook_test_helper)
  target_compile_definitions(webhook_crash_test PRIVATE
    KEYGATE_WEBHOOK_TEST_HELPER="$<TARGET_FILE:webhook_test_helper>")
endif()
