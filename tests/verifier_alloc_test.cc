// The hot path allocates nothing: this binary replaces the global operator
// new/delete with counting versions and runs Verify through every verdict,
// with limits, usage recording, a pepper, a custom evaluator and an owner
// limit, after one warm-up call per thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"

#include "catch.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/token.h"
#include "keygate/verifier.h"
#include "test_util.h"

namespace {

// Counts allocations made by the current thread while it is "watching".
thread_local bool t_watching = false;
thread_local std::size_t t_allocations = 0;

void* CountedAlloc(std::size_t n, std::size_t align) {
  if (t_watching) ++t_allocations;
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t)
                ? std::malloc(n)
                : std::aligned_alloc(align, (n + align - 1) / align * align);
  return p;
}

// Out of line so that GCC does not pair an inlined free() with a `new`
// expression in its mismatched-new-delete check.
__attribute__((noinline)) void CountedFree(void* p) noexcept { std::free(p); }

}  // namespace

void* operator new(std::size_t n) {
  void* p = CountedAlloc(n, alignof(std::max_align_t));
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n) {
  void* p = CountedAlloc(n, alignof(std::max_align_t));
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new(std::size_t n, std::align_val_t a) {
  void* p = CountedAlloc(n, static_cast<std::size_t>(a));
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n, std::align_val_t a) {
  void* p = CountedAlloc(n, static_cast<std::size_t>(a));
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return CountedAlloc(n, alignof(std::max_align_t));
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return CountedAlloc(n, alignof(std::max_align_t));
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return CountedAlloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return CountedAlloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { CountedFree(p); }
void operator delete[](void* p) noexcept { CountedFree(p); }
void operator delete(void* p, std::size_t) noexcept { CountedFree(p); }
void operator delete[](void* p, std::size_t) noexcept { CountedFree(p); }
void operator delete(void* p, std::align_val_t) noexcept { CountedFree(p); }
void operator delete[](void* p, std::align_val_t) noexcept { CountedFree(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { CountedFree(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { CountedFree(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { CountedFree(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { CountedFree(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { CountedFree(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  CountedFree(p);
}

namespace keygate {
namespace {

std::string Text(const Secret& s) { return std::string(s.Reveal(InsecureSecretAccess::Get())); }

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);

struct Setup {
  explicit Setup(bool fancy) {
    DeploymentOptions o;
    o.environments = {{"production", "live", RateLimitPolicy{1000, absl::Seconds(1), 100000}},
                      {"preview", "test", std::nullopt}};
    if (fancy) o.pepper = Secret(std::string(40, 'x'));
    deployment = *Deployment::Create(std::move(o));
    KeyManager::Options mo;
    mo.deployment = deployment;
    mo.store = store;
    mo.clock = clock;
    manager = keygate::testing::MustOk(KeyManager::Create(std::move(mo)));
    VerifierOptions vo;
    vo.deployment = deployment;
    vo.store = store;
    vo.environment = "production";
    vo.clock = clock;
    vo.follow_changes = false;
    vo.record_usage = true;
    vo.usage_flush_interval = absl::ZeroDuration();
    if (fancy) {
      vo.scope_evaluator = std::make_shared<PatternScopeEvaluator>();
      vo.owner_rate_limit = RateLimitPolicy{1000, absl::Seconds(1), 1000};
    }
    auto v = Verifier::Create(std::move(vo));
    REQUIRE(v.ok());
    verifier = *std::move(v);

    CreateKeyRequest r;
    r.name = "n";
    r.owner = "alice";
    r.environment = "production";
    r.scopes = {"read:all"};
    r.accounts = {"acct_1", "acct_2"};
    ok = Text(manager->Create(r, "a")->token);
    r.rate_limit = RateLimitPolicy{1, absl::Hours(1), 1};
    limited = Text(manager->Create(r, "a")->token);
    r.rate_limit.reset();
    auto rev = manager->Create(r, "a");
    revoked = Text(rev->token);
    REQUIRE(manager->Revoke(rev->record.id, "a").ok());
    auto roll = manager->Create(r, "a");
    old_secret = Text(roll->token);
    REQUIRE(manager->Roll(roll->record.id, absl::Hours(1), "a").ok());
    r.environment = "preview";
    preview = Text(manager->Create(r, "a")->token);
    REQUIRE(verifier->Sync().ok());
    unknown = Text(*GenerateToken("kg", "live"));
    bad_checksum = ok;
    bad_checksum.back() = bad_checksum.back() == 'A' ? 'B' : 'A';
    const ScopeRegistry& scopes = deployment->scopes();
    read = testing::MustRequire(scopes, {"read:all"});
    write = testing::MustRequire(scopes, {"write:all"});
    account = testing::MustRequire(scopes, {"read:all"}, {.account = "acct_2"});
    other_account = testing::MustRequire(scopes, {"read:all"}, {.account = "acct_9"});
    // Use up the limited key's single request (the clock never moves here).
    REQUIRE(verifier->VerifyToken(limited, Requirement::AnyValidKey(), kStart).ok());
  }

  // Every verdict; returns how many were OK (so the work is not optimised
  // away and the test knows the inputs did what they should).
  // Route requirements are built once, at set-up, outside the counted calls.
  int RunAll() {
    int oks = 0;
    auto run = [&](const std::string& header, const Requirement& req, Outcome expected) {
      const Verdict v = verifier->Verify(header, req, kStart);
      CHECK(v.outcome == expected);
      if (v.ok()) ++oks;
    };
    run(header_ok, read, Outcome::kOk);
    run(header_ok, account, Outcome::kOk);
    run(header_ok, other_account, Outcome::kAccountDenied);
    run(header_ok, write, Outcome::kInsufficientScope);
    run(header_limited, read, Outcome::kRateLimited);
    run(header_revoked, read, Outcome::kRevoked);
    run(header_old, read, Outcome::kOk);
    run(header_preview, read, Outcome::kWrongEnvironment);
    run(header_unknown, read, Outcome::kUnknown);
    run(header_bad, read, Outcome::kMalformed);
    run("Basic abc", read, Outcome::kMissing);
    run("Bearer", read, Outcome::kInvalidRequest);
    run("", read, Outcome::kMissing);
    // The clock-reading and bare-token entry points as well.
    if (verifier->VerifyToken(ok, read).ok()) ++oks;
    if (verifier->Verify(header_ok, read).ok()) ++oks;
    return oks;
  }

  void Headers() {
    header_ok = "Bearer " + ok;
    header_limited = "Bearer " + limited;
    header_revoked = "Bearer " + revoked;
    header_old = "Bearer " + old_secret;
    header_preview = "Bearer " + preview;
    header_unknown = "Bearer " + unknown;
    header_bad = "Bearer " + bad_checksum;
  }

  std::shared_ptr<const Deployment> deployment;
  Requirement read = Requirement::AnyValidKey();  // set by the constructor
  Requirement write = Requirement::AnyValidKey();
  Requirement account = Requirement::AnyValidKey();
  Requirement other_account = Requirement::AnyValidKey();
  std::shared_ptr<MemoryKeyStore> store = std::make_shared<MemoryKeyStore>();
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>(kStart);
  std::unique_ptr<KeyManager> manager;
  std::unique_ptr<Verifier> verifier;
  std::string ok, limited, revoked, old_secret, preview, unknown, bad_checksum;
  std::string header_ok, header_limited, header_revoked, header_old, header_preview, header_unknown,
      header_bad;
};

std::size_t CountAllocations(Setup& s, int rounds, int* oks) {
  t_allocations = 0;
  t_watching = true;
  for (int i = 0; i < rounds; ++i) *oks += s.RunAll();
  t_watching = false;
  return t_allocations;
}

TEST_CASE("The allocation counter sees allocations", "[verifier][alloc]") {
  t_allocations = 0;
  t_watching = true;
  auto p = std::make_unique<std::string>(100, 'x');
  t_watching = false;
  CHECK(t_allocations >= 1);
}

TEST_CASE("Verify allocates nothing after a thread's first call", "[verifier][alloc]") {
  for (bool fancy : {false, true}) {
    INFO("pepper, pattern evaluator and owner limit: " << fancy);
    Setup s(fancy);
    s.Headers();
    int oks = 0;
    s.RunAll();  // warm-up: epoch record, the limited key's one request
    CHECK(CountAllocations(s, 50, &oks) == 0);
    CHECK(oks == 50 * 5);

    // A fresh thread: after its own first call, nothing either.
    std::size_t on_thread = 1;
    int thread_oks = 0;
    std::thread t([&] {
      s.RunAll();
      on_thread = CountAllocations(s, 20, &thread_oks);
    });
    t.join();
    CHECK(on_thread == 0);
    CHECK(thread_oks == 20 * 5);
  }
}

}  // namespace
}  // namespace keygate
