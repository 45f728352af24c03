// Cross-server revocation on one PostgreSQL database (issue 15): how long after a revoke returns
// the LAST of several servers refuses the key. Prints one JSON object on stdout.
//
//   postgres_revocation_bench [--trials N] [--poll-trials M] [--followers K]
//                             [--poll-interval-ms P] [--mode notify|poll|both]
//                             [--revoke-with auto|cli|manager] [--cli PATH]
//
// It starts its own PostgreSQL server (tests/postgres_server.h, fsync on) and K follower
// processes (this binary again, with --follower): each holds a PostgresKeyStore and a
// keygate::Verifier following its change feed, as a server does, and answers the driver over a
// pipe. One trial:
//   1. the driver creates a key (KeyManager on its own store), sends its token to every follower
//      and waits until each one's Verifier accepts it;
//   2. it waits a random delay (uniform in [0, 100 ms) with NOTIFY, [0, P) without, so that the
//      revoke falls at any phase of the followers' polling), then revokes the key: through the
//      keygate CLI (`keygate --db <url> revoke <id>`, a process of its own, timed until it
//      exits) or through KeyManager::Revoke in the driver;
//   3. each follower, which has been calling Verifier::VerifyToken every 100 us since it
//      accepted the key, writes the CLOCK_MONOTONIC time at which it first refused it; the
//      trial's latency is the latest of those times minus the time the revoke returned (a
//      follower that refused before the revoke returned counts as 0, and is counted).
// Modes: "notify" (PostgresOptions::listen = true: writes reach followers by LISTEN/NOTIFY) and
// "poll" (listen = false: followers learn of writes by polling every P ms; the Verifier polls at
// the same interval). Targets: notify p99 <= 100 ms; poll p99 <= P + 1 s.
//
// --revoke-with auto (the default) uses the CLI when this build has one that accepts a
// postgresql:// --db (it is tried once), else KeyManager; the JSON says which ("revoke_via").

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#define KEYGATE_POSTGRES_SERVER_NO_CATCH
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/postgres/postgres_key_store.h"
#include "keygate/secret.h"
#include "keygate/verifier.h"
#include "postgres_server.h"

namespace keygate {
namespace {

std::int64_t MonoNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "postgres_revocation_bench: %s\n", what.c_str());
  std::exit(1);
}

std::shared_ptr<const Deployment> BenchDeployment() {
  // The CLI's default deployment (no pepper): tokens it would print verify here.
  static const std::shared_ptr<const Deployment> d = [] {
    absl::StatusOr<std::shared_ptr<const Deployment>> made = Deployment::Create({});
    if (!made.ok()) Die(made.status().ToString());
    return *std::move(made);
  }();
  return d;
}

// ---------------------------------------------------------------------------
// Follower: a store and a Verifier; commands on stdin, answers on stdout
// ---------------------------------------------------------------------------
//   <- "watch <token>"   -> "accepted" once the Verifier accepts it (or "timeout")
//                        -> "refused <monotonic ns> <outcome>" once it no longer does
int FollowerMain(const std::string& url, bool listen, int poll_ms) {
  PostgresOptions o;
  o.url = url;
  o.listen = listen;
  o.poll_interval = absl::Milliseconds(poll_ms);
  absl::StatusOr<std::unique_ptr<PostgresKeyStore>> store = PostgresKeyStore::Create(o);
  if (!store.ok()) Die(absl::StrCat("follower store: ", store.status().ToString()));
  VerifierOptions vo;
  vo.deployment = BenchDeployment();
  vo.store = std::shared_ptr<PostgresKeyStore>(*std::move(store));
  vo.environment = "production";
  vo.follow_changes = true;
  vo.poll_interval = absl::Milliseconds(poll_ms);
  vo.record_usage = false;
  absl::StatusOr<std::unique_ptr<Verifier>> v = Verifier::Create(std::move(vo));
  if (!v.ok()) Die(absl::StrCat("follower verifier: ", v.status().ToString()));
  std::printf("ready\n");
  std::fflush(stdout);
  const Requirement any = Requirement::AnyValidKey();
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.rfind("watch ", 0) != 0) Die("follower: unknown command");
    const std::string token = line.substr(6);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while ((*v)->VerifyToken(token, any).outcome != Outcome::kOk) {
      if (absl::Now() > deadline) {
        std::printf("timeout\n");
        std::fflush(stdout);
        return 1;
      }
      absl::SleepFor(absl::Milliseconds(1));
    }
    std::printf("accepted\n");
    std::fflush(stdout);
    Outcome out = Outcome::kOk;
    while ((out = (*v)->VerifyToken(token, any).outcome) == Outcome::kOk) {
      if (absl::Now() > deadline) {
        std::printf("timeout\n");
        std::fflush(stdout);
        return 1;
      }
      absl::SleepFor(absl::Microseconds(100));
    }
    std::printf("refused %lld %s\n", static_cast<long long>(MonoNs()),
                std::string(OutcomeName(out)).c_str());
    std::fflush(stdout);
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

class Follower {
 public:
  Follower(const std::string& self, const std::string& url, bool listen, int poll_ms) {
    int in[2];
    int out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) Die("pipe");
    pid_ = ::fork();
    if (pid_ < 0) Die("fork");
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      const std::vector<std::string> args = {self, "--follower", url, listen ? "1" : "0",
                                             std::to_string(poll_ms)};
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(self.c_str(), argv.data());
      std::_Exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~Follower() {
    if (to_ >= 0) ::close(to_);  // EOF: the follower exits
    int status = 0;
    if (!testing::WaitProcessFor(pid_, absl::Seconds(10), &status)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    ::close(from_);
  }
  Follower(const Follower&) = delete;
  Follower& operator=(const Follower&) = delete;

  void Send(const std::string& line) {
    const std::string l = line + "\n";
    if (::write(to_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) Die("follower write");
  }
  // The next line, or dies at `deadline`.
  std::string ReadLine(absl::Time deadline) {
    for (;;) {
      const std::size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      pollfd p{from_, POLLIN, 0};
      const auto ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (ms <= 0 || ::poll(&p, 1, static_cast<int>(ms)) <= 0) Die("a follower did not answer");
      char chunk[512];
      const ssize_t n = ::read(from_, chunk, sizeof chunk);
      if (n <= 0) Die("a follower exited");
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
  std::string buf_;
};

// Runs `argv` with stdout and stderr in `log`; its exit status (-1 if it did not exit).
int RunQuiet(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t p = testing::SpawnProcess(argv, log);
  if (p < 0) return -1;
  const int status = testing::WaitProcess(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Summary {
  std::string mode;
  int trials = 0;
  std::vector<double> latency_ms;     // revoke returned -> last follower refused
  std::vector<double> from_start_ms;  // revoke started -> last follower refused
  std::vector<double> revoke_ms;      // the revoke itself (the CLI process, or the call)
  int before_return = 0;              // followers that refused before the revoke returned
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

std::string Stats(const std::vector<double>& v) {
  double sum = 0;
  for (const double x : v) sum += x;
  return absl::StrCat("{\"p50\": ", Percentile(v, 0.5), ", \"p99\": ", Percentile(v, 0.99),
                      ", \"max\": ", Percentile(v, 1.0), ", \"min\": ", Percentile(v, 0.0),
                      ", \"mean\": ", v.empty() ? 0 : sum / static_cast<double>(v.size()), "}");
}

struct Config {
  int trials = 100;
  int poll_trials = 20;
  int followers = 3;
  int poll_ms = 1000;
  std::string mode = "both";
  std::string revoke_with = "auto";
  std::string cli;
};

Summary RunMode(const Config& cfg, const std::string& self, const std::string& url,
                KeyManager& manager, bool use_cli, const std::string& log, bool listen) {
  Summary s;
  s.mode = listen ? "notify" : "poll";
  s.trials = listen ? cfg.trials : cfg.poll_trials;
  std::vector<std::unique_ptr<Follower>> followers;
  for (int i = 0; i < cfg.followers; ++i) {
    followers.push_back(std::make_unique<Follower>(self, url, listen, cfg.poll_ms));
  }
  for (auto& f : followers) {
    if (f->ReadLine(absl::Now() + absl::Seconds(60)) != "ready") Die("a follower did not start");
  }
  std::mt19937_64 rng(listen ? 1 : 2);
  const int max_delay_us = listen ? 100'000 : cfg.poll_ms * 1000;
  for (int t = 0; t < s.trials; ++t) {
    CreateKeyRequest req;
    req.name = absl::StrCat("revocation ", s.mode, " ", t);
    req.owner = "bench";
    req.environment = "production";
    req.scopes = {"read:all"};
    absl::StatusOr<CreatedKey> key = manager.Create(req, "bench");
    if (!key.ok()) Die(key.status().ToString());
    const std::string token(key->token.Reveal(InsecureSecretAccess::Get()));
    for (auto& f : followers) f->Send("watch " + token);
    for (auto& f : followers) {
      if (f->ReadLine(absl::Now() + absl::Seconds(60)) != "accepted") Die("not accepted");
    }
    absl::SleepFor(absl::Microseconds(static_cast<std::int64_t>(rng() % max_delay_us)));
    const std::int64_t start = MonoNs();
    if (use_cli) {
      if (RunQuiet({cfg.cli, "--db", url, "--actor", "bench", "revoke", key->record.id}, log) !=
          0) {
        Die(absl::StrCat("the CLI's revoke failed: see ", log));
      }
    } else if (absl::StatusOr<KeyRecord> r = manager.Revoke(key->record.id, "bench"); !r.ok()) {
      Die(r.status().ToString());
    }
    const std::int64_t returned = MonoNs();
    std::int64_t last = 0;
    for (auto& f : followers) {
      const std::string line = f->ReadLine(absl::Now() + absl::Seconds(60));
      std::int64_t at = 0;
      const std::size_t sp = line.find(' ', 8);
      if (line.rfind("refused ", 0) != 0 || sp == std::string::npos ||
          !absl::SimpleAtoi(line.substr(8, sp - 8), &at)) {
        Die(absl::StrCat("unexpected answer: ", line));
      }
      if (at < returned) ++s.before_return;
      last = std::max(last, at);
    }
    s.latency_ms.push_back(static_cast<double>(std::max<std::int64_t>(0, last - returned)) / 1e6);
    s.from_start_ms.push_back(static_cast<double>(last - start) / 1e6);
    s.revoke_ms.push_back(static_cast<double>(returned - start) / 1e6);
  }
  return s;
}

int DriverMain(const Config& cfg, const std::string& self) {
  testing::PostgresServer::Options so;
  so.max_connections = 100;
  absl::StatusOr<std::unique_ptr<testing::PostgresServer>> pg =
      testing::PostgresServer::Start(std::move(so));
  if (!pg.ok()) Die(pg.status().ToString());
  if (absl::Status st = (*pg)->CreateDatabase("keys"); !st.ok()) Die(st.ToString());
  const std::string url = (*pg)->url("keys");
  const std::string log = (*pg)->dir() + "/cli.log";

  PostgresOptions o;
  o.url = url;
  absl::StatusOr<std::unique_ptr<PostgresKeyStore>> store = PostgresKeyStore::Create(o);
  if (!store.ok()) Die(store.status().ToString());
  KeyManager::Options mo;
  mo.deployment = BenchDeployment();
  mo.store = std::shared_ptr<PostgresKeyStore>(*std::move(store));
  absl::StatusOr<std::unique_ptr<KeyManager>> manager = KeyManager::Create(std::move(mo));
  if (!manager.ok()) Die(manager.status().ToString());

  bool use_cli = false;
  std::string cli_note;
  if (cfg.revoke_with != "manager") {
    if (cfg.cli.empty() || ::access(cfg.cli.c_str(), X_OK) != 0) {
      cli_note = "no keygate CLI in this build";
    } else if (RunQuiet({cfg.cli, "--db", url, "list", "--limit", "1"}, log) != 0) {
      cli_note = "the keygate CLI does not accept a postgresql:// --db";
    } else {
      use_cli = true;
    }
    if (!use_cli && cfg.revoke_with == "cli") Die(cli_note);
  }

  std::vector<Summary> runs;
  if (cfg.mode != "poll") runs.push_back(RunMode(cfg, self, url, **manager, use_cli, log, true));
  if (cfg.mode != "notify") runs.push_back(RunMode(cfg, self, url, **manager, use_cli, log, false));

  std::string json = absl::StrCat(
      "{\n  \"benchmark\": \"postgres_revocation_bench\",\n  \"date\": \"",
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()),
      "\",\n  \"followers\": ", cfg.followers, ",\n  \"poll_interval_ms\": ", cfg.poll_ms,
      ",\n  \"revoke_via\": \"", use_cli ? "cli" : "KeyManager", "\"");
  if (!cli_note.empty()) absl::StrAppend(&json, ",\n  \"cli_note\": \"", cli_note, "\"");
  absl::StrAppend(&json, ",\n  \"runs\": [");
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const Summary& s = runs[i];
    absl::StrAppend(&json, i == 0 ? "\n" : ",\n", "    {\"mode\": \"", s.mode,
                    "\", \"trials\": ", s.trials, ",\n     \"latency_ms\": ", Stats(s.latency_ms),
                    ",\n     \"from_revoke_start_ms\": ", Stats(s.from_start_ms),
                    ",\n     \"revoke_ms\": ", Stats(s.revoke_ms),
                    ",\n     \"refused_before_return\": ", s.before_return, "}");
  }
  absl::StrAppend(&json, "\n  ]\n}\n");
  std::fputs(json.c_str(), stdout);
  return 0;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 4 && args[0] == "--follower") {
    int poll_ms = 0;
    if (!absl::SimpleAtoi(args[3], &poll_ms)) Die("--follower: bad poll interval");
    return FollowerMain(args[1], args[2] == "1", poll_ms);
  }
  Config cfg;
#ifdef KEYGATE_BENCH_CLI
  cfg.cli = KEYGATE_BENCH_CLI;
#endif
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) Die(absl::StrCat(a, ": needs a value"));
      return args[++i];
    };
    const auto number = [&](int* out) {
      if (!absl::SimpleAtoi(value(), out) || *out < 1) Die(absl::StrCat(a, ": a positive number"));
    };
    if (a == "--trials") {
      number(&cfg.trials);
    } else if (a == "--poll-trials") {
      number(&cfg.poll_trials);
    } else if (a == "--followers") {
      number(&cfg.followers);
    } else if (a == "--poll-interval-ms") {
      number(&cfg.poll_ms);
    } else if (a == "--mode") {
      cfg.mode = value();
      if (cfg.mode != "notify" && cfg.mode != "poll" && cfg.mode != "both") Die("--mode");
    } else if (a == "--revoke-with") {
      cfg.revoke_with = value();
      if (cfg.revoke_with != "auto" && cfg.revoke_with != "cli" && cfg.revoke_with != "manager") {
        Die("--revoke-with: auto, cli or manager");
      }
    } else if (a == "--cli") {
      cfg.cli = value();
    } else {
      std::fprintf(stderr,
                   "usage: postgres_revocation_bench [--trials N] [--poll-trials M] "
                   "[--followers K] [--poll-interval-ms P] [--mode notify|poll|both] "
                   "[--revoke-with auto|cli|manager] [--cli PATH]\n");
      return 2;
    }
  }
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) Die("readlink /proc/self/exe");
  self[n] = '\0';
  ::signal(SIGPIPE, SIG_IGN);
  return DriverMain(cfg, self);
}

}  // namespace
}  // namespace keygate

int main(int argc, char** argv) { return keygate::Main(argc, argv); }
