// Field checks for the management API's requests (private): what
// KeyManager::Create and KeyManager::Modify accept, apart from the store.
// Every refusal is an InvalidArgument "<field>: <reason>" that never quotes
// a token or a webhook URL back.

#ifndef KEYGATE_SRC_KEY_REQUEST_VALIDATION_H_
#define KEYGATE_SRC_KEY_REQUEST_VALIDATION_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "keygate/deployment.h"
#include "keygate/key_manager.h"

namespace keygate::internal {

struct ValidationOptions {
  // Now, for the expiry check (a new expiry must lie after it).
  absl::Time now;
  // KeyManager::Options::allow_internal_webhook_hosts.
  bool allow_internal_webhook_hosts = false;
};

// InvalidArgument "<field>: <reason>".
absl::Status Invalid(std::string_view field, std::string_view reason);

// A webhook URL as keys may hold it: https, a well-formed host and port, and (unless
// `allow_internal_hosts`) no literal internal address or localhost name. Names are not resolved.
// Errors: kInvalidArgument "webhook_url: ...".
absl::Status CheckWebhookUrl(std::string_view url, bool allow_internal_hosts);

// All of a new key's fields, in declaration order (the first refusal wins).
absl::Status ValidateCreateRequest(const Deployment& deployment, const CreateKeyRequest& request,
                                   const ValidationOptions& options);

// Only the fields an update sets: a key must stay editable even if, say,
// one of its scopes has since been removed from the registry.
absl::Status ValidateKeyUpdate(const Deployment& deployment, const KeyUpdate& update,
                               const ValidationOptions& options);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_KEY_REQUEST_VALIDATION_H_
