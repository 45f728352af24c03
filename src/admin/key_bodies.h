// The admin API's key request bodies (routes.cc): POST /keys and PATCH /keys/{id} parsed into
// KeyManager's requests, strictly (unknown members refused, each error naming its member).
#ifndef KEYGATE_SRC_ADMIN_KEY_BODIES_H_
#define KEYGATE_SRC_ADMIN_KEY_BODIES_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "keygate/key.h"
#include "keygate/key_manager.h"

namespace keygate::admin_internal {

// {"name", "description", "owner" (default: `default_owner`), "kind", "environment" (required),
// "scopes", "expires", "rate_limit", "webhook_url", "accounts", "metadata"}. Errors:
// kInvalidArgument naming the member.
absl::StatusOr<CreateKeyRequest> ParseCreate(std::string_view body, std::string_view default_owner);

// A merge patch of the mutable members (owner, kind and environment refused). Errors:
// kInvalidArgument naming the member.
absl::StatusOr<KeyUpdate> ParseUpdate(std::string_view body);

// KeyManager names the rate limit's period "rate_limit.period"; the JSON member is period_ms.
absl::Status InJsonTerms(absl::Status s);

}  // namespace keygate::admin_internal

#endif  // KEYGATE_SRC_ADMIN_KEY_BODIES_H_
