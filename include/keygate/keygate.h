// keygate/keygate.h: includes the whole core API.
//
// keygate issues, stores and verifies API keys inside a C++ server. Start with
// deployment.h (settings), key_manager.h (management), reference_verifier.h /
// verifier.h (verification) and http.h (responses).

#ifndef KEYGATE_KEYGATE_H_
#define KEYGATE_KEYGATE_H_

#include "keygate/audit.h"
#include "keygate/audit_relay.h"
#include "keygate/bearer.h"
#include "keygate/change_notifier.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/digest.h"
#include "keygate/envelope.h"
#include "keygate/event_sink.h"
#include "keygate/http.h"
#include "keygate/http_request.h"
#include "keygate/key.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#include "keygate/key_store_wrapper.h"
#include "keygate/memory_key_store.h"
#include "keygate/rate_limiter.h"
#include "keygate/reference_verifier.h"
#include "keygate/scope.h"
#include "keygate/secret.h"
#include "keygate/token.h"
#include "keygate/usage.h"
#include "keygate/verdict.h"
#include "keygate/verifier.h"
#include "keygate/version.h"
#include "keygate/webhook_signature.h"

#endif  // KEYGATE_KEYGATE_H_
