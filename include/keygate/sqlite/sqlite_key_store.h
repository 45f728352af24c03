// keygate/sqlite/sqlite_key_store.h: the embedded default `KeyStore`, one
// SQLite file (target `keygate::sqlite`).
//
// Most deployments start on one machine with no database server: the keys live
// in a SQLite file that the server (verifying) and the `keygate` command-line
// tool (managing) share. A revoke made by the CLI in one process reaches a
// server in another through the change feed: every write appends to a change
// log table, and `Subscribe` polls `PRAGMA data_version` (a read of shared
// memory, no I/O) to notice commits made by other connections, every
// `poll_interval` (250 ms by default: that bounds the cross-process
// revoke-to-reject latency). Writes made through this store object notify
// its subscribers after the commit and before the write returns (on the
// writing thread; or, when a callback is already running on another thread,
// the write waits until that thread has run it once more), so an in-process
// `Verifier` rejects a revoked key as soon as `KeyManager::Revoke()` returns.
// The exception: a write made from inside a subscriber callback does not wait
// for callbacks running on other threads (that could deadlock).
//
// On disk:
//   * WAL journal, `synchronous=FULL` by default: every acknowledged write
//     survives a process crash AND a power loss or OS crash. `kNormal` syncs the
//     WAL only at checkpoints: still safe against a process crash (kill -9), but
//     a power loss may roll back the last few acknowledged commits (never
//     corrupts). Choose it only when re-issuing a lost key is acceptable.
//   * New files are created with mode 0600 (the WAL and shared-memory files
//     inherit it): the file holds digests, not tokens, but key metadata is
//     still nobody else's business. A new file gets its schema under a
//     temporary name in the same directory (`.keygate-new-XXXXXX`) and
//     is then hard-linked into place (a non-replacing rename where hard links
//     are not supported), so it appears complete or not at all: an `Open` that
//     fails while creating it leaves nothing behind (a SIGKILL at that moment
//     can leave the temporary file). `Open` never removes a file it did not
//     create.
//   * An existing file another user owns, or one group or others may write
//     (the database or its -wal, -shm, -journal file), is refused unless
//     `SqliteOptions::allow_foreign_file` (then `open_warnings()` says so):
//     whoever can plant or change the file can plant keys.
//   * Only digests and display hints are stored, never a token.
//   * Schema versioned with `PRAGMA user_version` and `PRAGMA application_id`;
//     older files are migrated on open, newer ones are refused (kFailedPrecondition)
//     rather than misread. Times are integer microseconds since the Unix epoch.
//
// A row that cannot be decoded (only a manual edit of the file makes one:
// say a `scopes` value that is not a JSON array of strings) fails closed and
// does not stop the feed: `ChangesSince` delivers that key's change as a
// deletion (`Change::record` empty), so a Verifier drops the key instead of
// serving its last good state, and every later change still reaches it. The
// row is reported to `SqliteOptions::on_corrupt_row` (a kDataLoss status
// naming the key id and the column, never a value), counted by
// `corrupt_rows_skipped()`, listed by `CheckIntegrity()`, and `Get`,
// `FindByDigest` and `List` return that kDataLoss for it. Once the row is
// repaired, followers see the key again at its next change or at their next
// full reload (Verifier: `full_resync_interval`).
//
// Example:
//
//   keygate::SqliteOptions o;
//   o.path = "/var/lib/myapp/keygate.db";
//   absl::StatusOr<std::shared_ptr<keygate::SqliteKeyStore>> store =
//       keygate::SqliteKeyStore::Open(o);
//   if (!store.ok()) { /* store.status() names the path and the cause */ }
//   keygate::KeyManager::Options m;
//   m.store = *store;
//   ...
//
// Ownership: `Open` returns a shared_ptr; the store owns its connections and
// its poller thread (started by the first `Subscribe`, stopped when the store
// is destroyed; subscriptions may outlive the store and are then inert).
//
// Thread safety: thread-safe. One connection serves every method, behind a
// mutex: SQLite admits one writer at a time anyway, management calls are not
// on the request path, and one connection makes read-your-writes trivial and
// keeps the statement cache simple. The poller uses a second connection
// (it only reads), so polling never waits for a long write.
//
// Cost: Get/FindByDigest are one indexed lookup (~10 us); each write is one
// transaction, i.e. one fsync with kFull (a few ms on a typical disk; use
// InsertBatch for imports: ~65-75 k keys/s at a million keys in batches of
// 100 k, see bench/README.md). Name search goes through an FTS5 trigram index
// that records which keys hold each trigram (not where: that keeps inserts
// cheap); a needle is looked up as the AND of its trigrams and the candidates
// are checked exactly: milliseconds at 1 M keys for needles of 2+ characters;
// a 1-character needle walks the keys in id order (fast when it is common, a
// full scan when it is rare).

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
struct SqliteKeyStoreTestPeer;
}  // namespace internal

enum class SqliteSynchronous : std::uint8_t {
  kFull = 0,    // fsync the WAL on every commit (default): durable across power loss
  kNormal = 1,  // fsync at checkpoints: crash-safe, may lose the last commits on power loss
};

struct SqliteOptions {
  // A file path, or ":memory:" for a private in-memory database (tests; it is
  // not shared with other connections or processes). SQLite "file:" URIs are
  // refused (kInvalidArgument): "./file:x" names a file.
  std::string path = "keygate.db";
  // Create the file (mode 0600) when it does not exist. The directory must
  // exist either way.
  bool create_if_missing = true;
  SqliteSynchronous synchronous = SqliteSynchronous::kFull;
  // How long a write waits for another process's write lock before failing
  // with kUnavailable.
  absl::Duration busy_timeout = absl::Seconds(5);
  // How often subscriptions check for commits made by other processes
  // (PRAGMA data_version). Commits through this store notify at once.
  // 1 ms .. 1 h.
  absl::Duration poll_interval = absl::Milliseconds(250);
  // Upper bound of SQLite's page cache per connection, in KiB (PRAGMA
  // cache_size = -N); memory is only taken as pages are read. 64 MiB keeps
  // the hot index pages of a million-key store cached (imports ran ~25%
  // faster than with 16 MiB; more did not help).
  std::size_t cache_kib = 65536;  // 64 MiB
  // Called for each undecodable row ChangesSince reads (see the file
  // comment), with a kDataLoss status naming the path, the key id and the
  // column, never a value. Runs on the thread that called ChangesSince, after
  // the store's lock is released, once per read of the row. It may call the
  // store, but not the feed's reader (a Verifier holds its own lock while it
  // pulls the feed): log or alert, do not block. Empty: not reported (still
  // counted by corrupt_rows_skipped()).
  std::function<void(const absl::Status&)> on_corrupt_row;
  // An existing database file, or its `-wal`, `-shm` or `-journal` file,
  // that is owned by another user than the effective one or that group or
  // others may write is refused (kFailedPrecondition, naming the file and
  // the reason): in a shared directory (`./keygate.db` is the CLI's
  // default) another user may have planted it, holding an admin key of
  // theirs, or may change its keys later, and a process running as root
  // would otherwise serve them without a word. Set this to open such a file
  // anyway (a database shared with a group on purpose, or managed by root
  // for a service user); `open_warnings()` then names each such file.
  bool allow_foreign_file = false;
};

class SqliteKeyStore final : public KeyStore {
 public:
  // The schema version this build writes; files with a higher
  // `PRAGMA user_version` are refused. Older files are migrated on open, in
  // one transaction: version 2 (from 1: the name index is rebuilt, ~3 s for a
  // million keys) made bulk inserts ~1.5x faster; version 3 (from 2: one
  // pass over the change log, about a second at a million keys) keeps one
  // change-log entry per key id when a deleted id is inserted again.
  static constexpr int kSchemaVersion = 3;
  // `PRAGMA application_id` of keygate files ("KGAT").
  static constexpr std::int32_t kApplicationId = 0x4B474154;

  // Opens (and if needed creates and migrates) the database. Errors, each
  // naming the path and the cause:
  //   kInvalidArgument    bad options (empty path, a "file:" URI, poll interval
  //                       out of range)
  //   kNotFound           the file does not exist and create_if_missing is
  //                       false, or its directory does not exist
  //   kFailedPrecondition (also) the file does not exist but a journal file
  //                       of a removed database (`<file>-wal`, `-shm`,
  //                       `-journal`) does: it is left for the operator
  //   kPermissionDenied   the file or its directory is not writable (WAL mode
  //                       creates `<file>-wal` and `<file>-shm` there); one
  //                       whose mode grants nobody write access is refused
  //                       even when running as root
  //   kFailedPrecondition not a SQLite database, another application's
  //                       database, a newer keygate schema, or the file is a
  //                       symbolic link (refused on purpose: pass its target;
  //                       linked directories in the path are fine); the file
  //                       or a journal file of it is owned by another user
  //                       or writable by group or others (unless
  //                       allow_foreign_file), or a journal file is a
  //                       symbolic link or not a regular file
  //   kUnavailable        locked by another process past busy_timeout (the
  //                       message says "busy timeout ... exceeded" only then)
  //   kInternal           any other SQLite failure
  static absl::StatusOr<std::shared_ptr<SqliteKeyStore>> Open(SqliteOptions options);

  ~SqliteKeyStore() override;
  SqliteKeyStore(const SqliteKeyStore&) = delete;
  SqliteKeyStore& operator=(const SqliteKeyStore&) = delete;

  // KeyStore. Besides the codes documented in key_store.h, any method may
  // return kUnavailable (locked past busy_timeout, I/O error) or kInternal,
  // with the path in the message; Get, FindByDigest and List return
  // kDataLoss for a row they cannot decode (ChangesSince delivers that key
  // as deleted instead: see the file comment).
  absl::Status Insert(const KeyRecord& record) override;
  absl::StatusOr<KeyRecord> Get(std::string_view id) override;
  absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) override;
  absl::StatusOr<KeyRecord> Update(const KeyRecord& record) override;
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> expected_version) override;
  absl::StatusOr<ListPage> List(const ListOptions& options) override;
  // One transaction of `UPDATE keys SET last_used_us` per call: no version
  // bump, no change-log row, no notification (one fsync per flush at
  // synchronous=FULL, rather than one per key).
  absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                             absl::Duration min_advance) override;
  absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) override;
  absl::StatusOr<std::uint64_t> LastSequence() override;
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::function<void()> on_change) override;
  absl::Status AwaitSubscribers() override;

  // Inserts many records in ONE transaction (one fsync): all or nothing.
  // This is how imports reach tens of thousands of keys per second (`Insert`
  // pays a commit, i.e. an fsync, per key). Rows are written in id order and
  // the change log numbers them in that order. Batches of 10^4-10^5 keys work
  // best: each batch of random digests and owners touches pages all over
  // their indexes, so bigger batches rewrite them less often. Memory: the
  // batch's records plus a sort order (a few pointers per record). Errors as Insert; on error
  // nothing is stored and the message names the offending record's id.
  absl::Status InsertBatch(absl::Span<const KeyRecord> records);

  // Runs `PRAGMA integrity_check`, checks the name index and decodes every
  // key row (a full scan). Errors: kDataLoss with SQLite's report or the
  // undecodable rows (key id and column, at most 10), kUnavailable.
  absl::Status CheckIntegrity();

  // How many undecodable rows ChangesSince has delivered as deletions since
  // Open (each read of a row counts).
  std::uint64_t corrupt_rows_skipped() const noexcept;

  // The number of stored keys.
  absl::StatusOr<std::uint64_t> Count();

  const std::string& path() const noexcept;
  const SqliteOptions& options() const noexcept;
  // What Open accepted only because of SqliteOptions::allow_foreign_file,
  // one line per file ("sqlite <path>: database file is owned by uid 1001,
  // not the current user (uid 0); opened anyway ..."), for the caller to
  // log. Empty otherwise.
  const std::vector<std::string>& open_warnings() const noexcept;

 private:
  friend struct internal::SqliteKeyStoreTestPeer;  // tests only (src/sqlite/sqlite_db.h)
  struct Impl;
  explicit SqliteKeyStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_SQLITE_SQLITE_KEY_STORE_H_
