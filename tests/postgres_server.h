// tests/postgres_server.h: a real PostgreSQL server for the PostgreSQL KeyStore's tests and
// benchmarks, in a fresh temporary directory that holds its cluster, its Unix socket (no TCP) and
// its logs, and driven the way an outage drives it: SIGKILL of every server process (a crash),
// a restart on the same data (crash recovery), a clean fast shutdown, SIGSTOP (a hung server).
//
//   std::unique_ptr<testing::PostgresServer> pg = testing::StartPostgresOrSkip();
//   if (pg == nullptr) return;  // not installed, outside CI: a warning, not a failure
//   REQUIRE(pg->CreateDatabase("keys").ok());
//   options.url = pg->url("keys");  // "postgresql:///keys?host=%2Ftmp%2Fkeygate-pg-...&..."
//   pg->Kill();                     // ... the store reports kUnavailable
//   REQUIRE(pg->Restart().ok());    // crash recovery: committed rows are back
//
// The binaries come from $KEYGATE_PG_BINDIR, else /usr/lib/postgresql/15/bin, else the newest
// /usr/lib/postgresql/*/bin (Debian: postgresql-15, installed by scripts/setup.sh). Without them
// the tests skip with a warning outside CI and fail under CI ($CI set and not "false"), which
// must run them. Define KEYGATE_POSTGRES_SERVER_NO_CATCH before including this header to use
// PostgresServer without Catch2 (benchmarks).
//
// PostgreSQL refuses to run as root: under root (containers, CI) initdb and the server run as
// the `postgres` user that the Debian package creates, through setpriv, which execs in place so
// that the server is this process's own child (runuser would stay between them and stop itself
// whenever the server is stopped). The temporary directory is then owned by postgres, mode 0755
// so that root's test process reaches the socket; the data directory inside is 0700.
//
// Cost, measured on a 2-core VM shared with other builds, /tmp on disk, PostgreSQL 15.18, fsync
// on: the first Start() in a process runs initdb (1.3 to 2 s) into a template that later
// Start()s copy (0.3 to 0.5 s in all; the copies are identical clusters, system identifier
// included). Kill() 10 to 15 ms; Restart() after Kill() 0.15 to 0.2 s (crash recovery, about
// 70 ms of it fsyncing the data directory; 0.3 s the first time, which syncs the fresh copy;
// 0.08 to 0.1 s with fsync off); Stop() 50 to 70 ms; Restart() after Stop() about 0.1 s.
#ifndef KEYGATE_TESTS_POSTGRES_SERVER_H_
#define KEYGATE_TESTS_POSTGRES_SERVER_H_

#include <dirent.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "process_util.h"

#ifndef KEYGATE_POSTGRES_SERVER_NO_CATCH
#include "catch.h"
#endif

namespace keygate::testing {

namespace postgres_internal {

inline bool Executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

inline bool HasServerBinaries(const std::string& bindir) {
  return Executable(bindir + "/initdb") && Executable(bindir + "/postgres") &&
         Executable(bindir + "/psql");
}

// The directory of initdb, postgres and psql, or "" when there is none.
inline std::string FindBinDir() {
  if (const char* e = std::getenv("KEYGATE_PG_BINDIR"); e != nullptr && *e != '\0') {
    return HasServerBinaries(e) ? std::string(e) : std::string();
  }
  if (HasServerBinaries("/usr/lib/postgresql/15/bin")) return "/usr/lib/postgresql/15/bin";
  std::vector<std::pair<int, std::string>> found;  // (major version, bin dir)
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    int major = 0;
    const std::string bin = entry.path().string() + "/bin";
    if (absl::SimpleAtoi(entry.path().filename().string(), &major) && HasServerBinaries(bin)) {
      found.emplace_back(major, bin);
    }
  }
  if (found.empty()) return "";
  return std::max_element(found.begin(), found.end())->second;
}

// Whom the server processes run as: this process's user, or (under root) postgres.
struct RunAs {
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string setpriv;

  // `argv` run as that user.
  std::vector<std::string> Wrap(std::vector<std::string> argv) const {
    if (!switch_user) return argv;
    std::vector<std::string> wrapped = {setpriv, absl::StrCat("--reuid=", uid),
                                        absl::StrCat("--regid=", gid), "--clear-groups", "--"};
    wrapped.insert(wrapped.end(), argv.begin(), argv.end());
    return wrapped;
  }
  // Hands `path` to that user (a no-op without a switch).
  absl::Status Own(const std::string& path) const {
    if (switch_user && ::chown(path.c_str(), uid, gid) != 0) {
      return absl::InternalError(absl::StrCat("chown postgres ", path, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
};

inline absl::StatusOr<RunAs> FindRunAs() {
  RunAs r;
  if (::geteuid() != 0) return r;
  const passwd* pw = ::getpwnam("postgres");
  if (pw == nullptr) {
    return absl::NotFoundError(
        "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as (Debian: "
        "install postgresql-15, which creates it; scripts/setup.sh does)");
  }
  for (const char* p : {"/usr/bin/setpriv", "/bin/setpriv"}) {
    if (Executable(p)) r.setpriv = p;
  }
  if (r.setpriv.empty()) {
    return absl::NotFoundError(
        "setpriv not found (Debian: util-linux), needed to run PostgreSQL "
        "as 'postgres' under root");
  }
  r.switch_user = true;
  r.uid = pw->pw_uid;
  r.gid = pw->pw_gid;
  return r;
}

// Runs `argv` to its end with its output appended to `log`; the status names `what` and holds
// the log's end when it fails.
inline absl::Status Run(const std::vector<std::string>& argv, const std::string& log,
                        const std::string& cwd, std::string_view what) {
  const pid_t pid = SpawnProcess(argv, log, "", cwd);
  if (pid < 0) return absl::UnavailableError(absl::StrCat("cannot run ", argv[0]));
  const int status = WaitProcess(pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat(std::string(what), " failed (wait status ", status, "): ", FileTail(log)));
}

// A fresh directory "<$TMPDIR or /tmp>/keygate-<stem>-XXXXXX", mode 0755, owned by `as`.
// Falls back to /tmp when the server's socket path would not fit sockaddr_un, and under root
// when postgres could not reach a directory in $TMPDIR.
inline absl::StatusOr<std::string> MakeTempDir(std::string_view stem, const RunAs& as) {
  const char* env = std::getenv("TMPDIR");
  std::string base = env != nullptr && *env != '\0' ? env : "/tmp";
  std::string tmpl = absl::StrCat(base, "/keygate-", std::string(stem), "-XXXXXX");
  bool fits = tmpl.size() + sizeof("/.s.PGSQL.5432.lock") <= sizeof(sockaddr_un::sun_path);
  if (fits && as.switch_user) {
    // Every ancestor must let postgres through.
    for (std::filesystem::path p = base; p.has_relative_path(); p = p.parent_path()) {
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0 || (st.st_mode & S_IXOTH) == 0) fits = false;
    }
  }
  if (!fits) tmpl = absl::StrCat("/tmp/keygate-", std::string(stem), "-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("mkdtemp ", tmpl, ": ", std::strerror(errno)));
  }
  if (::chmod(tmpl.c_str(), 0755) != 0) {
    return absl::InternalError(absl::StrCat("chmod ", tmpl, ": ", std::strerror(errno)));
  }
  if (absl::Status st = as.Own(tmpl); !st.ok()) return st;
  return tmpl;
}

// The initdb'd cluster that every server of this process copies (initdb takes ten times as long
// as the copy). Removed at exit.
class ClusterTemplate {
 public:
  static absl::StatusOr<std::string> DataDir(const std::string& bindir, const RunAs& as) {
    static ClusterTemplate t;
    if (t.bindir_ != bindir || ::access((t.dir_ + "/data/PG_VERSION").c_str(), R_OK) != 0) {
      t.Remove();
      absl::StatusOr<std::string> dir = MakeTempDir("pg-template", as);
      if (!dir.ok()) return dir.status();
      t.dir_ = *dir;
      t.owner_ = ::getpid();
      const std::string data = t.dir_ + "/data";
      // -N: nothing is fsynced here; a server with fsync on syncs the data directory itself
      // when it recovers from a crash.
      if (absl::Status st = Run(as.Wrap({bindir + "/initdb", "-D", data, "-U", "keygate",
                                         "--auth=trust", "-E", "UTF8", "--locale=C", "-N"}),
                                t.dir_ + "/initdb.log", t.dir_, "initdb");
          !st.ok()) {
        t.Remove();
        return st;
      }
      t.bindir_ = bindir;
    }
    return t.dir_ + "/data";
  }

  ~ClusterTemplate() { Remove(); }

 private:
  void Remove() {
    if (dir_.empty()) return;
    std::error_code ec;
    // A forked child that exits leaves the template to its parent.
    if (owner_ == ::getpid()) std::filesystem::remove_all(dir_, ec);
    dir_.clear();
    bindir_.clear();
  }

  std::string bindir_;
  std::string dir_;
  pid_t owner_ = -1;
};

// The pids of the live (not zombie) processes descended from `root`, read from /proc.
inline std::vector<pid_t> LiveDescendants(pid_t root) {
  std::multimap<pid_t, std::pair<pid_t, char>> children;  // ppid -> (pid, state)
  if (DIR* proc = ::opendir("/proc"); proc != nullptr) {
    while (const dirent* e = ::readdir(proc)) {
      int pid = 0;
      if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
      const std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
      const std::size_t close = stat.rfind(')');
      if (close == std::string::npos) continue;
      const std::vector<std::string> f =
          absl::StrSplit(stat.substr(close + 1), ' ', absl::SkipEmpty());
      int ppid = 0;
      if (f.size() < 2 || !absl::SimpleAtoi(f[1], &ppid)) continue;
      children.emplace(ppid, std::make_pair(pid, f[0].empty() ? '?' : f[0][0]));
    }
    ::closedir(proc);
  }
  std::vector<pid_t> live;
  std::vector<pid_t> todo = {root};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    const auto [lo, hi] = children.equal_range(p);
    for (auto it = lo; it != hi; ++it) {
      if (it->second.second != 'Z' && it->second.second != 'X') live.push_back(it->second.first);
      todo.push_back(it->second.first);
    }
  }
  return live;
}

// The state letter of `pid` in /proc ('T' stopped, 'Z' zombie), or '\0' when it is gone.
inline char ProcessState(pid_t pid) {
  const std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  const std::size_t close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? '\0' : stat[close + 2];
}

// "%2Ftmp%2Fx" for "/tmp/x": everything but RFC 3986's unreserved characters is escaped.
inline std::string PercentEncode(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out += c;
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      const auto u = static_cast<unsigned char>(c);
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xF];
    }
  }
  return out;
}

}  // namespace postgres_internal

// PostgresServer::Start()'s options.
struct PostgresServerOptions {
  // fsync stays on by default so that the server writes as production does: commits wait for
  // the WAL on disk, what a benchmark times, and crash recovery syncs the data directory. A
  // Kill() alone would not tell (the page cache outlives the processes), but a test of crash
  // durability should not rest on a setting PostgreSQL documents as unsafe. Turn it off for
  // speed where the test asserts nothing about durability.
  bool fsync = true;
  int max_connections = 50;
  // More settings, ("work_mem", "4MB"), passed as -c name=value after ours (they win).
  std::vector<std::pair<std::string, std::string>> settings;
  // initdb, postgres, psql; "": $KEYGATE_PG_BINDIR, else /usr/lib/postgresql/15/bin, else the
  // newest /usr/lib/postgresql/*/bin.
  std::string bindir;
};

// One PostgreSQL server (postmaster) on a Unix socket in its own temporary directory, owning
// the directory and every server process. Not thread-safe.
class PostgresServer {
 public:
  static constexpr int kPort = 5432;  // the socket's name only: no TCP, the directory is private

  using Options = PostgresServerOptions;

  // Creates a cluster (role `keygate`, trust authentication, UTF8, C locale) in a new temporary
  // directory, starts it and waits until it accepts connections.
  // Errors: kNotFound (no PostgreSQL binaries, or under root no `postgres` user or setpriv),
  // kUnavailable (initdb or the server failed; the message holds the end of its log), kInternal
  // (the temporary directory could not be prepared).
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start(Options options = {}) {
    std::string bindir = options.bindir.empty() ? postgres_internal::FindBinDir() : options.bindir;
    if (bindir.empty() || !postgres_internal::HasServerBinaries(bindir)) {
      return absl::NotFoundError(absl::StrCat(
          "PostgreSQL server binaries (initdb, postgres, psql) not found in ",
          options.bindir.empty() ? "$KEYGATE_PG_BINDIR or /usr/lib/postgresql/*/bin" : bindir,
          " (Debian: postgresql-15 postgresql-contrib libpq-dev, installed by scripts/setup.sh)"));
    }
    absl::StatusOr<postgres_internal::RunAs> as = postgres_internal::FindRunAs();
    if (!as.ok()) return as.status();
    absl::StatusOr<std::string> templ = postgres_internal::ClusterTemplate::DataDir(bindir, *as);
    if (!templ.ok()) return templ.status();
    absl::StatusOr<std::string> dir = postgres_internal::MakeTempDir("pg", *as);
    if (!dir.ok()) return dir.status();
    std::unique_ptr<PostgresServer> s(
        new PostgresServer(std::move(bindir), *std::move(as), *std::move(dir), std::move(options)));
    // cp -a keeps the owner (postgres) and the data directory's mode 0700.
    if (absl::Status st =
            postgres_internal::Run({"/bin/cp", "-a", *templ, s->data_dir()}, s->dir_ + "/cp.log",
                                   s->dir_, "copying the cluster");
        !st.ok()) {
      return st;
    }
    if (absl::Status st = s->Launch(); !st.ok()) return st;
    return s;
  }

  ~PostgresServer() {
    Kill();
    RemoveSharedMemory();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // A libpq URI for `database` as role keygate:
  // "postgresql:///<db>?host=<socket directory>&port=5432&user=keygate", percent-encoded.
  std::string url(std::string_view database = "postgres") const {
    return absl::StrCat("postgresql:///", postgres_internal::PercentEncode(database),
                        "?host=", postgres_internal::PercentEncode(dir_), "&port=", kPort,
                        "&user=keygate");
  }
  // The temporary directory: socket, logs, and the cluster in data/.
  const std::string& dir() const { return dir_; }
  std::string data_dir() const { return dir_ + "/data"; }
  std::string socket_path() const { return absl::StrCat(dir_, "/.s.PGSQL.", kPort); }
  std::string log_path() const { return dir_ + "/postgres.log"; }
  // The postmaster's pid, or -1 when it is not running.
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // CREATE DATABASE `name` (owned by keygate). Errors: as Psql().
  absl::Status CreateDatabase(std::string_view name) {
    std::string quoted = "\"";
    for (const char c : name) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    quoted += '"';
    return Psql(absl::StrCat("CREATE DATABASE ", quoted)).status();
  }

  // Runs `sql` with psql in `database` and returns what it printed (unaligned, tuples only:
  // "1" for "select 1", rows one a line) without trailing whitespace.
  // Errors: kUnavailable (psql could not connect or run), kInvalidArgument (the SQL failed),
  // kDeadlineExceeded (no answer within 60 s, as while Pause()d: psql is killed); the message
  // holds the end of psql's stderr.
  absl::StatusOr<std::string> Psql(std::string_view sql, std::string_view database = "postgres") {
    // psql runs as this process's user: the tests connect the same way, through the socket.
    const std::string out = dir_ + "/psql.out";
    const std::string err = dir_ + "/psql.err";
    ::unlink(out.c_str());
    ::unlink(err.c_str());
    const pid_t p = SpawnProcess({bindir_ + "/psql", "-X", "-A", "-t", "-q", "-v",
                                  "ON_ERROR_STOP=1", "-d", url(database), "-c", std::string(sql)},
                                 out, err, dir_);
    if (p < 0) return absl::UnavailableError(absl::StrCat("cannot run ", bindir_, "/psql"));
    int status = 0;
    if (!WaitProcessFor(p, absl::Seconds(60), &status)) {
      ::kill(p, SIGKILL);
      WaitProcess(p);
      return absl::DeadlineExceededError(
          absl::StrCat("psql got no answer within 60 s: ", FileTail(err)));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      std::string result = ReadFileOrEmpty(out);
      absl::StripTrailingAsciiWhitespace(&result);
      return result;
    }
    const std::string message = absl::StrCat("psql (wait status ", status, "): ", FileTail(err));
    if (WIFEXITED(status) && WEXITSTATUS(status) != 2 && WEXITSTATUS(status) != 127) {
      return absl::InvalidArgumentError(message);
    }
    return absl::UnavailableError(message);
  }

  // A crash: SIGKILL to the postmaster and every process under it (backends, checkpointer, ...),
  // which are first kept from forking by stopping the postmaster; returns when none is left and
  // the postmaster is reaped. Shared memory and postmaster.pid stay behind, as after a crash.
  void Kill() {
    if (pid_ <= 0) return;
    StopPostmaster();
    // A child may fork (archive_command, ...) between the listing and its kill: list again.
    for (int round = 0; round < 100; ++round) {
      const std::vector<pid_t> live = postgres_internal::LiveDescendants(pid_);
      if (live.empty()) break;
      for (const pid_t p : live) ::kill(p, SIGKILL);
      absl::SleepFor(absl::Microseconds(200));
    }
    ::kill(pid_, SIGKILL);
    WaitProcess(pid_);
    pid_ = -1;
    paused_ = false;
  }

  // Starts the server on the same data directory (after Kill(): crash recovery; after Stop(): a
  // clean start) and waits until it accepts connections; a running server is first stopped as
  // Stop() does.
  // Errors: kUnavailable (it did not come up; the message holds the end of its log).
  absl::Status Restart() {
    if (absl::Status st = Stop(); !st.ok()) return st;
    return Launch();
  }

  // A clean fast shutdown (as pg_ctl stop -m fast: SIGINT to the postmaster, which rolls back
  // open transactions, checkpoints and exits). Waits up to 60 s, then kills.
  // Errors: kDeadlineExceeded (it did not stop in time and was killed).
  absl::Status Stop() {
    if (pid_ <= 0) return absl::OkStatus();
    Resume();
    ::kill(pid_, SIGINT);
    int status = 0;
    if (!WaitProcessFor(pid_, absl::Seconds(60), &status)) {
      Kill();
      return absl::DeadlineExceededError(
          absl::StrCat("PostgreSQL did not shut down within 60 s: ", FileTail(log_path())));
    }
    pid_ = -1;
    return absl::OkStatus();
  }

  // SIGSTOP to the postmaster and every process under it: a hung server that keeps its socket
  // and connections but answers nothing.
  void Pause() {
    if (pid_ <= 0 || paused_) return;
    StopPostmaster();
    // A second pass for a child that a child forked (archive_command) meanwhile.
    for (int round = 0; round < 2; ++round) {
      for (const pid_t p : postgres_internal::LiveDescendants(pid_)) ::kill(p, SIGSTOP);
    }
    paused_ = true;
  }
  // SIGCONT to them all: it answers again.
  void Resume() {
    if (pid_ <= 0 || !paused_) return;
    for (const pid_t p : postgres_internal::LiveDescendants(pid_)) ::kill(p, SIGCONT);
    ::kill(pid_, SIGCONT);
    paused_ = false;
  }

 private:
  PostgresServer(std::string bindir, postgres_internal::RunAs as, std::string dir, Options options)
      : bindir_(std::move(bindir)),
        as_(std::move(as)),
        dir_(std::move(dir)),
        options_(std::move(options)) {}

  // SIGSTOP to the postmaster, which then forks no more children. It takes effect
  // asynchronously: waits (up to 5 s) until /proc shows it stopped (or dead).
  void StopPostmaster() const {
    ::kill(pid_, SIGSTOP);
    for (const absl::Time deadline = absl::Now() + absl::Seconds(5); absl::Now() < deadline;) {
      const char state = postgres_internal::ProcessState(pid_);
      if (state == 'T' || state == 't' || state == 'Z' || state == '\0') return;
      absl::SleepFor(absl::Microseconds(200));
    }
  }

  // Starts the postmaster and waits until postmaster.pid says it is ready (as pg_ctl -w does,
  // polling every 2 ms where pg_ctl polls every 100 ms).
  absl::Status Launch() {
    std::vector<std::string> argv = {bindir_ + "/postgres", "-D", data_dir()};
    const std::vector<std::pair<std::string, std::string>> ours = {
        {"listen_addresses", ""},
        {"unix_socket_directories", dir_},
        {"port", absl::StrCat(kPort)},
        {"max_connections", absl::StrCat(options_.max_connections)},
        {"shared_buffers", "16MB"},
        {"fsync", options_.fsync ? "on" : "off"},
        // Dynamic shared memory in files under data/, not /dev/shm: a Kill() leaves nothing
        // outside the temporary directory but the System V segment the destructor removes.
        {"dynamic_shared_memory_type", "mmap"},
        {"huge_pages", "off"},
        {"log_min_messages", "warning"},
        {"log_checkpoints", "off"},
    };
    for (const auto& settings : {ours, options_.settings}) {
      for (const auto& [name, value] : settings) {
        argv.emplace_back("-c");
        argv.push_back(absl::StrCat(name, "=", value));
      }
    }
    pid_ = SpawnProcess(as_.Wrap(argv), log_path(), "", dir_);
    if (pid_ < 0) return absl::UnavailableError(absl::StrCat("cannot run ", argv[0]));
    const std::string pid_file = data_dir() + "/postmaster.pid";
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    for (;;) {
      // Line 1 the postmaster's pid, line 8 its status: a crashed server's file says "ready"
      // too, so the pid must be the new one.
      const std::vector<std::string> lines = absl::StrSplit(ReadFileOrEmpty(pid_file), '\n');
      int file_pid = 0;
      if (lines.size() >= 8 && absl::SimpleAtoi(lines[0], &file_pid) && file_pid == pid_ &&
          absl::StartsWith(lines[7], "ready")) {
        return absl::OkStatus();
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::UnavailableError(absl::StrCat("PostgreSQL exited at start (wait status ",
                                                   status, "): ", FileTail(log_path())));
      }
      if (absl::Now() > deadline) {
        Kill();
        return absl::UnavailableError(
            absl::StrCat("PostgreSQL was not ready within 60 s: ", FileTail(log_path())));
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
  }

  // After a Kill() the System V segment that PostgreSQL keeps as an interlock stays (a restart
  // would remove it); postmaster.pid's line 7 names it ("key shmid").
  void RemoveSharedMemory() const {
    if (pid_ > 0) return;
    const std::vector<std::string> lines =
        absl::StrSplit(ReadFileOrEmpty(data_dir() + "/postmaster.pid"), '\n');
    if (lines.size() < 7) return;
    const std::vector<std::string> f = absl::StrSplit(lines[6], ' ', absl::SkipEmpty());
    long key = 0;
    int shmid = 0;
    if (f.size() != 2 || !absl::SimpleAtoi(f[0], &key) || !absl::SimpleAtoi(f[1], &shmid)) {
      return;
    }
    shmid_ds ds{};
    if (::shmctl(shmid, IPC_STAT, &ds) == 0 && ds.shm_perm.__key == static_cast<key_t>(key) &&
        ds.shm_nattch == 0) {
      ::shmctl(shmid, IPC_RMID, nullptr);
    }
  }

  std::string bindir_;
  postgres_internal::RunAs as_;
  std::string dir_;
  Options options_;
  pid_t pid_ = -1;
  bool paused_ = false;
};

#ifndef KEYGATE_POSTGRES_SERVER_NO_CATCH
// A started server, or null after a warning when PostgreSQL is not installed outside CI (the
// caller returns: the test is skipped). Under CI a missing server fails the test case, and a
// server that does not start fails it everywhere.
inline std::unique_ptr<PostgresServer> StartPostgresOrSkip(PostgresServer::Options options = {}) {
  absl::StatusOr<std::unique_ptr<PostgresServer>> s = PostgresServer::Start(std::move(options));
  if (!s.ok() && absl::IsNotFound(s.status()) && !UnderCi()) {
    WARN("skipped: " << s.status().message()
                     << "; under CI (CI set and not 'false') this is a failure");
    SUCCEED("skipped: no PostgreSQL");
    return nullptr;
  }
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return *std::move(s);
}
#endif

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_POSTGRES_SERVER_H_
