// Several processes opening one NEW database file at once (a server and a
// CLI started together, a fleet of workers): every open must succeed. The
// first to take the write lock creates the schema; the others must neither
// read a half-created file as another application's ("N schema objects of
// another application") nor give up on SQLite's immediate SQLITE_BUSY while
// switching to WAL ("busy timeout exceeded" after 0 ms).
//
// Processes are fork()ed children (no exec: cheap, and they start together
// when the parent closes the pipe they wait on). KEYGATE_STRESS=1 runs more
// rounds.
//
// Also: an Open that fails after it began creating a new file leaves nothing
// behind (the failure is a file-size limit in a fork()ed child: a disk that
// fills up during the schema's creation), and never removes a file it did not
// create.

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite_test_util.h"
#include "test_util.h"

namespace keygate {
namespace {

// Forks a child that waits for the write end of the `go` pipe to close,
// opens `path`, writes the status (empty when OK) to the `report` pipe and
// exits.
pid_t ForkOpener(const std::string& path, const int go[2], const int report[2]) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::close(go[1]);  // or the child would wait for itself
  ::close(report[0]);
  char byte;
  while (::read(go[0], &byte, 1) > 0) {
  }
  SqliteOptions o;
  o.path = path;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  std::string line = store.ok() ? "" : store.status().ToString();
  line.push_back('\n');
  // One write(2) of less than PIPE_BUF bytes: lines from children never mix.
  const ssize_t n = ::write(report[1], line.data(), std::min<std::size_t>(line.size(), 4000));
  ::_exit(store.ok() && n > 0 ? 0 : 1);
}

TEST_CASE("SQLite store: many processes opening one new file all succeed", "[sqlite][schema]") {
  const int rounds = conformance::StressEnabled() ? 200 : 25;
  constexpr int kProcesses = 8;
  testing::TempDir dir;
  std::vector<std::string> failures;
  for (int round = 0; round < rounds; ++round) {
    const std::string path = dir.File(absl::StrCat("race", round, ".db"));
    int go[2];
    int report[2];
    REQUIRE(::pipe(go) == 0);
    REQUIRE(::pipe(report) == 0);
    std::vector<pid_t> pids;
    for (int i = 0; i < kProcesses; ++i) {
      const pid_t pid = ForkOpener(path, go, report);
      REQUIRE(pid > 0);
      pids.push_back(pid);
    }
    ::close(go[0]);
    ::close(report[1]);
    ::close(go[1]);  // all start now
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(report[0], buf, sizeof buf)) > 0;) {
      out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(report[0]);
    int exited_ok = 0;
    for (const pid_t pid : pids) {
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++exited_ok;
    }
    if (exited_ok != kProcesses) {
      failures.push_back(absl::StrCat("round ", round, ": ", kProcesses - exited_ok, " of ",
                                      kProcesses, " failed:\n", out));
    }
  }
  for (const std::string& f : failures) UNSCOPED_INFO(f);
  CHECK(failures.empty());
  // And the file they raced on is a proper keygate database.
  SqliteOptions o;
  o.path = dir.File("race0.db");
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  REQUIRE(store.ok());
  CHECK((*store)->CheckIntegrity().ok());
}

// The names in `dir`.
std::set<std::string> Listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Opens `path` in a fork()ed child whose writes to files fail past
// `max_file_bytes` (RLIMIT_FSIZE, SIGXFSZ ignored: write(2) fails with EFBIG,
// as on a full disk); returns the child's Open status as text ("" when OK).
std::string OpenWithFileSizeLimit(const std::string& path, rlim_t max_file_bytes) {
  int report[2];
  REQUIRE(::pipe(report) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(report[0]);
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim;
    ::getrlimit(RLIMIT_FSIZE, &lim);
    lim.rlim_cur = max_file_bytes;
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(2);
    SqliteOptions o;
    o.path = path;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
    const std::string line = store.ok() ? "" : store.status().ToString();
    const ssize_t n = ::write(report[1], line.data(), std::min<std::size_t>(line.size(), 4000));
    ::_exit(n >= 0 ? 0 : 1);
  }
  ::close(report[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(report[0], buf, sizeof buf)) > 0;) {
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(report[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  return out;
}

TEST_CASE("SQLite Open that fails while creating a new file leaves nothing behind",
          "[sqlite][open][errors]") {
  testing::TempDir dir;
  const std::string other = dir.File("unrelated.txt");
  std::ofstream(other) << "not keygate's\n";
  const std::set<std::string> before = Listing(dir.path());
  const std::string path = dir.File("new.db");
  // No byte of any file can be written: the file is created, its schema is not.
  const std::string failed = OpenWithFileSizeLimit(path, 0);
  INFO(failed);
  REQUIRE_FALSE(failed.empty());
  CHECK_THAT(failed, Catch::Contains(path));
  // Neither the file nor a journal (nor a temporary file) stays behind.
  CHECK(Listing(dir.path()) == before);
  CHECK_FALSE(Exists(path));
  // And the same path opens once the disk has room again.
  SqliteOptions o;
  o.path = path;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  CHECK((*store)->CheckIntegrity().ok());
  // The file was made under a temporary name; only the database (and its
  // WAL journal files) remain.
  for (const std::string& name : Listing(dir.path())) {
    CHECK((name == "unrelated.txt" || name == "new.db" || name == "new.db-wal" ||
           name == "new.db-shm"));
  }
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_nlink == 1);
}

TEST_CASE("SQLite Open creates a database whose file name is near the system's limit",
          "[sqlite][open]") {
  testing::TempDir dir;
  // 247 bytes: with SQLite's "-journal" suffix, 255 (NAME_MAX on Linux).
  // (append, not operator+: GCC 12 warns falsely about the inlined copy, PR 105651.)
  const std::string base = std::string(244, 'k').append(".db");
  const std::string path = dir.File(base);
  SqliteOptions o;
  o.path = path;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  CHECK((*store)->CheckIntegrity().ok());
  for (const std::string& name : Listing(dir.path())) {
    CHECK(name.rfind(base, 0) == 0);  // no temporary file left
  }
}

TEST_CASE("SQLite Open that fails never removes a file it did not create",
          "[sqlite][open][errors]") {
  testing::TempDir dir;
  // An empty file someone else made (a version-0 database to SQLite): the
  // failed Open must leave it where it was.
  const std::string path = dir.File("theirs.db");
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  const std::string failed = OpenWithFileSizeLimit(path, 0);
  INFO(failed);
  REQUIRE_FALSE(failed.empty());
  CHECK(Exists(path));
  CHECK(Listing(dir.path()) == std::set<std::string>{"theirs.db"});
}

TEST_CASE("SQLite Open refuses to create a file next to journal files of a removed database",
          "[sqlite][open][errors]") {
  testing::TempDir dir;
  const std::string path = dir.File("k.db");
  // A database whose file was removed while its write-ahead log was not: a
  // new file of that name must not start next to it (SQLite applies a log
  // to a database file that is not empty; one it finds next to an empty file
  // it deletes, with whatever commits it held).
  std::string wal;
  {
    SqliteOptions o;
    o.path = path;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
    REQUIRE(store.ok());
    REQUIRE((*store)
                ->Insert(conformance::MakeRecord("key_stale"), keygate::testing::CreatedNote())
                .ok());
    std::ifstream in(path + "-wal", std::ios::binary);
    wal.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  REQUIRE_FALSE(wal.empty());
  REQUIRE(::unlink(path.c_str()) == 0);
  std::ofstream(path + "-wal", std::ios::binary) << wal;
  // A journal name taken by a directory, which SQLite cannot use (the file
  // would be created, then its schema could not be).
  const std::string other = dir.File("j.db");
  REQUIRE(::mkdir((other + "-journal").c_str(), 0700) == 0);
  for (const auto& [db, leftover] :
       {std::pair{other, other + "-journal"}, std::pair{path, path + "-wal"}}) {
    INFO(db);
    const std::set<std::string> before = Listing(dir.path());
    SqliteOptions o;
    o.path = db;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
    REQUIRE_FALSE(store.ok());
    INFO(store.status().ToString());
    CHECK(store.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(store.status().message()), Catch::Contains(leftover));
    CHECK(Listing(dir.path()) == before);  // nothing created, nothing removed
  }
}

// --- Files another user planted or may change ------------------------------------

// A database with one key at `path`, closed again (no journal files left).
void MakeDatabase(const std::string& path) {
  SqliteOptions o;
  o.path = path;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  REQUIRE((*store)
              ->Insert(conformance::MakeRecord("key_planted"), keygate::testing::CreatedNote())
              .ok());
}

absl::StatusOr<std::shared_ptr<SqliteKeyStore>> OpenAt(const std::string& path,
                                                       bool allow_foreign_file = false) {
  SqliteOptions o;
  o.path = path;
  o.allow_foreign_file = allow_foreign_file;
  return SqliteKeyStore::Create(o);
}

// Open refuses with kFailedPrecondition and exactly this message.
void ExpectRefused(const std::string& path, const std::string& message) {
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = OpenAt(path);
  INFO(store.status().ToString());
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(store.status().message()) == message);
}

// With allow_foreign_file the same file opens, keeps its key, and each
// foreign file is named in open_warnings().
void ExpectAllowedWithWarnings(const std::string& path, const std::vector<std::string>& warnings) {
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = OpenAt(path, true);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  CHECK((*store)->open_warnings() == warnings);
  CHECK((*store)->Get("key_planted").ok());
}

constexpr char kRefusedTail[] =
    ": another user may have planted it or may change its keys; refused (open it as its owner, "
    "or allow it with SqliteOptions::allow_foreign_file)";
constexpr char kAllowedTail[] = "; opened anyway (SqliteOptions::allow_foreign_file is set)";

TEST_CASE("SQLite Open refuses a database file that group or others may write",
          "[sqlite][open][security]") {
  testing::TempDir dir;
  const std::string path = dir.File("keygate.db");
  MakeDatabase(path);
  for (const mode_t mode : {0666, 0620, 0602}) {
    INFO("mode " << mode);
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    const std::string reason =
        absl::StrFormat("database file is writable by group or others (mode %04o)", mode);
    ExpectRefused(path, absl::StrCat("sqlite ", path, ": ", reason, kRefusedTail));
    ExpectAllowedWithWarnings(path, {absl::StrCat("sqlite ", path, ": ", reason, kAllowedTail)});
  }
  // Others reading it is not a way to plant keys: 0644 opens as before.
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = OpenAt(path);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  CHECK((*store)->open_warnings().empty());
}

TEST_CASE("SQLite Open refuses journal files that are foreign, links or not regular files",
          "[sqlite][open][security]") {
  testing::TempDir dir;
  const std::string path = dir.File("keygate.db");
  MakeDatabase(path);
  // An empty journal is no hot journal: SQLite would just use it.
  const std::string journal = path + "-journal";
  const int fd = ::open(journal.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  REQUIRE(::chmod(journal.c_str(), 0666) == 0);
  const std::string what =
      absl::StrCat("journal file '", journal, "' is writable by group or others (mode 0666)");
  ExpectRefused(path, absl::StrCat("sqlite ", path, ": ", what, kRefusedTail));
  ExpectAllowedWithWarnings(path, {absl::StrCat("sqlite ", path, ": ", what, kAllowedTail)});
  REQUIRE(::unlink(journal.c_str()) == 0);

  // A write-ahead log planted as a link would have SQLite write pages
  // through it (as root: into any file): refused even when foreign files are
  // allowed.
  const std::string target = dir.File("victim");
  std::ofstream(target) << "not yours";
  REQUIRE(::symlink(target.c_str(), (path + "-wal").c_str()) == 0);
  const std::string link_message =
      absl::StrCat("sqlite ", path, ": journal file '", path,
                   "-wal' is a symbolic link; keygate refuses to write through it (remove it if "
                   "no process uses the database)");
  ExpectRefused(path, link_message);
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> allowed = OpenAt(path, true);
  CHECK(std::string(allowed.status().message()) == link_message);
  REQUIRE(::unlink((path + "-wal").c_str()) == 0);
  REQUIRE(::mkdir((path + "-shm").c_str(), 0700) == 0);
  ExpectRefused(
      path, absl::StrCat("sqlite ", path, ": journal file '", path, "-shm' is not a regular file"));
  REQUIRE(::rmdir((path + "-shm").c_str()) == 0);
  CHECK(OpenAt(path).ok());
}

TEST_CASE("SQLite Open refuses a database file another user owns", "[sqlite][open][security]") {
  testing::TempDir dir;
  // A shared directory, sticky like /tmp: another user's 0666 keygate.db
  // holding a key of theirs is what root's `keygate create` used to open.
  const std::string shared = dir.File("shared");
  REQUIRE(::mkdir(shared.c_str(), 0700) == 0);
  REQUIRE(::chmod(shared.c_str(), 01777) == 0);
  const std::string path = shared + "/keygate.db";
  MakeDatabase(path);
  REQUIRE(Exists(path));
  if (::geteuid() != 0) {
    WARN(
        "skipped the other-owner cases: only root can chown a file to another user "
        "(CI runs as root)");
    return;
  }
  constexpr uid_t kNobody = 65534;
  REQUIRE(::chown(path.c_str(), kNobody, kNobody) == 0);
  const std::string owned =
      absl::StrCat("database file is owned by uid ", kNobody, ", not the current user (uid 0)");
  ExpectRefused(path, absl::StrCat("sqlite ", path, ": ", owned, kRefusedTail));
  ExpectAllowedWithWarnings(path, {absl::StrCat("sqlite ", path, ": ", owned, kAllowedTail)});
  // Both reasons at once, as in the report: nobody's file, mode 0666.
  REQUIRE(::chmod(path.c_str(), 0666) == 0);
  const std::string both = absl::StrCat(owned, ", and writable by group or others (mode 0666)");
  ExpectRefused(path, absl::StrCat("sqlite ", path, ": ", both, kRefusedTail));
  ExpectAllowedWithWarnings(path, {absl::StrCat("sqlite ", path, ": ", both, kAllowedTail)});
  // A journal file another user owns, next to our own database.
  REQUIRE(::chown(path.c_str(), 0, 0) == 0);
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  const std::string journal = path + "-journal";
  const int fd = ::open(journal.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  REQUIRE(::chown(journal.c_str(), kNobody, kNobody) == 0);
  ExpectRefused(
      path, absl::StrCat("sqlite ", path, ": journal file '", journal,
                         "' is owned by uid 65534, not the current user (uid 0)", kRefusedTail));
}

}  // namespace
}  // namespace keygate
