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
endif()
