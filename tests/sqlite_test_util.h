// Helpers shared by the SQLite store's tests: temporary directories and
// stores opened in them.
#ifndef KEYGATE_TESTS_SQLITE_TEST_UTIL_H_
#define KEYGATE_TESTS_SQLITE_TEST_UTIL_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite/schema.h"

namespace keygate::testing {

// A fresh directory under `base` (empty: $TMPDIR, or /tmp), removed with
// everything in it when destroyed.
class TempDir {
 public:
  explicit TempDir(const std::string& base = "") {
    const char* env = std::getenv("TMPDIR");
    const std::string dir = !base.empty()                    ? base
                            : env != nullptr && *env != '\0' ? std::string(env)
                                                             : "/tmp";
    std::string tmpl = absl::StrCat(dir, "/keygate-sqlite-XXXXXX");
    char* made = ::mkdtemp(tmpl.data());
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

// A store on a new file in its own temporary directory; the directory is
// removed when the store is destroyed.
inline std::shared_ptr<SqliteKeyStore> OpenTempSqliteStore(SqliteOptions options = {}) {
  auto dir = std::make_shared<TempDir>();
  options.path = dir->File("keygate.db");
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(options);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  // Keep the directory alive exactly as long as the store: the aliasing
  // constructor shares ownership of a pair (dir, store).
  auto both =
      std::make_shared<std::pair<std::shared_ptr<SqliteKeyStore>, std::shared_ptr<TempDir>>>(*store,
                                                                                             dir);
  store->reset();
  return std::shared_ptr<SqliteKeyStore>(both, both->first.get());
}

inline std::shared_ptr<SqliteKeyStore> OpenMemorySqliteStore() {
  SqliteOptions options;
  options.path = ":memory:";
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(options);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  return *store;
}

// Runs SQL on `path` through a connection of its own (not the store's).
inline void RawSqlExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  INFO((err != nullptr ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

// A file as schema version 1 left it (the crash and power-loss tests migrate
// it under fire): three keys (one revoked and used, one in a roll's grace
// period) and a deleted key's tombstone; LastSequence 6.
inline void WriteSchemaV1File(const std::string& path) {
  RawSqlExec(path, internal::kMigrations[0]);
  RawSqlExec(path, absl::StrCat("PRAGMA user_version = 1; PRAGMA application_id = ",
                                SqliteKeyStore::kApplicationId));
  RawSqlExec(path, R"sql(
    INSERT INTO keys(pk, id, name, name_lower, description, owner, kind, environment, scopes,
      state, created_us, updated_us, expires_us, last_used_us, rate_limit_rate,
      rate_limit_period_us, rate_limit_burst, webhook_url, accounts, metadata, digest, hint,
      previous_digest, previous_hint, previous_valid_until_us, version, change_seq)
    VALUES
      (1, 'key_00000000old1aaaaaaaaaa', 'Old One', 'old one', 'v1', 'alice', 2, 'production',
       '["read:all"]', 1, 1000000, 1000000, NULL, NULL, NULL, NULL, NULL, '', '[]',
       '{"team":"pay"}', zeroblob(32), 'kg_live_...aaaa', NULL, NULL, NULL, 1, 1),
      (4, 'key_00000000old2bbbbbbbbbb', 'Old Two', 'old two', '', 'bob', 2, 'preview',
       '["read:all"]', 2, 2000000, 3000000, NULL, 2500000, NULL, NULL, NULL, '', '[]', '{}',
       X'2222222222222222222222222222222222222222222222222222222222222222', 'kg_test_...bbbb',
       NULL, NULL, NULL, 2, 5),
      (6, 'key_00000000old3cccccccccc', 'Old Three', 'old three', '', 'carol', 2, 'production',
       '["read:all"]', 1, 2000000, 3000000, NULL, NULL, NULL, NULL, NULL, '', '[]', '{}',
       X'3333333333333333333333333333333333333333333333333333333333333333', 'kg_live_...cccc',
       X'3434343434343434343434343434343434343434343434343434343434343434', 'kg_live_...dddd',
       9000000000000000, 2, 6);
    INSERT INTO digests(digest, key_pk, slot) VALUES
      (zeroblob(32), 1, 0),
      (X'2222222222222222222222222222222222222222222222222222222222222222', 4, 0),
      (X'3333333333333333333333333333333333333333333333333333333333333333', 6, 0),
      (X'3434343434343434343434343434343434343434343434343434343434343434', 6, 1);
    INSERT INTO changes(sequence, key_id, key_pk) VALUES
      (1, 'key_00000000old1aaaaaaaaaa', 1), (3, 'key_00000000goneaaaaaaaaaa', 2),
      (5, 'key_00000000old2bbbbbbbbbb', 4), (6, 'key_00000000old3cccccccccc', 6);
    INSERT INTO key_names(rowid, name_key) VALUES
      (1, 'old one' || char(1)), (4, 'old two' || char(1)), (6, 'old three' || char(1));
  )sql");
}

// Polls `pred` every millisecond until it holds or `timeout` passes.
template <typename Pred>
bool WaitForCondition(Pred pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    ::usleep(1000);
  }
  return true;
}

// A child process with its stdout (and optionally stdin) on pipes.
class Child {
 public:
  // `env` entries "NAME=value" are added to (or replace in) this process's
  // environment; "NAME" alone removes NAME. stderr goes to `stderr_path`
  // (empty: inherited).
  Child(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
        const std::string& stderr_path = "", bool pipe_stdin = false, const std::string& cwd = "") {
    int out[2];
    int in[2] = {-1, -1};
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    if (pipe_stdin) REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    if (pipe_stdin) {
      posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    } else {
      posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    }
    if (!stderr_path.empty()) {
      posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, stderr_path.c_str(),
                                       O_WRONLY | O_CREAT | O_TRUNC, 0600);
    }
    if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    std::vector<std::string> envs = MergedEnvironment(env);
    std::vector<char*> cargv;
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    std::vector<char*> cenv;
    for (const std::string& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
    cenv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    if (pipe_stdin) ::close(in[0]);
    INFO("spawning " << argv[0]);
    REQUIRE(rc == 0);
    out_fd_ = out[0];
    in_fd_ = in[1];
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
    CloseStdin();
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }

  void WriteStdin(std::string_view data) {
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(in_fd_, data.data() + done, data.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
  }
  void CloseStdin() {
    if (in_fd_ >= 0) ::close(in_fd_);
    in_fd_ = -1;
  }

  // Reads what is available within `timeout_ms` (-1: until EOF); returns
  // false at EOF.
  bool ReadSome(std::string* into, int timeout_ms) {
    pollfd p{out_fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r <= 0) return true;
    char buf[65536];
    const ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n <= 0) return false;
    into->append(buf, static_cast<std::size_t>(n));
    return true;
  }
  std::string ReadAll() {
    std::string out;
    while (ReadSome(&out, -1)) {
    }
    return out;
  }

  // Waits for exit; returns the wait status.
  int Wait() {
    if (pid_ <= 0) return status_;
    while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status_;
  }

  static std::vector<std::string> MergedEnvironment(const std::vector<std::string>& env) {
    std::vector<std::string> out;
    auto name_of = [](std::string_view e) { return e.substr(0, e.find('=')); };
    for (char** e = ::environ; *e != nullptr; ++e) {
      const std::string_view cur(*e);
      bool replaced = false;
      for (const std::string& o : env) replaced = replaced || name_of(o) == name_of(cur);
      if (!replaced) out.emplace_back(cur);
    }
    for (const std::string& o : env) {
      if (o.find('=') != std::string::npos) out.push_back(o);
    }
    return out;
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  int out_fd_ = -1;
  int in_fd_ = -1;
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_SQLITE_TEST_UTIL_H_
