// Benchmarks of the hot-path Verifier against its floor and two locked
// baselines, all in one binary (bench/README.md has the figures).
//
//   BM_HashOnly                 the token's digest, exactly as the verifier
//                               computes it: the floor
//   BM_Verify*                  the Verifier, by outcome and working set
//                               (BM_VerifyRateLimitedOneKey: every thread
//                               refused by one key, the flood that a
//                               key.rate_limited alert is about)
//   BM_SharedMutexVerify*       std::shared_mutex + std::unordered_map
//   BM_AbslMutexVerify*         absl::Mutex (reader lock) + absl::flat_hash_map
//   BM_DramLatency              one dependent random load over a region the
//                               size of the index: the memory floor of a
//                               cold lookup
//   BM_IndexMemory              RSS growth and index bytes per key
//
// Every verifying benchmark reads the clock once per call (SystemClock) and
// reports p50/p99/p99.9 latency counters from rdtsc around a sample of calls
// (every 4th), next to ns/op. Baselines are checked for the same verdicts
// (outcome and key id) as the Verifier before they are timed.
//
// Key sets are synthetic (a KeyStore that generates records on the fly) so
// that 10 M keys need no store in memory; tokens are real for the keys that
// are looked up. The 10 M case is opt-in: KEYGATE_BENCH_10M=1.

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"

#include "bench_latency.h"
#include "internal/canonical_token.h"
#include "internal/digest_prefix.h"
#include "internal/gcra.h"
#include "keygate/bearer.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/key_store.h"
#include "keygate/rate_limiter.h"
#include "keygate/token.h"
#include "keygate/verifier.h"

namespace keygate {
namespace {

// Timing: bench_latency.h; one call in kSampleEvery is timed.
constexpr std::uint64_t kSampleEvery = 4;
using bench::Latencies;
using bench::NsPerTick;
using bench::Ticks;

// ---------------------------------------------------------------------------
// Synthetic keys
// ---------------------------------------------------------------------------

std::uint64_t SplitMix(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::string SecretBytes(std::uint64_t i) {
  std::uint64_t x = i * 7919 + 17;
  std::string s(32, '\0');
  for (int k = 0; k < 4; ++k) {
    const std::uint64_t v = SplitMix(x);
    std::memcpy(&s[static_cast<std::size_t>(k) * 8], &v, 8);
  }
  return s;
}

std::string Token(std::uint64_t i) {
  absl::StatusOr<Secret> t = TokenFromBytes("kg", "live", SecretBytes(i));
  if (!t.ok()) std::abort();
  return std::string(t->Reveal(InsecureSecretAccess::Get()));
}

// Shaped like KeyManager's ids: "key_" + 8 base62 digits of a creation time
// in Unix ms (here one key per ms from November 2026) + 14 random ones.
std::string KeyId(std::uint64_t i) {
  static constexpr char kAlnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  char time[8];
  std::uint64_t ms = 1'795'000'000'000 + i;
  for (int k = 7; k >= 0; --k, ms /= 62) time[k] = kAlnum[ms % 62];
  std::string id = "key_";
  id.append(time, 8);
  std::uint64_t x = i * 31 + 5;
  for (int k = 0; k < 14; ++k) id.push_back(kAlnum[SplitMix(x) % 62]);
  return id;
}

enum class KeyClass { kNormal, kRevoked, kLimited };

// Generates `n` keys as a change feed, without keeping them. Keys whose
// digests are given (the ones benchmarks look up) get those; the others get
// random digests (no token is ever presented for them).
class SyntheticStore final : public KeyStore {
 public:
  using Classifier = KeyClass (*)(std::uint64_t i, std::uint64_t n);
  SyntheticStore(std::uint64_t n, Classifier classify,
                 std::unordered_map<std::uint64_t, Digest> digests)
      : n_(n), classify_(classify), digests_(std::move(digests)) {}

  KeyRecord Record(std::uint64_t i) const {
    KeyRecord r;
    r.id = KeyId(i);
    r.name = "bench";
    r.owner = "owner";
    r.kind = KeyKind::kGeneral;
    r.environment = "production";
    r.scopes = {"read:all"};
    const KeyClass c = classify_(i, n_);
    r.state = c == KeyClass::kRevoked ? KeyState::kRevoked : KeyState::kActive;
    if (c == KeyClass::kLimited) r.rate_limit = RateLimitPolicy{1, absl::Hours(24), 1};
    auto it = digests_.find(i);
    if (it != digests_.end()) {
      r.digest = it->second;
    } else {
      std::uint64_t x = i ^ 0xA5A5A5A5A5A5A5A5ULL;
      for (int k = 0; k < 4; ++k) {
        const std::uint64_t v = SplitMix(x);
        std::memcpy(r.digest.data() + 8 * k, &v, 8);
      }
    }
    r.version = 1;
    return r;
  }

  absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) override {
    ChangeBatch b;
    const std::uint64_t end = std::min<std::uint64_t>(n_, after + limit);
    b.changes.reserve(end > after ? end - after : 0);
    for (std::uint64_t i = after; i < end; ++i) {
      Change c;
      c.sequence = i + 1;
      c.key_id = KeyId(i);
      c.record = Record(i);
      b.changes.push_back(std::move(c));
    }
    b.next_sequence = std::max(after, end);
    b.more = end < n_;
    return b;
  }
  absl::StatusOr<std::uint64_t> LastSequence() override { return n_; }
  absl::Status Insert(const KeyRecord&, const AuditNote&) override { return Unsupported(); }
  absl::StatusOr<KeyRecord> Get(std::string_view) override { return Unsupported(); }
  absl::StatusOr<KeyRecord> FindByDigest(const Digest&) override { return Unsupported(); }
  absl::StatusOr<KeyRecord> Update(const KeyRecord&, const AuditNote&) override {
    return Unsupported();
  }
  absl::Status Delete(std::string_view, std::optional<std::uint64_t>, const AuditNote&) override {
    return Unsupported();
  }
  absl::StatusOr<AuditPage> ReadAudit(const AuditQuery&) override { return Unsupported(); }
  absl::StatusOr<std::uint64_t> AuditCursor(std::string_view) override { return Unsupported(); }
  absl::Status AckAudit(std::string_view, std::uint64_t) override { return Unsupported(); }
  absl::StatusOr<ListPage> List(const ListOptions&) override { return Unsupported(); }
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::function<void()>) override {
    return Unsupported();
  }

 private:
  static absl::Status Unsupported() { return absl::UnimplementedError("synthetic store"); }
  std::uint64_t n_;
  Classifier classify_;
  std::unordered_map<std::uint64_t, Digest> digests_;
};

std::shared_ptr<const Deployment> BenchDeployment() {
  static const std::shared_ptr<const Deployment> d = [] {
    DeploymentOptions o;
    // A generous default limit so that every allowed request runs GCRA (one
    // CAS), as a production deployment with limits would.
    o.environments = {
        {"production", "live", RateLimitPolicy{1'000'000, absl::Seconds(1), 1'000'000}},
        {"preview", "test", std::nullopt}};
    return *Deployment::Create(std::move(o));
  }();
  return d;
}

Requirement Must(absl::StatusOr<Requirement> r) {
  if (!r.ok()) std::abort();  // the bench's own scopes are registered
  return *std::move(r);
}
Requirement ReadAll() { return Must(BenchDeployment()->scopes().Require({"read:all"})); }
Requirement WriteAll() { return Must(BenchDeployment()->scopes().Require({"write:all"})); }

// Inputs, laid out back to back with each one starting on a cache line, as
// a server's receive buffers hold them (rather than one heap block each,
// scattered over memory, which made every benchmark pay for input misses).
class InputList {
 public:
  void push_back(std::string s) {
    pending_.push_back(std::move(s));
    views_.clear();
  }
  std::size_t size() const { return pending_.size(); }
  bool empty() const { return pending_.empty(); }
  std::string_view operator[](std::size_t i) const { return views_[i]; }
  // Must be called once all inputs are in, before operator[].
  void Pack() {
    std::size_t bytes = 0;
    for (const std::string& s : pending_) bytes += (s.size() + 63) / 64 * 64;
    mem_.reset(static_cast<char*>(std::aligned_alloc(64, std::max<std::size_t>(bytes, 64))));
    if (mem_ == nullptr) std::abort();
    views_.clear();
    std::size_t at = 0;
    for (const std::string& s : pending_) {
      std::memcpy(mem_.get() + at, s.data(), s.size());
      views_.emplace_back(mem_.get() + at, s.size());
      at += (s.size() + 63) / 64 * 64;
    }
  }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::vector<std::string> pending_;
  std::vector<std::string_view> views_;
  std::unique_ptr<char, Free> mem_;
};

// A set of keys and the Authorization headers that benchmarks present.
struct World {
  std::uint64_t n = 0;
  std::shared_ptr<SyntheticStore> store;
  std::unique_ptr<Verifier> verifier;
  InputList ok;       // looked-up normal keys, shuffled
  InputList revoked;  // (hot world only)
  InputList limited;  // exhausted (hot world only)
  InputList flooded;  // one exhausted key's header, kHot times (hot world only)
  InputList unknown;  // well-formed, never issued
  InputList bad;      // checksum off by one character
  InputList tokens;   // bare tokens of `ok`, same order
};

constexpr std::uint64_t kHot = 4096;
constexpr std::uint64_t kMaxSample = 1 << 20;

KeyClass HotClass(std::uint64_t i, std::uint64_t) {
  return i < kHot ? KeyClass::kNormal : i < 2 * kHot ? KeyClass::kRevoked : KeyClass::kLimited;
}
KeyClass AllNormal(std::uint64_t, std::uint64_t) { return KeyClass::kNormal; }

std::unique_ptr<World> BuildWorld(std::uint64_t n, bool hot) {
  auto w = std::make_unique<World>();
  w->n = n;
  const std::uint64_t stride = hot ? 1 : std::max<std::uint64_t>(1, n / kMaxSample);
  std::unordered_map<std::uint64_t, Digest> digests;
  std::vector<std::pair<std::uint64_t, std::string>> looked_up;
  const TokenHasher& hasher = BenchDeployment()->hasher();
  for (std::uint64_t i = 0; i < n; i += stride) {
    std::string t = Token(i);
    Digest d{};
    if (!hasher.Hash(t, &d)) std::abort();
    digests.emplace(i, d);
    looked_up.emplace_back(i, std::move(t));
  }
  w->store = std::make_shared<SyntheticStore>(n, hot ? &HotClass : &AllNormal, std::move(digests));
  VerifierOptions vo;
  vo.deployment = BenchDeployment();
  vo.store = w->store;
  vo.environment = "production";
  vo.follow_changes = false;
  vo.usage_flush_interval = absl::ZeroDuration();
  vo.expected_keys = n;
  absl::StatusOr<std::unique_ptr<Verifier>> v = Verifier::Create(std::move(vo));
  if (!v.ok()) {
    std::fprintf(stderr, "verifier: %s\n", v.status().ToString().c_str());
    std::abort();
  }
  w->verifier = *std::move(v);
  std::mt19937_64 rng(n);
  std::shuffle(looked_up.begin(), looked_up.end(), rng);
  std::string first_limited;
  for (auto& [i, t] : looked_up) {
    const KeyClass c = hot ? HotClass(i, n) : KeyClass::kNormal;
    const std::string header = "Bearer " + t;
    if (c == KeyClass::kNormal) {
      w->ok.push_back(header);
      w->tokens.push_back(t);
    } else if (c == KeyClass::kRevoked) {
      w->revoked.push_back(header);
    } else {
      // Use up the single request the key ever gets.
      (void)w->verifier->Verify(header, ReadAll());
      w->limited.push_back(header);
      if (first_limited.empty()) first_limited = header;
    }
  }
  if (!first_limited.empty()) {
    for (std::uint64_t k = 0; k < kHot; ++k) w->flooded.push_back(first_limited);
  }
  for (InputList* l : {&w->ok, &w->revoked, &w->limited, &w->flooded, &w->tokens}) l->Pack();
  const std::size_t extra = std::min<std::size_t>(w->ok.size(), kHot);
  for (std::size_t k = 0; k < extra; ++k) {
    w->unknown.push_back("Bearer " + Token(n + 1'000'000'000ULL + k));
    std::string bad(w->tokens[k]);
    bad[bad.size() - 3] = bad[bad.size() - 3] == 'A' ? 'B' : 'A';
    w->bad.push_back("Bearer " + bad);
  }
  w->unknown.Pack();
  w->bad.Pack();
  return w;
}

World& GetWorld(std::uint64_t n, bool hot) {
  static std::mutex mu;
  static std::map<std::pair<std::uint64_t, bool>, std::unique_ptr<World>> worlds;
  std::lock_guard<std::mutex> lock(mu);
  auto& w = worlds[{n, hot}];
  if (w == nullptr) w = BuildWorld(n, hot);
  return *w;
}

World& Hot() { return GetWorld(3 * kHot, /*hot=*/true); }

// ---------------------------------------------------------------------------
// Baselines: the same pipeline with a locked map
// ---------------------------------------------------------------------------

// A key id held inline, as a Verdict holds it.
struct InlineKeyId {
  char data[kKeyIdLength] = {};
  std::uint8_t size = 0;
  void Set(std::string_view id) noexcept {
    size = static_cast<std::uint8_t>(std::min(id.size(), kKeyIdLength));
    std::memcpy(data, id.data(), size);
  }
  std::string_view view() const noexcept { return {data, size}; }
};

struct BaselineEntry {
  InlineKeyId id;
  bool revoked = false;
  std::int64_t expires_ns = std::numeric_limits<std::int64_t>::max();
  bool wrong_env = false;
  ScopeMask scopes = 0;
  GcraPolicy policy;
  mutable std::atomic<std::int64_t> tat{internal::kGcraNeverUsed};

  BaselineEntry() = default;
  BaselineEntry(const BaselineEntry& o)
      : id(o.id),
        revoked(o.revoked),
        expires_ns(o.expires_ns),
        wrong_env(o.wrong_env),
        scopes(o.scopes),
        policy(o.policy),
        tat(o.tat.load()) {}
  BaselineEntry& operator=(const BaselineEntry& o) {
    id = o.id;
    revoked = o.revoked;
    expires_ns = o.expires_ns;
    wrong_env = o.wrong_env;
    scopes = o.scopes;
    policy = o.policy;
    tat.store(o.tat.load());
    return *this;
  }
};

struct DigestHash {
  std::size_t operator()(const Digest& d) const noexcept { return internal::DigestPrefix64(d); }
};

struct StdShared {
  using Map = std::unordered_map<Digest, BaselineEntry, DigestHash>;
  std::shared_mutex mu;
  template <typename F>
  Verdict Read(F f) {
    std::shared_lock<std::shared_mutex> lock(mu);
    return f();
  }
};
struct AbslShared {
  using Map = absl::flat_hash_map<Digest, BaselineEntry, DigestHash>;
  absl::Mutex mu;
  template <typename F>
  Verdict Read(F f) {
    absl::ReaderMutexLock lock(&mu);
    return f();
  }
};

template <typename Lock>
class LockedVerifier {
 public:
  explicit LockedVerifier(World& w) {
    const Deployment& d = *BenchDeployment();
    map_.reserve(w.n);
    for (std::uint64_t i = 0; i < w.n; ++i) {
      const KeyRecord r = w.store->Record(i);
      BaselineEntry e;
      e.id.Set(r.id);
      e.revoked = r.state != KeyState::kActive;
      e.wrong_env = r.environment != "production";
      e.scopes = d.scopes().Compile(r.scopes).value_or(0);
      if (r.rate_limit.has_value()) {
        e.policy = GcraPolicy::Compile(*r.rate_limit);
      } else if (const EnvironmentSpec* env = d.FindEnvironment(r.environment);
                 env->default_rate_limit.has_value()) {
        e.policy = GcraPolicy::Compile(*env->default_rate_limit);
      }
      map_.emplace(r.digest, e);
    }
  }

  Verdict Verify(std::string_view header, const Requirement& req) {
    Verdict v;
    std::string_view token;
    // The same parsing as the Verifier (its one-pass recogniser, then the
    // general parsers), so that the comparison is of the index and its
    // synchronisation only.
    switch (canonical_.MatchHeader(header, &token)) {
      case internal::CanonicalMatch::kOk:
        break;
      case internal::CanonicalMatch::kBadChecksum:
        v.outcome = Outcome::kMalformed;
        return v;
      case internal::CanonicalMatch::kOther:
        if (!GeneralParse(header, &token, &v)) return v;
        break;
    }
    Digest d;
    if (!BenchDeployment()->hasher().Hash(token, &d)) {
      v.outcome = Outcome::kUnavailable;
      return v;
    }
    const std::int64_t now = absl::ToUnixNanos(SystemClock::Get().Now());
    return lock_.Read([&]() -> Verdict {
      auto it = map_.find(d);
      if (it == map_.end()) {
        v.outcome = Outcome::kUnknown;
        return v;
      }
      const BaselineEntry& e = it->second;
      v.set_key(e.id.view());
      if (e.revoked) {
        v.outcome = Outcome::kRevoked;
      } else if (e.expires_ns <= now) {
        v.outcome = Outcome::kExpired;
      } else if (e.wrong_env) {
        v.outcome = Outcome::kWrongEnvironment;
      } else if (!MaskSatisfies(e.scopes, req)) {
        v.outcome = Outcome::kInsufficientScope;
      } else {
        LimitDecision ld{LimitResult::kAllowed, {}};
        if (e.policy.valid()) ld = internal::GcraAcquireOne(e.policy, e.tat, req.cost(), now);
        v.rate = ld.status;
        v.outcome = ld.result == LimitResult::kAllowed ? Outcome::kOk : Outcome::kRateLimited;
      }
      return v;
    });
  }

 private:
  static bool GeneralParse(std::string_view header, std::string_view* token, Verdict* v) {
    switch (ParseBearer(header, token)) {
      case BearerParse::kOk:
        break;
      case BearerParse::kMissing:
      case BearerParse::kWrongScheme:
        v->outcome = Outcome::kMissing;
        return false;
      default:
        v->outcome = Outcome::kInvalidRequest;
        return false;
    }
    TokenView view;
    if (ParseToken(*token, &view, "kg") != TokenError::kNone) {
      v->outcome = Outcome::kMalformed;
      return false;
    }
    if (view.env_tag != "live") {
      v->outcome = view.env_tag == "test" ? Outcome::kWrongEnvironment : Outcome::kMalformed;
      return false;
    }
    return true;
  }

  internal::CanonicalToken canonical_{"kg", "live"};
  typename Lock::Map map_;
  Lock lock_;
};

template <typename Lock>
LockedVerifier<Lock>& GetBaseline(World& w) {
  static std::mutex mu;
  static std::map<World*, std::unique_ptr<LockedVerifier<Lock>>> all;
  std::lock_guard<std::mutex> lock(mu);
  auto& b = all[&w];
  if (b == nullptr) b = std::make_unique<LockedVerifier<Lock>>(w);
  return *b;
}

// Same outcome and key id as the Verifier on every kind of input (limited
// keys excluded: each verifier keeps its own limiter state).
template <typename Lock>
bool SameVerdicts(World& w, LockedVerifier<Lock>& b, std::string* why) {
  const Requirement read = ReadAll();
  const Requirement write = WriteAll();
  auto check = [&](const InputList& headers, const Requirement& req) {
    for (std::size_t i = 0; i < headers.size() && i < 2000; ++i) {
      const Verdict a = w.verifier->Verify(headers[i], req);
      const Verdict c = b.Verify(headers[i], req);
      if (a.outcome != c.outcome || a.key() != c.key()) {
        *why = std::string("baseline disagrees: ") + std::string(OutcomeName(a.outcome)) + " vs " +
               std::string(OutcomeName(c.outcome));
        return false;
      }
    }
    return true;
  };
  return check(w.ok, read) && check(w.ok, write) && check(w.revoked, read) &&
         check(w.unknown, read) && check(w.bad, read);
}

// ---------------------------------------------------------------------------
// The loop shared by every verifying benchmark
// ---------------------------------------------------------------------------

// Thread t of T walks headers t, t+T, t+2T, ...: distinct keys per thread.
template <typename F>
void RunLoop(benchmark::State& state, const InputList& headers, F&& verify, Outcome expected) {
  if (headers.empty()) {
    state.SkipWithError("no inputs");
    return;
  }
  const std::size_t stride = static_cast<std::size_t>(state.threads());
  std::size_t i = static_cast<std::size_t>(state.thread_index()) % headers.size();
  Latencies lat;
  std::uint64_t n = 0;
  std::uint64_t wrong = 0;
  for (auto _ : state) {
    const std::string_view h = headers[i];
    i += stride;
    if (i >= headers.size()) i -= headers.size();
    if (++n % kSampleEvery == 0) {
      const std::uint64_t t0 = Ticks();
      const Verdict v = verify(h);
      const std::uint64_t t1 = Ticks();
      benchmark::DoNotOptimize(v);
      lat.Add(t1 - t0);
      wrong += v.outcome != expected;
    } else {
      const Verdict v = verify(h);
      benchmark::DoNotOptimize(v);
      wrong += v.outcome != expected;
    }
  }
  if (wrong != 0) {
    state.SkipWithError("unexpected verdicts");
    return;
  }
  state.SetItemsProcessed(state.iterations());
  lat.Report(state);
}

void VerifyOn(benchmark::State& state, World& w, const InputList& headers, const Requirement& req,
              Outcome expected) {
  RunLoop(
      state, headers, [&](std::string_view h) { return w.verifier->Verify(h, req); }, expected);
}

// ---------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------

void BM_HashOnly(benchmark::State& state) {
  World& w = Hot();
  const TokenHasher& hasher = BenchDeployment()->hasher();
  const std::size_t stride = static_cast<std::size_t>(state.threads());
  std::size_t i = static_cast<std::size_t>(state.thread_index());
  Latencies lat;
  std::uint64_t n = 0;
  for (auto _ : state) {
    const std::string_view t = w.tokens[i];
    i += stride;
    if (i >= w.tokens.size()) i -= w.tokens.size();
    Digest d;
    if (++n % kSampleEvery == 0) {
      const std::uint64_t t0 = Ticks();
      const bool ok = hasher.Hash(t, &d);
      const std::uint64_t t1 = Ticks();
      benchmark::DoNotOptimize(ok);
      lat.Add(t1 - t0);
    } else {
      benchmark::DoNotOptimize(hasher.Hash(t, &d));
    }
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
  lat.Report(state);
}

// The pieces of the path, for the README's breakdown: the Verifier's
// one-pass recogniser (what a canonical header costs) and the general parsers
// (what any other spelling costs).
void BM_ParseCanonical(benchmark::State& state) {
  World& w = Hot();
  const internal::CanonicalToken canonical("kg", "live");
  std::size_t i = 0;
  for (auto _ : state) {
    std::string_view token;
    benchmark::DoNotOptimize(canonical.MatchHeader(w.ok[i], &token));
    benchmark::DoNotOptimize(token);
    if (++i == w.ok.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_ParseHeader(benchmark::State& state) {
  World& w = Hot();
  std::size_t i = 0;
  for (auto _ : state) {
    std::string_view token;
    TokenView view;
    const bool ok = ParseBearer(w.ok[i], &token) == BearerParse::kOk &&
                    ParseToken(token, &view, "kg") == TokenError::kNone;
    benchmark::DoNotOptimize(ok);
    if (++i == w.ok.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_ClockNow(benchmark::State& state, const Clock* clock) {
  for (auto _ : state) benchmark::DoNotOptimize(clock->Now());
  state.SetItemsProcessed(state.iterations());
}

void BM_VerifyHit(benchmark::State& state) {
  World& w = Hot();
  VerifyOn(state, w, w.ok, ReadAll(), Outcome::kOk);
}
void BM_VerifyBadChecksum(benchmark::State& state) {
  World& w = Hot();
  VerifyOn(state, w, w.bad, ReadAll(), Outcome::kMalformed);
}
void BM_VerifyUnknown(benchmark::State& state) {
  World& w = Hot();
  VerifyOn(state, w, w.unknown, ReadAll(), Outcome::kUnknown);
}
void BM_VerifyRevoked(benchmark::State& state) {
  World& w = Hot();
  VerifyOn(state, w, w.revoked, ReadAll(), Outcome::kRevoked);
}
void BM_VerifyScopeDenied(benchmark::State& state) {
  World& w = Hot();
  VerifyOn(state, w, w.ok, WriteAll(), Outcome::kInsufficientScope);
}
void BM_VerifyRateLimited(benchmark::State& state) {
  World& w = Hot();
  VerifyOn(state, w, w.limited, ReadAll(), Outcome::kRateLimited);
}
void BM_VerifyRateLimitedOneKey(benchmark::State& state) {
  World& w = Hot();
  VerifyOn(state, w, w.flooded, ReadAll(), Outcome::kRateLimited);
}
void BM_VerifyColdUniform(benchmark::State& state) {
  World& w = GetWorld(static_cast<std::uint64_t>(state.range(0)), /*hot=*/false);
  VerifyOn(state, w, w.ok, ReadAll(), Outcome::kOk);
  state.counters["keys"] =
      benchmark::Counter(static_cast<double>(w.n), benchmark::Counter::kAvgThreads);
}

template <typename Lock>
void LockedBench(benchmark::State& state, World& w) {
  LockedVerifier<Lock>& b = GetBaseline<Lock>(w);
  std::string why;
  if (state.thread_index() == 0 && !SameVerdicts(w, b, &why)) {
    state.SkipWithError(why.c_str());
    return;
  }
  const Requirement read = ReadAll();
  RunLoop(
      state, w.ok, [&](std::string_view h) { return b.Verify(h, read); }, Outcome::kOk);
}

void BM_SharedMutexVerifyHit(benchmark::State& state) { LockedBench<StdShared>(state, Hot()); }
void BM_AbslMutexVerifyHit(benchmark::State& state) { LockedBench<AbslShared>(state, Hot()); }
void BM_SharedMutexVerifyColdUniform(benchmark::State& state) {
  LockedBench<StdShared>(state, GetWorld(static_cast<std::uint64_t>(state.range(0)), false));
}
void BM_AbslMutexVerifyColdUniform(benchmark::State& state) {
  LockedBench<AbslShared>(state, GetWorld(static_cast<std::uint64_t>(state.range(0)), false));
}

// The memory floor of a cold lookup: one dependent load at a random line of
// a huge-page-backed region as large as the index at N keys (slots and key-id
// entries: 80 B per slot, 1/0.7 slots per key), walked as one random cycle so
// that every load waits for the previous one. A cold Verify should cost
// about this plus what the same Verify costs on a cache-resident key.
void BM_DramLatency(benchmark::State& state) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  const std::size_t slots = keys + (keys * 3 + 6) / 7;  // as the verifier sizes them
  const std::size_t lines = slots * 80 / 64;
  const std::size_t bytes = lines * 64;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    state.SkipWithError("mmap failed");
    return;
  }
  madvise(mem, bytes, MADV_HUGEPAGE);
  auto* next = static_cast<std::uint64_t*>(mem);  // next[8 * line] = following line
  std::vector<std::uint64_t> order(lines);
  for (std::size_t i = 0; i < lines; ++i) order[i] = i;
  std::mt19937_64 rng(lines);
  std::shuffle(order.begin(), order.end(), rng);
  for (std::size_t i = 0; i < lines; ++i) next[8 * order[i]] = order[(i + 1) % lines];
  std::vector<std::uint64_t>().swap(order);
  std::uint64_t at = 0;
  for (auto _ : state) {
    at = next[8 * at];
    benchmark::DoNotOptimize(at);
  }
  state.counters["MiB"] = static_cast<double>(bytes) / (1 << 20);
  munmap(mem, bytes);
}

std::size_t RssBytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// RSS growth of building a verifier over N keys (the synthetic store keeps
// nothing; its transient records are trimmed back before measuring).
void BM_IndexMemory(benchmark::State& state) {
  const std::uint64_t n = static_cast<std::uint64_t>(state.range(0));
  for (auto _ : state) {
    auto store = std::make_shared<SyntheticStore>(n, &AllNormal,
                                                  std::unordered_map<std::uint64_t, Digest>{});
    malloc_trim(0);
    const std::size_t before = RssBytes();
    VerifierOptions vo;
    vo.deployment = BenchDeployment();
    vo.store = store;
    vo.environment = "production";
    vo.follow_changes = false;
    vo.record_usage = false;
    vo.expected_keys = n;
    auto v = Verifier::Create(std::move(vo));
    if (!v.ok()) {
      state.SkipWithError("create failed");
      return;
    }
    malloc_trim(0);
    const std::size_t after = RssBytes();
    const VerifierStats s = (*v)->Stats();
    state.counters["rss_bytes_per_key"] =
        static_cast<double>(after - before) / static_cast<double>(n);
    state.counters["index_bytes_per_key"] =
        static_cast<double>(s.index_bytes) / static_cast<double>(n);
    state.counters["total_bytes_per_key"] =
        static_cast<double>(s.total_bytes) / static_cast<double>(n);
    state.counters["load_factor"] =
        static_cast<double>(s.slots_live) / static_cast<double>(s.capacity);
  }
}

void ThreadsOneTwo(benchmark::internal::Benchmark* b) { b->Threads(1)->Threads(2)->UseRealTime(); }

void Register() {
  const bool ten_million = [] {
    const char* e = std::getenv("KEYGATE_BENCH_10M");
    return e != nullptr && std::string(e) == "1";
  }();
  benchmark::RegisterBenchmark("BM_HashOnly", BM_HashOnly)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_ParseCanonical", BM_ParseCanonical);
  benchmark::RegisterBenchmark("BM_ParseHeader", BM_ParseHeader);
  benchmark::RegisterBenchmark("BM_ClockNow", BM_ClockNow, &SystemClock::Get());
  benchmark::RegisterBenchmark("BM_VerifyHit", BM_VerifyHit)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_VerifyBadChecksum", BM_VerifyBadChecksum)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_VerifyUnknown", BM_VerifyUnknown)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_VerifyRevoked", BM_VerifyRevoked)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_VerifyScopeDenied", BM_VerifyScopeDenied)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_VerifyRateLimited", BM_VerifyRateLimited)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_VerifyRateLimitedOneKey", BM_VerifyRateLimitedOneKey)
      ->Apply(ThreadsOneTwo);
  std::vector<std::int64_t> sizes = {1'000, 10'000, 100'000, 1'000'000};
  if (ten_million) sizes.push_back(10'000'000);
  for (std::int64_t n : sizes) {
    benchmark::RegisterBenchmark("BM_VerifyColdUniform", BM_VerifyColdUniform)
        ->Arg(n)
        ->Apply(ThreadsOneTwo);
  }
  benchmark::RegisterBenchmark("BM_SharedMutexVerifyHit", BM_SharedMutexVerifyHit)
      ->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_AbslMutexVerifyHit", BM_AbslMutexVerifyHit)
      ->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_SharedMutexVerifyColdUniform", BM_SharedMutexVerifyColdUniform)
      ->Arg(1'000'000)
      ->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_AbslMutexVerifyColdUniform", BM_AbslMutexVerifyColdUniform)
      ->Arg(1'000'000)
      ->Apply(ThreadsOneTwo);
  auto* dram = benchmark::RegisterBenchmark("BM_DramLatency", BM_DramLatency)->Arg(1'000'000);
  if (ten_million) dram->Arg(10'000'000);
  auto* mem = benchmark::RegisterBenchmark("BM_IndexMemory", BM_IndexMemory)
                  ->Arg(1'000'000)
                  ->Iterations(1)
                  ->Unit(benchmark::kMillisecond);
  if (ten_million) mem->Arg(10'000'000);
}

}  // namespace
}  // namespace keygate

int main(int argc, char** argv) {
  keygate::Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
