// keygate/reference_verifier.h: the straightforward verification path, one store lookup per
// request; the executable specification the lock-free `Verifier` must match verdict for verdict,
// and fine for low-traffic tools (the CLI's `verify`). No rate limits. Order of checks (first
// failure wins; the hot path uses the same order):
//   1. header empty -> kMissing; not `Bearer <b64token>` -> kInvalidRequest
//   2. token format, prefix, checksum -> kMalformed (no hashing)
//   3. env tag of another known environment -> kWrongEnvironment; unknown tag -> kMalformed
//   4. digest lookup: none -> kUnknown     5. a rolled secret past valid_until -> kExpired
//   6. revoked -> kRevoked                 7. expires <= now -> kExpired
//   8. key environment != verifier's -> kWrongEnvironment
//   9. requirement.account set and not linked -> kAccountDenied
//  10. scopes (ScopeEvaluator) -> kInsufficientScope; the mask is the closure of the key's
//      scopes, 0 if one is no longer registered (the names still reach the evaluator)
//  11. (Verifier only: rate limit -> kRateLimited)
// kUnavailable: a store or hashing failure, a store answer whose digests do not match the token,
// a key id longer than kKeyIdLength. `Verdict::key()` is set from step 5 on.
// Thread safety: thread-safe if the store is. Cost: a store lookup per call.
//
// Example:
//   auto v = keygate::ReferenceVerifier::Create(
//       {.deployment = deployment, .store = store, .environment = "production"});
//   if (v.ok()) verdict = (*v)->Verify("Bearer kg_live_...", requirement, absl::Now());

#ifndef KEYGATE_REFERENCE_VERIFIER_H_
#define KEYGATE_REFERENCE_VERIFIER_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

#include "keygate/deployment.h"
#include "keygate/key_store.h"
#include "keygate/scope.h"
#include "keygate/verdict.h"

namespace keygate {

class ReferenceVerifier {
 public:
  // Every field has an initializer, so designated initializers may leave any out.
  struct Options {
    std::shared_ptr<const Deployment> deployment = nullptr;  // required
    std::shared_ptr<KeyStore> store = nullptr;               // required
    std::string environment = {};  // the deployment's environment this server serves
    std::shared_ptr<const ScopeEvaluator> scope_evaluator = nullptr;  // null: MaskScopeEvaluator
  };

  // Errors: kInvalidArgument "deployment: ...", "store: ...", "environment: ..." (not one of the
  // deployment's).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ReferenceVerifier>> Create(Options options);

  // Verifies an Authorization header value.
  Verdict Verify(std::string_view authorization, const Requirement& requirement,
                 absl::Time now) const;
  // Verifies a bare token (steps 2-10).
  Verdict VerifyToken(std::string_view token, const Requirement& requirement, absl::Time now) const;
  // As VerifyToken, also returning the record when the key was identified.
  Verdict VerifyToken(std::string_view token, const Requirement& requirement, absl::Time now,
                      std::optional<KeyRecord>* record) const;

 private:
  ReferenceVerifier() = default;
  std::shared_ptr<const Deployment> deployment_;
  std::shared_ptr<KeyStore> store_;
  std::shared_ptr<const ScopeEvaluator> evaluator_;
  std::string environment_;
  std::string env_tag_;
};

}  // namespace keygate

#endif  // KEYGATE_REFERENCE_VERIFIER_H_
