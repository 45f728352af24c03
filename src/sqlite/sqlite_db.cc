// SQLite RAII layer (sqlite_db.h).

#include "sqlite/sqlite_db.h"

#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace keygate::internal {

Statement::~Statement() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

void Statement::BindInt(int index, std::int64_t value) { sqlite3_bind_int64(stmt_, index, value); }

void Statement::BindNull(int index) { sqlite3_bind_null(stmt_, index); }

void Statement::BindText(int index, std::string_view value) {
  // A non-null pointer even for empty strings: NULL would bind SQL NULL.
  sqlite3_bind_text64(stmt_, index, value.empty() ? "" : value.data(), value.size(),
                      SQLITE_TRANSIENT, SQLITE_UTF8);
}

void Statement::BindBlob(int index, const void* data, std::size_t size) {
  sqlite3_bind_blob64(stmt_, index, size == 0 ? "" : data, size, SQLITE_TRANSIENT);
}

void Statement::BindOptionalInt(int index, const std::optional<std::int64_t>& value) {
  if (value.has_value()) {
    BindInt(index, *value);
  } else {
    BindNull(index);
  }
}

absl::StatusOr<bool> Statement::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  // sqlite3_step returns the extended code (sqlite3_extended_result_codes on).
  return db_->Error(rc, "step");
}

absl::Status Statement::Run() {
  absl::StatusOr<bool> r = Step();
  if (!r.ok()) return r.status();
  return absl::OkStatus();
}

std::optional<std::int64_t> Statement::OptionalInt(int col) const {
  if (IsNull(col)) return std::nullopt;
  return Int(col);
}

std::string_view Statement::Text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  const int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr) return {};
  return {reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)};
}

std::string_view Statement::Blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  const int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr) return {};
  return {static_cast<const char*>(p), static_cast<std::size_t>(n)};
}

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path, int flags,
                                                         const std::string& open_path) {
  sqlite3* raw = nullptr;
  const std::string& target = open_path.empty() ? path : open_path;
  const int rc = sqlite3_open_v2(target.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (raw == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("sqlite ", path, ": open: out of memory"));
  }
  std::unique_ptr<SqliteDb> db(new SqliteDb(raw, path));
  sqlite3_extended_result_codes(raw, 1);
  if (rc != SQLITE_OK) return db->Error(rc, "open");
  return db;
}

SqliteDb::~SqliteDb() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  cache_.clear();
  // sqlite3_close_v2 defers the close if something is still unfinalized; by
  // now nothing is, so this closes (and checkpoints the WAL if last).
  sqlite3_close_v2(db_);
}

absl::Status SqliteDb::Exec(const char* sql, std::string_view what) {
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, what);
  return absl::OkStatus();
}

absl::StatusOr<Statement> SqliteDb::Prepare(std::string_view sql) {
  auto it = cache_.find(absl::string_view(sql.data(), sql.size()));
  if (it != cache_.end()) return Statement(this, it->second);
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return Error(rc, "prepare");
  cache_.emplace(std::string(sql), stmt);
  return Statement(this, stmt);
}

absl::StatusOr<std::int64_t> SqliteDb::QueryInt(std::string_view sql, std::string_view what) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return Error(rc, what);
  rc = sqlite3_step(stmt);
  std::int64_t v = 0;
  if (rc == SQLITE_ROW) v = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error(rc, what);
  return v;
}

void SqliteDb::SetBusyTimeout(absl::Duration timeout) {
  busy_timeout_ = timeout;
  sqlite3_busy_handler(db_, &SqliteDb::BusyHandler, this);
}

int SqliteDb::BusyHandler(void* self, int count) {
  auto* db = static_cast<SqliteDb*>(self);
  const absl::Time now = absl::Now();
  if (count == 0) {  // a new wait
    db->busy_since_ = now;
    db->busy_gave_up_ = false;
  }
  const absl::Duration left = db->busy_timeout_ - (now - db->busy_since_);
  if (left <= absl::ZeroDuration()) {
    db->busy_gave_up_ = true;
    return 0;
  }
  // Short sleeps first (a lock is usually held for one commit), then 100 ms.
  static constexpr int kDelaysMs[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50};
  constexpr int kDelays = static_cast<int>(sizeof(kDelaysMs) / sizeof(kDelaysMs[0]));
  const absl::Duration delay = absl::Milliseconds(count < kDelays ? kDelaysMs[count] : 100);
  absl::SleepFor(std::min(delay, left));
  return 1;
}

absl::Status SqliteDb::BusyTimeoutError(std::string_view what) const {
  busy_gave_up_ = false;  // reported
  return absl::UnavailableError(
      absl::StrCat("sqlite ", path_, ": ", std::string(what),
                   ": database is locked by another connection (busy timeout of ",
                   absl::ToInt64Milliseconds(busy_timeout_), " ms exceeded)"));
}

absl::Status SqliteDb::Error(int rc, std::string_view what) const {
  const int primary = rc & 0xFF;
  const std::string prefix = absl::StrCat("sqlite ", path_, ": ", std::string(what), ": ");
  const char* errstr = sqlite3_errstr(rc);
  const char* errmsg = sqlite3_errmsg(db_);
  // errmsg says more than errstr for most codes ("UNIQUE constraint failed:
  // keys.id"); it holds names of tables and columns, never bound values.
  std::string detail = errmsg != nullptr ? errmsg : errstr;
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: {
      if (busy_gave_up_) return BusyTimeoutError(what);
      // SQLite gave up without waiting (it does when waiting could deadlock,
      // or for a lock it never waits for); retrying later may succeed.
      return absl::UnavailableError(
          absl::StrCat(prefix,
                       "database is locked by another connection (SQLite could not wait for this "
                       "lock; try again)"));
    }
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(absl::StrCat(prefix, detail));
    case SQLITE_CANTOPEN: {
      const int err = sqlite3_system_errno(db_);
      if (err == ENOENT) {
        return absl::NotFoundError(absl::StrCat(prefix, "cannot open: ", std::strerror(err)));
      }
      if (err == EACCES || err == EPERM || err == EROFS) {
        return absl::PermissionDeniedError(
            absl::StrCat(prefix, "cannot open: ", std::strerror(err)));
      }
      return absl::UnavailableError(
          absl::StrCat(prefix, "cannot open: ", detail,
                       err != 0 ? absl::StrCat(" (", std::strerror(err), ")") : ""));
    }
    case SQLITE_NOTADB:
      return absl::FailedPreconditionError(
          absl::StrCat(prefix, "not a SQLite database (", detail, ")"));
    case SQLITE_CORRUPT:
      return absl::DataLossError(absl::StrCat(prefix, "database is corrupt (", detail, ")"));
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::UnavailableError(absl::StrCat(prefix, detail));
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(absl::StrCat(prefix, detail));
      }
      return absl::InternalError(absl::StrCat(prefix, detail));
    default:
      return absl::InternalError(absl::StrCat(prefix, detail));
  }
}

WriteTransaction::~WriteTransaction() {
  if (open_) sqlite3_exec(db_->raw(), "ROLLBACK", nullptr, nullptr, nullptr);
}

absl::Status WriteTransaction::Begin() {
  absl::StatusOr<Statement> s = db_->Prepare("BEGIN IMMEDIATE");
  if (!s.ok()) return s.status();
  if (absl::Status st = s->Run(); !st.ok()) return st;
  open_ = true;
  return absl::OkStatus();
}

absl::Status WriteTransaction::Commit() {
  absl::StatusOr<Statement> s = db_->Prepare("COMMIT");
  if (!s.ok()) return s.status();
  absl::Status st = s->Run();
  // A failed COMMIT (an I/O error, a full disk) leaves the transaction open;
  // the destructor rolls it back, so the caller's error is the whole story.
  if (st.ok()) open_ = false;
  return st;
}

}  // namespace keygate::internal
