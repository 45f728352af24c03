// keygate/key_manager.h: the management API: create, provision, list, modify,
// revoke/restore, delete and roll keys.
//
// `KeyManager` validates input, mints tokens, writes records to a `KeyStore`
// and reports every mutation to an `EventSink`. A token is returned exactly
// once, and only after the store has accepted the record: if the store fails,
// no token leaves the manager. The store keeps only the digest.
//
// Example:
//
//   keygate::KeyManager::Options o;
//   o.deployment = *keygate::Deployment::Create({});
//   o.store = std::make_shared<keygate::MemoryKeyStore>();
//   keygate::KeyManager manager(std::move(o));
//
//   keygate::CreateKeyRequest req;
//   req.name = "ci-pipeline";
//   req.owner = "alice";
//   req.environment = "production";
//   req.scopes = {"read:all"};
//   absl::StatusOr<keygate::CreatedKey> k = manager.Create(req, "alice");
//   // k->token: show it to the user now; it cannot be recovered later.
//
// Thread safety: thread-safe. Concurrent modifications of one key are
// resolved by the store's version check (kAborted for the loser).
// Not on the hot path: every call does store I/O.

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

#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/event_sink.h"
#include "keygate/key.h"
#include "keygate/key_store.h"
#include "keygate/secret.h"

namespace keygate {

// Text fields are UTF-8 without control characters (C0, DEL and C1, which
// can forge lines on a terminal); a description may also hold newlines and
// tabs. No text field (the webhook URL and the actor included) may hold an
// API token anywhere inside it: `<prefix>_<env>_` and 49 base62 characters
// with a valid checksum, any prefix, as a secret scanner finds them.
// kInvalidArgument "name: holds an API token; tokens must not be stored in
// key fields" (never quoting it).
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
  // Set to an inner nullopt to clear the expiry / the rate limit.
  std::optional<std::optional<absl::Time>> expires;
  std::optional<std::optional<RateLimitPolicy>> rate_limit;
  std::optional<std::string> webhook_url;
  std::optional<std::vector<std::string>> accounts;
  std::optional<std::map<std::string, std::string>> metadata;
};

// A newly minted key. `token` is the only copy of the secret keygate ever
// returns.
struct CreatedKey {
  KeyRecord record;
  Secret token;
};

// Result of ProvisionPersonalKey: `token` is set only when a key was created
// by this call (an existing key's token cannot be shown again).
struct ProvisionedKey {
  KeyRecord record;
  std::optional<Secret> token;
  bool created = false;
};

class KeyManager {
 public:
  struct Options {
    std::shared_ptr<const Deployment> deployment;  // required
    std::shared_ptr<KeyStore> store;               // required
    std::shared_ptr<EventSink> events;             // default: NullEventSink
    std::shared_ptr<const Clock> clock;            // default: system clock
    // Webhook URLs whose host is an IP literal in a loopback, private,
    // link-local, multicast or reserved range (IPv4 or IPv6; IPv4-mapped,
    // -translated and NAT64 forms judged by the IPv4 address inside, the
    // local-use NAT64 prefix 64:ff9b:1::/48 always), or "localhost" /
    // "*.localhost", are refused unless this is
    // set: whoever delivers webhooks would otherwise call into its own
    // network for any key owner (SSRF). keygate never resolves names here:
    // a DNS name that resolves to such an address passes, so the deliverer
    // must still check the address it connects to.
    bool allow_internal_webhook_hosts = false;
  };

  explicit KeyManager(Options options);

  // Every mutating method takes the `actor` recorded in its event: 1-128
  // bytes without control characters, else kInvalidArgument "actor: ...".
  // A manager built without a deployment or store answers every call with
  // kFailedPrecondition. Times written to records are truncated to
  // microseconds (see key.h).

  // Validates and creates a key. Errors: kInvalidArgument naming the field
  // ("name: must not be empty", "scopes: unknown scope 'x'", "environment:
  // unknown environment 'x'", "webhook_url: must use https",
  // "webhook_url: host is a loopback, private, ..." (see Options),
  // "expires: must be in the future", "rate_limit.rate: ..."),
  // kAlreadyExists (an active personal key exists for owner+environment),
  // store errors (kUnavailable ...). `actor` is recorded in the event.
  absl::StatusOr<CreatedKey> Create(const CreateKeyRequest& request, std::string_view actor);

  // Returns the owner's active personal key in `environment`, creating it
  // (named "personal", scopes as given) if there is none. Idempotent and safe
  // against concurrent calls (the store enforces uniqueness): exactly one
  // caller gets `created == true` and the token. An existing key is returned
  // as it is (its scopes are not compared with `scopes`), unless it has
  // expired: an expired personal key is revoked (a kRevoked event, by
  // `actor`) and a new one created, so that provisioning always ends with a
  // key that works.
  // Errors: kInvalidArgument (owner, environment, scopes, actor), store
  // errors.
  absl::StatusOr<ProvisionedKey> ProvisionPersonalKey(std::string_view owner,
                                                      std::string_view environment,
                                                      const std::vector<std::string>& scopes,
                                                      std::string_view actor);

  // Errors: kNotFound, store errors.
  absl::StatusOr<KeyRecord> Get(std::string_view id);
  // Errors: kInvalidArgument (bad limit/cursor), store errors.
  absl::StatusOr<ListPage> List(const ListOptions& options);

  // Applies `update` if the key's version is still `expected_version`.
  // Errors: kInvalidArgument (as Create), kNotFound, kAborted (version
  // conflict), store errors.
  absl::StatusOr<KeyRecord> Modify(std::string_view id, const KeyUpdate& update,
                                   std::uint64_t expected_version, std::string_view actor);

  // Blocks the key (it verifies as revoked) / unblocks it. Idempotent:
  // revoking a revoked key succeeds without a new version or event. State
  // and expiry are independent: restoring an expired key succeeds, and the
  // key still verifies as expired until Modify sets a later expiry.
  // Errors: kNotFound, kAlreadyExists (restoring a personal key while another
  // is active), store errors.
  absl::StatusOr<KeyRecord> Revoke(std::string_view id, std::string_view actor);
  absl::StatusOr<KeyRecord> Restore(std::string_view id, std::string_view actor);

  // Removes the key permanently; its tokens then verify as unknown.
  // Errors: kNotFound, store errors.
  absl::Status Delete(std::string_view id, std::string_view actor);

  // Issues a new token for the key. The previous token keeps working while
  // now < now_at_roll + `grace` (deadline truncated to microseconds), then
  // verifies as expired. Zero grace forgets the previous digest at once: the
  // old token then verifies as unknown. Rolling again replaces an earlier
  // previous secret that is still in its grace period (only one is kept).
  // Errors: kInvalidArgument (negative grace, grace > 30 days),
  // kFailedPrecondition (key revoked, or expired: the new token would never
  // work; set a later expiry with Modify first), kNotFound, store errors.
  absl::StatusOr<CreatedKey> Roll(std::string_view id, absl::Duration grace,
                                  std::string_view actor);

  // Validation used by Create (exposed for the CLI and tests): everything
  // Create refuses before it reaches the store, with the same errors. The
  // second form also checks `actor`. Nothing is written or minted.
  absl::Status ValidateCreate(const CreateKeyRequest& request) const;
  absl::Status ValidateCreate(const CreateKeyRequest& request, std::string_view actor) const;

  const Deployment& deployment() const noexcept { return *options_.deployment; }

 private:
  absl::Status CheckConfigured() const;
  absl::Time Now() const;
  void Emit(EventType type, std::string_view actor, const KeyRecord& record,
            std::vector<std::string> changed_fields, std::uint64_t version) const;
  absl::StatusOr<std::optional<KeyRecord>> FindActivePersonal(std::string_view owner,
                                                              std::string_view environment);
  absl::StatusOr<KeyRecord> SetState(std::string_view id, KeyState target, std::string_view actor);

  Options options_;
};

}  // namespace keygate

#endif  // KEYGATE_KEY_MANAGER_H_
