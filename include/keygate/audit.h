// keygate/audit.h: the audit log of key management.
//
// Every successful mutation of a key (create, modify, revoke, restore, delete, roll), and every
// reveal of a recoverable key's token (KeyManager::RevealToken), appends one
// `Event` to its store's audit log in the same transaction as the change: a crash keeps both or
// neither. The caller of a store write says what it is in an `AuditNote`; the store adds the key
// id, owner, resulting version and the entry's sequence. Entries never hold a token, a digest or
// a pepper.
//
// The log is read with `KeyStore::ReadAudit` (filters and pagination) and followed by named
// consumers that acknowledge what they have handled (`KeyStore::AckAudit`); `AuditRelay`
// (audit_relay.h) feeds an `EventSink` that way, at least once and in order.
//
// Example:
//   keygate::AuditQuery q;
//   q.key_id = "key_...";
//   absl::StatusOr<keygate::AuditPage> page = store->ReadAudit(q);
//   for (const keygate::Event& e : page->events) std::cout << e << "\n";
//
// Thread safety: plain values.

#ifndef KEYGATE_AUDIT_H_
#define KEYGATE_AUDIT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace keygate {

enum class EventType : std::uint8_t {
  kUnspecifiedDoNotUse = 0,
  kCreated,
  kModified,
  kRevoked,
  kRestored,
  kDeleted,
  kRolled,
  kRevealed,  // a recoverable key's token was read back (KeyManager::RevealToken)
};

// "created", "modified", "revoked", "restored", "deleted", "rolled", "revealed"; "unspecified"
// otherwise.
std::string_view EventTypeName(EventType type) noexcept;

// Parses what EventTypeName returns; nullopt for anything else.
std::optional<EventType> ParseEventType(std::string_view name) noexcept;

// One audit log entry. `changed_fields` by type: created: the fields the request set ("name",
// "owner", "kind", "environment" always; "description", "scopes", "expires", "rate_limit",
// "webhook_url", "accounts", "metadata" when given); modified: the fields whose value changed;
// revoked/restored: {"state"}; rolled: {"token"} (the name of what changed, never its value);
// revealed: {} (nothing changed but the version); deleted: {}.
struct Event {
  std::uint64_t sequence = 0;  // the change's sequence in its store (key_store.h), > 0
  EventType type = EventType::kUnspecifiedDoNotUse;
  absl::Time at;
  std::string actor;  // who did it (a user id, "system", ...)
  std::string key_id;
  std::string owner;                        // the key's owner
  std::vector<std::string> changed_fields;  // e.g. {"name", "scopes"}
  std::uint64_t version = 0;                // the record version after the change (0: deleted)
  // The key's webhook URL after the change (a deletion: before it); empty: none. What webhook
  // delivery reads to know where an event goes, even once the key is gone.
  std::string webhook_url;

  friend bool operator==(const Event&, const Event&) = default;
};

// "#12 created key_... by alice (owner alice) fields=[...] v1 at 2026-...". Ids, actor and owner
// are printed with control characters escaped (\n, \x1b, ...): one event is always one line.
std::ostream& operator<<(std::ostream& os, const Event& event);

inline constexpr std::size_t kMaxActorLength = 128;
inline constexpr std::size_t kMaxChangedFields = 16;

// What a store write records besides the change. Insert (and SqliteKeyStore::InsertBatch) take
// kCreated, Delete kDeleted, Update one of kModified, kRevoked, kRestored, kRolled, kRevealed;
// `actor` is
// 1-128 bytes of text without control characters; at most 16 `changed_fields`, each 1-32 bytes
// of [a-z_]. A store refuses any other note with kInvalidArgument ("audit.actor: ...") and writes
// nothing.
struct AuditNote {
  EventType type = EventType::kUnspecifiedDoNotUse;
  std::string actor;
  absl::Time at;  // when it happened (the manager's clock)
  std::vector<std::string> changed_fields;
};

inline constexpr std::size_t kMaxAuditLimit = 1000;

// Filters for KeyStore::ReadAudit; unset fields match everything; set ones must all match.
struct AuditQuery {
  std::optional<std::string> key_id;
  std::optional<std::string> actor;
  // Time bounds count at microseconds, truncated toward the past (as stores keep times).
  std::optional<absl::Time> since;  // entries at or after this time
  std::optional<absl::Time> until;  // entries before this time
  std::uint64_t after = 0;          // entries with a larger sequence (resume from next_after)
  std::size_t limit = 100;          // 1 .. kMaxAuditLimit
};

// Matching entries in sequence order.
struct AuditPage {
  std::vector<Event> events;
  std::uint64_t next_after = 0;  // the `after` of the next page (>= the query's)
  bool more = false;             // more matching entries wait beyond this page
};

// For KeyStore implementations: which write a note is for.
enum class AuditWrite : std::uint8_t { kInsert, kUpdate, kDelete };

// For KeyStore implementations: kInvalidArgument "audit.<field>: <reason>" unless `note` fits a
// write of kind `write` (see AuditNote). A store refuses the write with this error.
[[nodiscard]] absl::Status ValidateAuditNote(const AuditNote& note, AuditWrite write);

// For KeyStore implementations: the entry a write with `note` appends (time kept to microseconds).
// `webhook_url`: the record's as written (a deletion: as stored before it).
Event MakeAuditEvent(const AuditNote& note, std::uint64_t sequence, std::string_view key_id,
                     std::string_view owner, std::uint64_t version,
                     std::string_view webhook_url = {});

// For KeyStore implementations: kInvalidArgument for a limit out of range or an empty time range.
[[nodiscard]] absl::Status ValidateAuditQuery(const AuditQuery& query);

// For KeyStore implementations: whether `event` passes the query's key, actor and time filters
// (not `after`).
bool AuditQueryMatches(const AuditQuery& query, const Event& event);

// An actor name: 1-128 bytes of UTF-8 text without control characters, holding no API token.
// Errors: kInvalidArgument "actor: ...".
[[nodiscard]] absl::Status ValidateActor(std::string_view actor);

// A consumer name for KeyStore::AuditCursor / AckAudit: 1-64 bytes of [A-Za-z0-9._:-].
// Errors: kInvalidArgument "consumer: ...".
[[nodiscard]] absl::Status ValidateAuditConsumer(std::string_view consumer);

}  // namespace keygate

#endif  // KEYGATE_AUDIT_H_
