// The reference verification path (reference_verifier.h). Plain and direct on
// purpose: it is the specification the hot-path Verifier is tested against,
// so every check appears once, in the documented order.

#include "keygate/reference_verifier.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "keygate/bearer.h"
#include "keygate/token.h"

namespace keygate {
namespace {

Verdict Make(Outcome outcome) {
  Verdict v;
  v.outcome = outcome;
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReferenceVerifier>> ReferenceVerifier::Create(Options options) {
  if (!options.deployment) return absl::InvalidArgumentError("deployment: must not be null");
  if (!options.store) return absl::InvalidArgumentError("store: must not be null");
  absl::StatusOr<const EnvironmentSpec*> found =
      options.deployment->Environment(options.environment);
  if (!found.ok()) return found.status();
  const EnvironmentSpec* env = *found;
  std::unique_ptr<ReferenceVerifier> v(new ReferenceVerifier());
  v->environment_ = env->name;
  v->env_tag_ = env->tag;
  v->deployment_ = std::move(options.deployment);
  v->store_ = std::move(options.store);
  v->evaluator_ = options.scope_evaluator ? std::move(options.scope_evaluator)
                                          : std::make_shared<MaskScopeEvaluator>();
  return v;
}

Verdict ReferenceVerifier::Verify(std::string_view authorization, const Requirement& requirement,
                                  absl::Time now) const {
  // 1. The header.
  std::string_view token;
  switch (ParseBearer(authorization, &token)) {
    case BearerParse::kOk:
      break;
    case BearerParse::kMissing:
    case BearerParse::kWrongScheme:  // no Bearer credentials (RFC 6750 3.1)
      return Make(Outcome::kMissing);
    case BearerParse::kMalformed:
      return Make(Outcome::kInvalidRequest);
  }
  return VerifyToken(token, requirement, now, nullptr);
}

Verdict ReferenceVerifier::VerifyToken(std::string_view token, const Requirement& requirement,
                                       absl::Time now) const {
  return VerifyToken(token, requirement, now, nullptr);
}

Verdict ReferenceVerifier::VerifyToken(std::string_view token, const Requirement& requirement,
                                       absl::Time now, std::optional<KeyRecord>* record) const {
  if (record != nullptr) record->reset();

  // 2. Format, prefix, checksum: no hashing for anything malformed.
  TokenView view;
  if (ParseToken(token, &view, deployment_->token_prefix()) != TokenError::kNone) {
    return Make(Outcome::kMalformed);
  }
  // 3. The environment tag.
  const EnvironmentSpec* env = deployment_->FindEnvironmentByTag(view.env_tag);
  if (env == nullptr) return Make(Outcome::kMalformed);
  if (env->name != environment_) return Make(Outcome::kWrongEnvironment);

  // 4. The lookup.
  Digest digest;
  if (!deployment_->hasher().Hash(token, &digest)) return Make(Outcome::kUnavailable);
  absl::StatusOr<KeyRecord> found = store_->FindByDigest(digest);
  if (!found.ok()) {
    return Make(found.status().code() == absl::StatusCode::kNotFound ? Outcome::kUnknown
                                                                     : Outcome::kUnavailable);
  }
  const KeyRecord& key = *found;
  // An id a verdict cannot carry whole (key.h, kKeyIdLength): cut off, it
  // could name another key.
  if (key.id.size() > kKeyIdLength) return Make(Outcome::kUnavailable);
  Verdict verdict;
  verdict.set_key(key.id);
  auto finish = [&](Outcome outcome) {
    verdict.outcome = outcome;
    if (record != nullptr) *record = std::move(*found);
    return verdict;
  };

  // 5. A rolled secret past its grace period.
  const bool current = DigestEquals(key.digest, digest);
  const bool rolled =
      !current && key.previous.has_value() && DigestEquals(key.previous->digest, digest);
  // A store that returns a record matching neither digest is broken; do not
  // trust it with an identity.
  if (!current && !rolled) return Make(Outcome::kUnavailable);
  if (rolled && !(now < key.previous->valid_until)) return finish(Outcome::kExpired);

  // 6-8. State, expiry, environment. Any state other than active (including
  // a corrupt one) is refused.
  if (key.state != KeyState::kActive) return finish(Outcome::kRevoked);
  if (key.expires.has_value() && *key.expires <= now) return finish(Outcome::kExpired);
  if (key.environment != environment_) return finish(Outcome::kWrongEnvironment);

  // 9. The linked account.
  if (!requirement.account().empty() && std::find(key.accounts.begin(), key.accounts.end(),
                                                  requirement.account()) == key.accounts.end()) {
    return finish(Outcome::kAccountDenied);
  }

  // 10. Scopes. A scope since removed from the registry grants nothing.
  absl::StatusOr<ScopeMask> mask = deployment_->scopes().Compile(key.scopes);
  GrantedScopes granted;
  granted.mask = mask.ok() ? *mask : 0;
  granted.names = key.scopes;
  if (!evaluator_->Allows(granted, requirement)) return finish(Outcome::kInsufficientScope);

  return finish(Outcome::kOk);
}

}  // namespace keygate
