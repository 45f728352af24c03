// Thin RAII layer over the SQLite C API for the SQLite store: a connection
// with a prepared-statement cache, statements that reset themselves, and the
// mapping from SQLite result codes to absl::Status messages that name the
// database path and the cause.
//
// Thread safety: none; the store serialises access to each connection.
#ifndef KEYGATE_SRC_SQLITE_SQLITE_DB_H_
#define KEYGATE_SRC_SQLITE_SQLITE_DB_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

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
  // Opens a connection. `flags` as sqlite3_open_v2 (SQLITE_OPEN_NOMUTEX is
  // added: callers serialise access). Messages name `path`.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path, int flags);

  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  sqlite3* raw() const { return db_; }
  const std::string& path() const { return path_; }

  // Runs SQL with no results (may hold several statements).
  absl::Status Exec(const char* sql, std::string_view what);

  // A prepared statement from the cache (prepared on first use).
  absl::StatusOr<Statement> Prepare(std::string_view sql);

  // A single integer from a one-row query (PRAGMAs, counts).
  absl::StatusOr<std::int64_t> QueryInt(std::string_view sql, std::string_view what);

  void SetBusyTimeout(absl::Duration timeout);
  absl::Duration busy_timeout() const { return busy_timeout_; }

  // The status for result code `rc` while doing `what`:
  //   BUSY/LOCKED              kUnavailable ("database is locked ... busy timeout")
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
  sqlite3* db_;
  std::string path_;
  absl::Duration busy_timeout_ = absl::ZeroDuration();
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

// Time <-> integer microseconds since the Unix epoch. Infinite times map to
// INT64_MIN / INT64_MAX and back.
std::int64_t TimeToMicros(absl::Time t);
absl::Time MicrosToTime(std::int64_t us);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_SQLITE_DB_H_
