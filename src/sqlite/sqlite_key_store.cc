// The SQLite KeyStore (keygate/sqlite/sqlite_key_store.h).
//
// Concurrency: one connection, one mutex (see the header for why). Writes run
// in BEGIN IMMEDIATE transactions so a writer waits for another process's
// write lock (busy timeout) before it reads anything, instead of failing on a
// lock upgrade half-way. Subscribers are called by the writer itself after
// its commit (same process; or the writer waits for a callback round already
// running on another thread to cover its commit) or by a poller thread that
// watches PRAGMA data_version on its own connection (other processes); never
// under the store mutex.

#include "keygate/sqlite/sqlite_key_store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "internal/key_label.h"
#include "sqlite/json.h"
#include "sqlite/record_row.h"
#include "sqlite/schema.h"
#include "sqlite/sqlite_db.h"

namespace keygate {
namespace {

using internal::kRecordColumns;
using internal::SqliteDb;
using internal::Statement;
using internal::WriteTransaction;

constexpr char kMemoryPath[] = ":memory:";
constexpr char kCursorPrefix[] = "s1.";

// Name searches whose FTS candidate set reaches this many rows are answered by
// walking the keys in id order instead: the matches are then dense enough
// that a page fills after a short walk, while sorting that many FTS hits by id
// would cost more than the walk.
constexpr int kDenseSearchThreshold = 4000;
// A 2-character needle that starts more distinct trigrams than this is
// common enough for the id-order walk.
constexpr std::size_t kMaxPrefixTerms = 128;

std::string ToLowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// What the name index holds for a name: lowered, plus the terminator that
// lets 2-character needles be found through trigrams (see schema.cc).
std::string NameKey(std::string_view name) {
  std::string k = ToLowerAscii(name);
  k.push_back('\x01');
  return k;
}

std::string HexEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(kHex[u >> 4]);
    out.push_back(kHex[u & 0xF]);
  }
  return out;
}

bool HexDecode(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out->clear();
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]);
    const int lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

std::size_t CodePoints(std::string_view s) {
  std::size_t n = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

// Valid UTF-8 without control characters (the index terminator is U+0001):
// what the trigram index can answer exactly.
bool IndexableNeedle(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    if (c < 0x20 || c == 0x7F) return false;
    if (c < 0x80) {
      len = 1;
    } else if ((c & 0xE0) == 0xC0 && c >= 0xC2) {
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
    } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
      len = 4;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

std::string FtsPhrase(std::string_view needle) {
  std::string out = "\"";
  for (const char c : needle) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// The FTS5 query for a needle of 3 or more characters: each of its distinct
// trigrams, ANDed. The index keeps no positions (detail=none, which makes it
// far cheaper to maintain), so it cannot match the needle as a phrase; the
// names that hold every trigram are a small superset of those that contain
// the needle, and the instr() filter in List makes the answer exact.
std::string TrigramQuery(std::string_view needle) {
  std::vector<std::size_t> starts;  // byte offset of each code point, then the end
  for (std::size_t i = 0; i < needle.size(); ++i) {
    if ((static_cast<unsigned char>(needle[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  starts.push_back(needle.size());
  std::vector<std::string_view> grams;
  for (std::size_t i = 0; i + 3 < starts.size(); ++i) {
    grams.push_back(needle.substr(starts[i], starts[i + 3] - starts[i]));
  }
  std::sort(grams.begin(), grams.end());
  grams.erase(std::unique(grams.begin(), grams.end()), grams.end());
  std::string out;
  for (const std::string_view g : grams) {
    absl::StrAppend(&out, out.empty() ? "" : " AND ", FtsPhrase(g));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Change notification.

struct SubscriberState {
  explicit SubscriberState(std::function<void()> cb) : callback(std::move(cb)) {}
  std::mutex mu;
  std::condition_variable idle;
  bool active = true;    // false once the Subscription is being destroyed
  bool running = false;  // a thread is inside the round loop
  std::thread::id runner;
  std::uint64_t requested = 0;  // notifications received
  std::uint64_t completed = 0;  // every notification <= this was followed by a whole round
  const std::function<void()> callback;
};

// How many subscriber callbacks the current thread is inside (any store's).
thread_local int callback_depth = 0;

// Delivers one notification: returns once a callback round that STARTED after
// it has finished, so the write that notified returns only after its
// subscribers have seen it, even when a round (the poller's, another
// writer's) is already running on another thread: then this thread waits,
// and that thread runs one more round. A callback never runs on two threads
// at once and no notification is lost.
//
// Three cases return without waiting (the running round's loop still
// covers the notification): `wait` false (the poller: no write waits on it,
// and a store destroyed inside a callback joins the poller, which must not
// be waiting for that very callback); a write from inside this subscriber's
// own callback (waiting would wait for itself); and a write from inside any
// other callback (two callbacks each writing, each waiting for the other's
// round, would deadlock). Such a write may return before the other
// subscribers have seen it.
void Notify(const std::shared_ptr<SubscriberState>& s, bool wait) {
  std::unique_lock<std::mutex> lock(s->mu);
  const std::uint64_t ticket = ++s->requested;
  const std::thread::id self = std::this_thread::get_id();
  for (;;) {
    if (!s->active || s->completed >= ticket) return;
    if (!s->running) break;
    if (!wait || s->runner == self || callback_depth > 0) return;
    s->idle.wait(lock);
  }
  s->running = true;
  s->runner = self;
  while (s->active && s->completed < s->requested) {
    const std::uint64_t round = s->requested;
    lock.unlock();
    ++callback_depth;
    s->callback();
    --callback_depth;
    lock.lock();
    s->completed = round;
    s->idle.notify_all();
  }
  s->running = false;
  s->runner = std::thread::id();
  s->idle.notify_all();
}

// Tells subscribers about commits: this process's own, at once on the
// committing thread, or by waiting for a round on another thread (Notify),
// after the store mutex is released and before the write returns, so a
// Verifier that applies changes in its callback rejects a revoked key as soon
// as Revoke() returns; other processes', from a poller thread that checks
// PRAGMA data_version on its own connection every poll interval. The poller
// starts with the first Subscribe.
class Notifier : public std::enable_shared_from_this<Notifier> {
 public:
  Notifier(std::string path, std::string open_path, bool in_memory, absl::Duration interval)
      : path_(std::move(path)),
        open_path_(std::move(open_path)),
        in_memory_(in_memory),
        interval_(interval) {}

  ~Notifier() { StopAndJoin(); }

  absl::Status Start() {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_) return absl::OkStatus();
    if (!in_memory_) {
      absl::StatusOr<std::unique_ptr<SqliteDb>> db =
          SqliteDb::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, open_path_);
      if (!db.ok()) return db.status();
      poll_db_ = *std::move(db);
      poll_db_->SetBusyTimeout(absl::Milliseconds(100));
      absl::StatusOr<std::int64_t> v = poll_db_->QueryInt("PRAGMA data_version", "poll");
      if (!v.ok()) return v.status();
      data_version_ = *v;
      // The thread keeps the notifier alive until it exits (see StopAndJoin).
      thread_ = std::thread([self = shared_from_this()] { self->Run(); });
    }
    started_ = true;
    return absl::OkStatus();
  }

  void Add(std::shared_ptr<SubscriberState> s) {
    std::lock_guard<std::mutex> lock(subs_mu_);
    subs_.push_back(std::move(s));
    has_subscribers_.store(true, std::memory_order_release);
  }

  void Remove(const std::shared_ptr<SubscriberState>& s) {
    std::lock_guard<std::mutex> lock(subs_mu_);
    subs_.erase(std::remove(subs_.begin(), subs_.end(), s), subs_.end());
    has_subscribers_.store(!subs_.empty(), std::memory_order_release);
  }

  // After a commit by this process (store mutex released): notify now, on
  // the calling thread.
  void Committed() {
    if (!has_subscribers_.load(std::memory_order_acquire)) return;
    Dispatch(/*wait=*/true);
  }

  void StopAndJoin() {
    std::thread t;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      t = std::move(thread_);
    }
    cv_.notify_one();
    if (!t.joinable()) return;
    if (t.get_id() == std::this_thread::get_id()) {
      // The store is being destroyed from inside a callback on the poller:
      // the thread ends by itself once the callback returns (it holds a
      // reference to us).
      t.detach();
    } else {
      t.join();
    }
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, absl::ToChronoMilliseconds(interval_), [&] { return stop_; });
      if (stop_) break;
      lock.unlock();
      // Another connection committed since the last look (our own commits
      // count too; they were already dispatched, and one more call is
      // harmless: calls may be coalesced or repeated).
      absl::StatusOr<std::int64_t> v = poll_db_->QueryInt("PRAGMA data_version", "poll");
      if (v.ok() && *v != data_version_) {
        data_version_ = *v;
        Dispatch(/*wait=*/false);
      }
      lock.lock();
    }
    lock.unlock();
    poll_db_.reset();
  }

  void Dispatch(bool wait) {
    std::vector<std::shared_ptr<SubscriberState>> subs;
    {
      std::lock_guard<std::mutex> lock(subs_mu_);
      subs = subs_;
    }
    for (const std::shared_ptr<SubscriberState>& s : subs) Notify(s, wait);
  }

  const std::string path_;
  const std::string open_path_;  // what SQLite opens (OpenPath)
  const bool in_memory_;
  const absl::Duration interval_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool stop_ = false;
  std::thread thread_;
  std::unique_ptr<SqliteDb> poll_db_;  // used by the poller thread only
  std::int64_t data_version_ = 0;      // poller thread only

  std::mutex subs_mu_;
  std::vector<std::shared_ptr<SubscriberState>> subs_;
  std::atomic<bool> has_subscribers_{false};
};

class SqliteSubscription final : public Subscription {
 public:
  SqliteSubscription(std::shared_ptr<SubscriberState> sub, std::shared_ptr<Notifier> notifier)
      : sub_(std::move(sub)), notifier_(std::move(notifier)) {}

  // Waits for a callback running on another thread, unless called from
  // inside that callback (then it is simply not called again).
  ~SqliteSubscription() override {
    {
      std::unique_lock<std::mutex> lock(sub_->mu);
      sub_->active = false;
      sub_->idle.notify_all();  // writers waiting for a round: it is not coming
      const std::thread::id self = std::this_thread::get_id();
      sub_->idle.wait(lock, [&] { return !sub_->running || sub_->runner == self; });
    }
    notifier_->Remove(sub_);
  }

 private:
  std::shared_ptr<SubscriberState> sub_;
  std::shared_ptr<Notifier> notifier_;
};

// ---------------------------------------------------------------------------
// Opening.

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

// When ConfigureAndMigrate puts the file in WAL mode.
enum class WalSwitch : std::uint8_t {
  kNever,         // ":memory:"
  kBeforeSchema,  // a file in use: WAL first, as every other connection runs
  kAfterSchema,   // a new file nobody else sees yet (CreateDatabase): the schema
                  // is committed through a rollback journal, straight into the
                  // file, so that closing the connection leaves nothing in a log
};

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

// ---------------------------------------------------------------------------
// Rows.

void BindRecord(Statement& s, const KeyRecord& r) {
  // ?1 id, ?2..?24 the fields; the caller binds ?25 version, ?26 change_seq
  // and ?27 pk.
  s.BindText(1, r.id);
  s.BindText(2, r.name);
  s.BindText(3, ToLowerAscii(r.name));
  s.BindText(4, r.description);
  s.BindText(5, r.owner);
  s.BindInt(6, static_cast<std::int64_t>(r.kind));
  s.BindText(7, r.environment);
  s.BindText(8, internal::EncodeJsonStringArray(r.scopes));
  s.BindInt(9, static_cast<std::int64_t>(r.state));
  s.BindInt(10, internal::TimeToMicros(r.created));
  s.BindInt(11, internal::TimeToMicros(r.updated));
  if (r.expires.has_value()) {
    s.BindInt(12, internal::TimeToMicros(*r.expires));
  } else {
    s.BindNull(12);
  }
  if (r.last_used.has_value()) {
    s.BindInt(13, internal::TimeToMicros(*r.last_used));
  } else {
    s.BindNull(13);
  }
  if (r.rate_limit.has_value()) {
    s.BindInt(14, static_cast<std::int64_t>(r.rate_limit->rate));
    s.BindInt(15, absl::ToInt64Microseconds(r.rate_limit->period));
    s.BindInt(16, static_cast<std::int64_t>(r.rate_limit->burst));
  } else {
    s.BindNull(14);
    s.BindNull(15);
    s.BindNull(16);
  }
  s.BindText(17, r.webhook_url);
  s.BindText(18, internal::EncodeJsonStringArray(r.accounts));
  s.BindText(19, internal::EncodeJsonStringMap(r.metadata));
  s.BindBlob(20, r.digest.data(), r.digest.size());
  s.BindText(21, r.hint);
  if (r.previous.has_value()) {
    s.BindBlob(22, r.previous->digest.data(), r.previous->digest.size());
    s.BindText(23, r.previous->hint);
    s.BindInt(24, internal::TimeToMicros(r.previous->valid_until));
  } else {
    s.BindNull(22);
    s.BindNull(23);
    s.BindNull(24);
  }
}

constexpr char kInsertKeySql[] =
    "INSERT INTO keys(pk, id, name, name_lower, description, owner, kind, environment, scopes, "
    "state, created_us, updated_us, expires_us, last_used_us, rate_limit_rate, "
    "rate_limit_period_us, rate_limit_burst, webhook_url, accounts, metadata, digest, hint, "
    "previous_digest, previous_hint, previous_valid_until_us, version, change_seq) "
    "VALUES (?27, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
    "?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)";

constexpr char kUpdateKeySql[] =
    "UPDATE keys SET name = ?2, name_lower = ?3, description = ?4, owner = ?5, kind = ?6, "
    "environment = ?7, scopes = ?8, state = ?9, created_us = ?10, updated_us = ?11, "
    "expires_us = ?12, last_used_us = ?13, rate_limit_rate = ?14, rate_limit_period_us = ?15, "
    "rate_limit_burst = ?16, webhook_url = ?17, accounts = ?18, metadata = ?19, digest = ?20, "
    "hint = ?21, previous_digest = ?22, previous_hint = ?23, previous_valid_until_us = ?24, "
    "version = ?25, change_seq = ?26 WHERE pk = ?27";

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

}  // namespace

// ---------------------------------------------------------------------------

struct SqliteKeyStore::Impl {
  SqliteOptions options;
  bool in_memory = false;
  std::vector<std::string> open_warnings;      // CheckFileTrust
  std::atomic<std::uint64_t> corrupt_rows{0};  // ChangesSince's undecodable rows
  std::mutex mu;
  std::unique_ptr<SqliteDb> db;  // guarded by mu
  std::shared_ptr<Notifier> notifier;

  // A stored key's row, as the write paths need it (Locate).
  struct Located {
    std::int64_t pk = 0;
    std::uint64_t version = 0;
    std::int64_t change_seq = 0;
    std::string digest;
    std::string previous_digest;
    std::string name_lower;
  };

  // Decodes the kRecordColumns starting at column `o` (record_row.h).
  absl::StatusOr<KeyRecord> Decode(const Statement& s, int o) const {
    return internal::DecodeRecord(s, o, options.path);
  }

  absl::Status NotFound(std::string_view id) const {
    return absl::NotFoundError(absl::StrCat(internal::KeyLabel(id), ": not found"));
  }

  // The next change sequence. Only meaningful inside the write transaction,
  // where nobody else can take it; AUTOINCREMENT's counter then moves with
  // the explicit value written.
  absl::StatusOr<std::int64_t> NextSequence() {
    absl::StatusOr<Statement> next = db->Prepare(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0) + 1");
    if (!next.ok()) return next.status();
    absl::StatusOr<bool> row = next->Step();
    if (!row.ok()) return row.status();
    return next->Int(0);
  }

  // Appends change-log row `seq` for key `id`, removing the key's previous
  // row `old_seq` (0: none). `key_pk` is the key's row, or 0 for a delete (a
  // tombstone). A new key's row takes its first sequence as pk, so pks are
  // never reused either.
  absl::Status AppendChange(std::int64_t seq, std::string_view id, std::int64_t key_pk,
                            std::int64_t old_seq) {
    if (old_seq != 0) {
      absl::StatusOr<Statement> del = db->Prepare("DELETE FROM changes WHERE sequence = ?1");
      if (!del.ok()) return del.status();
      del->BindInt(1, old_seq);
      if (absl::Status s = del->Run(); !s.ok()) return s;
    }
    absl::StatusOr<Statement> ins =
        db->Prepare("INSERT INTO changes(sequence, key_id, key_pk) VALUES (?1, ?2, ?3)");
    if (!ins.ok()) return ins.status();
    ins->BindInt(1, seq);
    ins->BindText(2, id);
    ins->BindInt(3, key_pk);
    return ins->Run();
  }

  // Removes the tombstone of an earlier key with this id, before the id is
  // inserted again: the feed holds one row per key id (key_store.h: one
  // entry per key). The partial index changes_tombstones makes this one
  // lookup in the (usually empty) set of tombstones; the literal `key_pk = 0`
  // is what lets the planner use it.
  absl::Status DropTombstone(std::string_view id) {
    absl::StatusOr<Statement> del =
        db->Prepare("DELETE FROM changes WHERE key_id = ?1 AND key_pk = 0");
    if (!del.ok()) return del.status();
    del->BindText(1, id);
    return del->Run();
  }

  // AppendChange with the next sequence; returns it.
  absl::StatusOr<std::int64_t> AppendNextChange(std::string_view id, std::int64_t key_pk,
                                                std::int64_t old_seq) {
    absl::StatusOr<std::int64_t> seq = NextSequence();
    if (!seq.ok()) return seq.status();
    if (absl::Status s = AppendChange(*seq, id, key_pk, old_seq); !s.ok()) return s;
    return *seq;
  }

  absl::Status InsertDigest(const KeyRecord& r, const Digest& d, std::int64_t pk, int slot) {
    absl::StatusOr<Statement> ins =
        db->Prepare("INSERT INTO digests(digest, key_pk, slot) VALUES (?1, ?2, ?3)");
    if (!ins.ok()) return ins.status();
    ins->BindBlob(1, d.data(), d.size());
    ins->BindInt(2, pk);
    ins->BindInt(3, slot);
    absl::Status s = ins->Run();
    if (!s.ok() && s.code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(
          absl::StrCat(internal::KeyLabel(r.id), ": digest already in use by another key"));
    }
    return s;
  }

  absl::Status InsertDigests(const KeyRecord& r, std::int64_t pk) {
    if (absl::Status s = InsertDigest(r, r.digest, pk, 0); !s.ok()) return s;
    if (r.previous.has_value() && r.previous->digest != r.digest) {
      return InsertDigest(r, r.previous->digest, pk, 1);
    }
    return absl::OkStatus();
  }

  // Removes the digests of the located key `l` (by value: the digests table
  // has no index by key, which would cost as much to maintain as the table).
  absl::Status DeleteDigests(const Located& l) {
    absl::StatusOr<Statement> del =
        db->Prepare("DELETE FROM digests WHERE digest IN (?1, ?2) AND key_pk = ?3");
    if (!del.ok()) return del.status();
    del->BindBlob(1, l.digest.data(), l.digest.size());
    if (l.previous_digest.empty()) {
      del->BindNull(2);
    } else {
      del->BindBlob(2, l.previous_digest.data(), l.previous_digest.size());
    }
    del->BindInt(3, l.pk);
    return del->Run();
  }

  // Refines a constraint failure on the keys table into the contract's
  // kAlreadyExists messages.
  absl::Status KeyConstraint(const absl::Status& s, const KeyRecord& r) const {
    if (s.code() != absl::StatusCode::kAlreadyExists) return s;
    const std::string_view msg(s.message().data(), s.message().size());
    if (msg.find("keys.owner") != std::string_view::npos) {
      return absl::AlreadyExistsError(absl::StrCat(internal::KeyLabel(r.id), ": owner '", r.owner,
                                                   "' already has an active personal key in "
                                                   "environment '",
                                                   r.environment, "'"));
    }
    if (msg.find("keys.id") != std::string_view::npos) {
      return absl::AlreadyExistsError(absl::StrCat(internal::KeyLabel(r.id), ": already exists"));
    }
    return s;
  }

  // Inserts `records` inside an open write transaction. Rows go in in id
  // order and digests in digest order, not in the caller's order: the two
  // random-keyed B-trees (keys.id, digests) are then updated page by page
  // instead of at random, which is what keeps a million-key import fast.
  // Sequence numbers follow the id order within the batch.
  absl::Status InsertLocked(absl::Span<const KeyRecord> records) {
    std::vector<std::size_t> order(records.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return records[a].id < records[b].id; });
    struct DigestRow {
      const Digest* digest;
      std::int64_t pk;
      int slot;
      const KeyRecord* record;
    };
    std::vector<DigestRow> digests;
    digests.reserve(records.size());
    absl::StatusOr<std::int64_t> next = NextSequence();
    if (!next.ok()) return next.status();
    std::int64_t seq = *next;
    for (const std::size_t i : order) {
      const KeyRecord& r = records[i];
      const std::int64_t pk = seq++;
      if (absl::Status s = DropTombstone(r.id); !s.ok()) return s;
      if (absl::Status s = AppendChange(pk, r.id, pk, 0); !s.ok()) return s;
      absl::StatusOr<Statement> ins = db->Prepare(kInsertKeySql);
      if (!ins.ok()) return ins.status();
      BindRecord(*ins, r);
      ins->BindInt(25, 1);
      ins->BindInt(26, pk);  // change_seq
      ins->BindInt(27, pk);
      if (absl::Status s = ins->Run(); !s.ok()) return KeyConstraint(s, r);
      if (absl::Status s = IndexName(pk, r.name); !s.ok()) return s;
      digests.push_back({&r.digest, pk, 0, &r});
      if (r.previous.has_value() && r.previous->digest != r.digest) {
        digests.push_back({&r.previous->digest, pk, 1, &r});
      }
    }
    std::sort(digests.begin(), digests.end(),
              [](const DigestRow& a, const DigestRow& b) { return *a.digest < *b.digest; });
    for (const DigestRow& d : digests) {
      if (absl::Status s = InsertDigest(*d.record, *d.digest, d.pk, d.slot); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Adds / removes a key's name in the trigram index (external content:
  // the values must be exactly what keys.name_key holds).
  absl::Status IndexName(std::int64_t pk, std::string_view name) {
    absl::StatusOr<Statement> q =
        db->Prepare("INSERT INTO key_names(rowid, name_key) VALUES (?1, ?2)");
    if (!q.ok()) return q.status();
    q->BindInt(1, pk);
    q->BindText(2, NameKey(name));
    return q->Run();
  }
  absl::Status UnindexName(std::int64_t pk, std::string_view name_lower) {
    absl::StatusOr<Statement> q =
        db->Prepare("INSERT INTO key_names(key_names, rowid, name_key) VALUES ('delete', ?1, ?2)");
    if (!q.ok()) return q.status();
    q->BindInt(1, pk);
    std::string key(name_lower);
    key.push_back('\x01');
    q->BindText(2, key);
    return q->Run();
  }

  absl::StatusOr<std::optional<Located>> Locate(std::string_view id) {
    absl::StatusOr<Statement> q = db->Prepare(
        "SELECT pk, version, change_seq, digest, previous_digest, name_lower FROM keys "
        "WHERE id = ?1");
    if (!q.ok()) return q.status();
    q->BindText(1, id);
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) return std::optional<Located>();
    Located l;
    l.pk = q->Int(0);
    l.version = static_cast<std::uint64_t>(q->Int(1));
    l.change_seq = q->Int(2);
    l.digest = std::string(q->Blob(3));
    l.previous_digest = std::string(q->Blob(4));
    l.name_lower = std::string(q->Text(5));
    return std::optional<Located>(std::move(l));
  }

  absl::Status VersionConflict(std::string_view id, std::uint64_t expected,
                               std::uint64_t stored) const {
    return absl::AbortedError(absl::StrCat(internal::KeyLabel(id), ": version conflict (expected ",
                                           expected, ", stored ", stored, ")"));
  }
};

SqliteKeyStore::SqliteKeyStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteKeyStore::~SqliteKeyStore() {
  if (impl_->notifier != nullptr) impl_->notifier->StopAndJoin();
}

const std::string& SqliteKeyStore::path() const noexcept { return impl_->options.path; }
const SqliteOptions& SqliteKeyStore::options() const noexcept { return impl_->options; }
const std::vector<std::string>& SqliteKeyStore::open_warnings() const noexcept {
  return impl_->open_warnings;
}

absl::StatusOr<std::shared_ptr<SqliteKeyStore>> SqliteKeyStore::Open(SqliteOptions options) {
  if (options.path.empty()) return absl::InvalidArgumentError("path: must not be empty");
  // SQLite (built with URI names on, as Debian's is) would open a "file:"
  // name as a URI, whose path and mode may differ from the file created here.
  if (options.path.rfind("file:", 0) == 0) {
    return absl::InvalidArgumentError(
        "path: an SQLite \"file:\" URI is not a file path; pass a plain path (prefix \"./\" "
        "for a file whose name starts with \"file:\")");
  }
  if (options.poll_interval < absl::Milliseconds(1) || options.poll_interval > absl::Hours(1)) {
    return absl::InvalidArgumentError("poll_interval: must be between 1 ms and 1 h");
  }
  if (options.busy_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("busy_timeout: must not be negative");
  }
  auto impl = std::make_unique<Impl>();
  impl->in_memory = options.path == kMemoryPath;
  if (!impl->in_memory) {
    absl::StatusOr<bool> create = PrepareFile(options);
    if (!create.ok()) return create.status();
    if (*create) {
      if (absl::Status s = CreateDatabase(options); !s.ok()) return s;
    }
    // After creating: another process's file may have won the race.
    if (absl::Status s = CheckFileTrust(options, &impl->open_warnings); !s.ok()) return s;
  }
  // From here on the file exists and is not ours alone (other processes may
  // use it, or it was there before): a failure leaves it as it is.
  const int flags =
      SQLITE_OPEN_READWRITE | (impl->in_memory ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOFOLLOW;
  const std::string open_path = impl->in_memory ? options.path : OpenPath(options.path);
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(options.path, flags, open_path);
  if (!db.ok()) return db.status();
  if (absl::Status s = ConfigureAndMigrate(
          **db, options, impl->in_memory ? WalSwitch::kNever : WalSwitch::kBeforeSchema);
      !s.ok()) {
    return s;
  }
  impl->db = *std::move(db);
  impl->notifier =
      std::make_shared<Notifier>(options.path, open_path, impl->in_memory, options.poll_interval);
  impl->options = std::move(options);
  return std::shared_ptr<SqliteKeyStore>(new SqliteKeyStore(std::move(impl)));
}

absl::Status SqliteKeyStore::Insert(const KeyRecord& record) {
  return InsertBatch(absl::MakeConstSpan(&record, 1));
}

absl::Status SqliteKeyStore::InsertBatch(absl::Span<const KeyRecord> records) {
  if (records.empty()) return absl::OkStatus();
  for (const KeyRecord& r : records) {
    if (absl::Status s = internal::CheckRecordShape(r); !s.ok()) return s;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    WriteTransaction tx(impl_->db.get());
    if (absl::Status s = tx.Begin(); !s.ok()) return s;
    if (absl::Status s = impl_->InsertLocked(records); !s.ok()) return s;
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
  }
  // A callback may drop the last reference to this store: keep the notifier.
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return absl::OkStatus();
}

absl::StatusOr<KeyRecord> SqliteKeyStore::Get(std::string_view id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  static const std::string sql =
      absl::StrCat("SELECT ", kRecordColumns, " FROM keys k WHERE k.id = ?1");
  absl::StatusOr<Statement> q = impl_->db->Prepare(sql);
  if (!q.ok()) return q.status();
  q->BindText(1, id);
  absl::StatusOr<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return impl_->NotFound(id);
  return impl_->Decode(*q, 0);
}

absl::StatusOr<KeyRecord> SqliteKeyStore::FindByDigest(const Digest& digest) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  static const std::string sql =
      absl::StrCat("SELECT ", kRecordColumns,
                   " FROM digests d JOIN keys k ON k.pk = d.key_pk WHERE d.digest = ?1");
  absl::StatusOr<Statement> q = impl_->db->Prepare(sql);
  if (!q.ok()) return q.status();
  q->BindBlob(1, digest.data(), digest.size());
  absl::StatusOr<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError("digest: no such key");
  return impl_->Decode(*q, 0);
}

absl::StatusOr<KeyRecord> SqliteKeyStore::Update(const KeyRecord& record) {
  if (absl::Status s = internal::CheckUpdateShape(record); !s.ok()) return s;
  KeyRecord stored = record;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    SqliteDb& db = *impl_->db;
    WriteTransaction tx(&db);
    if (absl::Status s = tx.Begin(); !s.ok()) return s;
    absl::StatusOr<std::optional<Impl::Located>> loc = impl_->Locate(record.id);
    if (!loc.ok()) return loc.status();
    if (!loc->has_value()) return impl_->NotFound(record.id);
    const Impl::Located& l = **loc;
    if (l.version != record.version) {
      return impl_->VersionConflict(record.id, record.version, l.version);
    }
    absl::StatusOr<std::int64_t> seq = impl_->AppendNextChange(record.id, l.pk, l.change_seq);
    if (!seq.ok()) return seq.status();
    stored.version = l.version + 1;
    {
      absl::StatusOr<Statement> up = db.Prepare(kUpdateKeySql);
      if (!up.ok()) return up.status();
      BindRecord(*up, record);
      up->BindInt(25, static_cast<std::int64_t>(stored.version));
      up->BindInt(26, *seq);
      up->BindInt(27, l.pk);
      if (absl::Status s = up->Run(); !s.ok()) return impl_->KeyConstraint(s, record);
    }
    if (ToLowerAscii(record.name) != l.name_lower) {
      if (absl::Status s = impl_->UnindexName(l.pk, l.name_lower); !s.ok()) return s;
      if (absl::Status s = impl_->IndexName(l.pk, record.name); !s.ok()) return s;
    }
    const std::string_view digest(reinterpret_cast<const char*>(record.digest.data()),
                                  record.digest.size());
    const std::string_view previous =
        record.previous.has_value()
            ? std::string_view(reinterpret_cast<const char*>(record.previous->digest.data()),
                               record.previous->digest.size())
            : std::string_view();
    if (digest != l.digest || previous != l.previous_digest) {
      if (absl::Status s = impl_->DeleteDigests(l); !s.ok()) return s;
      if (absl::Status s = impl_->InsertDigests(record, l.pk); !s.ok()) return s;
    }
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
  }
  // A callback may drop the last reference to this store: keep the notifier.
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return stored;
}

absl::Status SqliteKeyStore::TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                           absl::Duration min_advance) {
  if (updates.empty()) return absl::OkStatus();
  const std::int64_t advance_us = std::max<std::int64_t>(0, absl::ToInt64Microseconds(min_advance));
  std::lock_guard<std::mutex> lock(impl_->mu);
  SqliteDb& db = *impl_->db;
  WriteTransaction tx(&db);
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  // Forward only, and only by at least min_advance; no version, no change
  // row: usage is not verification state (key_store.h).
  for (const LastUsedUpdate& u : updates) {
    absl::StatusOr<Statement> up = db.Prepare(  // cached by the connection
        "UPDATE keys SET last_used_us = ?2 WHERE id = ?1 AND "
        "(last_used_us IS NULL OR (?2 > last_used_us AND ?2 - last_used_us >= ?3))");
    if (!up.ok()) return up.status();
    up->BindText(1, u.key_id);
    up->BindInt(2, internal::TimeToMicros(u.last_used));
    up->BindInt(3, advance_us);
    if (absl::Status s = up->Run(); !s.ok()) return s;
  }
  return tx.Commit();
}

absl::Status SqliteKeyStore::Delete(std::string_view id,
                                    std::optional<std::uint64_t> expected_version) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    SqliteDb& db = *impl_->db;
    WriteTransaction tx(&db);
    if (absl::Status s = tx.Begin(); !s.ok()) return s;
    absl::StatusOr<std::optional<Impl::Located>> loc = impl_->Locate(id);
    if (!loc.ok()) return loc.status();
    if (!loc->has_value()) return impl_->NotFound(id);
    const Impl::Located& l = **loc;
    if (expected_version.has_value() && *expected_version != l.version) {
      return impl_->VersionConflict(id, *expected_version, l.version);
    }
    if (absl::Status s = impl_->UnindexName(l.pk, l.name_lower); !s.ok()) return s;
    if (absl::Status s = impl_->DeleteDigests(l); !s.ok()) return s;
    {
      absl::StatusOr<Statement> del = db.Prepare("DELETE FROM keys WHERE pk = ?1");
      if (!del.ok()) return del.status();
      del->BindInt(1, l.pk);
      if (absl::Status s = del->Run(); !s.ok()) return s;
    }
    // key_pk 0: a tombstone (it joins no key).
    absl::StatusOr<std::int64_t> seq = impl_->AppendNextChange(id, 0, l.change_seq);
    if (!seq.ok()) return seq.status();
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
  }
  // A callback may drop the last reference to this store: keep the notifier.
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return absl::OkStatus();
}

absl::StatusOr<ListPage> SqliteKeyStore::List(const ListOptions& options) {
  if (options.limit < 1 || options.limit > kMaxListLimit) {
    return absl::InvalidArgumentError(absl::StrCat("limit: must be between 1 and ", kMaxListLimit));
  }
  std::string after;
  if (!options.cursor.empty()) {
    const std::string_view c = options.cursor;
    constexpr std::size_t kPrefixSize = sizeof(kCursorPrefix) - 1;
    if (c.size() <= kPrefixSize || c.substr(0, kPrefixSize) != kCursorPrefix ||
        !HexDecode(c.substr(kPrefixSize), &after) || after.empty()) {
      return absl::InvalidArgumentError("cursor: not a cursor returned by this store");
    }
  }
  const ListFilter& f = options.filter;
  const std::string needle = ToLowerAscii(f.name_contains);

  std::lock_guard<std::mutex> lock(impl_->mu);
  SqliteDb& db = *impl_->db;

  // Candidates from the trigram index, as an FTS5 query; empty: walk the
  // keys in id order instead.
  std::string match;
  const std::size_t chars = CodePoints(needle);
  if (IndexableNeedle(needle) && chars >= 3) {
    match = TrigramQuery(needle);
  } else if (IndexableNeedle(needle) && chars == 2) {
    // Every occurrence of a 2-character needle starts a trigram (names end
    // with a terminator), so the trigrams that start with it are the terms
    // to look up. None: no name contains it. Very many: it is common, and
    // the id-order walk fills a page quickly.
    absl::StatusOr<Statement> terms = db.Prepare(
        absl::StrCat("SELECT term FROM key_names_vocab WHERE term >= ?1 AND term < ?2 LIMIT ",
                     kMaxPrefixTerms + 1));
    if (!terms.ok()) return terms.status();
    terms->BindText(1, needle);
    // U+10FFFF is F4 8F BF BF: "\xF4\x90" sorts after every 3-character
    // term that starts with the needle.
    terms->BindText(2, needle + "\xF4\x90");
    std::vector<std::string> found;
    while (true) {
      absl::StatusOr<bool> row = terms->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      found.emplace_back(terms->Text(0));
    }
    if (found.empty()) return ListPage{};
    if (found.size() <= kMaxPrefixTerms) {
      for (const std::string& t : found) {
        absl::StrAppend(&match, match.empty() ? "" : " OR ", FtsPhrase(t));
      }
    }
  }
  bool use_fts = false;
  if (!match.empty()) {
    // How many names contain the needle, up to the threshold (a few ms at
    // most): few -> fetch them through the trigram index; many -> walk in
    // id order, where a page fills quickly.
    absl::StatusOr<Statement> probe = db.Prepare(absl::StrCat(
        "SELECT count(*) FROM (SELECT 1 FROM key_names WHERE key_names MATCH ?1 LIMIT ",
        kDenseSearchThreshold, ")"));
    if (!probe.ok()) return probe.status();
    probe->BindText(1, match);
    absl::StatusOr<bool> row = probe->Step();
    if (!row.ok()) return row.status();
    use_fts = *row && probe->Int(0) < kDenseSearchThreshold;
  }

  // Enum values are inlined (not bound) so the planner can use the partial
  // index on revoked keys; everything user-supplied is bound.
  std::string sql = absl::StrCat("SELECT ", kRecordColumns, " FROM keys k WHERE 1");
  std::vector<std::string> texts;
  if (f.owner.has_value()) {
    absl::StrAppend(&sql, " AND k.owner = ?", texts.size() + 1);
    texts.push_back(*f.owner);
  }
  if (f.environment.has_value()) {
    absl::StrAppend(&sql, " AND k.environment = ?", texts.size() + 1);
    texts.push_back(*f.environment);
  }
  if (f.state.has_value()) {
    absl::StrAppend(&sql, " AND k.state = ", static_cast<int>(*f.state));
  }
  if (f.kind.has_value()) {
    absl::StrAppend(&sql, " AND k.kind = ", static_cast<int>(*f.kind));
  }
  if (!after.empty()) {
    absl::StrAppend(&sql, " AND k.id > ?", texts.size() + 1);
    texts.push_back(after);
  }
  if (!needle.empty()) {
    absl::StrAppend(&sql, " AND instr(k.name_lower, ?", texts.size() + 1, ") > 0");
    texts.push_back(needle);
  }
  if (use_fts) {
    absl::StrAppend(&sql, " AND k.pk IN (SELECT rowid FROM key_names WHERE key_names MATCH ?",
                    texts.size() + 1, ")");
    texts.push_back(match);
  }
  // The limit is bound too: the connection caches each distinct SQL text for
  // its lifetime, so the text may vary only with the filter's shape (a few
  // hundred at most), never with a value.
  absl::StrAppend(&sql, " ORDER BY k.id LIMIT ?", texts.size() + 1);

  absl::StatusOr<Statement> q = db.Prepare(sql);
  if (!q.ok()) return q.status();
  for (std::size_t i = 0; i < texts.size(); ++i) q->BindText(static_cast<int>(i + 1), texts[i]);
  q->BindInt(static_cast<int>(texts.size() + 1), static_cast<std::int64_t>(options.limit) + 1);
  ListPage page;
  while (true) {
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (page.keys.size() == options.limit) {
      page.next_cursor = absl::StrCat(kCursorPrefix, HexEncode(page.keys.back().id));
      break;
    }
    absl::StatusOr<KeyRecord> r = impl_->Decode(*q, 0);
    if (!r.ok()) return r.status();
    page.keys.push_back(*std::move(r));
  }
  return page;
}

absl::StatusOr<ChangeBatch> SqliteKeyStore::ChangesSince(std::uint64_t after, std::size_t limit) {
  // One change row per key id (schema.cc): a live key's row is joined by its
  // pk (a rowid lookup); a tombstone (key_pk 0) joins nothing and reads as a
  // delete.
  static const std::string sql = absl::StrCat(
      "SELECT c.sequence, c.key_id, k.pk IS NOT NULL, ", kRecordColumns,
      " FROM changes c LEFT JOIN keys k ON k.pk = c.key_pk AND k.change_seq = c.sequence"
      " WHERE c.sequence > ?1 ORDER BY c.sequence LIMIT ?2");
  const std::size_t capped = std::min<std::size_t>(limit, 1'000'000'000);
  ChangeBatch batch;
  batch.next_sequence = after;
  // Rows that cannot be decoded (edited by hand): reported after the lock
  // is released.
  std::vector<absl::Status> corrupt;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    absl::StatusOr<Statement> q = impl_->db->Prepare(sql);
    if (!q.ok()) return q.status();
    const std::uint64_t max_after = static_cast<std::uint64_t>(INT64_MAX);
    q->BindInt(1, static_cast<std::int64_t>(std::min(after, max_after)));
    q->BindInt(2, static_cast<std::int64_t>(capped) + 1);
    while (true) {
      absl::StatusOr<bool> row = q->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      if (batch.changes.size() == capped) {
        batch.more = true;
        break;
      }
      Change c;
      c.sequence = static_cast<std::uint64_t>(q->Int(0));
      c.key_id = std::string(q->Text(1));
      if (q->Int(2) != 0) {
        absl::StatusOr<KeyRecord> r = impl_->Decode(*q, 3);
        if (r.ok()) {
          c.record = *std::move(r);
        } else {
          // Fail closed without stopping the feed: the key reads as deleted
          // (a follower drops it), the changes after it still flow.
          corrupt.push_back(r.status());
        }
      }
      batch.next_sequence = c.sequence;
      batch.changes.push_back(std::move(c));
    }
  }
  if (!corrupt.empty()) {
    impl_->corrupt_rows.fetch_add(corrupt.size(), std::memory_order_relaxed);
    if (impl_->options.on_corrupt_row) {
      for (const absl::Status& s : corrupt) impl_->options.on_corrupt_row(s);
    }
  }
  return batch;
}

absl::StatusOr<std::uint64_t> SqliteKeyStore::LastSequence() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  absl::StatusOr<Statement> q =
      impl_->db->Prepare("SELECT seq FROM sqlite_sequence WHERE name = 'changes'");
  if (!q.ok()) return q.status();
  absl::StatusOr<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::uint64_t{0};
  return static_cast<std::uint64_t>(q->Int(0));
}

absl::StatusOr<std::unique_ptr<Subscription>> SqliteKeyStore::Subscribe(
    std::function<void()> on_change) {
  if (!on_change) return absl::InvalidArgumentError("on_change: must be callable");
  if (absl::Status s = impl_->notifier->Start(); !s.ok()) return s;
  auto sub = std::make_shared<SubscriberState>(std::move(on_change));
  impl_->notifier->Add(sub);
  return std::unique_ptr<Subscription>(
      std::make_unique<SqliteSubscription>(std::move(sub), impl_->notifier));
}

absl::Status SqliteKeyStore::AwaitSubscribers() {
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return absl::OkStatus();
}

absl::Status SqliteKeyStore::CheckIntegrity() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  SqliteDb& db = *impl_->db;
  absl::StatusOr<Statement> q = db.Prepare("PRAGMA integrity_check");
  if (!q.ok()) return q.status();
  std::string report;
  int lines = 0;
  while (true) {
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    const std::string_view line = q->Text(0);
    if (line == "ok") continue;
    if (++lines <= 10) absl::StrAppend(&report, lines > 1 ? "; " : "", std::string(line));
  }
  if (lines > 0) {
    return absl::DataLossError(
        absl::StrCat("sqlite ", impl_->options.path, ": integrity check failed: ", report));
  }
  // Every key row must decode: a row edited by hand into something the
  // store cannot read fails closed in the change feed (ChangesSince), and
  // this is where an operator finds it.
  {
    static const std::string sql = absl::StrCat("SELECT ", kRecordColumns, " FROM keys k");
    absl::StatusOr<Statement> rows = db.Prepare(sql);
    if (!rows.ok()) return rows.status();
    std::string bad;
    int count = 0;
    while (true) {
      absl::StatusOr<bool> row = rows->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      absl::StatusOr<KeyRecord> r = impl_->Decode(*rows, 0);
      if (r.ok()) continue;
      if (++count <= 10) {
        absl::StrAppend(&bad, count > 1 ? "; " : "", std::string(r.status().message()));
      }
    }
    if (count > 0) {
      return absl::DataLossError(absl::StrCat(count, " key row(s) cannot be decoded: ", bad));
    }
  }
  // The name index must agree with the keys table (it is maintained by
  // explicit statements in the same transaction; this catches a torn update of either).
  if (absl::Status s = db.Exec("INSERT INTO key_names(key_names) VALUES ('integrity-check')",
                               "name index integrity check");
      !s.ok()) {
    if (s.code() == absl::StatusCode::kDataLoss || s.code() == absl::StatusCode::kInternal) {
      return absl::DataLossError(s.message());
    }
    return s;
  }
  return absl::OkStatus();
}

std::size_t internal::SqliteKeyStoreTestPeer::StatementCacheSize(SqliteKeyStore& store) {
  std::lock_guard<std::mutex> lock(store.impl_->mu);
  return store.impl_->db->statement_cache_size();
}

std::uint64_t SqliteKeyStore::corrupt_rows_skipped() const noexcept {
  return impl_->corrupt_rows.load(std::memory_order_relaxed);
}

absl::StatusOr<std::uint64_t> SqliteKeyStore::Count() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  absl::StatusOr<std::int64_t> n = impl_->db->QueryInt("SELECT count(*) FROM keys", "count");
  if (!n.ok()) return n.status();
  return static_cast<std::uint64_t>(*n);
}

}  // namespace keygate
