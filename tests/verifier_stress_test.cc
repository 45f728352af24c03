// Concurrent stress: reader threads verify while a writer creates, revokes,
// restores, rolls, re-scopes, deletes and reloads. Checks linearizability:
// once a management call has returned (and, for the in-process store, the
// verifier applied it inside the store's change callback), no verification
// that starts afterwards may disagree with it. Runs under TSan in CI (label
// "concurrent"). KEYGATE_STRESS=1 runs it longer and with more readers.

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"

#include "catch.h"
#include "internal/epoch.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/token.h"
#include "keygate/verifier.h"
#include "test_util.h"

namespace keygate {
namespace {

std::string Text(const Secret& s) { return std::string(s.Reveal(InsecureSecretAccess::Get())); }

bool Heavy() {
  const char* e = std::getenv("KEYGATE_STRESS");
  return e != nullptr && *e != '\0' && std::string(e) != "0";  // as the other tests read it
}

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);

// What readers may assume about one pool entry. Immutable once published;
// a new one is published (release) after every management call returns,
// and a `busy` one before the call starts.
struct Snapshot {
  bool busy = true;
  std::string live;      // token that must verify ok (or must not, see below)
  bool live_ok = false;  // false: revoked or re-scoped away
  std::string dead;      // a token that must never verify ok again (may be empty)
};

struct Entry {
  std::atomic<const Snapshot*> snap{nullptr};
  // Writer-only.
  std::string id;
  std::string token;
  bool revoked = false;
  bool scoped_out = false;
  std::uint64_t version = 0;
};

struct Violations {
  std::atomic<std::uint64_t> checks{0};
  std::atomic<std::uint64_t> count{0};
  std::mutex mu;
  std::string first;
  void Report(const std::string& what) {
    if (count.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> lock(mu);
      first = what;
    }
  }
};

// A deployment with the default environments, an in-memory store, a fake
// clock and a KeyManager over them.
struct Managed {
  std::shared_ptr<const Deployment> deployment = *Deployment::Create(DeploymentOptions{});
  std::shared_ptr<MemoryKeyStore> store = std::make_shared<MemoryKeyStore>();
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>(kStart);
  KeyManager manager{Options()};

  KeyManager::Options Options() const {
    KeyManager::Options o;
    o.deployment = deployment;
    o.store = store;
    o.clock = clock;
    return o;
  }
};

// kCallback: the writer is the store's only mutator, so the in-process
// store runs the verifier's callback on the writer's thread before each call
// returns: KeyManager's return is the linearization point.
// kRefresh: a usage flusher mutates the store concurrently (its last_used
// writes), so a writer's notification may be folded into a callback running
// on the flusher's thread; the writer calls Verifier::Refresh(id) after each
// call, which must restore the guarantee.
enum class Mode { kCallback, kRefresh };

void RunStress(Mode mode) {
  const int kOps = Heavy() ? 30000 : 1500;
  const int kReaders = Heavy() ? 4 : 2;
  constexpr int kPool = 24;

  Managed world;
  const std::shared_ptr<const Deployment>& deployment = world.deployment;
  const std::shared_ptr<MemoryKeyStore>& store = world.store;
  const std::shared_ptr<FakeClock>& clock = world.clock;
  KeyManager& manager = world.manager;
  VerifierOptions vo;
  vo.deployment = deployment;
  vo.store = store;
  vo.environment = "production";
  vo.clock = clock;
  vo.follow_changes = true;  // applied in the store's callback, on the writer thread
  vo.sync_in_callback = true;
  vo.poll_interval = absl::Milliseconds(2);  // the feed thread also pulls concurrently
  vo.full_resync_interval = absl::ZeroDuration();
  vo.record_usage = true;
  vo.usage_flush_interval = absl::ZeroDuration();  // FlushUsage is called by a reader below
  auto created = Verifier::Create(std::move(vo));
  REQUIRE(created.ok());
  std::unique_ptr<Verifier> verifier = *std::move(created);

  const Requirement read = testing::MustRequire(deployment->scopes(), {"read:all"});

  std::vector<std::unique_ptr<Snapshot>> snapshots;  // writer-owned, freed at the end
  std::vector<Entry> pool(kPool);
  auto publish = [&](Entry& e, bool busy, std::string dead = {}) {
    auto s = std::make_unique<Snapshot>();
    s->busy = busy;
    s->live = e.token;
    s->live_ok = !e.revoked && !e.scoped_out;
    s->dead = std::move(dead);
    e.snap.store(s.get(), std::memory_order_release);
    snapshots.push_back(std::move(s));
  };
  auto create = [&](Entry& e) {
    CreateKeyRequest r;
    r.name = "stress";
    r.owner = "alice";
    r.environment = "production";
    r.scopes = {"read:all"};
    absl::StatusOr<CreatedKey> k = manager.Create(r, "w");
    REQUIRE(k.ok());
    e.id = k->record.id;
    e.token = Text(k->token);
    e.version = k->record.version;
    e.revoked = false;
    e.scoped_out = false;
  };
  for (Entry& e : pool) {
    create(e);
    publish(e, /*busy=*/false);
  }

  Violations violations;
  std::atomic<bool> done{false};
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(r));
      const std::string garbage = "Bearer " + Text(*GenerateToken("kg", "live"));
      std::uint64_t iterations = 0;
      while (!done.load(std::memory_order_acquire)) {
        Entry& e = pool[rng() % kPool];
        const Snapshot* s1 = e.snap.load(std::memory_order_acquire);
        const Verdict live = verifier->Verify("Bearer " + s1->live, read);
        const Verdict dead =
            s1->dead.empty() ? Verdict{} : verifier->Verify("Bearer " + s1->dead, read);
        const Snapshot* s2 = e.snap.load(std::memory_order_acquire);
        if (s1 == s2 && !s1->busy) {
          // Nothing changed this entry between the two loads, and the last
          // change had returned before the first one.
          violations.checks.fetch_add(1, std::memory_order_relaxed);
          if (live.ok() != s1->live_ok) {
            violations.Report("live token: expected ok=" + std::to_string(s1->live_ok) + ", got " +
                              std::string(OutcomeName(live.outcome)));
          }
          if (!s1->dead.empty() && dead.ok()) violations.Report("a dead token verified ok");
        }
        if (verifier->Verify(garbage, read, kStart).outcome != Outcome::kUnknown) {
          violations.Report("a never-issued token was not unknown");
        }
        // In kRefresh mode one reader also collects usage now and then: it
        // scans the table under read sections while the writer swaps tables,
        // and its last_used writes make it a second mutator of the store.
        if (mode == Mode::kRefresh && r == 0 && ++iterations % 256 == 0) {
          clock->Advance(absl::Minutes(2));  // past last_used_granularity
          (void)verifier->FlushUsage();
        }
      }
    });
  }

  // Stops and joins the readers however the writer leaves this scope (a
  // failed REQUIRE throws).
  struct JoinReaders {
    std::atomic<bool>& done;
    std::vector<std::thread>& threads;
    ~JoinReaders() {
      done.store(true, std::memory_order_release);
      for (std::thread& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_readers{done, readers};

  std::mt19937_64 rng(42);
  int reloads = 0;
  for (int op = 0; op < kOps; ++op) {
    Entry& e = pool[rng() % kPool];
    publish(e, /*busy=*/true);
    const std::string old_id = e.id;
    std::string dead;
    switch (rng() % 6) {
      case 0:
      case 1:
        if (e.revoked) {
          REQUIRE(manager.Restore(e.id, "w").ok());
          e.revoked = false;
        } else {
          REQUIRE(manager.Revoke(e.id, "w").ok());
          e.revoked = true;
        }
        break;
      case 2:
        if (!e.revoked) {
          absl::StatusOr<CreatedKey> k = manager.Roll(e.id, absl::ZeroDuration(), "w");
          REQUIRE(k.ok());
          dead = e.token;
          e.token = Text(k->token);
        }
        break;
      case 3: {
        absl::StatusOr<KeyRecord> r = store->Get(e.id);
        REQUIRE(r.ok());
        KeyUpdate u;
        e.scoped_out = !e.scoped_out;
        u.scopes = std::vector<std::string>{e.scoped_out ? "write:all" : "read:all"};
        absl::StatusOr<KeyRecord> m = manager.Modify(e.id, u, r->version, "w");
        // The usage flusher's last_used writes bump versions too: re-read
        // and retry, as any optimistic client would.
        while (m.status().code() == absl::StatusCode::kAborted) {
          r = store->Get(e.id);
          REQUIRE(r.ok());
          m = manager.Modify(e.id, u, r->version, "w");
        }
        REQUIRE(m.ok());
        break;
      }
      case 4:
        REQUIRE(manager.Delete(e.id, "w").ok());
        dead = e.token;
        create(e);
        break;
      default:
        if (op % 5 == 0) {
          REQUIRE(verifier->Reload().ok());  // a table swap under the readers
          ++reloads;
        }
        break;
    }
    if (mode == Mode::kRefresh) {
      REQUIRE(verifier->Refresh(old_id).ok());
      if (e.id != old_id) REQUIRE(verifier->Refresh(e.id).ok());
    }
    publish(e, /*busy=*/false, std::move(dead));
  }
  done.store(true, std::memory_order_release);
  for (std::thread& t : readers) t.join();
  CHECK(reloads > 0);

  INFO("first violation: " << violations.first);
  CHECK(violations.count.load() == 0);
  CHECK(violations.checks.load() >= static_cast<std::uint64_t>(kOps / 4));
  const VerifierStats stats = verifier->Stats();
  CHECK(stats.rebuilds >= 2);
  CHECK(stats.keys == static_cast<std::size_t>(kPool));
  verifier->Shutdown();
}

TEST_CASE("Verifier stress: no verify that starts after a change returned contradicts it",
          "[verifier][concurrent][revocation]") {
  RunStress(Mode::kCallback);
}

TEST_CASE("Verifier stress: Refresh makes changes linearizable despite other store writers",
          "[verifier][concurrent][revocation]") {
  RunStress(Mode::kRefresh);
}

class CountingSink final : public UsageSink {
 public:
  void Record(absl::Span<const KeyUsage> batch) noexcept override {
    for (const KeyUsage& u : batch) total.fetch_add(u.requests);
  }
  std::atomic<std::uint64_t> total{0};
};

TEST_CASE("Verifier stress: concurrent requests on one key never exceed its limit",
          "[verifier][concurrent][rate_limit]") {
  const int kThreads = Heavy() ? 4 : 2;
  const int kAttempts = Heavy() ? 200000 : 20000;
  constexpr std::uint32_t kBurst = 5000;
  Managed world;
  const std::shared_ptr<const Deployment>& deployment = world.deployment;
  const std::shared_ptr<MemoryKeyStore>& store = world.store;
  KeyManager& manager = world.manager;
  CreateKeyRequest r;
  r.name = "hot";
  r.owner = "alice";
  r.environment = "production";
  r.rate_limit = RateLimitPolicy{1, absl::Hours(1), kBurst};
  const std::string token = "Bearer " + Text(manager.Create(r, "w")->token);
  VerifierOptions vo;
  vo.deployment = deployment;
  vo.store = store;
  vo.environment = "production";
  vo.follow_changes = false;
  vo.usage_flush_interval = absl::ZeroDuration();
  auto sink = std::make_shared<CountingSink>();
  vo.usage_sink = sink;
  auto v = Verifier::Create(std::move(vo));
  REQUIRE(v.ok());
  std::atomic<int> ok{0};
  std::atomic<int> limited{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAttempts / kThreads; ++i) {
        // The clock never moves: exactly kBurst requests may succeed.
        const Verdict verdict = (*v)->Verify(token, Requirement::AnyValidKey(), kStart);
        if (verdict.ok()) {
          ok.fetch_add(1, std::memory_order_relaxed);
        } else if (verdict.outcome == Outcome::kRateLimited) {
          limited.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok.load() == static_cast<int>(kBurst));
  CHECK(ok.load() + limited.load() == kAttempts / kThreads * kThreads);
  // The usage counters saw exactly the admitted requests.
  REQUIRE((*v)->FlushUsage().ok());
  CHECK(sink->total.load() == kBurst);
}

TEST_CASE("Epoch grace periods wait exactly for read sections that began before",
          "[verifier][concurrent][epoch]") {
  std::atomic<int> phase{0};
  std::atomic<bool> synchronized{false};
  std::atomic<bool> registered{true};
  std::thread reader([&] {
    // (Catch assertions are not thread-safe: record, check on the main thread.)
    const bool outer = internal::EpochReadLock();
    const bool inner = internal::EpochReadLock();  // nested
    if (!outer || !inner) registered.store(false);
    phase.store(1);
    while (phase.load() != 2) std::this_thread::yield();
    internal::EpochReadUnlock();  // still inside the outer section
    absl::SleepFor(absl::Milliseconds(20));
    const bool early = synchronized.load();
    internal::EpochReadUnlock();
    phase.store(early ? -1 : 3);
  });
  while (phase.load() != 1) std::this_thread::yield();
  std::thread writer([&] {
    internal::EpochSynchronize();
    synchronized.store(true);
  });
  phase.store(2);
  writer.join();
  reader.join();
  CHECK(registered.load());
  CHECK(phase.load() == 3);  // the grace period did not end inside the section
  CHECK(synchronized.load());

  // A section that starts after the grace period began does not hold it up.
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop.load()) {
      internal::EpochReadGuard g;
      if (!g.ok()) registered.store(false);
    }
  });
  for (int i = 0; i < 100; ++i) internal::EpochSynchronize();
  stop.store(true);
  busy.join();
  CHECK(registered.load());
}

}  // namespace
}  // namespace keygate
