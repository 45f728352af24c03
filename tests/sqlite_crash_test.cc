// Crash safety of the SQLite store: a child process creates and revokes keys
// in a loop, printing each acknowledged operation; we SIGKILL it at a random
// moment (also during open and the first migration), then check that the
// file is intact and that nothing acknowledged was lost:
//   * PRAGMA integrity_check (and the name index's own check) pass;
//   * every key whose creation was acknowledged exists (the keys the run
//     touched after each kill, all of them every 25 trials and at the end);
//   * every acknowledged revoke holds;
//   * every printed token verifies: ok while its key is active, revoked once
//     the revoke was acknowledged (a revoke in flight at the kill may have
//     landed or not, nothing else).
// The same file accumulates all trials, so recovery is exercised on a
// database that has already survived earlier kills.
//
// Trials: 50 by default (about 10-20 s), KEYGATE_CRASH_TRIALS=N for more,
// KEYGATE_STRESS=1 for 1000.

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/reference_verifier.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite_test_util.h"

#ifndef KEYGATE_SQLITE_TEST_HELPER
#error "KEYGATE_SQLITE_TEST_HELPER must name the helper binary"
#endif

namespace keygate {
namespace {

struct Acked {
  std::string token;
  bool revoke_started = false;  // "r" seen: may or may not have committed
  bool revoked = false;         // "R" seen: committed
  // For a revoke in flight at the kill: the state found afterwards, which
  // must never change again.
  std::optional<KeyState> settled;
};

int Trials() {
  if (const char* n = std::getenv("KEYGATE_CRASH_TRIALS"); n != nullptr && *n != '\0') {
    return std::max(1, std::atoi(n));
  }
  if (const char* s = std::getenv("KEYGATE_STRESS");
      s != nullptr && *s != '\0' && std::string_view(s) != "0") {
    return 1000;
  }
  return 50;
}

TEST_CASE("SQLite store loses no acknowledged write when the writer is SIGKILLed",
          "[sqlite][crash]") {
  testing::TempDir dir;
  const std::string db = dir.File("crash.db");
  const std::string err_file = dir.File("child.err");
  const int trials = Trials();
  // A fresh seed each run; KEYGATE_CRASH_SEED=<run seed> replays one (the
  // kill times still vary with the machine's speed).
  std::uint64_t run_seed = 0;
  if (const char* env = std::getenv("KEYGATE_CRASH_SEED"); env != nullptr) {
    run_seed = std::strtoull(env, nullptr, 10);
  } else {
    std::random_device rd;
    run_seed = (std::uint64_t{rd()} << 32) | rd();
  }
  std::mt19937_64 rng(run_seed);
  INFO("run seed " << run_seed << " (replay: KEYGATE_CRASH_SEED=" << run_seed << ")");

  std::shared_ptr<const Deployment> deployment = *Deployment::Create({});
  std::map<std::string, Acked> acked;
  int kills_before_first_ack = 0;
  std::size_t total_ops = 0;
  std::size_t checks = 0;

  for (int trial = 0; trial < trials; ++trial) {
    INFO("trial " << trial);
    // Kill after 0-150 ms: early kills land in process start, open and (on
    // the first trial) the schema migration; later ones mid-transaction.
    const int kill_after_ms = static_cast<int>(rng() % 151);
    std::string out;
    {
      testing::Child child({KEYGATE_SQLITE_TEST_HELPER, "churn", db,
                            std::to_string(run_seed + static_cast<std::uint64_t>(trial))},
                           {}, err_file);
      const absl::Time deadline = absl::Now() + absl::Milliseconds(kill_after_ms);
      while (absl::Now() < deadline) {
        const int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
        if (!child.ReadSome(&out, std::max(1, left))) break;
      }
      ::kill(child.pid(), SIGKILL);
      out += child.ReadAll();
      const int status = child.Wait();
      // It must have died by our hand, not by an error of its own.
      INFO("child stderr: " << [&] {
        std::ifstream f(err_file);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
      }());
      REQUIRE(WIFSIGNALED(status));
      REQUIRE(WTERMSIG(status) == SIGKILL);
    }

    // Only complete lines were acknowledged.
    const std::size_t last_nl = out.rfind('\n');
    const std::string complete = last_nl == std::string::npos ? "" : out.substr(0, last_nl);
    if (complete.empty()) ++kills_before_first_ack;
    std::set<std::string> touched;
    std::istringstream lines(complete);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty()) continue;
      std::istringstream fields(line);
      std::vector<std::string> f;
      for (std::string w; fields >> w;) f.push_back(w);
      REQUIRE(f.size() >= 2);
      ++total_ops;
      if (f[0] == "C") {
        REQUIRE(f.size() == 3);
        acked[f[1]].token = f[2];
        touched.insert(f[1]);
      } else if (f[0] == "r") {
        REQUIRE(acked.count(f[1]) == 1);
        acked[f[1]].revoke_started = true;
        touched.insert(f[1]);
      } else if (f[0] == "R") {
        REQUIRE(acked.count(f[1]) == 1);
        acked[f[1]].revoked = true;
      } else {
        FAIL("unexpected line: " << line);
      }
    }

    if (!std::filesystem::exists(db)) {
      // Killed before it created the file: nothing can have been acknowledged.
      REQUIRE(acked.empty());
      continue;
    }
    SqliteOptions o;
    o.path = db;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Open(o);
    INFO(store.status().ToString());
    REQUIRE(store.ok());
    absl::Status integrity = (*store)->CheckIntegrity();
    INFO(integrity.ToString());
    REQUIRE(integrity.ok());

    absl::StatusOr<std::unique_ptr<ReferenceVerifier>> verifier =
        ReferenceVerifier::Create(deployment, *store, "production");
    REQUIRE(verifier.ok());
    absl::StatusOr<std::unique_ptr<ReferenceVerifier>> preview =
        ReferenceVerifier::Create(deployment, *store, "preview");
    REQUIRE(preview.ok());
    const absl::Time now = absl::Now();
    // Every key the last run touched, a sample of older ones, and all of
    // them every 25th trial and at the end (old keys are not written again,
    // so a loss there would be the store's doing; the full checks catch it).
    std::vector<std::string> to_check(touched.begin(), touched.end());
    const bool full = trial % 25 == 24 || trial + 1 == trials;
    for (const auto& entry : acked) {
      if (full || rng() % std::max<std::size_t>(1, acked.size() / 32) == 0) {
        to_check.push_back(entry.first);
      }
    }
    for (const std::string& id : to_check) {
      Acked& a = acked.at(id);
      INFO("key " << id);
      absl::StatusOr<KeyRecord> r = (*store)->Get(id);
      INFO(r.status().ToString());
      REQUIRE(r.ok());
      if (a.revoked) {
        REQUIRE(r->state == KeyState::kRevoked);
      } else if (!a.revoke_started) {
        REQUIRE(r->state == KeyState::kActive);
      } else if (a.settled.has_value()) {
        REQUIRE(r->state == *a.settled);  // the in-flight revoke's outcome sticks
      } else {
        a.settled = r->state;
      }
      const ReferenceVerifier& v = r->environment == "production" ? **verifier : **preview;
      const Verdict verdict = v.VerifyToken(a.token, Requirement::AnyValidKey(), now);
      REQUIRE(verdict.key() == id);
      if (r->state == KeyState::kActive) {
        REQUIRE(verdict.outcome == Outcome::kOk);
      } else {
        REQUIRE(verdict.outcome == Outcome::kRevoked);
      }
      ++checks;
    }
  }
  std::cout << "sqlite crash test: " << trials << " SIGKILL trials, " << total_ops
            << " acknowledged operations, " << acked.size() << " keys, " << checks
            << " key checks, " << kills_before_first_ack
            << " kills before the first acknowledgement\n";
  CHECK(acked.size() > static_cast<std::size_t>(trials));  // the child did real work
}

}  // namespace
}  // namespace keygate
