// keygate/key_manager.h: the management API: create, provision, list, modify, revoke/restore,
// delete and roll keys. `KeyManager` validates input, mints tokens and writes records to a
// `KeyStore` (digests only), each with its audit log entry (audit.h) in the same transaction. A
// token is returned exactly once, and only after the store accepted the record.
//
// Thread safety: thread-safe; concurrent modifications of one key are settled by the store's
// version check (kAborted for the loser). Cost: store I/O on every call (not the hot path).
//
// Example:
//   keygate::KeyManager::Options o;
//   o.deployment = *keygate::Deployment::Create({});
//   o.store = std::make_shared<keygate::MemoryKeyStore>();
//   std::unique_ptr<keygate::KeyManager> manager = *keygate::KeyManager::Create(std::move(o));
//   keygate::CreateKeyRequest req;
//   req.name = "ci-pipeline";
//   req.owner = "alice";
//   req.environment = "production";
//   req.scopes = {"read:all"};
//   absl::StatusOr<keygate::CreatedKey> k = manager->Create(req, "alice");
//   // k->token: show it to the user now; unless recoverable keys are on (Options::envelope),
//   // it cannot be recovered later.

#ifndef KEYGATE_KEY_MANAGER_H_
#define KEYGATE_KEY_MANAGER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/audit.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/envelope.h"
#include "keygate/key.h"
#include "keygate/key_store.h"
#include "keygate/secret.h"
#include "keygate/webhook_signature.h"

namespace keygate {

// Text fields are UTF-8 without C0, DEL or C1 controls (a description may hold newlines and
// tabs). No text field (webhook URL and actor included) may hold an API token of any prefix:
// kInvalidArgument "name: holds an API token; tokens must not be stored in key fields".
struct CreateKeyRequest {
  std::string name;                   // 1-128 bytes of text
  std::string description;            // 0-1024 bytes of text, may span lines
  std::string owner;                  // 1-128 bytes of text
  KeyKind kind = KeyKind::kGeneral;   // personal keys: prefer ProvisionPersonalKey
  std::string environment;            // a deployment environment name
  std::vector<std::string> scopes;    // registered scope names (may be empty)
  std::optional<absl::Time> expires;  // must be in the future
  std::optional<RateLimitPolicy> rate_limit;
  std::string webhook_url;            // empty or https://host... (see Options)
  std::vector<std::string> accounts;  // each 1-128 bytes of text, at most 64
  std::map<std::string, std::string>
      metadata;  // at most 64; keys 1-64, values 0-1024 bytes of text
};

// Fields to change; unset fields stay as they are.
struct KeyUpdate {
  std::optional<std::string> name;
  std::optional<std::string> description;
  std::optional<std::vector<std::string>> scopes;
  // An inner nullopt clears the expiry / the rate limit.
  std::optional<std::optional<absl::Time>> expires;
  std::optional<std::optional<RateLimitPolicy>> rate_limit;
  std::optional<std::string> webhook_url;
  std::optional<std::vector<std::string>> accounts;
  std::optional<std::map<std::string, std::string>> metadata;
};

// A newly minted key. `token` is the only copy of the secret keygate ever returns.
struct CreatedKey {
  KeyRecord record;
  Secret token;
  // Create with per-key webhook secrets (Options::webhook_secret_per_key) and a webhook URL: the
  // key's signing secret, to show once like the token (it is kept only sealed). Else none.
  std::optional<WebhookSecret> webhook_secret = {};
};

// RollWebhookSecret's result: the key as stored and its new signing secret (show it once).
struct RolledWebhookSecret {
  KeyRecord record;
  WebhookSecret secret;
  // Until when the previous secret (the key's own, or the deployment's for a key's first) signs
  // too; InfinitePast() without an overlap.
  absl::Time previous_until = absl::InfinitePast();
};

// RevealToken's result: the key as stored after the reveal (its version one higher) and its
// current token.
struct RevealedKey {
  KeyRecord record;
  Secret token;
};

// ProvisionPersonalKey's result: `token` is set only when this call created the key.
struct ProvisionedKey {
  KeyRecord record;
  std::optional<Secret> token;
  bool created = false;
};

// Everything KeyManager::Create(request, actor) refuses before the store, without a manager (for
// a CLI or an admin API checking input early): the same kInvalidArgument errors. `now` is the time
// the expiry must lie after.
[[nodiscard]] absl::Status ValidateCreateKeyRequest(const Deployment& deployment,
                                                    const CreateKeyRequest& request, absl::Time now,
                                                    bool allow_internal_webhook_hosts = false);

class KeyManager {
 public:
  struct Options {
    std::shared_ptr<const Deployment> deployment;  // required
    std::shared_ptr<KeyStore> store;               // required
    std::shared_ptr<const Clock> clock;            // default: the system clock
    // Accept webhook hosts that are "localhost", "*.localhost" or an IP literal in a loopback,
    // private, link-local, multicast or reserved range (IPv4-mapped, -translated and NAT64 forms
    // judged by their IPv4 address; 64:ff9b:1::/48 always). Names are never resolved: the
    // deliverer must still check the address it connects to.
    bool allow_internal_webhook_hosts = false;
    // Recoverable keys, off when null: every token this manager mints (Create,
    // ProvisionPersonalKey, Roll) is also kept sealed in its record (KeyRecord::sealed_token,
    // the key id as associated data), so that RevealToken can read it back. A roll by a manager
    // without an envelope clears the sealed copy. Keys created before stay hash-only until rolled.
    std::shared_ptr<const Envelope> envelope = {};
    // Per-key webhook secrets (needs `envelope`): Create gives every key with a webhook URL its
    // own `whsec_` signing secret, returned once (CreatedKey::webhook_secret) and kept sealed
    // (KeyRecord::sealed_webhook_secret); RollWebhookSecret replaces it, and gives one to a key
    // that got its URL from Modify (which returns no secret; a changed URL keeps the key's).
    // Off: deliveries are signed with the deployment's secrets (WebhookDispatcherOptions::secrets).
    bool webhook_secret_per_key = false;
  };

  // Errors: kInvalidArgument "deployment: must be set" / "store: must be set" /
  // "webhook_secret_per_key: needs an envelope".
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<KeyManager>> Create(Options options);

  KeyManager(const KeyManager&) = delete;
  KeyManager& operator=(const KeyManager&) = delete;

  // Mutating methods record `actor` (1-128 bytes, no controls, else kInvalidArgument "actor:
  // ...") in their audit entry. Times written to records and entries are truncated to
  // microseconds (key.h).

  // Validates and creates a key. Errors: kInvalidArgument naming the field ("name: must not be
  // empty", "scopes: unknown scope 'x'", "webhook_url: must use https", "webhook_url: host is a
  // loopback, private, ...", "expires: must be in the future", ...), kAlreadyExists (an active
  // personal key of owner+environment), store errors (kUnavailable ...).
  [[nodiscard]] absl::StatusOr<CreatedKey> Create(const CreateKeyRequest& request,
                                                  std::string_view actor);

  // The owner's active personal key in `environment`, created (named "personal", `scopes`) if
  // none. Idempotent, also concurrently: exactly one caller gets `created` and the token. An
  // existing key is returned as it is (scopes not compared) unless expired: then it is revoked
  // (a kRevoked event) and a new one created. Errors: kInvalidArgument, store errors.
  [[nodiscard]] absl::StatusOr<ProvisionedKey> ProvisionPersonalKey(
      std::string_view owner, std::string_view environment, const std::vector<std::string>& scopes,
      std::string_view actor);

  // Errors: kNotFound, store errors.
  [[nodiscard]] absl::StatusOr<KeyRecord> Get(std::string_view id);
  // Errors: kInvalidArgument (bad limit/cursor), store errors.
  [[nodiscard]] absl::StatusOr<ListPage> List(const ListOptions& options);

  // The audit log (audit.h): store errors, kInvalidArgument for a bad query.
  [[nodiscard]] absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& query);

  // Applies `update` if the key's version is still `expected_version`. Errors: kInvalidArgument
  // (as Create), kNotFound, kAborted (version conflict), store errors.
  [[nodiscard]] absl::StatusOr<KeyRecord> Modify(std::string_view id, const KeyUpdate& update,
                                                 std::uint64_t expected_version,
                                                 std::string_view actor);

  // Blocks the key (it verifies as revoked) / unblocks it; idempotent (no new version or event).
  // Expiry is independent: a restored expired key verifies as expired until Modify. Errors:
  // kNotFound, kAlreadyExists (restoring a personal key while another is active), store errors.
  [[nodiscard]] absl::StatusOr<KeyRecord> Revoke(std::string_view id, std::string_view actor);
  [[nodiscard]] absl::StatusOr<KeyRecord> Restore(std::string_view id, std::string_view actor);

  // Removes the key permanently (its tokens verify as unknown). Errors: kNotFound, store errors.
  [[nodiscard]] absl::Status Delete(std::string_view id, std::string_view actor);

  // Issues a new token. The previous one works while now < now_at_roll + `grace` (truncated to
  // microseconds), then verifies as expired; zero grace: unknown at once. Only one previous
  // secret is kept. Errors: kInvalidArgument (grace negative or > 30 days), kFailedPrecondition
  // (key revoked or expired: Modify the expiry first), kNotFound, store errors.
  [[nodiscard]] absl::StatusOr<CreatedKey> Roll(std::string_view id, absl::Duration grace,
                                                std::string_view actor);

  // The key's current token, opened from its sealed copy, after a kRevealed audit entry (no
  // changed fields) committed: an Update that changes nothing but the version, so an If-Match
  // taken before the reveal no longer matches. Any state: a revoked or expired key's token is
  // revealed too (it still does not verify). The opened token must hash to the key's digest, so
  // a copy that is stale (a roll by a keygate that predates recoverable keys) is refused, never
  // returned. Cost: a store read and write, an Open and a hash.
  // Errors: kFailedPrecondition "recoverable keys are off ..." (no envelope), "key <id>: not
  // recoverable ..." (no sealed copy: created before recoverable keys were on, or rolled by a
  // manager without the envelope), "key <id>: the sealed token is stale ...", and Open's
  // (envelope.h: "sealed: under KEK <id>, which is not loaded"); kDataLoss (a copy that does not
  // open, or is not an envelope at all); kNotFound; kAborted (a storm of concurrent changes);
  // store errors.
  [[nodiscard]] absl::StatusOr<RevealedKey> RevealToken(std::string_view id,
                                                        std::string_view actor);

  // Rewraps the key's sealed values (its token's copy and its webhook secrets) under the
  // envelope's primary KEK (after a KEK rotation: EnvelopeOptions::previous_kek_files still names
  // the old one), recorded as kModified {"sealed_token"} and/or {"webhook_secret"}. Returns
  // whether it wrote: false, and no write, for a key with no sealed value or all under the
  // primary. Errors: kFailedPrecondition (no envelope, a KEK
  // that is not loaded), kDataLoss, kNotFound, kAborted, store errors; no staleness check.
  [[nodiscard]] absl::StatusOr<bool> ResealToken(std::string_view id, std::string_view actor);

  // A new webhook signing secret for the key (per-key webhook secrets), recorded as kModified
  // {"webhook_secret"}. The previous secret keeps signing, next to the new one, for `overlap`
  // (0 .. 30 days; zero: it stops at once), so receivers can switch without refusing a message;
  // for a key without a secret of its own yet (created before per-key secrets, or given its URL
  // by Modify, which generates none) the previous ones are the deployment's.
  // Cost: a store read and write, a Seal and an Open. Errors: kFailedPrecondition (per-key
  // secrets off; the key has no webhook URL; a KEK that is not loaded), kInvalidArgument
  // (overlap), kDataLoss (a stored value that does not open), kNotFound, kAborted, store errors.
  [[nodiscard]] absl::StatusOr<RolledWebhookSecret> RollWebhookSecret(std::string_view id,
                                                                      absl::Duration overlap,
                                                                      std::string_view actor);

  // Whether recoverable keys are on (Options::envelope set).
  bool recoverable_keys() const noexcept { return options_.envelope != nullptr; }
  // Whether keys get their own webhook secrets (Options::webhook_secret_per_key).
  bool webhook_secret_per_key() const noexcept { return options_.webhook_secret_per_key; }

  // Everything Create refuses before the store, same errors; nothing written. The second form
  // also checks `actor`.
  [[nodiscard]] absl::Status ValidateCreate(const CreateKeyRequest& request) const;
  [[nodiscard]] absl::Status ValidateCreate(const CreateKeyRequest& request,
                                            std::string_view actor) const;

  const Deployment& deployment() const noexcept { return *options_.deployment; }

 private:
  explicit KeyManager(Options options);
  absl::Time Now() const;
  AuditNote Note(EventType type, std::string_view actor,
                 std::vector<std::string> changed_fields) const;
  [[nodiscard]] absl::StatusOr<std::optional<KeyRecord>> FindActivePersonal(
      std::string_view owner, std::string_view environment);
  [[nodiscard]] absl::StatusOr<KeyRecord> SetState(std::string_view id, KeyState target,
                                                   std::string_view actor);
  // `token` sealed for key `id`; "" when recoverable keys are off.
  [[nodiscard]] absl::StatusOr<std::string> SealToken(const Secret& token,
                                                      std::string_view id) const;
  // The envelope, or kFailedPrecondition when recoverable keys are off.
  [[nodiscard]] absl::StatusOr<const Envelope*> RequireEnvelope() const;

  Options options_;
};

}  // namespace keygate

#endif  // KEYGATE_KEY_MANAGER_H_
