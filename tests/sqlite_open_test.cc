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

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite_test_util.h"

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
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Open(o);
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
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Open(o);
  REQUIRE(store.ok());
  CHECK((*store)->CheckIntegrity().ok());
}

}  // namespace
}  // namespace keygate
