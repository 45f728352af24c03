// The change feed across processes: another process (the test helper, as
// the CLI would) revokes a key in the shared SQLite file; a Verifier in this
// process, following the store's change feed (its own safety-net poll is an
// hour), must start rejecting the token, and must have accepted it until the
// revoke. The check is the order of events, not a time limit: a 60 s deadline
// only guards against a feed that never delivers. It prints the measured
// revoke-to-reject latency (from the other process's acknowledgement of the
// revoke to the first rejected verification here), the README's figure.
//
// KEYGATE_FEED_TRIALS (default 10) and KEYGATE_FEED_POLL_MS (default 250, the
// store's default poll interval) change the measurement.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/verifier.h"
#include "sqlite_test_util.h"
#include "test_util.h"

#ifndef KEYGATE_SQLITE_TEST_HELPER
#error "KEYGATE_SQLITE_TEST_HELPER must name the helper binary"
#endif

namespace keygate {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = 0;
  if (v != nullptr && absl::SimpleAtoi(v, &n) && n > 0) return n;
  return fallback;
}

TEST_CASE("A revoke by another process reaches this process's Verifier through the feed",
          "[sqlite][feed][verifier]") {
  const int trials = EnvInt("KEYGATE_FEED_TRIALS", 10);
  const absl::Duration poll = absl::Milliseconds(EnvInt("KEYGATE_FEED_POLL_MS", 250));

  testing::TempDir dir;
  const std::string db = dir.File("shared.db");
  SqliteOptions so;
  so.path = db;
  so.poll_interval = poll;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(so);
  REQUIRE(store.ok());
  std::shared_ptr<const Deployment> deployment = *Deployment::Create({});
  KeyManager::Options mo;
  mo.deployment = deployment;
  mo.store = *store;
  std::unique_ptr<KeyManager> manager_owner = keygate::testing::MustOk(KeyManager::Create(mo));
  KeyManager& manager = *manager_owner;

  std::vector<std::pair<std::string, Secret>> keys;
  for (int i = 0; i < trials; ++i) {
    CreateKeyRequest req;
    req.name = absl::StrCat("server key ", i);
    req.owner = "alice";
    req.environment = "production";
    req.scopes = {"read:all"};
    absl::StatusOr<CreatedKey> k = manager.Create(req, "test");
    REQUIRE(k.ok());
    keys.emplace_back(k->record.id, k->token);
  }

  VerifierOptions vo;
  vo.deployment = deployment;
  vo.store = *store;
  vo.environment = "production";
  vo.record_usage = false;  // keep this process read-only on the file
  // The verifier's own safety-net poll and resync stay longer than the
  // deadline below: the rejection must come from the store's data_version
  // poll.
  vo.poll_interval = absl::Hours(1);
  vo.full_resync_interval = absl::Hours(2);
  absl::StatusOr<std::unique_ptr<Verifier>> verifier = Verifier::Create(std::move(vo));
  INFO(verifier.status().ToString());
  REQUIRE(verifier.ok());

  std::vector<double> latencies_ms;
  std::mt19937 rng(std::random_device{}());
  for (const auto& [id, token] : keys) {
    const std::string_view t = token.Reveal(InsecureSecretAccess::Get());
    REQUIRE((*verifier)->VerifyToken(t, Requirement::AnyValidKey()).outcome == Outcome::kOk);
    // Start at a random phase of the poll cycle: otherwise each revoke would
    // land at the same offset after the previous detection.
    std::this_thread::sleep_for(std::chrono::microseconds(
        rng() % static_cast<std::uint32_t>(absl::ToInt64Microseconds(poll) + 1)));
    testing::Child child({KEYGATE_SQLITE_TEST_HELPER, "revoke", db, id});
    // Poll the hot path until it rejects (every 100 us: ~0.1 ms resolution).
    // Liveness guard only: a feed that misses the revoke never rejects.
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    Verdict v;
    absl::Time rejected_at;
    do {
      v = (*verifier)->VerifyToken(t, Requirement::AnyValidKey());
      rejected_at = absl::Now();
      if (v.outcome != Outcome::kOk) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    } while (rejected_at < give_up);
    const std::string out = child.ReadAll();
    REQUIRE(child.Wait() == 0);
    REQUIRE(v.outcome == Outcome::kRevoked);
    std::int64_t acked_us = 0;
    REQUIRE(absl::SimpleAtoi(out.substr(0, out.find('\n')), &acked_us));
    latencies_ms.push_back(
        absl::ToDoubleMilliseconds(rejected_at - absl::FromUnixMicros(acked_us)));
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double p50 = latencies_ms[latencies_ms.size() / 2];
  const double max = latencies_ms.back();
  std::cout << "cross-process revoke-to-reject latency (poll " << absl::FormatDuration(poll) << ", "
            << trials << " revokes by another process): min " << latencies_ms.front() << " ms, p50 "
            << p50 << " ms, max " << max << " ms\n";

  // The store's change feed in this process reports the other process's
  // revokes as the keys' current state.
  absl::StatusOr<ChangeBatch> b = (*store)->ChangesSince(0, 1000);
  REQUIRE(b.ok());
  int revoked = 0;
  for (const Change& c : b->changes) {
    if (c.record.has_value() && c.record->state == KeyState::kRevoked) ++revoked;
  }
  CHECK(revoked == trials);
}

TEST_CASE("In-process writes reach a Verifier on a SQLite store before they return",
          "[sqlite][feed][verifier]") {
  testing::TempDir dir;
  SqliteOptions so;
  so.path = dir.File("inproc.db");
  so.poll_interval = absl::Hours(1);  // nothing may depend on the poller here
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(so);
  REQUIRE(store.ok());
  std::shared_ptr<const Deployment> deployment = *Deployment::Create({});
  KeyManager::Options mo;
  mo.deployment = deployment;
  mo.store = *store;
  std::unique_ptr<KeyManager> manager_owner =
      keygate::testing::MustOk(KeyManager::Create(std::move(mo)));
  KeyManager& manager = *manager_owner;
  VerifierOptions vo;
  vo.deployment = deployment;
  vo.store = *store;
  vo.environment = "production";
  vo.record_usage = false;
  vo.poll_interval = absl::Hours(1);
  absl::StatusOr<std::unique_ptr<Verifier>> verifier = Verifier::Create(std::move(vo));
  REQUIRE(verifier.ok());
  for (int i = 0; i < 20; ++i) {
    CreateKeyRequest req;
    req.name = absl::StrCat("k", i);
    req.owner = "alice";
    req.environment = "production";
    absl::StatusOr<CreatedKey> k = manager.Create(req, "test");
    REQUIRE(k.ok());
    const std::string_view t = k->token.Reveal(InsecureSecretAccess::Get());
    // Created: usable at once; revoked: refused at once; deleted: unknown.
    CHECK((*verifier)->VerifyToken(t, Requirement::AnyValidKey()).outcome == Outcome::kOk);
    REQUIRE(manager.Revoke(k->record.id, "test").ok());
    CHECK((*verifier)->VerifyToken(t, Requirement::AnyValidKey()).outcome == Outcome::kRevoked);
    REQUIRE(manager.Delete(k->record.id, "test").ok());
    CHECK((*verifier)->VerifyToken(t, Requirement::AnyValidKey()).outcome == Outcome::kUnknown);
  }
}

}  // namespace
}  // namespace keygate
