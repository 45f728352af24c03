// The management API (key_manager.h).
//
// Every mutation follows the same shape: read the record, build the new one,
// write it with the store's compare-and-set, and only then hand out a token
// and emit the event. Operations without a caller-supplied version (revoke,
// restore, delete, roll) retry a bounded number of times when another writer
// got in between, so they do not fail merely because of an unrelated edit.

#include "keygate/key_manager.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/base62.h"
#include "internal/key_label.h"
#include "key_request_validation.h"
#include "keygate/token.h"

namespace keygate {
namespace {

using internal::Base62EncodeFixed;
using internal::Invalid;

// A refusal that reports the key's state (not found, revoked) may be due
// to a write that got there first and is still notifying subscribers: it
// is returned only once they have that write too (KeyStore::
// AwaitSubscribers), so a verify that starts after the refusal agrees.
absl::Status Settled(KeyStore& store, absl::Status refusal) {
  if (refusal.code() == absl::StatusCode::kNotFound ||
      refusal.code() == absl::StatusCode::kFailedPrecondition) {
    if (absl::Status s = store.AwaitSubscribers(); !s.ok()) return s;
  }
  return refusal;
}

// A freshly generated secret and what is stored for it.
struct IssuedSecret {
  Secret token;
  Digest digest;
  std::string hint;
};

absl::StatusOr<IssuedSecret> IssueSecret(const Deployment& d, const EnvironmentSpec& env) {
  absl::StatusOr<Secret> token = GenerateToken(d.token_prefix(), env.tag);
  if (!token.ok()) return token.status();
  const std::string_view text = token->Reveal(InsecureSecretAccess::Get());
  absl::StatusOr<Digest> digest = d.hasher().Hash(text);
  if (!digest.ok()) return digest.status();
  std::string hint = TokenHint(text);
  return IssuedSecret{*std::move(token), *digest, std::move(hint)};
}

constexpr absl::Duration kMaxRollGrace = absl::Hours(24 * 30);
constexpr std::size_t kKeyIdTimeChars = 8;     // after "key_"
constexpr std::size_t kKeyIdRandomChars = 14;  // after the time
// Bound on read-modify-write retries for operations that take no expected
// version; only reached under a storm of concurrent writes to one key.
constexpr int kMaxWriteAttempts = 16;

// "key_" + 8 base62 characters of the creation time (Unix milliseconds,
// zero-padded: good for 6,900 years) + 14 random base62 characters (83
// bits). Time-ordered ids make store inserts appends to the id index (~15-20%
// faster bulk inserts in SQLite at 1 M keys) and list pages come back in
// creation order. Random bytes >= 248 are rejected so that byte % 62 is
// uniform (248 = 4 * 62): no modulo bias. The id is public, so RAND_bytes
// (not the private generator) is the right source.
absl::StatusOr<std::string> NewKeyId(absl::Time now) {
  const std::int64_t ms = std::max<std::int64_t>(0, absl::ToUnixMillis(now));
  std::string id =
      absl::StrCat("key_", Base62EncodeFixed(static_cast<std::uint64_t>(ms), kKeyIdTimeChars));
  id.reserve(kKeyIdLength);
  unsigned char buf[32];
  while (id.size() < kKeyIdLength) {
    if (RAND_bytes(buf, sizeof buf) != 1) {
      return absl::InternalError("key id: the CSPRNG failed");
    }
    for (unsigned char b : buf) {
      if (b >= 248) continue;
      id.push_back(internal::kBase62Alphabet[b % 62]);
      if (id.size() == kKeyIdLength) break;
    }
  }
  static_assert(kKeyIdTimeChars + kKeyIdRandomChars + 4 == kKeyIdLength);
  return id;
}

absl::Status VersionConflict(std::string_view id, std::uint64_t expected, std::uint64_t stored) {
  return absl::AbortedError(absl::StrCat(internal::KeyLabel(id), ": version conflict (expected ",
                                         expected, ", stored ", stored, ")"));
}

// Envelope::Open's refusal of a stored sealed copy: "not this format" (kInvalidArgument) is a
// damaged record here, not a caller's mistake.
absl::Status StoredCopyError(const absl::Status& s) {
  if (s.code() != absl::StatusCode::kInvalidArgument) return s;
  return absl::DataLossError(
      absl::StrCat("sealed_token: stored copy is damaged (", s.message(), ")"));
}

// The same for a stored webhook secret.
absl::Status StoredSecretError(const absl::Status& s) {
  if (s.code() != absl::StatusCode::kInvalidArgument) return s;
  return absl::DataLossError(
      absl::StrCat("sealed_webhook_secret: stored value is damaged (", s.message(), ")"));
}

std::vector<std::string> CreatedFields(const KeyRecord& r) {
  std::vector<std::string> f = {"name"};
  if (!r.description.empty()) f.emplace_back("description");
  f.insert(f.end(), {"owner", "kind", "environment"});
  if (!r.scopes.empty()) f.emplace_back("scopes");
  if (r.expires.has_value()) f.emplace_back("expires");
  if (r.rate_limit.has_value()) f.emplace_back("rate_limit");
  if (!r.webhook_url.empty()) f.emplace_back("webhook_url");
  if (!r.accounts.empty()) f.emplace_back("accounts");
  if (!r.metadata.empty()) f.emplace_back("metadata");
  return f;
}

std::vector<std::string> ChangedFields(const KeyRecord& a, const KeyRecord& b) {
  std::vector<std::string> f;
  if (a.name != b.name) f.emplace_back("name");
  if (a.description != b.description) f.emplace_back("description");
  if (a.scopes != b.scopes) f.emplace_back("scopes");
  if (a.expires != b.expires) f.emplace_back("expires");
  if (a.rate_limit != b.rate_limit) f.emplace_back("rate_limit");
  if (a.webhook_url != b.webhook_url) f.emplace_back("webhook_url");
  if (a.accounts != b.accounts) f.emplace_back("accounts");
  if (a.metadata != b.metadata) f.emplace_back("metadata");
  return f;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KeyManager>> KeyManager::Create(Options options) {
  if (!options.deployment) return absl::InvalidArgumentError("deployment: must be set");
  if (!options.store) return absl::InvalidArgumentError("store: must be set");
  if (options.webhook_secret_per_key && options.envelope == nullptr) {
    return absl::InvalidArgumentError("webhook_secret_per_key: needs an envelope");
  }
  return std::unique_ptr<KeyManager>(new KeyManager(std::move(options)));
}

KeyManager::KeyManager(Options options) : options_(std::move(options)) {
  if (!options_.clock) {
    // Non-owning: the system clock is a process-wide singleton.
    options_.clock =
        std::shared_ptr<const Clock>(std::shared_ptr<const Clock>(), &SystemClock::Get());
  }
}

absl::Time KeyManager::Now() const { return TruncateToMicros(options_.clock->Now()); }

AuditNote KeyManager::Note(EventType type, std::string_view actor,
                           std::vector<std::string> changed_fields) const {
  return AuditNote{type, std::string(actor), Now(), std::move(changed_fields)};
}

absl::Status KeyManager::ValidateCreate(const CreateKeyRequest& request,
                                        std::string_view actor) const {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  return ValidateCreate(request);
}

absl::Status KeyManager::ValidateCreate(const CreateKeyRequest& request) const {
  return internal::ValidateCreateRequest(
      *options_.deployment, request,
      {options_.clock->Now(), options_.allow_internal_webhook_hosts});
}

absl::StatusOr<CreatedKey> KeyManager::Create(const CreateKeyRequest& request,
                                              std::string_view actor) {
  if (absl::Status s = ValidateCreate(request, actor); !s.ok()) return s;
  const Deployment& d = *options_.deployment;
  const EnvironmentSpec* env = d.FindEnvironment(request.environment);

  absl::StatusOr<std::string> id = NewKeyId(options_.clock->Now());
  if (!id.ok()) return id.status();
  absl::StatusOr<IssuedSecret> secret = IssueSecret(d, *env);
  if (!secret.ok()) return secret.status();

  const absl::Time now = Now();
  KeyRecord r;
  r.id = *std::move(id);
  r.name = request.name;
  r.description = request.description;
  r.owner = request.owner;
  r.kind = request.kind;
  r.environment = request.environment;
  r.scopes = request.scopes;
  r.state = KeyState::kActive;
  r.created = now;
  r.updated = now;
  if (request.expires.has_value()) r.expires = TruncateToMicros(*request.expires);
  r.rate_limit = request.rate_limit;
  r.webhook_url = request.webhook_url;
  r.accounts = request.accounts;
  r.metadata = request.metadata;
  r.digest = secret->digest;
  r.hint = secret->hint;
  absl::StatusOr<std::string> sealed = SealToken(secret->token, r.id);
  if (!sealed.ok()) return sealed.status();
  r.sealed_token = *std::move(sealed);
  std::optional<WebhookSecret> webhook_secret;
  if (options_.webhook_secret_per_key && !r.webhook_url.empty()) {
    absl::StatusOr<WebhookSecret> generated = WebhookSecret::Generate();
    if (!generated.ok()) return generated.status();
    absl::StatusOr<std::string> sealed_secret =
        SealWebhookSecrets(*options_.envelope, r.id, KeyWebhookSecrets{*generated});
    if (!sealed_secret.ok()) return sealed_secret.status();
    r.sealed_webhook_secret = *std::move(sealed_secret);
    webhook_secret = *std::move(generated);
  }

  // The token leaves this function only if the store accepted the record.
  if (absl::Status s =
          options_.store->Insert(r, Note(EventType::kCreated, actor, CreatedFields(r)));
      !s.ok()) {
    return s;
  }
  r.version = 1;
  return CreatedKey{std::move(r), std::move(secret->token), std::move(webhook_secret)};
}

absl::StatusOr<std::optional<KeyRecord>> KeyManager::FindActivePersonal(
    std::string_view owner, std::string_view environment) {
  ListOptions opts;
  opts.filter.owner = std::string(owner);
  opts.filter.environment = std::string(environment);
  opts.filter.kind = KeyKind::kPersonal;
  opts.filter.state = KeyState::kActive;
  opts.limit = 1;
  absl::StatusOr<ListPage> page = options_.store->List(opts);
  if (!page.ok()) return page.status();
  if (page->keys.empty()) return std::optional<KeyRecord>();
  return std::optional<KeyRecord>(std::move(page->keys.front()));
}

absl::StatusOr<ProvisionedKey> KeyManager::ProvisionPersonalKey(
    std::string_view owner, std::string_view environment, const std::vector<std::string>& scopes,
    std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  CreateKeyRequest request;
  request.name = "personal";
  request.owner = std::string(owner);
  request.kind = KeyKind::kPersonal;
  request.environment = std::string(environment);
  request.scopes = scopes;
  if (absl::Status s = ValidateCreate(request); !s.ok()) return s;

  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<std::optional<KeyRecord>> existing = FindActivePersonal(owner, environment);
    if (!existing.ok()) return existing.status();
    if (existing->has_value()) {
      const KeyRecord& key = **existing;
      if (!key.expires.has_value() || *key.expires > options_.clock->Now()) {
        return ProvisionedKey{**std::move(existing), std::nullopt, false};
      }
      // Expired: it can never work again, but as the active personal key it
      // would block its own replacement. Revoke it (an event records that),
      // then create the new one on the next pass.
      absl::StatusOr<KeyRecord> revoked = SetState(key.id, KeyState::kRevoked, actor);
      if (!revoked.ok() && revoked.status().code() != absl::StatusCode::kNotFound) {
        return revoked.status();
      }
      continue;
    }
    absl::StatusOr<CreatedKey> created = Create(request, actor);
    if (created.ok()) {
      return ProvisionedKey{std::move(created->record), std::move(created->token), true};
    }
    // Another caller provisioned it first: read theirs on the next pass.
    if (created.status().code() != absl::StatusCode::kAlreadyExists) return created.status();
  }
  return absl::AbortedError("owner: provisioning the personal key kept conflicting; retry");
}

absl::StatusOr<KeyRecord> KeyManager::Get(std::string_view id) { return options_.store->Get(id); }

absl::StatusOr<ListPage> KeyManager::List(const ListOptions& options) {
  return options_.store->List(options);
}

absl::StatusOr<AuditPage> KeyManager::ReadAudit(const AuditQuery& query) {
  return options_.store->ReadAudit(query);
}

absl::StatusOr<KeyRecord> KeyManager::Modify(std::string_view id, const KeyUpdate& update,
                                             std::uint64_t expected_version,
                                             std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  // Only the fields being set are validated (ValidateKeyUpdate).
  if (absl::Status s = internal::ValidateKeyUpdate(
          *options_.deployment, update,
          {options_.clock->Now(), options_.allow_internal_webhook_hosts});
      !s.ok()) {
    return s;
  }

  absl::StatusOr<KeyRecord> current = options_.store->Get(id);
  if (!current.ok()) return Settled(*options_.store, current.status());
  if (current->version != expected_version) {
    return VersionConflict(id, expected_version, current->version);
  }
  KeyRecord next = *current;
  if (update.name) next.name = *update.name;
  if (update.description) next.description = *update.description;
  if (update.scopes) next.scopes = *update.scopes;
  if (update.expires) {
    next.expires = *update.expires;
    if (next.expires.has_value()) next.expires = TruncateToMicros(*next.expires);
  }
  if (update.rate_limit) next.rate_limit = *update.rate_limit;
  if (update.webhook_url) next.webhook_url = *update.webhook_url;
  if (update.accounts) next.accounts = *update.accounts;
  if (update.metadata) next.metadata = *update.metadata;

  std::vector<std::string> changed = ChangedFields(*current, next);
  if (changed.empty()) {
    // Nothing to write or report; a write that got here first may still be
    // on its way to the verifiers, and this call must not return before it.
    if (absl::Status s = options_.store->AwaitSubscribers(); !s.ok()) return s;
    return *current;
  }
  next.updated = Now();
  next.version = expected_version;
  return options_.store->Update(next, Note(EventType::kModified, actor, std::move(changed)));
}

absl::StatusOr<KeyRecord> KeyManager::SetState(std::string_view id, KeyState target,
                                               std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    if (current->state == target) {
      // Idempotent: no write, no event; but the write that set the state
      // may still be notifying: return only once the verifiers have it.
      if (absl::Status s = options_.store->AwaitSubscribers(); !s.ok()) return s;
      return current;
    }
    KeyRecord next = *std::move(current);
    next.state = target;
    next.updated = Now();
    absl::StatusOr<KeyRecord> stored = options_.store->Update(
        next, Note(target == KeyState::kRevoked ? EventType::kRevoked : EventType::kRestored, actor,
                   {"state"}));
    if (stored.ok()) return stored;
    if (stored.status().code() != absl::StatusCode::kAborted) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

absl::StatusOr<KeyRecord> KeyManager::Revoke(std::string_view id, std::string_view actor) {
  return SetState(id, KeyState::kRevoked, actor);
}

absl::StatusOr<KeyRecord> KeyManager::Restore(std::string_view id, std::string_view actor) {
  return SetState(id, KeyState::kActive, actor);
}

absl::Status KeyManager::Delete(std::string_view id, std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    absl::Status s =
        options_.store->Delete(id, current->version, Note(EventType::kDeleted, actor, {}));
    if (s.ok()) return s;
    if (s.code() != absl::StatusCode::kAborted) return Settled(*options_.store, s);
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

absl::StatusOr<CreatedKey> KeyManager::Roll(std::string_view id, absl::Duration grace,
                                            std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  if (grace < absl::ZeroDuration()) return Invalid("grace", "must not be negative");
  if (grace > kMaxRollGrace) return Invalid("grace", "must be at most 30 days");
  const Deployment& d = *options_.deployment;

  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    if (current->state != KeyState::kActive) {
      return Settled(*options_.store,
                     absl::FailedPreconditionError(absl::StrCat(
                         internal::KeyLabel(current->id), ": revoked; restore it before rolling")));
    }
    // The new token would be born dead, and it is shown only once.
    if (current->expires.has_value() && *current->expires <= options_.clock->Now()) {
      return absl::FailedPreconditionError(absl::StrCat(
          internal::KeyLabel(current->id), ": expired; set a later expiry before rolling"));
    }
    const EnvironmentSpec* env = d.FindEnvironment(current->environment);
    if (env == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "environment: '", current->environment, "' is no longer configured in this deployment"));
    }
    absl::StatusOr<IssuedSecret> secret = IssueSecret(d, *env);
    if (!secret.ok()) return secret.status();

    const absl::Time now = Now();
    KeyRecord next = *current;
    if (grace > absl::ZeroDuration()) {
      next.previous = RolledSecret{current->digest, current->hint, TruncateToMicros(now + grace)};
    } else {
      // Zero grace: forget the old digest at once, so the old token is
      // unknown (not merely expired) from now on.
      next.previous.reset();
    }
    next.digest = secret->digest;
    next.hint = secret->hint;
    // Without an envelope the old sealed copy would reveal a token that no longer works.
    absl::StatusOr<std::string> sealed = SealToken(secret->token, next.id);
    if (!sealed.ok()) return sealed.status();
    next.sealed_token = *std::move(sealed);
    next.updated = now;
    absl::StatusOr<KeyRecord> stored =
        options_.store->Update(next, Note(EventType::kRolled, actor, {"token"}));
    if (stored.ok()) return CreatedKey{*std::move(stored), std::move(secret->token)};
    if (stored.status().code() != absl::StatusCode::kAborted) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

absl::StatusOr<std::string> KeyManager::SealToken(const Secret& token, std::string_view id) const {
  if (options_.envelope == nullptr) return std::string();
  return options_.envelope->Seal(token.Reveal(InsecureSecretAccess::Get()), id);
}

absl::StatusOr<const Envelope*> KeyManager::RequireEnvelope() const {
  if (options_.envelope == nullptr) {
    return absl::FailedPreconditionError(
        "recoverable keys are off in this deployment (no key-encryption key): tokens are kept "
        "only as hashes; roll the key to get a new token");
  }
  return options_.envelope.get();
}

absl::StatusOr<RevealedKey> KeyManager::RevealToken(std::string_view id, std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  absl::StatusOr<const Envelope*> envelope = RequireEnvelope();
  if (!envelope.ok()) return envelope.status();
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    if (current->sealed_token.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(internal::KeyLabel(current->id),
                       ": not recoverable (created before recoverable keys were on, or rolled "
                       "without the key-encryption key); roll it to get a new token"));
    }
    absl::StatusOr<Secret> token = (*envelope)->Open(current->sealed_token, current->id);
    if (!token.ok()) return StoredCopyError(token.status());
    absl::StatusOr<Digest> digest =
        options_.deployment->hasher().Hash(token->Reveal(InsecureSecretAccess::Get()));
    if (!digest.ok()) return digest.status();
    if (*digest != current->digest) {
      return absl::FailedPreconditionError(
          absl::StrCat(internal::KeyLabel(current->id),
                       ": the sealed token is stale (the key was rolled by a keygate that does "
                       "not keep recoverable keys); roll it to get a new token"));
    }
    // The entry commits before the token leaves: a reveal nobody can see never happens.
    absl::StatusOr<KeyRecord> stored =
        options_.store->Update(*current, Note(EventType::kRevealed, actor, {}));
    if (stored.ok()) return RevealedKey{*std::move(stored), *std::move(token)};
    if (stored.status().code() != absl::StatusCode::kAborted) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

absl::StatusOr<bool> KeyManager::ResealToken(std::string_view id, std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  absl::StatusOr<const Envelope*> envelope = RequireEnvelope();
  if (!envelope.ok()) return envelope.status();
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    // `updated` stays: no field a user set changes.
    KeyRecord next = *current;
    std::vector<std::string> fields;
    if (!current->sealed_token.empty() && !(*envelope)->UnderPrimary(current->sealed_token)) {
      absl::StatusOr<std::string> resealed =
          (*envelope)->Reseal(current->sealed_token, current->id);
      if (!resealed.ok()) return StoredCopyError(resealed.status());
      next.sealed_token = *std::move(resealed);
      fields.emplace_back("sealed_token");
    }
    if (!current->sealed_webhook_secret.empty() &&
        !(*envelope)->UnderPrimary(current->sealed_webhook_secret)) {
      absl::StatusOr<std::string> resealed =
          ResealWebhookSecrets(**envelope, current->id, current->sealed_webhook_secret);
      if (!resealed.ok()) return StoredSecretError(resealed.status());
      next.sealed_webhook_secret = *std::move(resealed);
      fields.emplace_back("webhook_secret");
    }
    if (fields.empty()) return false;
    absl::StatusOr<KeyRecord> stored =
        options_.store->Update(next, Note(EventType::kModified, actor, std::move(fields)));
    if (stored.ok()) return true;
    if (stored.status().code() != absl::StatusCode::kAborted) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

absl::StatusOr<RolledWebhookSecret> KeyManager::RollWebhookSecret(std::string_view id,
                                                                  absl::Duration overlap,
                                                                  std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  if (!options_.webhook_secret_per_key) {
    return absl::FailedPreconditionError(
        "per-key webhook secrets are off in this deployment: deliveries are signed with the "
        "deployment's secrets");
  }
  if (overlap < absl::ZeroDuration() || overlap > absl::Hours(24 * 30)) {
    return absl::InvalidArgumentError("overlap: must be 0 to 30 days");
  }
  const Envelope& envelope = *options_.envelope;
  absl::StatusOr<WebhookSecret> generated = WebhookSecret::Generate();
  if (!generated.ok()) return generated.status();
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    if (current->webhook_url.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(internal::KeyLabel(current->id), ": has no webhook URL"));
    }
    KeyWebhookSecrets next_secrets{*generated};
    if (overlap > absl::ZeroDuration()) {
      next_secrets.previous_until = TruncateToMicros(Now() + overlap);
      if (current->sealed_webhook_secret.empty()) {
        // Its first of its own: its receiver holds the deployment's, which keep signing too.
        next_secrets.deployment_previous = true;
      } else {
        absl::StatusOr<KeyWebhookSecrets> old =
            OpenWebhookSecrets(envelope, current->id, current->sealed_webhook_secret);
        if (!old.ok()) return StoredSecretError(old.status());
        next_secrets.previous = old->current;
      }
    }
    absl::StatusOr<std::string> sealed = SealWebhookSecrets(envelope, current->id, next_secrets);
    if (!sealed.ok()) return sealed.status();
    KeyRecord next = *std::move(current);
    next.sealed_webhook_secret = *std::move(sealed);
    absl::StatusOr<KeyRecord> stored =
        options_.store->Update(next, Note(EventType::kModified, actor, {"webhook_secret"}));
    if (stored.ok()) {
      return RolledWebhookSecret{*std::move(stored), *std::move(generated),
                                 next_secrets.previous_until};
    }
    if (stored.status().code() != absl::StatusCode::kAborted) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

}  // namespace keygate
