// Thin RAII layer over the SQLite C API for the SQLite store: a connection
// with a prepared-statement cache, statements that reset themselves, and the
// mapping from SQLite result codes to absl::Status messages that name the
// database path and the cause.
//
// Thread safety: none; the store serialises access to each connection.
#ifndef KEYGATE_SRC_SQLITE_SQLITE_DB_H_
#define KEYGATE_SRC_SQLITE_SQLITE_DB_H_

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace keygate {
class SqliteKeyStore;
}  // namespace keygate

namespace keygate::internal {

class SqliteDb;

// A cached prepared statement in use. Resets the statement and clears its
// bindings when destroyed, so the next user starts clean and no read
// transaction stays open.
class Statement {
 public:
  Statement(SqliteDb* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept : db_(other.db_), stmt_(other.stmt_) {
    other.stmt_ = nullptr;
  }
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  ~Statement();

  // Bind parameters (1-based). Text and blobs are copied (SQLITE_TRANSIENT)
  // unless the caller keeps them alive until Step: use the *Static forms then.
  void BindInt(int index, std::int64_t value);
  void BindNull(int index);
  void BindText(int index, std::string_view value);
  void BindBlob(int index, const void* data, std::size_t size);
  void BindOptionalInt(int index, const std::optional<std::int64_t>& value);

  // true: a row is available; false: done. Errors: see SqliteDb::Error.
  absl::StatusOr<bool> Step();
  // Steps a statement that returns no rows.
  absl::Status Run();

  std::int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::optional<std::int64_t> OptionalInt(int col) const;
  std::string_view Text(int col) const;
  std::string_view Blob(int col) const;

  sqlite3_stmt* raw() const { return stmt_; }

 private:
  SqliteDb* db_;
  sqlite3_stmt* stmt_;
};

class SqliteDb {
 public:
  // Opens a connection to `open_path` (empty: `path`). `flags` as
  // sqlite3_open_v2 (SQLITE_OPEN_NOMUTEX is added: callers serialise
  // access). Messages name `path`, the caller's spelling.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path, int flags,
                                                        const std::string& open_path = "");

  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  sqlite3* raw() const { return db_; }
  const std::string& path() const { return path_; }

  // Runs SQL with no results (may hold several statements).
  absl::Status Exec(const char* sql, std::string_view what);

  // A prepared statement from the cache (prepared on first use). Statements
  // stay cached for the connection's lifetime: callers bind values rather
  // than inline them, so the cache is bounded by the number of query shapes.
  absl::StatusOr<Statement> Prepare(std::string_view sql);
  std::size_t statement_cache_size() const { return cache_.size(); }

  // A single integer from a one-row query (PRAGMAs, counts).
  absl::StatusOr<std::int64_t> QueryInt(std::string_view sql, std::string_view what);

  // How long a statement waits for a lock another connection holds. Our own
  // busy handler rather than sqlite3_busy_timeout: it records whether a
  // wait ran out, so that Error says "busy timeout exceeded" only when it
  // did (SQLite also returns SQLITE_BUSY without waiting at all, e.g. when
  // changing the journal mode while another connection reads).
  void SetBusyTimeout(absl::Duration timeout);
  absl::Duration busy_timeout() const { return busy_timeout_; }

  // The kUnavailable status for a lock still held after the busy timeout.
  absl::Status BusyTimeoutError(std::string_view what) const;

  // The status for result code `rc` while doing `what`:
  //   BUSY/LOCKED              kUnavailable ("database is locked by another
  //                            connection", and "busy timeout of N ms exceeded"
  //                            only when the busy handler waited that long)
  //   READONLY/PERM/AUTH       kPermissionDenied
  //   CANTOPEN                 kNotFound (ENOENT) or kPermissionDenied (EACCES) or kUnavailable
  //   NOTADB                   kFailedPrecondition
  //   CORRUPT                  kDataLoss
  //   IOERR/FULL/NOMEM         kUnavailable
  //   CONSTRAINT (unique/PK)   kAlreadyExists (callers refine the message)
  //   anything else            kInternal
  // The message is "sqlite <path>: <what>: <cause>" and never holds bound
  // values.
  absl::Status Error(int rc, std::string_view what) const;

 private:
  SqliteDb(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  static int BusyHandler(void* self, int count);

  sqlite3* db_;
  std::string path_;
  absl::Duration busy_timeout_ = absl::ZeroDuration();
  absl::Time busy_since_;              // when the current wait for a lock began
  mutable bool busy_gave_up_ = false;  // the last wait ran out (until reported)
  absl::flat_hash_map<std::string, sqlite3_stmt*> cache_;
};

// RAII transaction: BEGIN IMMEDIATE (takes the write lock up front, so a
// writer never fails half-way with SQLITE_BUSY on lock upgrade), ROLLBACK
// unless Commit() succeeded.
class WriteTransaction {
 public:
  explicit WriteTransaction(SqliteDb* db) : db_(db) {}
  ~WriteTransaction();
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;

  absl::Status Begin();
  absl::Status Commit();

 private:
  SqliteDb* db_;
  bool open_ = false;
};

// What tests may look at inside a SqliteKeyStore (sqlite_key_store.cc).
struct SqliteKeyStoreTestPeer {
  // The number of statements the store's connection keeps prepared.
  static std::size_t StatementCacheSize(SqliteKeyStore& store);
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_SQLITE_DB_H_
