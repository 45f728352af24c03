// Concurrent stress, checked for linearizability: writer threads revoke,
// restore, roll, re-scope, re-expire, delete and create keys through
// KeyManager while reader threads verify tokens with the hot-path Verifier
// and the ReferenceVerifier, on a MemoryKeyStore and on a SqliteKeyStore.
// Every call is recorded with its invocation and response on one logical
// clock, and the history is checked against the sequential model of a key
// (tests/linearizability.h): no verify that starts after a change returned
// may contradict it, and every verdict's reason (unknown, revoked, expired,
// insufficient scope, ok) must be one the key had during the verify.
// Deliberately broken variants (a store that notifies its subscribers late,
// verifiers that ignore revocation, report a revoked key as unknown, or keep
// accepting a token they accepted once) must be caught.
// Runs under TSan in CI (label "concurrent"). KEYGATE_STRESS=1 runs it
// longer and with more readers.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "catch.h"
#include "internal/epoch.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/event_sink.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/token.h"
#include "keygate/verifier.h"
#include "linearizability.h"
#include "test_util.h"
#ifdef KEYGATE_TEST_SQLITE
#include "sqlite_test_util.h"
#endif

namespace keygate {
namespace {

namespace lin = linearizability;

std::string Text(const Secret& s) { return std::string(s.Reveal(InsecureSecretAccess::Get())); }

bool Heavy() {
  const char* e = std::getenv("KEYGATE_STRESS");
  return e != nullptr && *e != '\0' && std::string(e) != "0";  // as the other tests read it
}

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);
// Past every roll grace period and expiry the writers set (one hour).
const absl::Time kLater = kStart + absl::Hours(2);
const absl::Duration kGrace = absl::Hours(1);

// A deployment with the default environments, an in-memory store, a fake
// clock and a KeyManager over them.
struct Managed {
  std::shared_ptr<const Deployment> deployment = *Deployment::Create(DeploymentOptions{});
  std::shared_ptr<MemoryKeyStore> store = std::make_shared<MemoryKeyStore>();
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>(kStart);
  std::unique_ptr<KeyManager> manager_owner =
      keygate::testing::MustOk(KeyManager::Create(Options()));
  KeyManager& manager = *manager_owner;

  KeyManager::Options Options() const {
    KeyManager::Options o;
    o.deployment = deployment;
    o.store = store;
    o.clock = clock;
    return o;
  }
};

// --- The linearizability stress ------------------------------------------------

enum class Backend { kMemory, kSqlite };

// How a change reaches the verifier before the management call counts as
// returned.
enum class Apply {
  // The verifier applies it inside the store's change callback, which both
  // stores run before the write returns (with several writers too).
  kCallback,
  // The callback only wakes the feed thread; each writer calls
  // Verifier::Refresh(id) after its call, and the call returns after that.
  kRefresh,
};

// Deliberately broken variants, each of which the checker must catch.
enum class Fault {
  kNone,
  kLateNotify,        // the store notifies one write late (LateNotifyStore)
  kIgnoreRevocation,  // the verifier answers ok for a revoked key
  kRevokedAsUnknown,  // the verifier answers unknown for a revoked key
  kStickyAccept,      // the verifier keeps accepting a token it accepted once
};

// Holds each change notification back until the next write through the store
// begins: a write then returns before the verifier has seen it, as with a
// store whose notifications are asynchronous and nobody calling Refresh.
class LateNotifyStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;

  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::function<void()> cb) override {
    int id = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id = ++next_id_;
      callbacks_[id] = std::move(cb);
    }
    absl::StatusOr<std::unique_ptr<Subscription>> inner =
        ForwardingStore::Subscribe([this] { pending_.store(true); });
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<Subscription>(new Held(this, id, *std::move(inner)));
  }
  absl::Status Insert(const KeyRecord& r, const AuditNote& note) override {
    DeliverHeld();
    return ForwardingStore::Insert(r, note);
  }
  absl::StatusOr<KeyRecord> Update(const KeyRecord& r, const AuditNote& note) override {
    DeliverHeld();
    return ForwardingStore::Update(r, note);
  }
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> v,
                      const AuditNote& note) override {
    DeliverHeld();
    return ForwardingStore::Delete(id, v, note);
  }
  absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                             absl::Duration min_advance) override {
    return inner().TouchLastUsed(updates, min_advance);
  }

 private:
  class Held final : public Subscription {
   public:
    Held(LateNotifyStore* store, int id, std::unique_ptr<Subscription> inner)
        : store_(store), id_(id), inner_(std::move(inner)) {}
    ~Held() override {
      inner_.reset();
      std::lock_guard<std::mutex> lock(store_->mu_);  // waits for a delivery in progress
      store_->callbacks_.erase(id_);
    }

   private:
    LateNotifyStore* store_;
    int id_;
    std::unique_ptr<Subscription> inner_;
  };

  void DeliverHeld() {
    if (!pending_.exchange(false)) return;
    std::lock_guard<std::mutex> lock(mu_);  // one delivery at a time, as stores promise
    for (auto& [id, cb] : callbacks_) cb();
  }

  std::atomic<bool> pending_{false};
  std::mutex mu_;
  int next_id_ = 0;
  std::map<int, std::function<void()>> callbacks_;
};

// The verifier as the readers see it: the real one, or a broken variant.
class VerifierUnderTest {
 public:
  VerifierUnderTest(const Verifier& verifier, Fault fault) : verifier_(verifier), fault_(fault) {}

  Verdict Verify(const std::string& token, const Requirement& req, absl::Time now) const {
    Verdict v = verifier_.Verify("Bearer " + token, req, now);
    switch (fault_) {
      case Fault::kIgnoreRevocation:
        if (v.outcome == Outcome::kRevoked) v.outcome = Outcome::kOk;
        break;
      case Fault::kRevokedAsUnknown:
        if (v.outcome == Outcome::kRevoked) {
          v.outcome = Outcome::kUnknown;
          v.set_key({});
        }
        break;
      case Fault::kStickyAccept: {
        std::lock_guard<std::mutex> lock(mu_);
        if (v.ok()) {
          accepted_[token] = std::string(v.key());
        } else if (auto it = accepted_.find(token);
                   v.outcome == Outcome::kUnknown && it != accepted_.end()) {
          v.outcome = Outcome::kOk;
          v.set_key(it->second);
        }
        break;
      }
      default:
        break;
    }
    return v;
  }

 private:
  const Verifier& verifier_;
  const Fault fault_;
  mutable std::mutex mu_;
  mutable std::map<std::string, std::string> accepted_;
};

// The replicas verifies are checked for (linearizability.h, Op::replica):
// the Verifier's index, and the store itself (read by ReferenceVerifier).
constexpr int kVerifierReplica = 0;
constexpr int kReferenceReplica = 1;

struct StressConfig {
  Backend backend = Backend::kMemory;
  Apply apply = Apply::kCallback;
  Fault fault = Fault::kNone;
  int writers = 2;
};

// One key of the pool. Writers replace a deleted key with a new one.
struct Slot {
  std::mutex mu;
  std::string id;
  std::vector<std::string> tokens;  // every token issued to `id`, oldest first
  std::string dead_id;              // the key deleted last from this slot
  std::vector<std::string> dead_tokens;
};

// What a reader verifies: a token, under the key it was issued to.
struct Pick {
  std::string key;
  std::string token;
};

// The first unexpected status a thread met (Catch assertions are not
// thread-safe: threads record, the main thread checks).
struct Errors {
  std::mutex mu;
  std::string first;
  std::atomic<int> count{0};
  void Add(const std::string& what) {
    if (count.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> lock(mu);
      first = what;
    }
  }
};

struct Scopes {
  Requirement none = Requirement::AnyValidKey();
  Requirement read = Requirement::AnyValidKey();  // set by Stress's constructor
  Requirement write = Requirement::AnyValidKey();
  const Requirement& For(const std::string& name) const {
    return name.empty() ? none : name == "read:all" ? read : write;
  }
};

// Op kinds recorded, to see that the run exercised each of them.
struct Counts {
  std::atomic<int> revoke{0}, restore{0}, roll{0}, modify{0}, del{0}, reload{0};
};

class Stress {
 public:
  explicit Stress(StressConfig config) : config_(config) {
    read_write_.read = testing::MustRequire(deployment_->scopes(), {"read:all"});
    read_write_.write = testing::MustRequire(deployment_->scopes(), {"write:all"});
  }

  lin::CheckResult Run() {
    const bool heavy = Heavy();
    const int ops_per_writer = heavy ? 4000 : 300;
    const int verifier_readers = heavy ? 4 : 2;
    constexpr int kPool = 12;
    // Each reader keeps within this many verifies per management call made,
    // so that the history stays a size the checker reads in a moment.
    constexpr std::uint64_t kReadsPerWrite = 8;

    Open();
    lin::History::Log& setup = history_.NewLog();
    slots_ = std::vector<Slot>(kPool);
    for (Slot& s : slots_) {
      std::optional<CreatedKey> k = CreateKey(setup, -1);
      REQUIRE(k.has_value());
      s.id = k->record.id;
      s.tokens = {Text(k->token)};
    }
    const absl::StatusOr<Secret> never = GenerateToken("kg", "live");
    REQUIRE(never.ok());
    never_issued_ = Text(*never);
    StartVerifier();

    std::atomic<int> writers_left{config_.writers};
    std::vector<std::thread> threads;
    // Stops and joins every thread however this scope is left.
    struct Join {
      std::atomic<int>& left;
      std::vector<std::thread>& threads;
      ~Join() {
        left.store(0);
        for (std::thread& t : threads) {
          if (t.joinable()) t.join();
        }
      }
    } join{writers_left, threads};
    // The writers start once every reader runs: one writer on an idle core could otherwise be
    // done before a reader thread has started.
    const int readers = verifier_readers + 1;  // + one ReferenceVerifier reader
    std::atomic<int> readers_running{0};
    for (int w = 0; w < config_.writers; ++w) {
      threads.emplace_back([&, w] {
        while (readers_running.load() < readers && writers_left.load() > 0) {
          std::this_thread::yield();
        }
        Writer(w, ops_per_writer);
        writers_left.fetch_sub(1);
      });
    }
    for (int r = 0; r < readers; ++r) {
      threads.emplace_back([&, r] {
        readers_running.fetch_add(1);
        Reader(config_.writers + r, /*reference=*/r == verifier_readers, writers_left,
               kReadsPerWrite);
      });
    }
    for (std::thread& t : threads) t.join();
    threads.clear();

    INFO("first unexpected status: " << errors_.first);
    CHECK(errors_.count.load() == 0);
    // The run did what it is meant to: every kind of change, under readers.
    CHECK(counts_.revoke.load() > 0);
    CHECK(counts_.restore.load() > 0);
    CHECK(counts_.roll.load() > 0);
    CHECK(counts_.modify.load() > 0);
    CHECK(counts_.del.load() > 0);
    CHECK(counts_.reload.load() > 0);
    if (config_.fault == Fault::kNone) {
      REQUIRE(verifier_->Sync().ok());
      const VerifierStats stats = verifier_->Stats();
      CHECK(stats.keys == static_cast<std::size_t>(kPool));
      CHECK(stats.rebuilds >= 1);
    }
    verifier_->Shutdown();

    std::vector<lin::Op> ops = history_.Ops();
    lin::CheckResult result = lin::Check(ops);
    // Each write is followed by verifies of the key's tokens; how many the readers add depends
    // on the scheduler (with one writer on a loaded machine, fewer than the writes).
    CHECK(result.verifications >= static_cast<std::size_t>(ops_per_writer) * config_.writers);
    // KEYGATE_LIN_DUMP=<file>: the whole history of a key found wanting (in a
    // run that should have been linearizable).
    const char* dump = std::getenv("KEYGATE_LIN_DUMP");
    if (!result.linearizable && config_.fault == Fault::kNone && dump != nullptr && *dump != '\0') {
      std::ofstream(dump) << result.failure << "\n\n"
                          << lin::DescribeKey(ops, result.key, result.replica);
    }
    return result;
  }

 private:
  void Open() {
    if (config_.backend == Backend::kSqlite) {
#ifdef KEYGATE_TEST_SQLITE
      SqliteOptions o;
      o.synchronous = SqliteSynchronous::kNormal;  // durability is not the point here
      base_ = testing::OpenTempSqliteStore(o);
#else
      FAIL("built without the SQLite store");
#endif
    } else {
      base_ = std::make_shared<MemoryKeyStore>();
    }
    store_ = config_.fault == Fault::kLateNotify ? std::make_shared<LateNotifyStore>(base_) : base_;
    KeyManager::Options o;
    o.deployment = deployment_;
    o.store = store_;
    o.clock = clock_;
    manager_ = keygate::testing::MustOk(KeyManager::Create(o));
    for (int w = 0; w < config_.writers; ++w) {
      writer_managers_.push_back(keygate::testing::MustOk(KeyManager::Create(o)));
    }
    absl::StatusOr<std::unique_ptr<ReferenceVerifier>> ref = ReferenceVerifier::Create(
        {.deployment = deployment_, .store = store_, .environment = "production"});
    REQUIRE(ref.ok());
    reference_ = *std::move(ref);
  }

  void StartVerifier() {
    VerifierOptions vo;
    vo.deployment = deployment_;
    vo.store = store_;
    vo.environment = "production";
    vo.clock = clock_;
    vo.follow_changes = true;
    vo.sync_in_callback = config_.apply == Apply::kCallback;
    // The feed thread also pulls concurrently, except where it would mend
    // the late store's delay.
    vo.poll_interval = config_.fault == Fault::kLateNotify ? absl::Hours(1) : absl::Milliseconds(2);
    vo.full_resync_interval = absl::ZeroDuration();
    vo.record_usage = true;
    vo.usage_flush_interval = absl::ZeroDuration();  // FlushUsage is called by the writers
    absl::StatusOr<std::unique_ptr<Verifier>> created = Verifier::Create(std::move(vo));
    REQUIRE(created.ok());
    verifier_ = *std::move(created);
    under_test_ = std::make_unique<VerifierUnderTest>(*verifier_, config_.fault);
  }

  // Creates a key and records it; nullopt (and an error noted) on failure.
  std::optional<CreatedKey> CreateKey(lin::History::Log& log, int client) {
    CreateKeyRequest r;
    r.name = "stress";
    r.owner = "alice";
    r.environment = "production";
    r.scopes = {"read:all"};
    const lin::Tick call = history_.Now();
    absl::StatusOr<CreatedKey> k = manager_->Create(r, "w");
    if (!k.ok()) {
      errors_.Add("create: " + k.status().ToString());
      return std::nullopt;
    }
    Finish(log, lin::Op::Create(k->record.id, Text(k->token), r.scopes), call, client,
           k->record.id);
    return *std::move(k);
  }

  // Records a management call that succeeded: in kRefresh mode it returns
  // only once Refresh(id) has.
  void Finish(lin::History::Log& log, lin::Op op, lin::Tick call, int client,
              const std::string& id) {
    if (config_.apply == Apply::kRefresh && verifier_ != nullptr) {
      if (absl::Status s = verifier_->Refresh(id); !s.ok()) errors_.Add("refresh: " + s.ToString());
    }
    op.call = call;
    op.ret = history_.Now();
    op.client = client;
    log.Add(std::move(op));
  }

  void RecordVerify(lin::History::Log& log, int client, const Pick& pick, const std::string& scope,
                    absl::Time now, bool reference) {
    lin::Op op = lin::Op::Verify(pick.key, pick.token, scope, now);
    const Requirement& req = read_write_.For(scope);
    op.call = history_.Now();
    const Verdict v = reference ? reference_->Verify("Bearer " + pick.token, req, now)
                                : under_test_->Verify(pick.token, req, now);
    op.ret = history_.Now();
    op.outcome = v.outcome;
    op.verdict_key = std::string(v.key());
    op.replica = reference ? kReferenceReplica : kVerifierReplica;
    op.client = client;
    log.Add(std::move(op));
  }

  static std::string RandomScope(std::mt19937_64& rng) {
    switch (rng() % 3) {
      case 0:
        return "";
      case 1:
        return "read:all";
      default:
        return "write:all";
    }
  }
  static absl::Time RandomNow(std::mt19937_64& rng) { return rng() % 2 ? kStart : kLater; }

  void Writer(int client, int ops) {
    lin::History::Log& log = history_.NewLog();
    KeyManager& manager = *writer_managers_[client];
    std::mt19937_64 rng(42 + static_cast<std::uint64_t>(client));
    for (int op = 0; op < ops; ++op) {
      Slot& slot = slots_[rng() % slots_.size()];
      std::string id;
      std::vector<std::string> tokens;
      {
        std::lock_guard<std::mutex> lock(slot.mu);
        id = slot.id;
        tokens = slot.tokens;
      }
      // Tokens to verify once the call returned, under the key they belong to.
      std::vector<Pick> after;
      const lin::Tick call = history_.Now();
      switch (rng() % 10) {
        case 0:
        case 1:
        case 2: {
          const bool revoke = rng() % 2 == 0;
          absl::StatusOr<KeyRecord> r = revoke ? manager.Revoke(id, "w") : manager.Restore(id, "w");
          // A call that found the key in its target state wrote nothing, and
          // is recorded all the same: it must not return before the
          // verifier has the concurrent call that did write.
          if (r.ok()) {
            Finish(log, revoke ? lin::Op::Revoke(id) : lin::Op::Restore(id), call, client, id);
            (revoke ? counts_.revoke : counts_.restore).fetch_add(1);
          } else if (r.status().code() != absl::StatusCode::kNotFound) {
            errors_.Add("revoke/restore: " + r.status().ToString());
          }
          break;
        }
        case 3:
        case 4: {
          const absl::Duration grace = rng() % 2 ? kGrace : absl::ZeroDuration();
          absl::StatusOr<CreatedKey> k = manager.Roll(id, grace, "w");
          if (k.ok()) {
            std::optional<absl::Time> until;
            if (k->record.previous.has_value()) until = k->record.previous->valid_until;
            const std::string token = Text(k->token);
            Finish(log, lin::Op::Roll(id, token, until), call, client, id);
            counts_.roll.fetch_add(1);
            tokens.push_back(token);
            std::lock_guard<std::mutex> lock(slot.mu);
            if (slot.id == id) slot.tokens.push_back(token);
          } else if (k.status().code() != absl::StatusCode::kNotFound &&
                     k.status().code() != absl::StatusCode::kFailedPrecondition) {
            errors_.Add("roll: " + k.status().ToString());
          }
          break;
        }
        case 5:
        case 6: {
          KeyUpdate u;
          static const std::vector<std::vector<std::string>> kScopeSets = {
              {"read:all"}, {"write:all"}, {"read:all", "write:all"}};
          u.scopes = kScopeSets[rng() % kScopeSets.size()];
          if (rng() % 2) {
            u.expires = rng() % 2 ? std::optional<absl::Time>(kStart + kGrace)
                                  : std::optional<absl::Time>();
          }
          // An optimistic client: re-read and retry on a version conflict.
          for (int attempt = 0; attempt < 100; ++attempt) {
            absl::StatusOr<KeyRecord> cur = store_->Get(id);
            if (!cur.ok()) break;  // deleted meanwhile
            const lin::Tick attempt_call = history_.Now();
            absl::StatusOr<KeyRecord> m = manager.Modify(id, u, cur->version, "w");
            if (m.ok()) {
              // As for revoke, a Modify that changed nothing counts too.
              Finish(log, lin::Op::Modify(id, u.scopes, u.expires), attempt_call, client, id);
              counts_.modify.fetch_add(1);
              break;
            }
            if (m.status().code() == absl::StatusCode::kNotFound) break;
            if (m.status().code() != absl::StatusCode::kAborted) {
              errors_.Add("modify: " + m.status().ToString());
              break;
            }
          }
          break;
        }
        case 7: {
          absl::Status s = manager.Delete(id, "w");
          if (s.code() == absl::StatusCode::kNotFound) break;
          if (!s.ok()) {
            errors_.Add("delete: " + s.ToString());
            break;
          }
          Finish(log, lin::Op::Delete(id), call, client, id);
          counts_.del.fetch_add(1);
          std::optional<CreatedKey> k = CreateKey(log, client);
          if (!k.has_value()) break;
          const std::string token = Text(k->token);
          {
            std::lock_guard<std::mutex> lock(slot.mu);
            slot.dead_id = id;
            slot.dead_tokens = tokens;
            slot.id = k->record.id;
            slot.tokens = {token};
          }
          after.push_back({k->record.id, token});
          break;
        }
        case 8:
          if (op % 3 == 0) {
            // A table swap under the readers.
            if (absl::Status s = verifier_->Reload(); !s.ok()) {
              errors_.Add("reload: " + s.ToString());
            }
            counts_.reload.fetch_add(1);
          } else if (absl::Status s = verifier_->FlushUsage(); !s.ok()) {
            errors_.Add("flush: " + s.ToString());
          }
          break;
        default:
          break;  // only the verifies below
      }
      // Verify the key's latest tokens (and a deleted key's) right after
      // the call returned: the verifies most likely to catch a stale state.
      const std::size_t from = tokens.size() > 3 ? tokens.size() - 3 : 0;
      for (std::size_t i = from; i < tokens.size(); ++i) after.push_back({id, tokens[i]});
      for (const Pick& pick : after) {
        RecordVerify(log, client, pick, RandomScope(rng), RandomNow(rng), /*reference=*/false);
      }
      writes_done_.fetch_add(1);
    }
  }

  void Reader(int client, bool reference, const std::atomic<int>& writers_left,
              std::uint64_t reads_per_write) {
    lin::History::Log& log = history_.NewLog();
    std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(client));
    std::uint64_t reads = 0;
    while (writers_left.load() > 0) {
      if (reads > (writes_done_.load() + 1) * reads_per_write) {
        std::this_thread::yield();
        continue;
      }
      Pick pick;
      const unsigned what = rng() % 32;
      if (what == 0) {
        pick.token = never_issued_;  // under no key: must stay unknown
      } else {
        Slot& slot = slots_[rng() % slots_.size()];
        std::lock_guard<std::mutex> lock(slot.mu);
        const bool dead = what < 4 && !slot.dead_tokens.empty();
        const std::vector<std::string>& tokens = dead ? slot.dead_tokens : slot.tokens;
        pick.key = dead ? slot.dead_id : slot.id;
        // The newest token half of the time, else any.
        pick.token = rng() % 2 ? tokens.back() : tokens[rng() % tokens.size()];
      }
      RecordVerify(log, client, pick, RandomScope(rng), RandomNow(rng), reference);
      ++reads;
    }
  }

  const StressConfig config_;
  std::shared_ptr<const Deployment> deployment_ = *Deployment::Create(DeploymentOptions{});
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>(kStart);
  std::shared_ptr<KeyStore> base_;
  std::shared_ptr<KeyStore> store_;
  std::unique_ptr<KeyManager> manager_;
  std::vector<std::unique_ptr<KeyManager>> writer_managers_;
  std::unique_ptr<ReferenceVerifier> reference_;
  std::unique_ptr<Verifier> verifier_;
  std::unique_ptr<VerifierUnderTest> under_test_;
  Scopes read_write_;
  std::vector<Slot> slots_;
  std::string never_issued_;
  lin::History history_;
  std::atomic<std::uint64_t> writes_done_{0};
  Errors errors_;
  Counts counts_;
};

void RequireLinearizable(StressConfig config) {
  Stress stress(config);
  const lin::CheckResult r = stress.Run();
  INFO(r.failure);
  CHECK(r.linearizable);
  CHECK_FALSE(r.inconclusive);
}

// The checker finds the fault; `answered` and `model` (when given) are the
// verdict seen and the one the model gives where the history goes wrong.
void RequireCaught(StressConfig config, const std::string& answered = "",
                   const std::string& model = "") {
  config.writers = 1;  // the writer's own verifies then meet every stale state
  Stress stress(config);
  const lin::CheckResult r = stress.Run();
  INFO(r.failure);
  CHECK_FALSE(r.linearizable);
  CHECK_FALSE(r.inconclusive);
  CHECK(r.failure.find("not linearizable") != std::string::npos);
  if (!answered.empty()) CHECK(r.failure.find("-> " + answered + " [") != std::string::npos);
  if (!model.empty()) CHECK(r.failure.find("the model answers " + model) != std::string::npos);
}

TEST_CASE("Verifier stress: revocation is linearizable on a MemoryKeyStore",
          "[verifier][concurrent][revocation][linearizability]") {
  RequireLinearizable({Backend::kMemory, Apply::kCallback, Fault::kNone});
}

TEST_CASE("Verifier stress: Refresh makes changes linearizable when notifications only wake",
          "[verifier][concurrent][revocation][linearizability]") {
  RequireLinearizable({Backend::kMemory, Apply::kRefresh, Fault::kNone});
}

#ifdef KEYGATE_TEST_SQLITE
TEST_CASE("Verifier stress: revocation is linearizable on a SqliteKeyStore",
          "[verifier][concurrent][revocation][linearizability][sqlite]") {
  RequireLinearizable({Backend::kSqlite, Apply::kCallback, Fault::kNone});
}

TEST_CASE("Verifier stress: Refresh on a SqliteKeyStore",
          "[verifier][concurrent][revocation][linearizability][sqlite]") {
  RequireLinearizable({Backend::kSqlite, Apply::kRefresh, Fault::kNone});
}
#endif

TEST_CASE("Verifier stress: a store that notifies late is caught",
          "[verifier][concurrent][revocation][linearizability]") {
  RequireCaught({Backend::kMemory, Apply::kCallback, Fault::kLateNotify});
}

TEST_CASE("Verifier stress: a verifier that ignores revocation is caught",
          "[verifier][concurrent][revocation][linearizability]") {
  RequireCaught({Backend::kMemory, Apply::kCallback, Fault::kIgnoreRevocation}, "ok", "revoked");
}

TEST_CASE("Verifier stress: a revoked key reported as unknown is caught",
          "[verifier][concurrent][revocation][linearizability]") {
  RequireCaught({Backend::kMemory, Apply::kCallback, Fault::kRevokedAsUnknown}, "unknown",
                "revoked");
}

TEST_CASE("Verifier stress: a deleted or rolled-out token accepted again is caught",
          "[verifier][concurrent][revocation][linearizability]") {
  RequireCaught({Backend::kMemory, Apply::kCallback, Fault::kStickyAccept}, "ok", "unknown");
}

// A call whose answer reports the state a concurrent write left returns only
// once the verifier has that write (KeyManager waits on KeyStore::
// AwaitSubscribers): a second Revoke that finds the key revoked (found by
// the linearizability checker under TSan's scheduling: it returned while the
// first was still notifying, and the key still verified), a second Delete
// answering kNotFound, a Roll refused because a concurrent Revoke got there
// first. A subscriber ahead of the verifier's holds the first call inside
// its notification round, so the second meets that window every time.
TEST_CASE("Verifier stress: a call answered by a concurrent write returns after it applies",
          "[verifier][concurrent][revocation]") {
  struct Case {
    const char* name;
    std::function<absl::Status(KeyManager&, const std::string&)> first;
    std::function<absl::Status(KeyManager&, const std::string&)> second;
    absl::StatusCode refusal;
    Outcome after;
  };
  const Case cases[] = {
      {"revoke, then revoke (idempotent)",
       [](KeyManager& m, const std::string& id) { return m.Revoke(id, "a").status(); },
       [](KeyManager& m, const std::string& id) { return m.Revoke(id, "b").status(); },
       absl::StatusCode::kOk, Outcome::kRevoked},
      {"delete, then delete",
       [](KeyManager& m, const std::string& id) { return m.Delete(id, "a"); },
       [](KeyManager& m, const std::string& id) { return m.Delete(id, "b"); },
       absl::StatusCode::kNotFound, Outcome::kUnknown},
      {"delete, then revoke",
       [](KeyManager& m, const std::string& id) { return m.Delete(id, "a"); },
       [](KeyManager& m, const std::string& id) { return m.Revoke(id, "b").status(); },
       absl::StatusCode::kNotFound, Outcome::kUnknown},
      {"revoke, then roll",
       [](KeyManager& m, const std::string& id) { return m.Revoke(id, "a").status(); },
       [](KeyManager& m, const std::string& id) {
         return m.Roll(id, absl::ZeroDuration(), "b").status();
       },
       absl::StatusCode::kFailedPrecondition, Outcome::kRevoked},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Managed world;
    CreateKeyRequest r;
    r.name = "raced";
    r.owner = "alice";
    r.environment = "production";
    absl::StatusOr<CreatedKey> k = world.manager.Create(r, "w");
    REQUIRE(k.ok());
    const std::string id = k->record.id;
    const std::string header = "Bearer " + Text(k->token);

    // Holds the first call's notification round (on its thread).
    std::mutex mu;
    std::condition_variable cv;
    bool armed = true;
    bool held = false;
    bool released = false;
    bool second_done = false;
    absl::StatusOr<std::unique_ptr<Subscription>> gate = world.store->Subscribe([&] {
      std::unique_lock<std::mutex> lock(mu);
      if (!armed) return;
      armed = false;
      held = true;
      cv.notify_all();
      cv.wait(lock, [&] { return released; });
    });
    REQUIRE(gate.ok());
    VerifierOptions vo;
    vo.deployment = world.deployment;
    vo.store = world.store;
    vo.environment = "production";
    vo.clock = world.clock;
    vo.poll_interval = absl::Hours(1);  // only the callback applies changes
    absl::StatusOr<std::unique_ptr<Verifier>> verifier = Verifier::Create(std::move(vo));
    REQUIRE(verifier.ok());

    absl::Status first_status;
    std::thread first([&] { first_status = c.first(world.manager, id); });
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return held; });  // the first call has written
    }
    absl::Status second_status;
    Outcome seen = Outcome::kOk;
    std::thread second([&] {
      second_status = c.second(world.manager, id);
      seen = (*verifier)->Verify(header, Requirement::AnyValidKey(), kStart).outcome;
      std::lock_guard<std::mutex> lock(mu);
      second_done = true;
      cv.notify_all();
    });
    {
      // The second call waits for the first one's round; let it go after a
      // while (an early return would be done by then and seen below).
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::seconds(2), [&] { return second_done; });
      released = true;
      cv.notify_all();
    }
    second.join();
    first.join();
    CHECK(first_status.ok());
    CHECK(second_status.code() == c.refusal);
    CHECK(seen == c.after);
    (*verifier)->Shutdown();
  }
}

// --- Rate limits and epochs ----------------------------------------------------------

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

// Sums what the batches report, and counts entries that break KeyUsage's
// contract (a denial count without a time, or a time outside the test's).
class DenialTally final : public UsageSink {
 public:
  DenialTally(absl::Time from, absl::Time to) : from_(from), to_(to) {}
  void Record(absl::Span<const KeyUsage> batch) noexcept override {
    std::lock_guard<std::mutex> lock(mu_);
    ++batches_;
    for (const KeyUsage& u : batch) {
      requests_ += u.requests;
      denied_ += u.denied;
      if (u.requests == 0 && u.denied == 0) ++broken_;
      if (u.denied == 0 ? u.first_denied != absl::InfinitePast()
                        : u.first_denied < from_ || u.first_denied > to_) {
        ++broken_;
      }
    }
  }
  std::uint64_t requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::uint64_t denied() const {
    std::lock_guard<std::mutex> lock(mu_);
    return denied_;
  }
  std::uint64_t broken() const {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_;
  }
  std::uint64_t batches() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }

 private:
  const absl::Time from_, to_;
  mutable std::mutex mu_;
  std::uint64_t requests_ = 0, denied_ = 0, broken_ = 0, batches_ = 0;
};

// The collector takes each slot's denial cell while readers add to it, and
// the writer carries cells out of the tables that reloads swap away: every
// kRateLimited verdict must be reported exactly once, with a time.
TEST_CASE("Verifier stress: every denial is reported once while flushes and reloads run",
          "[verifier][concurrent][usage][rate_limit]") {
  const int kThreads = Heavy() ? 4 : 3;
  const int kAttempts = Heavy() ? 200000 : 20000;  // per thread, at least
  // Verification goes on until the collector and the writer have each run
  // this often while it did.
  const int kMinRounds = Heavy() ? 200 : 20;
  Managed world;
  CreateKeyRequest r;
  r.name = "flooded";
  r.owner = "alice";
  r.environment = "production";
  r.rate_limit = RateLimitPolicy{100, absl::Seconds(1), 20};  // one per 10 ms, 20 at once
  const std::string token = "Bearer " + Text(world.manager.Create(r, "w")->token);
  VerifierOptions vo;
  vo.deployment = world.deployment;
  vo.store = world.store;
  vo.environment = "production";
  vo.follow_changes = false;
  vo.usage_flush_interval = absl::ZeroDuration();
  // Each thread's clock runs a millisecond per attempt, so the key keeps
  // being admitted and refused, in many seconds.
  auto sink = std::make_shared<DenialTally>(kStart, kStart + absl::Hours(24));
  vo.usage_sink = sink;
  auto v = Verifier::Create(std::move(vo));
  REQUIRE(v.ok());
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> limited{0};
  std::atomic<std::uint64_t> other{0};
  std::atomic<int> started{0};
  std::atomic<int> running{kThreads};
  std::atomic<int> flushes{0};
  std::atomic<int> reloads{0};
  std::atomic<int> flush_failures{0};
  std::atomic<int> reload_failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      while (started.load() != 2) std::this_thread::yield();
      for (int i = 0; i < kAttempts || flushes.load(std::memory_order_relaxed) < kMinRounds ||
                      reloads.load(std::memory_order_relaxed) < kMinRounds;
           ++i) {
        const Verdict verdict =
            (*v)->Verify(token, Requirement::AnyValidKey(), kStart + absl::Milliseconds(i));
        if (verdict.ok()) {
          ok.fetch_add(1, std::memory_order_relaxed);
        } else if (verdict.outcome == Outcome::kRateLimited) {
          limited.fetch_add(1, std::memory_order_relaxed);
        } else {
          other.fetch_add(1, std::memory_order_relaxed);
        }
      }
      running.fetch_sub(1);
    });
  }
  std::thread flusher([&] {
    started.fetch_add(1);
    while (running.load() != 0) {
      if (!(*v)->FlushUsage().ok()) flush_failures.fetch_add(1);
      flushes.fetch_add(1);
      std::this_thread::yield();  // on a busy machine, let the readers in between
    }
  });
  std::thread reloader([&] {
    started.fetch_add(1);
    while (running.load() != 0) {
      if (!(*v)->Reload().ok()) reload_failures.fetch_add(1);
      reloads.fetch_add(1);
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  flusher.join();
  reloader.join();
  REQUIRE((*v)->FlushUsage().ok());
  INFO("ok " << ok.load() << " limited " << limited.load() << " batches " << sink->batches()
             << " flushes " << flushes.load() << " reloads " << reloads.load());
  CHECK(other.load() == 0);
  CHECK(flush_failures.load() == 0);
  CHECK(reload_failures.load() == 0);
  CHECK(limited.load() > 0);
  CHECK(sink->denied() == limited.load());
  CHECK(sink->requests() == ok.load());
  CHECK(sink->broken() == 0);
  CHECK(sink->batches() > 1);
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
