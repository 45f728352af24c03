// tests/process_util.h: running the helper processes of the tests that drive real servers
// (redis_server.h, postgres_server.h): spawn one with its output in a file, wait for it, read the
// file back, and tell whether we run under CI.
//
//   const pid_t pid = testing::SpawnProcess({"/usr/bin/redis-server", "--port", "0"}, log);
//   ...
//   const int status = testing::WaitProcess(pid);
//
// No Catch2 and no keygate dependency: benchmarks include it too. Linux only.
#ifndef KEYGATE_TESTS_PROCESS_UTIL_H_
#define KEYGATE_TESTS_PROCESS_UTIL_H_

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace keygate::testing {

// True under CI: $CI set, non-empty and not "false" (as CMakeLists.txt and scripts/test.sh).
inline bool UnderCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && *ci != '\0' && std::string_view(ci) != "false";
}

// Starts `argv` with stdin from /dev/null and stdout and stderr appended to `log_path` ("":
// inherited). A non-empty `err_path` takes stderr apart from stdout; a non-empty `cwd` is the
// process's working directory. Returns the pid, or -1.
inline pid_t SpawnProcess(const std::vector<std::string>& argv, const std::string& log_path,
                          const std::string& err_path = "", const std::string& cwd = "") {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (!log_path.empty()) {
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  }
  if (!err_path.empty()) {
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
  }
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), ::environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// Waits for `pid` to exit; returns its wait status.
inline int WaitProcess(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Waits up to `timeout` for `pid` to exit. True (and its wait status in `status`) when it did.
inline bool WaitProcessFor(pid_t pid, absl::Duration timeout, int* status) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) return r == pid;
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
}

inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The last `max` bytes of the file at `path` (a log's end for an error message).
inline std::string FileTail(const std::string& path, std::size_t max = 2000) {
  const std::string all = ReadFileOrEmpty(path);
  return all.size() > max ? all.substr(all.size() - max) : all;
}

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_PROCESS_UTIL_H_
