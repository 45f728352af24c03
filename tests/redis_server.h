// tests/redis_server.h: a real redis-server for the Redis rate limiter's tests and benchmark,
// started on a Unix socket in a fresh temporary directory with no persistence, and driven the
// way an outage drives it: SIGSTOP (a hung server), SIGCONT, SIGKILL, a restart that comes back
// empty on the same socket.
//
//   std::unique_ptr<testing::RedisServer> redis = testing::StartRedisOrSkip();
//   if (redis == nullptr) return;  // not installed, outside CI: a warning, not a failure
//   options.url = redis->url();    // "unix:///tmp/keygate-redis-XXXXXX/redis.sock"
//   redis->Stop();                 // ... the limiter turns to its fallback
//
// Without redis-server ($KEYGATE_REDIS_SERVER, else redis-server in $PATH, /usr/sbin or
// /usr/bin) the tests skip with a warning outside CI and fail under CI ($CI set and not
// "false"), which must run them. Define KEYGATE_REDIS_SERVER_NO_CATCH before including this
// header to use RedisServer without Catch2 (the benchmark does).
//
// Also here: the sliding-window counts that the limiter's guarantees are stated in; SpawnProcess
// and the other process helpers are in process_util.h, which this header includes.
#ifndef KEYGATE_TESTS_REDIS_SERVER_H_
#define KEYGATE_TESTS_REDIS_SERVER_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "process_util.h"

#ifndef KEYGATE_REDIS_SERVER_NO_CATCH
#include "catch.h"
#endif

namespace keygate::testing {

// The redis-server to run, or "" when there is none.
inline std::string FindRedisServer() {
  const auto executable = [](const std::string& p) { return ::access(p.c_str(), X_OK) == 0; };
  if (const char* e = std::getenv("KEYGATE_REDIS_SERVER"); e != nullptr && *e != '\0') {
    return executable(e) ? std::string(e) : std::string();
  }
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::stringstream in(path);
    std::string dir;
    while (std::getline(in, dir, ':')) {
      if (!dir.empty()) dirs.push_back(dir);
    }
  }
  dirs.emplace_back("/usr/sbin");
  dirs.emplace_back("/usr/bin");
  for (const std::string& dir : dirs) {
    std::string candidate = dir + "/redis-server";
    if (executable(candidate)) return candidate;
  }
  return "";
}

// One redis-server on a Unix socket in its own temporary directory. Not thread-safe.
class RedisServer {
 public:
  // Starts redis-server (`binary`, "": FindRedisServer()) and waits until it answers PING.
  // Errors: kNotFound (no redis-server), kUnavailable (it did not start; the message holds the
  // end of its log).
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(std::string binary = "") {
    if (binary.empty()) binary = FindRedisServer();
    if (binary.empty()) {
      return absl::NotFoundError(
          "redis-server not found (Debian: redis-server, installed by scripts/setup.sh; or set "
          "KEYGATE_REDIS_SERVER)");
    }
    const char* env = std::getenv("TMPDIR");
    std::string tmpl =
        absl::StrCat(env != nullptr && *env != '\0' ? env : "/tmp", "/keygate-redis-XXXXXX");
    // A socket path must fit sockaddr_un (108 bytes); a long $TMPDIR falls back to /tmp.
    if (tmpl.size() + sizeof("/redis.sock") > sizeof(sockaddr_un::sun_path)) {
      tmpl = "/tmp/keygate-redis-XXXXXX";
    }
    if (::mkdtemp(tmpl.data()) == nullptr) {
      return absl::UnavailableError(absl::StrCat("mkdtemp ", tmpl, ": ", std::strerror(errno)));
    }
    std::unique_ptr<RedisServer> s(new RedisServer(std::move(binary), tmpl));
    if (absl::Status st = s->Launch(); !st.ok()) return st;
    return s;
  }

  ~RedisServer() {
    Kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // The limiter's url for this server.
  std::string url() const { return "unix://" + socket_; }
  const std::string& socket_path() const { return socket_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }

  // SIGSTOP: the server keeps its socket and connections but answers nothing.
  void Stop() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  // SIGCONT: it answers again, with everything it held.
  void Cont() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }
  // SIGKILL, then reaps it: connections are reset, the socket refuses.
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    WaitProcess(pid_);
    pid_ = -1;
    ::unlink(socket_.c_str());
  }
  // A new, empty server on the same socket (killing the running one first).
  absl::Status Restart() {
    Kill();
    return Launch();
  }

  // Sends one inline command ("DBSIZE", "KEYS keygate:*") on a new connection and returns the
  // raw reply (RESP), or "" when nothing came within `timeout`.
  std::string Query(std::string_view command,
                    absl::Duration timeout = absl::Milliseconds(500)) const {
    const int fd = Connect(socket_);
    if (fd < 0) return "";
    std::string reply;
    const std::string line = std::string(command) + "\r\n";
    if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size())) {
      const absl::Time deadline = absl::Now() + timeout;
      // A reply is complete when no more arrives for 20 ms after the first bytes.
      for (;;) {
        const absl::Duration left = deadline - absl::Now();
        if (left <= absl::ZeroDuration()) break;
        const int wait_ms =
            reply.empty() ? static_cast<int>(absl::ToInt64Milliseconds(left)) + 1 : 20;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, wait_ms) <= 0) break;
        char buf[4096];
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        reply.append(buf, static_cast<std::size_t>(n));
      }
    }
    ::close(fd);
    return reply;
  }
  bool Ping(absl::Duration timeout = absl::Milliseconds(200)) const {
    return Query("PING", timeout).rfind("+PONG\r\n", 0) == 0;
  }

 private:
  RedisServer(std::string binary, std::string dir)
      : binary_(std::move(binary)), dir_(std::move(dir)), socket_(dir_ + "/redis.sock") {}

  static int Connect(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof addr.sun_path));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  absl::Status Launch() {
    const std::string log = dir_ + "/redis.log";
    const std::vector<std::string> argv = {
        binary_, "--port", "0",  "--unixsocket", socket_,  "--unixsocketperm",
        "700",   "--save", "",   "--appendonly", "no",     "--daemonize",
        "no",    "--dir",  dir_, "--loglevel",   "warning"};
    pid_ = SpawnProcess(argv, log);
    if (pid_ < 0) return absl::UnavailableError(absl::StrCat("cannot run ", binary_));
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!Ping()) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::UnavailableError(
            absl::StrCat(binary_, " exited at start (status ", status, "): ", LogTail(log)));
      }
      if (absl::Now() > deadline) {
        Kill();
        return absl::UnavailableError(
            absl::StrCat(binary_, " did not answer PING within 10 s: ", LogTail(log)));
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return absl::OkStatus();
  }

  static std::string LogTail(const std::string& path) {
    const std::string all = ReadFileOrEmpty(path);
    return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
  }

  std::string binary_;
  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

#ifndef KEYGATE_REDIS_SERVER_NO_CATCH
// A started server, or null after a warning when redis-server is not installed outside CI (the
// caller returns: the test is skipped). Under CI a missing server fails the test case, and a
// server that does not start fails it everywhere.
inline std::unique_ptr<RedisServer> StartRedisOrSkip() {
  absl::StatusOr<std::unique_ptr<RedisServer>> s = RedisServer::Start();
  if (!s.ok() && absl::IsNotFound(s.status()) && !UnderCi()) {
    WARN("skipped: " << s.status().message()
                     << "; under CI (CI set and not 'false') this is a failure");
    SUCCEED("skipped: no redis-server");
    return nullptr;
  }
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return *std::move(s);
}
#endif

// ---------------------------------------------------------------------------------------------
// Sliding windows over admission times (nanoseconds, sorted)
// ---------------------------------------------------------------------------------------------

// Admissions in [from, to).
inline std::size_t CountIn(const std::vector<std::int64_t>& sorted, std::int64_t from,
                           std::int64_t to) {
  const auto lo = std::lower_bound(sorted.begin(), sorted.end(), from);
  const auto hi = std::lower_bound(lo, sorted.end(), to);
  return static_cast<std::size_t>(hi - lo);
}

struct WindowCount {
  std::size_t count = 0;
  std::int64_t start_ns = 0;  // where the window [start, start + width) begins
};

// An admission the limiter decided somewhere in [stamp, done] (the caller's `now_ns`, and the
// time its answer was back: a thread held up between the two widens the interval).
struct Decided {
  std::int64_t stamp = 0;
  std::int64_t done = 0;
  bool operator<(const Decided& o) const { return stamp < o.stamp; }
};

// Admissions certainly decided within [from, to): stamp >= from and done < to.
inline std::size_t CountDecidedIn(const std::vector<Decided>& by_stamp, std::int64_t from,
                                  std::int64_t to) {
  std::size_t n = 0;
  for (auto it = std::lower_bound(by_stamp.begin(), by_stamp.end(), Decided{from, from});
       it != by_stamp.end() && it->stamp < to; ++it) {
    n += it->done < to ? 1 : 0;
  }
  return n;
}

// The most admissions certainly decided in any window [s, s + width) with `from` <= s and
// s + width <= `to` (windows starting at a stamp, or at `from`, suffice).
// The Redis limiter's bound counts such calls: one stamped inside a lease and held up past the
// window's end still spends that lease, so counting stamps alone would charge a window with up
// to one request per calling thread beyond it.
inline WindowCount MaxDecidedWindow(const std::vector<Decided>& by_stamp, std::int64_t from,
                                    std::int64_t to, std::int64_t width) {
  WindowCount best{CountDecidedIn(by_stamp, from, from + width), from};
  for (auto it = std::lower_bound(by_stamp.begin(), by_stamp.end(), Decided{from, from});
       it != by_stamp.end() && it->stamp + width <= to; ++it) {
    const std::size_t n = CountDecidedIn(by_stamp, it->stamp, it->stamp + width);
    if (n > best.count) best = {n, it->stamp};
  }
  return best;
}

// MaxDecidedWindow over admissions known by one time each.
inline WindowCount MaxWindow(const std::vector<std::int64_t>& sorted, std::int64_t from,
                             std::int64_t to, std::int64_t width) {
  std::vector<Decided> decided;
  decided.reserve(sorted.size());
  for (const std::int64_t t : sorted) decided.push_back({t, t});
  return MaxDecidedWindow(decided, from, to, width);
}

// The fewest admissions in a window [s, s + width) with s on a grid of `step` from `from` and
// s + width <= `to`.
inline WindowCount MinWindow(const std::vector<std::int64_t>& sorted, std::int64_t from,
                             std::int64_t to, std::int64_t width, std::int64_t step) {
  WindowCount worst{SIZE_MAX, from};
  for (std::int64_t s = from; s + width <= to; s += step) {
    const std::size_t n = CountIn(sorted, s, s + width);
    if (n < worst.count) worst = {n, s};
  }
  if (worst.count == SIZE_MAX) worst.count = 0;
  return worst;
}

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_REDIS_SERVER_H_
