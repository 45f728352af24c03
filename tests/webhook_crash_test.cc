// WebhookDispatcher under SIGKILL: a dispatching process (webhook_test_helper) is killed at random
// moments while keys change, 50 times, then runs to the end. Every event committed before a kill
// reaches the receiver after a restart (duplicates allowed, none lost), signed.

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "process_util.h"
#include "test_util.h"
#include "webhook_receiver.h"

namespace keygate {
namespace {

using testing::MustOk;

TEST_CASE("Events committed before a SIGKILL of the dispatcher are delivered after restart",
          "[webhooks][crash]") {
  std::string tmpl = (std::filesystem::temp_directory_path() / "keygate_whcrash_XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  const std::filesystem::path dir = tmpl;
  const std::string db = (dir / "keys.db").string();
  const std::string state = (dir / "webhooks.db").string();
  const std::string log = (dir / "helper.log").string();
  testing::Receiver receiver;
  const WebhookSecret secret = MustOk(WebhookSecret::Generate());
  const std::string secret_text(secret.text().Reveal(InsecureSecretAccess::Get()));

  SqliteOptions so;
  so.path = db;
  so.create_if_missing = true;
  std::shared_ptr<KeyStore> store = MustOk(SqliteKeyStore::Create(so));
  KeyManager::Options mo;
  mo.deployment = MustOk(Deployment::Create({}));
  mo.store = store;
  mo.allow_internal_webhook_hosts = true;
  auto manager = MustOk(KeyManager::Create(std::move(mo)));
  const std::vector<std::string> helper = {KEYGATE_WEBHOOK_TEST_HELPER, db, state,
                                           receiver.ca_file(), secret_text};

  {
    // The state file starts where the log is now (empty): made before the first change, so
    // that every change below is one the dispatcher owes.
    WebhookDispatcherOptions d;
    d.store = store;
    d.state_path = state;
    d.secrets = {secret};
    REQUIRE(WebhookDispatcher::Create(std::move(d)).ok());
  }
  std::mt19937 rng(20261206);  // fixed: a failure replays
  std::vector<std::string> ids;
  constexpr int kTrials = 50;
  for (int trial = 0; trial < kTrials; ++trial) {
    const pid_t pid = testing::SpawnProcess(helper, log);
    REQUIRE(pid > 0);
    // A few changes while it runs: a new key (with a webhook), changes of older ones.
    CreateKeyRequest r;
    r.name = absl::StrCat("k", trial);
    r.owner = "alice";
    r.environment = "production";
    r.webhook_url = receiver.Url("localhost", "/ok");
    ids.push_back(MustOk(manager->Create(r, "test")).record.id);
    const std::string older = ids[rng() % ids.size()];
    KeyUpdate u;
    u.description = absl::StrCat("trial ", trial);
    REQUIRE(manager->Modify(older, u, MustOk(manager->Get(older)).version, "test").ok());
    if (trial % 5 == 4) {
      const std::size_t victim = rng() % ids.size();
      REQUIRE(manager->Delete(ids[victim], "test").ok());
      ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(victim));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
    REQUIRE(::kill(pid, SIGKILL) == 0);
    const int status = testing::WaitProcess(pid);
    REQUIRE(WIFSIGNALED(status));
  }

  // Everything the log holds for keys with a webhook URL: each must arrive.
  std::set<std::string> expected;
  AuditQuery q;
  q.limit = kMaxAuditLimit;
  for (;;) {
    const AuditPage page = MustOk(store->ReadAudit(q));
    for (const Event& e : page.events) {
      if (!e.webhook_url.empty()) expected.insert(absl::StrCat("msg_", e.key_id, "_", e.sequence));
    }
    if (!page.more) break;
    q.after = page.next_after;
  }
  REQUIRE(expected.size() >= 2 * kTrials);

  const pid_t last = testing::SpawnProcess(helper, log);
  REQUIRE(last > 0);
  std::set<std::string> seen;
  std::size_t requests = 0;
  const auto all_seen = [&] {
    seen.clear();
    const std::vector<testing::Seen> got = receiver.seen();
    requests = got.size();
    for (const testing::Seen& s : got) seen.insert(s.id);
    for (const std::string& id : expected) {
      if (!seen.contains(id)) return false;
    }
    return true;
  };
  bool done = false;
  for (int i = 0; i < 3000 && !done; ++i) {
    done = all_seen();
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(last, SIGKILL);
  testing::WaitProcess(last);
  std::size_t missing = 0;
  for (const std::string& id : expected) missing += seen.contains(id) ? 0 : 1;
  INFO(missing << " of " << expected.size() << " events never arrived; helper log: " << log);
  CHECK(done);
  for (const testing::Seen& s : receiver.seen()) {
    CHECK(VerifyWebhookSignature({secret}, s.id, s.timestamp, s.signature, s.body, absl::Now(),
                                 absl::Hours(1))
              .ok());
  }
  std::cout << "webhook crash test: " << kTrials << " SIGKILLs, " << expected.size()
            << " events delivered in " << requests << " requests ("
            << (requests > expected.size() ? requests - expected.size() : 0) << " repeats)\n";
  std::error_code ec;
  if (done) std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace keygate
