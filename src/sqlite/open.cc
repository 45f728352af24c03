// Opening the SQLite KeyStore's file (open.h).

#include "sqlite/open.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "sqlite/schema.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {
namespace {

absl::Status PathError(absl::StatusCode code, std::string_view path, std::string_view cause) {
  return absl::Status(code, absl::StrCat("sqlite ", std::string(path), ": ", std::string(cause)));
}

std::string DirectoryOf(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// The refusal of a symbolic link where the database file should be.
absl::Status SymlinkError(const std::string& path) {
  return PathError(absl::StatusCode::kFailedPrecondition, path,
                   "is a symbolic link (keygate opens regular files only; pass the link's "
                   "target)");
}

absl::Status CheckDirectoryWritable(const std::string& path, const std::string& dir,
                                    const struct stat& dst) {
  if ((dst.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) != 0 && ::access(dir.c_str(), W_OK) == 0) {
    return absl::OkStatus();
  }
  return PathError(absl::StatusCode::kPermissionDenied, path,
                   absl::StrFormat("directory '%s' is not writable (mode %04o); keygate needs to "
                                   "create the database's journal files (-wal, -shm) there",
                                   dir, dst.st_mode & 07777));
}

// The journal files SQLite keeps next to a database file.
constexpr const char* kJournalSuffixes[] = {"-wal", "-shm", "-journal"};

// Removes a new database's temporary file, when it goes out of scope, with
// the journal files SQLite made for it (their names derive from the
// temporary name, so they are ours). Once the file is linked into place, this
// removes the temporary name only.
class TemporaryDatabase {
 public:
  explicit TemporaryDatabase(std::string path) : path_(std::move(path)) {}
  ~TemporaryDatabase() {
    ::unlink(path_.c_str());
    for (const char* suffix : kJournalSuffixes) ::unlink(absl::StrCat(path_, suffix).c_str());
  }
  TemporaryDatabase(const TemporaryDatabase&) = delete;
  TemporaryDatabase& operator=(const TemporaryDatabase&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

absl::StatusCode CreateErrorCode(int err) {
  return (err == EACCES || err == EPERM || err == EROFS) ? absl::StatusCode::kPermissionDenied
                                                         : absl::StatusCode::kUnavailable;
}

// Links the initialised `temp` to `path` unless `path` exists by now
// (another process created it first: then that file is used). Hard links
// where the file system has them, else rename without replacing.
absl::Status LinkIntoPlace(const std::string& temp, const std::string& path) {
  if (::link(temp.c_str(), path.c_str()) == 0) return absl::OkStatus();
  int err = errno;
  if (err == EEXIST) {
    // A link planted meanwhile is refused as PrepareFile would have.
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) return SymlinkError(path);
    return absl::OkStatus();
  }
#ifdef RENAME_NOREPLACE
  if (err == EPERM || err == EOPNOTSUPP) {  // no hard links here (FAT, some FUSE)
    if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0 ||
        errno == EEXIST) {
      return absl::OkStatus();
    }
    err = errno;
  }
#endif
  return PathError(CreateErrorCode(err), path,
                   absl::StrCat("cannot create database file: ", std::strerror(err)));
}

// Makes the directory entry of a new file durable (best effort: some file
// systems cannot sync a directory).
void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

// What the file says it is.
struct Header {
  std::int64_t application_id = 0;
  std::int64_t user_version = 0;
  std::int64_t schema_objects = 0;
};

// Reads the header fields. Outside a transaction they are read in one read
// transaction: read one by one, a process opening a new file could see
// application_id 0 before another process's migration committed and the
// schema objects after it (and call the file another application's).
absl::StatusOr<Header> ReadHeader(SqliteDb& db, bool own_transaction) {
  if (own_transaction) {
    if (absl::Status s = db.Exec("BEGIN", "read header"); !s.ok()) return s;
  }
  Header h;
  absl::Status status = [&]() -> absl::Status {
    absl::StatusOr<std::int64_t> app_id = db.QueryInt("PRAGMA application_id", "read header");
    if (!app_id.ok()) return app_id.status();
    absl::StatusOr<std::int64_t> version = db.QueryInt("PRAGMA user_version", "read header");
    if (!version.ok()) return version.status();
    absl::StatusOr<std::int64_t> objects =
        db.QueryInt("SELECT count(*) FROM sqlite_schema", "read schema");
    if (!objects.ok()) return objects.status();
    h = Header{*app_id, *version, *objects};
    return absl::OkStatus();
  }();
  if (own_transaction) {
    // A read transaction: COMMIT only ends it (and ROLLBACK would too).
    absl::Status end = db.Exec("COMMIT", "read header");
    if (status.ok()) status = end;
  }
  if (!status.ok()) return status;
  return h;
}

// Is the file ours (or empty), at a version this build can read?
absl::Status CheckHeader(const Header& h, const std::string& path) {
  if (h.application_id != 0 && h.application_id != SqliteKeyStore::kApplicationId) {
    return PathError(absl::StatusCode::kFailedPrecondition, path,
                     absl::StrFormat("not a keygate database (application_id 0x%08x belongs to "
                                     "another application)",
                                     static_cast<std::uint32_t>(h.application_id)));
  }
  if (h.user_version > SqliteKeyStore::kSchemaVersion) {
    return PathError(absl::StatusCode::kFailedPrecondition, path,
                     absl::StrCat("schema version ", h.user_version,
                                  " was written by a newer keygate (this build supports up to ",
                                  SqliteKeyStore::kSchemaVersion, "); upgrade keygate"));
  }
  if (h.application_id == 0 && h.schema_objects > 0) {
    return PathError(absl::StatusCode::kFailedPrecondition, path,
                     absl::StrCat("not a keygate database (it has ", h.schema_objects,
                                  " schema objects of another application)"));
  }
  return absl::OkStatus();
}

// PRAGMA journal_mode=WAL. Switching needs every other connection out of
// the file for a moment, and SQLite answers SQLITE_BUSY at once rather than
// calling the busy handler, so retry until the busy timeout: several
// processes opening a new file at once all try to switch.
absl::Status SwitchToWal(SqliteDb& db, const std::string& path) {
  const absl::Time deadline = absl::Now() + db.busy_timeout();
  for (int attempt = 0;; ++attempt) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db.raw(), "PRAGMA journal_mode=WAL", -1, &stmt, nullptr);
    if (rc != SQLITE_OK) return db.Error(rc, "switch to WAL");
    rc = sqlite3_step(stmt);
    const unsigned char* mode = rc == SQLITE_ROW ? sqlite3_column_text(stmt, 0) : nullptr;
    const bool wal =
        mode != nullptr && std::strcmp(reinterpret_cast<const char*>(mode), "wal") == 0;
    sqlite3_finalize(stmt);
    if (rc == SQLITE_ROW) {
      if (wal) return absl::OkStatus();
      return PathError(absl::StatusCode::kUnavailable, path,
                       "cannot switch to WAL journal mode (is the file on a network file "
                       "system?)");
    }
    const int primary = rc & 0xFF;
    if (primary != SQLITE_BUSY && primary != SQLITE_LOCKED) return db.Error(rc, "switch to WAL");
    const absl::Time now = absl::Now();
    if (now >= deadline) return db.BusyTimeoutError("switch to WAL");
    absl::SleepFor(
        std::min(absl::Milliseconds(attempt < 10 ? 1 + attempt * 2 : 25), deadline - now));
  }
}

// Why a file another user may have planted or may change is not ours alone
// ("" when it is): owned by someone other than the effective user, or
// writable by group or others.
std::string ForeignReason(const struct stat& st) {
  std::string reason;
  const uid_t me = ::geteuid();
  if (st.st_uid != me) {
    absl::StrAppend(&reason, "owned by uid ", st.st_uid, ", not the current user (uid ", me, ")");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    absl::StrAppend(&reason, reason.empty() ? "" : ", and ",
                    absl::StrFormat("writable by group or others (mode %04o)", st.st_mode & 07777));
  }
  return reason;
}

}  // namespace

// The path SQLite opens: the file's name in its directory's canonical path.
// SQLITE_OPEN_NOFOLLOW refuses a symbolic link anywhere in the path, and a
// linked directory is common and harmless (/var/run -> /run on Debian; /tmp
// on macOS); only the file itself must not be a link, which PrepareFile
// checked and NOFOLLOW still enforces when SQLite opens it (no window for a
// link swapped in between). If the directory cannot be resolved, the path
// as given (SQLite then says why it cannot open it).
std::string OpenPath(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  char* dir = ::realpath(DirectoryOf(path).c_str(), nullptr);
  if (dir == nullptr) return path;
  const std::string real_dir(dir);
  std::free(dir);
  return absl::StrCat(real_dir, real_dir == "/" ? "" : "/", name);
}

// Checks the file system before SQLite touches anything, so each bad
// condition gets its own clear message. Returns true when the file does not
// exist and is to be created (CreateDatabase).
//
// A directory nobody may write is refused like a read-only file (even when
// running as root): WAL mode creates `<file>-wal` and `<file>-shm` next to
// the file and removes them on the last close, so a writable file in a
// read-only directory would fail with SQLite's "attempt to write a readonly
// database", which blames the file.
//
// A symbolic link to the file is refused, deliberately (a new file is linked
// into place, never through a link, and opened with SQLITE_OPEN_NOFOLLOW): a
// link planted where the database should be would otherwise make a process
// that runs as root write keygate's tables into whatever file the link names.
// lstat() first, so the refusal says so instead of SQLite's "unable to open".
// Linked directories are fine (OpenPath).
absl::StatusOr<bool> PrepareFile(const SqliteOptions& o) {
  const std::string& path = o.path;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return SymlinkError(path);
    }
    if (!S_ISREG(st.st_mode)) {
      return PathError(absl::StatusCode::kFailedPrecondition, path, "not a regular file");
    }
    // A file nobody may write is read-only on purpose; respect that even when
    // running as root (who would otherwise write it anyway).
    if ((st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0 || ::access(path.c_str(), W_OK) != 0) {
      return PathError(absl::StatusCode::kPermissionDenied, path,
                       absl::StrFormat("database file is read-only (mode %04o); keygate needs "
                                       "to write it",
                                       st.st_mode & 07777));
    }
    const std::string dir = DirectoryOf(path);
    struct stat dst;
    if (::stat(dir.c_str(), &dst) != 0) return false;  // SQLite will say why
    if (absl::Status s = CheckDirectoryWritable(path, dir, dst); !s.ok()) return s;
    return false;
  }
  const int stat_errno = errno;
  if (stat_errno != ENOENT) {
    return PathError(
        stat_errno == EACCES ? absl::StatusCode::kPermissionDenied : absl::StatusCode::kUnavailable,
        path, absl::StrCat("cannot access database file: ", std::strerror(stat_errno)));
  }
  const std::string dir = DirectoryOf(path);
  struct stat dst;
  if (::stat(dir.c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode)) {
    return PathError(absl::StatusCode::kNotFound, path,
                     absl::StrCat("directory '", dir, "' does not exist"));
  }
  if (!o.create_if_missing) {
    return PathError(absl::StatusCode::kNotFound, path,
                     "database file does not exist (create_if_missing is false)");
  }
  if (absl::Status s = CheckDirectoryWritable(path, dir, dst); !s.ok()) return s;
  return true;
}

// Validates the file's identity and schema version, sets the connection up and
// migrates. Nothing is written before the checks pass, so a foreign or newer
// file is never modified.
absl::Status ConfigureAndMigrate(SqliteDb& db, const SqliteOptions& o, WalSwitch wal) {
  const std::string& path = o.path;
  db.SetBusyTimeout(o.busy_timeout);
  if (sqlite3_db_readonly(db.raw(), "main") == 1) {
    return PathError(absl::StatusCode::kPermissionDenied, path,
                     "database opened read-only; keygate needs to write it");
  }
  absl::StatusOr<Header> header = ReadHeader(db, /*own_transaction=*/true);
  if (!header.ok()) return header.status();
  if (absl::Status s = CheckHeader(*header, path); !s.ok()) return s;

  if (wal == WalSwitch::kBeforeSchema) {
    if (absl::Status s = SwitchToWal(db, path); !s.ok()) return s;
  }
  const char* sync = o.synchronous == SqliteSynchronous::kNormal ? "PRAGMA synchronous=NORMAL"
                                                                 : "PRAGMA synchronous=FULL";
  if (absl::Status s = db.Exec(sync, "configure"); !s.ok()) return s;
  if (absl::Status s = db.Exec("PRAGMA foreign_keys=ON", "configure"); !s.ok()) return s;
  const std::string cache = absl::StrCat("PRAGMA cache_size=-", o.cache_kib);
  if (absl::Status s = db.Exec(cache.c_str(), "configure"); !s.ok()) return s;

  if (header->user_version == SqliteKeyStore::kSchemaVersion) return absl::OkStatus();

  WriteTransaction tx(&db);
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  // Another process may have migrated (or another application written) while
  // we waited for the lock: check again, inside the transaction.
  absl::StatusOr<Header> current = ReadHeader(db, /*own_transaction=*/false);
  if (!current.ok()) return current.status();
  if (absl::Status s = CheckHeader(*current, path); !s.ok()) return s;
  for (std::int64_t v = current->user_version; v < SqliteKeyStore::kSchemaVersion; ++v) {
    if (absl::Status s =
            db.Exec(internal::kMigrations[v], absl::StrCat("migrate to version ", v + 1));
        !s.ok()) {
      return s;
    }
  }
  const std::string stamp =
      absl::StrCat("PRAGMA user_version=", SqliteKeyStore::kSchemaVersion,
                   "; PRAGMA application_id=", SqliteKeyStore::kApplicationId);
  if (absl::Status s = db.Exec(stamp.c_str(), "migrate"); !s.ok()) return s;
  if (absl::Status s = tx.Commit(); !s.ok()) return s;
  if (wal == WalSwitch::kAfterSchema) return SwitchToWal(db, path);
  return absl::OkStatus();
}

// Creates the database file `o.path`, which did not exist (PrepareFile),
// without ever leaving a file behind that Open cannot use.
//
// The schema is created in a temporary file (mode 0600, in the same
// directory), which is then hard-linked to `o.path`; it appears there
// complete or not at all. When anything fails before, the temporary file and
// its journal files are removed and `o.path` was never touched; no other
// process can have opened the temporary file, so removing it cannot pull a
// database from under anyone (removing `o.path` could: another process may
// have opened it since). If another process created `o.path` meanwhile, its
// file wins and ours is discarded. A file system without hard links gets a
// rename that does not replace (Linux).
//
// Journal files already next to `o.path` while the file itself is missing
// belong to a removed database; they are refused rather than deleted (they
// may hold that database's last commits) or applied to the new file.
absl::Status CreateDatabase(const SqliteOptions& o) {
  const std::string& path = o.path;
  for (const char* suffix : kJournalSuffixes) {
    const std::string journal = absl::StrCat(path, suffix);
    if (!PathExists(journal)) continue;
    // Another process's new database (created since PrepareFile looked) has
    // journal files: use that database.
    if (PathExists(path)) return absl::OkStatus();
    return PathError(
        absl::StatusCode::kFailedPrecondition, path,
        absl::StrCat("the database file does not exist but its journal file '", journal,
                     "' does (left by a removed database; it may hold that "
                     "database's last commits): move it away, then open again"));
  }
  // In the same directory (a hard link cannot cross file systems), under a
  // short name of its own: the database's name plus a suffix would make
  // names near the 255-byte limit fail that work without it.
  std::string name = absl::StrCat(DirectoryOf(path), "/.keygate-new-XXXXXX");
  const int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return PathError(CreateErrorCode(err), path,
                     absl::StrCat("cannot create database file: ", std::strerror(err)));
  }
  TemporaryDatabase temp(name);
  // The umask may have taken bits away; 0600 is what we promise.
  (void)::fchmod(fd, 0600);
  ::close(fd);
  {
    // The schema's commits are synced (synchronous=FULL, rollback journal)
    // before the file gets its name: a crash never leaves a named, torn file.
    SqliteOptions init = o;
    init.synchronous = SqliteSynchronous::kFull;
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, OpenPath(temp.path()));
    if (!db.ok()) return db.status();
    if (absl::Status s = ConfigureAndMigrate(**db, init, WalSwitch::kAfterSchema); !s.ok()) {
      return s;
    }
  }  // closed: the (empty) log is removed, the file is complete
  if (absl::Status s = LinkIntoPlace(temp.path(), path); !s.ok()) return s;
  SyncDirectory(DirectoryOf(path));
  return absl::OkStatus();
}

// Refuses (or, with allow_foreign_file, reports in `warnings`) a database
// file, or one of its journal files, that is not the effective user's alone.
// Such a file in a shared directory (a sticky /tmp, a world-writable
// working directory, where ./keygate.db is the default) may have been
// planted by another user holding an admin key of theirs, or can be changed
// by them later: a process that opens it, root included, would serve or
// extend their keys. A journal file that is a symbolic link or not a
// regular file is refused always: SQLite would write pages through it.
absl::Status CheckFileTrust(const SqliteOptions& o, std::vector<std::string>* warnings) {
  const std::string& path = o.path;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    const std::string file = absl::StrCat(path, suffix);
    const std::string what =
        *suffix == '\0' ? "database file" : absl::StrCat("journal file '", file, "'");
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0) continue;  // absent (the database: SQLite says why)
    if (S_ISLNK(st.st_mode)) {
      if (*suffix == '\0') return SymlinkError(path);
      return PathError(absl::StatusCode::kFailedPrecondition, path,
                       absl::StrCat(what,
                                    " is a symbolic link; keygate refuses to write "
                                    "through it (remove it if no process uses the database)"));
    }
    if (!S_ISREG(st.st_mode)) {
      return PathError(absl::StatusCode::kFailedPrecondition, path,
                       absl::StrCat(what, " is not a regular file"));
    }
    const std::string reason = ForeignReason(st);
    if (reason.empty()) continue;
    if (!o.allow_foreign_file) {
      return PathError(absl::StatusCode::kFailedPrecondition, path,
                       absl::StrCat(what, " is ", reason,
                                    ": another user may have planted it or may change its keys; "
                                    "refused (open it as its owner, or allow it with "
                                    "SqliteOptions::allow_foreign_file)"));
    }
    warnings->push_back(absl::StrCat("sqlite ", path, ": ", what, " is ", reason,
                                     "; opened anyway (SqliteOptions::allow_foreign_file is set)"));
  }
  return absl::OkStatus();
}

}  // namespace keygate::internal
