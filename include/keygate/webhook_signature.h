// keygate/webhook_signature.h: Standard Webhooks 1.0 signatures, for sending webhooks and for
// the receivers that check them.
//
// A message is signed with HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>" under a
// `WebhookSecret` ("whsec_" + base64 of 24 to 64 random bytes); the `webhook-signature` header
// carries "v1,<base64 of the MAC>", one entry per secret, separated by spaces (two while a secret
// is rotated: receivers accept either). `webhook-id` stays the same across retries of one
// message, so a receiver can drop duplicates; `webhook-timestamp` is Unix seconds, and a receiver
// refuses one too far from its clock (replay).
//
// Secrets: a `WebhookSecret` owns its bytes as `Secret`s (wiped on destruction, never printed).
// Errors never quote a secret, a signature or a body.
//
// Thread safety: `WebhookSecret` is an immutable value; the functions are pure. Cost: one HMAC
// over the body per secret (about 1 µs per KiB); not a hot path.
//
// Example (a receiver):
//   absl::StatusOr<keygate::WebhookSecret> secret = keygate::WebhookSecret::Parse(from_config);
//   absl::Status ok = keygate::VerifyWebhookSignature(
//       {*secret}, request_header("webhook-id"), request_header("webhook-timestamp"),
//       request_header("webhook-signature"), request_body, absl::Now());
//   if (!ok.ok()) return Respond(400);

#ifndef KEYGATE_WEBHOOK_SIGNATURE_H_
#define KEYGATE_WEBHOOK_SIGNATURE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/envelope.h"
#include "keygate/secret.h"

namespace keygate {

inline constexpr std::string_view kWebhookSecretPrefix = "whsec_";
inline constexpr std::size_t kMinWebhookSecretBytes = 24;
inline constexpr std::size_t kMaxWebhookSecretBytes = 64;
// How far a receiver lets `webhook-timestamp` stray from its clock, by default.
inline constexpr absl::Duration kDefaultWebhookTolerance = absl::Minutes(5);

class WebhookSecret {
 public:
  // A new secret of 32 bytes from the CSPRNG. Errors: kInternal (the CSPRNG failed).
  [[nodiscard]] static absl::StatusOr<WebhookSecret> Generate();
  // "whsec_" + standard base64 (padded, nothing else) of 24 to 64 bytes. Errors: kInvalidArgument
  // "webhook_secret: must start with whsec_", "...: is not base64", "...: must hold 24 to 64
  // bytes (has N)"; never the text itself.
  [[nodiscard]] static absl::StatusOr<WebhookSecret> Parse(std::string_view text);

  // "whsec_..." as Parse accepts it: show it once, like a token, or seal it (envelope.h).
  const Secret& text() const noexcept { return text_; }

  // "v1," + base64 of HMAC-SHA256(key, id + "." + timestamp + "." + body). Errors: kInternal
  // when OpenSSL cannot compute HMAC-SHA256 (a misconfigured provider): nothing goes unsigned.
  [[nodiscard]] absl::StatusOr<std::string> Sign(std::string_view id, std::int64_t timestamp,
                                                 std::string_view body) const;

 private:
  friend absl::Status VerifyWebhookSignature(const std::vector<WebhookSecret>&, std::string_view,
                                             std::string_view, std::string_view, std::string_view,
                                             absl::Time, absl::Duration);
  WebhookSecret(Secret key, Secret text) : key_(std::move(key)), text_(std::move(text)) {}
  Secret key_;   // the decoded bytes: the HMAC key
  Secret text_;  // "whsec_..."
};

// The `webhook-signature` header for `secrets` (each Sign, in order, joined by spaces): during a
// rotation, the new secret and the old one, so receivers holding either accept the message.
// Errors: kInvalidArgument "secrets: none"; Sign's.
[[nodiscard]] absl::StatusOr<std::string> WebhookSignatureHeader(
    const std::vector<WebhookSecret>& secrets, std::string_view id, std::int64_t timestamp,
    std::string_view body);

// A receiver's check: `id` non-empty (at most 256 bytes), `timestamp` decimal Unix seconds within
// `tolerance` of `now`, and some "v1," entry of `signature` equal (in constant time) to the
// signature under some secret of `secrets`, computed over the headers' text as received.
// Entries of other versions are ignored. kInternal when HMAC-SHA256 is unavailable. Errors:
// kInvalidArgument naming the header ("webhook-id: missing", "webhook-timestamp: not Unix
// seconds", "webhook-signature: no v1 entry"), kUnauthenticated "webhook-timestamp: outside the
// tolerance" and "webhook-signature: no entry matches", kFailedPrecondition "secrets: none".
[[nodiscard]] absl::Status VerifyWebhookSignature(
    const std::vector<WebhookSecret>& secrets, std::string_view id, std::string_view timestamp,
    std::string_view signature, std::string_view body, absl::Time now,
    absl::Duration tolerance = kDefaultWebhookTolerance);

// A key's own signing secrets (KeyManager's per-key webhook secrets): the current one and, while
// a rotation overlaps, until `previous_until`, the previous one: the key's own, or for a key's
// first secret of its own, the deployment's (`deployment_previous`), which the signer adds.
struct KeyWebhookSecrets {
  WebhookSecret current;
  std::optional<WebhookSecret> previous = {};
  bool deployment_previous = false;
  absl::Time previous_until = absl::InfinitePast();

  // The key's own secrets that sign at `now`: the current one, then the previous one while
  // now < previous_until.
  std::vector<WebhookSecret> SigningAt(absl::Time now) const;
  // Whether the deployment's secrets sign too at `now`.
  bool DeploymentSignsAt(absl::Time now) const {
    return deployment_previous && now < previous_until;
  }
};

// The secrets sealed for key `key_id` as KeyRecord::sealed_webhook_secret holds them (associated
// data "webhook_secret:" + key_id, so neither another key's value nor a sealed token opens as
// them). Errors: Seal's (envelope.h).
[[nodiscard]] absl::StatusOr<std::string> SealWebhookSecrets(const Envelope& envelope,
                                                             std::string_view key_id,
                                                             const KeyWebhookSecrets& secrets);
// Opens what SealWebhookSecrets wrote. Errors: Open's (kFailedPrecondition for a KEK that is not
// loaded, kInvalidArgument for a damaged value), kDataLoss "sealed_webhook_secret: ..." for a
// value that opens to something else; never the secrets.
[[nodiscard]] absl::StatusOr<KeyWebhookSecrets> OpenWebhookSecrets(const Envelope& envelope,
                                                                   std::string_view key_id,
                                                                   std::string_view sealed);
// Rewraps a sealed value under the envelope's primary KEK (a KEK rotation). Errors: Open's.
[[nodiscard]] absl::StatusOr<std::string> ResealWebhookSecrets(const Envelope& envelope,
                                                               std::string_view key_id,
                                                               std::string_view sealed);

}  // namespace keygate

#endif  // KEYGATE_WEBHOOK_SIGNATURE_H_
