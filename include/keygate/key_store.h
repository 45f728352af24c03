// keygate/key_store.h: the storage interface every backend implements: the source of truth for
// key records, written by `KeyManager`, loaded and then followed (change feed) by verifiers.
// Backends: `MemoryKeyStore`, `SqliteKeyStore`, others; each passes keygate::conformance.
//
// Contract shared by all backends:
//   * `Insert` stores version 1. Digests (current and rolled) are unique across records; at most
//     one ACTIVE personal key exists per (owner, environment).
//   * `Update` is a compare-and-set on `version` and stores version + 1.
//   * Every successful write appends to a change log with a store-wide, strictly increasing
//     sequence number, never reused (not even after a delete), and, in the same transaction, one
//     entry to the audit log (audit.h) with that sequence, built from the write's `AuditNote`.
//     A failed write (bad note, duplicate, version conflict, not found) changes nothing and
//     appends nothing to either log.
//   * `ChangesSince(s)` returns, in sequence order, one entry per key changed after `s` with its
//     CURRENT state (record or deleted; intermediate states may collapse); applying batches from
//     `next_sequence` on converges on the store. A key whose stored state cannot be decoded is
//     delivered as deleted (fail closed, the feed goes on); `Get`, `FindByDigest` and `List`
//     answer kDataLoss for it.
//   * Times round-trip at microsecond precision (key.h; sub-microseconds may drop toward the past).
//   * List: `name_contains` is literal ('%', '_' no wildcards); `next_cursor` is empty exactly when
//     nothing further matches; a foreign cursor is kInvalidArgument. Cursors are unsigned (they
//     give nothing a filter could not) and survive writes: rows inserted behind are skipped, none
//     is returned twice.
//   * The audit log keeps every entry (deletes included) in sequence order; `ReadAudit` filters
//     and pages it. `AckAudit` moves a named consumer's position forward only.
//   * A subscription callback runs only after its change is visible to readers, and never after
//     its Subscription was destroyed.
//   * Every field of a record round-trips, `sealed_token` included (opaque text to a store).
//   * An audit entry carries the key's webhook URL: the record's as written, for a delete the
//     stored one (MakeAuditEvent's `webhook_url`).
// Thread safety: every method of every implementation is thread-safe; none is copyable.
//
// Example:
//   keygate::MemoryKeyStore store;
//   absl::StatusOr<keygate::KeyRecord> r = store.Get("key_...");

#ifndef KEYGATE_KEY_STORE_H_
#define KEYGATE_KEY_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "keygate/audit.h"
#include "keygate/digest.h"
#include "keygate/key.h"

namespace keygate {

// Filters for List(); unset fields match everything; set ones must all match.
struct ListFilter {
  std::optional<std::string> owner;
  std::optional<std::string> environment;
  std::optional<KeyState> state;
  std::optional<KeyKind> kind;
  std::string name_contains;  // ASCII case-insensitive substring of the name; empty: all
};

inline constexpr std::size_t kMaxListLimit = 1000;

struct ListOptions {
  ListFilter filter;
  std::size_t limit = 100;  // 1 .. kMaxListLimit
  std::string cursor;       // opaque, the previous page's next_cursor; empty: first page
};

// Records ordered by id ascending.
struct ListPage {
  std::vector<KeyRecord> keys;
  std::string next_cursor;  // empty when this is the last page
};

struct Change {
  std::uint64_t sequence = 0;
  std::string key_id;
  std::optional<KeyRecord> record;  // the key's current state; nullopt: deleted
};

struct ChangeBatch {
  std::vector<Change> changes;
  std::uint64_t next_sequence = 0;  // for the next ChangesSince call; >= the argument
  bool more = false;                // more changes wait beyond this batch's limit
};

// A live subscription. After its destructor returns, the callback is not running and never will.
class Subscription {
 public:
  virtual ~Subscription() = default;
};

// One key's latest use, for KeyStore::TouchLastUsed.
struct LastUsedUpdate {
  std::string key_id;
  absl::Time last_used;
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;

  // Stores version 1; `note.type` must be kCreated. Errors: kAlreadyExists (id, digest, or active
  // personal key of owner+environment), kInvalidArgument (id empty or longer than kKeyIdLength,
  // bad note), kUnavailable, kInternal.
  [[nodiscard]] virtual absl::Status Insert(const KeyRecord& record, const AuditNote& note) = 0;

  // Errors: kNotFound "key <id>: not found", kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<KeyRecord> Get(std::string_view id) = 0;

  // The key whose current or rolled digest is `digest` (the caller checks
  // RolledSecret::valid_until). Errors: kNotFound, kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) = 0;

  // Compare-and-set on `record.version`; returns the stored record (version + 1). `note.type` is
  // kModified, kRevoked, kRestored, kRolled or kRevealed. Errors: kNotFound, kAborted "key <id>:
  // version conflict (expected N, stored M)", kAlreadyExists (digest / personal uniqueness),
  // kInvalidArgument (bad note), kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<KeyRecord> Update(const KeyRecord& record,
                                                         const AuditNote& note) = 0;

  // Deletes permanently; a set `expected_version` must match; `note.type` must be kDeleted.
  // Errors: kNotFound, kAborted, kInvalidArgument (bad note), kUnavailable.
  [[nodiscard]] virtual absl::Status Delete(std::string_view id,
                                            std::optional<std::uint64_t> expected_version,
                                            const AuditNote& note) = 0;

  // Errors: kInvalidArgument (limit out of range, bad cursor), kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<ListPage> List(const ListOptions& options) = 0;

  // The Verifier's usage flush: moves each key's `last_used` forward to `update.last_used` when
  // unset or at least `min_advance` older; never back; missing keys are skipped. An override
  // bumps no `version` and appends no change (both stores here: one transaction per call); the
  // default is Get + Update per key. `last_used` is accurate to one flush. Errors: kUnavailable,
  // kInternal (earlier updates may have been applied).
  [[nodiscard]] virtual absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                                   absl::Duration min_advance);

  // Changes with sequence > `after`, at most `limit` entries. Errors: kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after,
                                                                 std::size_t limit) = 0;

  // The highest sequence number assigned so far (0 for an empty store).
  [[nodiscard]] virtual absl::StatusOr<std::uint64_t> LastSequence() = 0;

  // Audit log entries matching `query`, in sequence order. Errors: kInvalidArgument (limit out of
  // range, since >= until), kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& query) = 0;

  // The last sequence `consumer` acknowledged (0: none yet). Errors: kInvalidArgument (bad
  // name), kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<std::uint64_t> AuditCursor(std::string_view consumer) = 0;

  // Records that `consumer` has handled every entry up to `sequence`; a smaller value than the
  // stored one changes nothing. Errors: kInvalidArgument (bad name, sequence beyond
  // LastSequence()), kUnavailable.
  [[nodiscard]] virtual absl::Status AckAudit(std::string_view consumer,
                                              std::uint64_t sequence) = 0;

  // Calls `on_change` (any thread, no store lock held) after commits, also other processes' for
  // shared storage; calls may coalesce: just wake a reader of ChangesSince. Errors: kUnavailable.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change) = 0;

  // Returns once every subscriber of this object finished a callback round started after the
  // call. Default: nothing (stores notifying asynchronously promise no order); a wrapping store
  // must forward it. Errors: the store's.
  [[nodiscard]] virtual absl::Status AwaitSubscribers() { return absl::OkStatus(); }
};

}  // namespace keygate

#endif  // KEYGATE_KEY_STORE_H_
