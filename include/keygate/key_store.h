// keygate/key_store.h: the storage interface every backend implements.
//
// A `KeyStore` is the source of truth for key records. The management side
// (`KeyManager`) writes through it; verifiers load it once and then follow its
// change feed. Backends: `MemoryKeyStore` (memory_key_store.h), SQLite
// (keygate/sqlite/), and others; each passes the same conformance suite
// (tests/key_store_conformance.h).
//
// Contract shared by all backends:
//   * `Insert` stores a new record with version 1. Digests (current and
//     rolled) are unique across all records; at most one ACTIVE personal key
//     exists per (owner, environment).
//   * `Update` is a compare-and-set on `version`: it succeeds only if the
//     stored version equals `record.version`, and stores the record with
//     version + 1.
//   * Every successful Insert/Update/Delete appends to a change log with a
//     store-wide, strictly increasing sequence number (never reused, also not
//     after a delete).
//   * `ChangesSince(s)` returns, in increasing sequence order, one entry per
//     key changed after `s` with that key's CURRENT state (the record, or
//     "deleted"); intermediate states may be collapsed. Applying the batch and
//     continuing from `batch.next_sequence` converges on the store's state.
//     A backend that cannot decode a key's stored state (a corrupt row)
//     delivers that key as deleted, failing closed without stopping the
//     feed, and reports the error by its own means; `Get`, `FindByDigest`
//     and `List` answer kDataLoss for it.
//   * A failed write (duplicate, version conflict, not found) changes nothing
//     and appends nothing to the change log.
//   * Times round-trip at microsecond precision (see key.h): a backend may
//     drop sub-microsecond parts, toward the past, and nothing more.
//   * List: `name_contains` matches literally ('%' and '_' are no wildcards);
//     `next_cursor` is empty exactly when no further record matches; a
//     cursor not of the store's form is kInvalidArgument. Cursors are not
//     signed: a well-formed one resumes after the id it names, which gives
//     a caller nothing a filter could not. Cursors stay valid across
//     writes: records inserted behind the cursor are skipped, no record is
//     returned twice.
//   * A subscription callback runs only after the change it reports is
//     visible to readers, and never after its Subscription was destroyed.
//
// Example:
//
//   keygate::MemoryKeyStore store;
//   absl::StatusOr<keygate::KeyRecord> r = store.Get("key_...");
//
// Thread safety: every method of every implementation is thread-safe.
// Implementations are not copyable.

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

#include "keygate/digest.h"
#include "keygate/key.h"

namespace keygate {

// Filters for List(); unset fields match everything. All given filters must
// match (AND).
struct ListFilter {
  std::optional<std::string> owner;
  std::optional<std::string> environment;
  std::optional<KeyState> state;
  std::optional<KeyKind> kind;
  // Case-insensitive (ASCII) substring of the name; empty matches all.
  std::string name_contains;
};

inline constexpr std::size_t kMaxListLimit = 1000;

struct ListOptions {
  ListFilter filter;
  std::size_t limit = 100;  // 1 .. kMaxListLimit
  // Opaque; from the previous page's next_cursor. Empty: first page.
  std::string cursor;
};

// Records ordered by id ascending.
struct ListPage {
  std::vector<KeyRecord> keys;
  std::string next_cursor;  // empty when this is the last page
};

struct Change {
  std::uint64_t sequence = 0;
  std::string key_id;
  // The key's current state; nullopt if it has been deleted.
  std::optional<KeyRecord> record;
};

struct ChangeBatch {
  std::vector<Change> changes;
  // Pass this to the next ChangesSince call. >= the argument.
  std::uint64_t next_sequence = 0;
  // More changes are waiting beyond this batch's limit.
  bool more = false;
};

// A live change subscription. Destroying it unsubscribes; after the
// destructor returns the callback is not running and will not run again.
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

  // Errors: kAlreadyExists (id, digest, or active personal key for this
  // owner+environment), kInvalidArgument (an empty id, or one longer than
  // kKeyIdLength: see key.h), kUnavailable (backend down), kInternal.
  virtual absl::Status Insert(const KeyRecord& record) = 0;

  // Errors: kNotFound "key <id>: not found", kUnavailable.
  virtual absl::StatusOr<KeyRecord> Get(std::string_view id) = 0;

  // Finds the key whose current or rolled digest is `digest` (callers check
  // RolledSecret::valid_until). Errors: kNotFound, kUnavailable.
  virtual absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) = 0;

  // Compare-and-set on `record.version`; returns the stored record (version
  // incremented). Errors: kNotFound, kAborted "key <id>: version conflict
  // (expected N, stored M)", kAlreadyExists (digest / personal uniqueness),
  // kUnavailable.
  virtual absl::StatusOr<KeyRecord> Update(const KeyRecord& record) = 0;

  // Deletes permanently. If `expected_version` is set it must match.
  // Errors: kNotFound, kAborted, kUnavailable.
  virtual absl::Status Delete(std::string_view id,
                              std::optional<std::uint64_t> expected_version) = 0;

  // Errors: kInvalidArgument (limit out of range, bad cursor), kUnavailable.
  virtual absl::StatusOr<ListPage> List(const ListOptions& options) = 0;

  // Records when keys were last used (the Verifier's usage flush): for each
  // update, moves the key's `last_used` forward to `update.last_used` if it
  // has none or the stored time is at least `min_advance` older. Never moves
  // it back. Usage is not verification state, so stores that override this
  // neither bump `version` (a management change made concurrently never gets
  // kAborted because of it) nor append to the change feed; both stores here
  // do, in one transaction per call. Keys that no longer exist are skipped.
  // The default implementation, for stores that do not override it, is a
  // Get + Update per key (a version bump and a change each; kAborted is
  // retried on top of the concurrent change, never over it).
  // Since Update writes whole records, a management Update that read the
  // record before a touch may write an older `last_used` back; the next
  // touch moves it forward again: `last_used` is accurate to one flush.
  // Errors: kUnavailable, kInternal (the updates before the error may have
  // been applied).
  virtual absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                     absl::Duration min_advance);

  // Changes with sequence > `after`, at most `limit` entries.
  // Errors: kUnavailable.
  virtual absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) = 0;

  // The highest sequence number assigned so far (0 for an empty store).
  virtual absl::StatusOr<std::uint64_t> LastSequence() = 0;

  // Calls `on_change` (on an unspecified thread, never while a store lock
  // is held) after changes are committed, including by other processes for
  // backends that share storage. Calls may be coalesced; the callback should
  // just wake up a reader of ChangesSince. Errors: kUnavailable.
  virtual absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change) = 0;

  // Returns once every subscriber of this store object has finished a
  // callback round that started after the call, so a record read before the
  // call has reached them. KeyManager calls it when a request finds nothing
  // to write (a second Revoke of a revoked key): the write that got there
  // first may still be notifying, and the caller must not return before the
  // verifiers have it. The default does nothing: for stores whose writes
  // notify asynchronously, which promise no such order. A store that wraps
  // another must forward it. Errors: the store's.
  virtual absl::Status AwaitSubscribers() { return absl::OkStatus(); }
};

}  // namespace keygate

#endif  // KEYGATE_KEY_STORE_H_
