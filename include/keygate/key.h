// keygate/key.h: the API-key record and its parts.
//
// A `KeyRecord` is what a `KeyStore` keeps about one key. It never holds the
// token in clear: only its digest (see digest.h), a non-secret display hint
// and, for a recoverable key, the token sealed under a key-encryption key that
// no store holds (`sealed_token`, envelope.h). The
// public id (`key_...`) is not secret and is what logs, events and the
// management API use to name a key.
//
// Two kinds of key, as in the product documents:
//   personal  one active key per owner and environment, provisioned
//             idempotently (e.g. when the account registers);
//   general   named service/CI keys; any number per owner; what they do is
//             attributed to their owner.
//
// Thread safety: plain value types.

#ifndef KEYGATE_KEY_H_
#define KEYGATE_KEY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "keygate/digest.h"

namespace keygate {

// Lifecycle enums carry a "do not use" zero value so that a default-
// constructed or corrupt value is never mistaken for a real one.
enum class KeyKind : std::uint8_t {
  kUnspecifiedDoNotUse = 0,
  kPersonal = 1,
  kGeneral = 2,
};

enum class KeyState : std::uint8_t {
  kUnspecifiedDoNotUse = 0,
  kActive = 1,
  kRevoked = 2,  // blocked; Restore() makes it active again
};

std::string_view KeyKindName(KeyKind kind) noexcept;     // "personal" / "general"
std::string_view KeyStateName(KeyState state) noexcept;  // "active" / "revoked"
bool ParseKeyKind(std::string_view name, KeyKind* out) noexcept;
bool ParseKeyState(std::string_view name, KeyState* out) noexcept;

// A token-bucket-equivalent policy enforced with GCRA: `rate` requests per
// `period`, with bursts of up to `burst` requests.
struct RateLimitPolicy {
  std::uint64_t rate = 0;                    // 1 .. 1'000'000'000
  absl::Duration period = absl::Seconds(1);  // 1 ms .. 1 day
  std::uint32_t burst = 1;                   // 1 .. 1'000'000
  friend bool operator==(const RateLimitPolicy&, const RateLimitPolicy&) = default;
};

inline constexpr std::uint64_t kMaxRateLimitRate = 1'000'000'000;
inline constexpr absl::Duration kMinRateLimitPeriod = absl::Milliseconds(1);
inline constexpr absl::Duration kMaxRateLimitPeriod = absl::Hours(24);
inline constexpr std::uint32_t kMaxRateLimitBurst = 1'000'000;
// The bucket, burst x period / rate, holds at most 2^61 ns (73 years): the
// GCRA arithmetic stays exact and in range below that.
inline constexpr std::int64_t kMaxRateLimitBucketNs = std::int64_t{1} << 61;

// Checks the ranges above, that `period / rate` (the GCRA emission
// interval) is at least 1 ns so that the limiter can represent it, and that
// the bucket is at most kMaxRateLimitBucketNs. Errors:
// kInvalidArgument "<field>.rate: ...", "<field>.period: ...",
// "<field>.burst: ..." where `field` names the policy ("rate_limit",
// "environments[0].default_rate_limit").
[[nodiscard]] absl::Status ValidateRateLimitPolicy(const RateLimitPolicy& policy,
                                                   std::string_view field);

// The previous secret of a rolled key: accepted until `valid_until`.
struct RolledSecret {
  Digest digest{};
  std::string hint;
  absl::Time valid_until = absl::InfinitePast();
  friend bool operator==(const RolledSecret&, const RolledSecret&) = default;
};

// "key_" + 8 base62 chars of the creation time in Unix ms + 14 random base62
// chars: unique, not secret, and sorted by creation time.
//
// It is also the longest id any key may have: a `Verdict` carries its key's
// id inline, in kKeyIdLength bytes, so that verification allocates nothing.
// Ids of another shape (keys imported with `KeyStore::Insert`) work if
// they are no longer; the bundled stores refuse longer ones, and a verifier
// that meets one in a store of another kind answers kUnavailable for its
// tokens rather than report a cut-off id, which could name another key.
inline constexpr std::size_t kKeyIdLength = 26;

// True if `id` has the shape of an id that KeyManager generates: "key_" and
// 22 characters of [0-9A-Za-z], kKeyIdLength in all. No token has this shape
// (every token is longer), so a server can refuse anything else in a path
// parameter without echoing it. keygate's own error messages quote an id only
// when this holds ("key (not a key id): not found" otherwise), so a token
// pasted where an id belongs never reaches a log. Pure; thread-safe.
bool IsGeneratedKeyId(std::string_view id) noexcept;
inline constexpr std::size_t kMaxNameLength = 128;
inline constexpr std::size_t kMaxDescriptionLength = 1024;
inline constexpr std::size_t kMaxOwnerLength = 128;
inline constexpr std::size_t kMaxScopesPerKey = 64;
inline constexpr std::size_t kMaxWebhookUrlLength = 2048;
inline constexpr std::size_t kMaxAccounts = 64;
inline constexpr std::size_t kMaxAccountLength = 128;
inline constexpr std::size_t kMaxMetadataEntries = 64;
inline constexpr std::size_t kMaxMetadataKeyLength = 64;
inline constexpr std::size_t kMaxMetadataValueLength = 1024;
inline constexpr std::size_t kMaxSealedTokenLength = 1024;
inline constexpr std::size_t kMaxSealedWebhookSecretLength = 1024;

// Times in records are kept at microsecond precision: `KeyManager` truncates
// every time it writes (toward the past), and every `KeyStore` must round-trip
// microsecond values exactly (it may drop finer parts). Infinite times are
// returned unchanged.
absl::Time TruncateToMicros(absl::Time t) noexcept;

struct KeyRecord {
  std::string id;  // "key_" + 22 base62 chars; not secret
  std::string name;
  std::string description;
  std::string owner;  // user id actions are attributed to
  KeyKind kind = KeyKind::kUnspecifiedDoNotUse;
  std::string environment;          // environment name, e.g. "production"
  std::vector<std::string> scopes;  // scope names, as granted
  KeyState state = KeyState::kUnspecifiedDoNotUse;
  absl::Time created = absl::UnixEpoch();
  absl::Time updated = absl::UnixEpoch();
  std::optional<absl::Time> expires;  // none: never expires
  std::optional<absl::Time> last_used;
  std::optional<RateLimitPolicy> rate_limit;  // none: environment default
  std::string webhook_url;                    // https only; empty: none
  std::vector<std::string> accounts;
  std::map<std::string, std::string> metadata;
  Digest digest{};                       // of the current token
  std::string hint;                      // "kg_live_...AbCd"
  std::optional<RolledSecret> previous;  // set by Roll() during the grace period
  std::uint64_t version = 0;             // set by the store: 1 on insert, +1 per update
  // A recoverable key's current token, sealed by the deployment's Envelope (envelope.h) with the
  // key id as associated data: ciphertext, useless without the key-encryption key, which is
  // never in a store. Empty: not recoverable (recoverable keys off, or the key predates them).
  // Set by KeyManager; at most kMaxSealedTokenLength bytes.
  std::string sealed_token;
  // The key's webhook signing secrets (webhook_signature.h), sealed by the deployment's Envelope
  // like `sealed_token`: the current one and, while a rotation overlaps, the previous one with
  // when it stops signing. Empty: none (deliveries are signed with the deployment's secrets).
  // Set by KeyManager; opaque to stores; at most kMaxSealedWebhookSecretLength bytes.
  std::string sealed_webhook_secret;

  friend bool operator==(const KeyRecord&, const KeyRecord&) = default;
};

// One line, for logs: id, name, kind, environment, state, version, text
// with control characters escaped (\n, \x1b, ...). Never a secret (the
// record holds none) and neither the digest nor a sealed value.
std::ostream& operator<<(std::ostream& os, const KeyRecord& record);

}  // namespace keygate

#endif  // KEYGATE_KEY_H_
