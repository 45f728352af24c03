// keygate/sqlite/sqlite_key_store.h: the embedded default `KeyStore`, one SQLite file shared
// by a server (verifying) and the `keygate` CLI (managing); target `keygate::sqlite`.
//
// On disk: WAL with `synchronous=FULL` by default (an acknowledged write survives a power loss;
// `kNormal` survives kill -9, but a power loss may roll back the last commits). Only digests and
// display hints are stored, never a token. A new file is created mode 0600 and appears complete
// or not at all (a failed `Create` leaves nothing; a SIGKILL may leave a `.keygate-new-XXXXXX`
// file); `Create` never removes a file it did not create. An existing file (or its -wal, -shm,
// -journal) owned by another user or writable by group or others is refused unless
// `allow_foreign_file`. Older schemas are migrated on open, newer ones refused.
// Change feed: a write through this object notifies its subscribers before it returns (a write
// made inside a subscriber callback does not wait for callbacks on other threads); commits by
// other processes are noticed within `poll_interval` (250 ms by default).
// Corrupt rows (only a manual edit makes one) fail closed: `ChangesSince` delivers the key as
// deleted (`Change::record` empty) and reports kDataLoss (key id and column, never a value) to
// `on_corrupt_row`; `Get`, `FindByDigest` and `List` return kDataLoss; `CheckIntegrity` lists it.
// Ownership: `Create` returns a unique_ptr (a shared_ptr converts from it); the store owns its
// connections and its poller thread (started by the first `Subscribe`; subscriptions may outlive
// the store and are then inert). Thread safety: thread-safe. Cost: Get/FindByDigest ~10 us; a write
// is one transaction (one fsync with kFull, a few ms); `InsertBatch` ~65-75 k keys/s; name search a
// few ms at 1 M keys (a 1-character needle may scan every key). Design: docs/design.md, "The SQLite
// store".
//
// Example:
//   keygate::SqliteOptions o;
//   o.path = "/var/lib/myapp/keygate.db";
//   absl::StatusOr<std::shared_ptr<keygate::SqliteKeyStore>> store =
//       keygate::SqliteKeyStore::Create(o);
//   if (!store.ok()) { /* store.status() names the path and the cause */ }
//   keygate::KeyManager::Options m;
//   m.store = *store;

#ifndef KEYGATE_SQLITE_SQLITE_KEY_STORE_H_
#define KEYGATE_SQLITE_SQLITE_KEY_STORE_H_

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

#include "keygate/key_store.h"

namespace keygate {

namespace internal {
struct SqliteKeyStoreTestPeer;  // not API: keygate's own tests only (src/sqlite/sqlite_db.h)
}  // namespace internal

enum class SqliteSynchronous : std::uint8_t {
  kFull = 0,    // fsync the WAL on every commit (default): durable across power loss
  kNormal = 1,  // fsync at checkpoints: crash-safe, may lose the last commits on power loss
};

struct SqliteOptions {
  // A file path, or ":memory:" (private to this store; tests). "file:" URIs are refused
  // (kInvalidArgument): "./file:x" names a file.
  std::string path = "keygate.db";
  bool create_if_missing = true;  // create (mode 0600) when missing; the directory must exist
  SqliteSynchronous synchronous = SqliteSynchronous::kFull;
  // How long a write waits for another process's lock before failing with kUnavailable.
  absl::Duration busy_timeout = absl::Seconds(5);
  // How often subscriptions look for other processes' commits; 1 ms .. 1 h.
  absl::Duration poll_interval = absl::Milliseconds(250);
  // Upper bound of SQLite's page cache per connection, in KiB, taken as pages are read.
  std::size_t cache_kib = 65536;  // 64 MiB
  // Called once per read of an undecodable row by ChangesSince, on that thread, outside the
  // store's lock, with kDataLoss naming path, key id and column. May call the store but not the
  // feed's reader (a Verifier): log or alert, do not block. Empty: only counted.
  std::function<void(const absl::Status&)> on_corrupt_row;
  // Open a file (or its -wal, -shm, -journal) owned by another user or writable by group or
  // others instead of refusing it (kFailedPrecondition); `open_warnings()` then names each.
  bool allow_foreign_file = false;
};

class SqliteKeyStore final : public KeyStore {
 public:
  using Options = SqliteOptions;

  // Schema version written; older files migrate on open (one transaction, ~3 s at 1 M keys).
  static constexpr int kSchemaVersion = 6;
  static constexpr std::int32_t kApplicationId = 0x4B474154;  // PRAGMA application_id "KGAT"

  // Opens (creating and migrating if needed) the database. Errors name the path and cause:
  //   kInvalidArgument    empty path, a "file:" URI, poll interval out of range
  //   kNotFound           no file and !create_if_missing, or no such directory
  //   kPermissionDenied   file or directory not writable (WAL creates -wal, -shm there), or
  //                       a mode granting nobody write access (even as root)
  //   kFailedPrecondition not SQLite, another application's, a newer schema, a symlink (pass
  //                       its target); foreign owner or group/other-writable (file or journal)
  //                       without allow_foreign_file; a journal that is a symlink or not a
  //                       regular file; no file but a leftover -wal/-shm/-journal
  //   kUnavailable        locked past busy_timeout (only then "busy timeout ... exceeded")
  //   kInternal           any other SQLite failure
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SqliteKeyStore>> Create(Options options);

  ~SqliteKeyStore() override;
  SqliteKeyStore(const SqliteKeyStore&) = delete;
  SqliteKeyStore& operator=(const SqliteKeyStore&) = delete;

  // KeyStore (key_store.h). Any method may also return kUnavailable (busy, I/O) or kInternal,
  // naming the path; Get, FindByDigest and List return kDataLoss for an undecodable row.
  [[nodiscard]] absl::Status Insert(const KeyRecord& record, const AuditNote& note) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> Get(std::string_view id) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> Update(const KeyRecord& record,
                                                 const AuditNote& note) override;
  [[nodiscard]] absl::Status Delete(std::string_view id,
                                    std::optional<std::uint64_t> expected_version,
                                    const AuditNote& note) override;
  [[nodiscard]] absl::StatusOr<ListPage> List(const ListOptions& options) override;
  // One transaction per call; no version bump, change-log row or notification.
  [[nodiscard]] absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                           absl::Duration min_advance) override;
  [[nodiscard]] absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after,
                                                         std::size_t limit) override;
  [[nodiscard]] absl::StatusOr<std::uint64_t> LastSequence() override;
  [[nodiscard]] absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& query) override;
  [[nodiscard]] absl::StatusOr<std::uint64_t> AuditCursor(std::string_view consumer) override;
  [[nodiscard]] absl::Status AckAudit(std::string_view consumer, std::uint64_t sequence) override;
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change) override;
  [[nodiscard]] absl::Status AwaitSubscribers() override;

  // Inserts `records` in ONE transaction (one fsync), all or nothing, in id order (so numbered
  // in the change log), each with an audit entry from `note` (kCreated). Best with 10^4-10^5
  // records. Errors as Insert, naming the record's id.
  [[nodiscard]] absl::Status InsertBatch(absl::Span<const KeyRecord> records,
                                         const AuditNote& note);

  // Full scan: `PRAGMA integrity_check`, the name index, every row decoded. Errors: kDataLoss
  // (SQLite's report, or up to 10 undecodable rows by key id and column), kUnavailable.
  [[nodiscard]] absl::Status CheckIntegrity();

  std::uint64_t corrupt_rows_skipped() const noexcept;  // corrupt rows read by ChangesSince

  [[nodiscard]] absl::StatusOr<std::uint64_t> Count();  // the number of stored keys

  const std::string& path() const noexcept;
  const SqliteOptions& options() const noexcept;
  // One line per file Create accepted only because of allow_foreign_file, to log.
  const std::vector<std::string>& open_warnings() const noexcept;

 private:
  friend struct internal::SqliteKeyStoreTestPeer;  // not API: tests only
  struct Impl;
  explicit SqliteKeyStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_SQLITE_SQLITE_KEY_STORE_H_
