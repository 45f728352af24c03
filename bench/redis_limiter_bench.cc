// The Redis rate limiter on the hot path (issue 16), against the local limiter and against what
// peers do, in one binary (bench/README.md has the figures). It starts its own redis-server on
// a Unix socket (tests/redis_server.h).
//
//   BM_VerifyHit/local           Verifier::Verify on one hot key with a generous limit, the
//                                local limiter (LocalRateLimiter): the reference
//   BM_VerifyHit/redis           the same with RedisRateLimiter; counters round_trips_per_1000
//                                (Redis round trips per 1,000 allowed requests, from the
//                                limiter's Stats()) and lease_misses
//   BM_RedisAcquireAtLimit       the limiter alone on one hot key held at its limit (L = 100,000
//                                per second, most requests denied): round_trips_per_1000
//                                allowed, allowed_per_s against L
//   BM_RedisLuaPerRequest        the baseline: one synchronous EVALSHA of a GCRA Lua script per
//                                request over hiredis (Kong's redis policy, redis-cell, ...);
//                                counters p50_ns and p99_ns
//
// Verifying benchmarks report p50/p99 from rdtsc around every 4th call, as verifier_bench does.
// Without redis-server only BM_VerifyHit/local runs (under CI that is an error).

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"

#define KEYGATE_REDIS_SERVER_NO_CATCH
#include "bench_latency.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/rate_limiter.h"
#include "keygate/redis/redis_rate_limiter.h"
#include "keygate/secret.h"
#include "keygate/verifier.h"
#include "redis_lua_gcra.h"
#include "redis_server.h"

namespace keygate {
namespace {

// Timing: bench_latency.h (as verifier_bench.cc).
using bench::Latencies;
using bench::Ticks;

// ---------------------------------------------------------------------------
// The server and the verifiers
// ---------------------------------------------------------------------------

// The bench's redis-server, started on first use; null (with a message) when there is none.
testing::RedisServer* Redis() {
  static std::unique_ptr<testing::RedisServer> server = [] {
    absl::StatusOr<std::unique_ptr<testing::RedisServer>> s = testing::RedisServer::Start();
    if (!s.ok()) {
      std::fprintf(stderr, "redis_limiter_bench: %s\n", std::string(s.status().message()).c_str());
      return std::unique_ptr<testing::RedisServer>();
    }
    return *std::move(s);
  }();
  return server.get();
}

std::shared_ptr<const Deployment> BenchDeployment() {
  static const std::shared_ptr<const Deployment> d = [] {
    DeploymentOptions o;
    o.environments = {{"production", "live", std::nullopt}, {"preview", "test", std::nullopt}};
    absl::StatusOr<std::shared_ptr<const Deployment>> made = Deployment::Create(std::move(o));
    if (!made.ok()) std::abort();
    return *std::move(made);
  }();
  return d;
}

Requirement ReadAll() {
  absl::StatusOr<Requirement> r = BenchDeployment()->scopes().Require({"read:all"});
  if (!r.ok()) std::abort();
  return *std::move(r);
}

// 10^7 per second: above what two threads reach (~6 M/s), with a bucket of 100 ms (C), so that
// a thread preempted between reading the clock and its CAS is still allowed.
constexpr RateLimitPolicy kGenerous{10'000'000, absl::Seconds(1), 1'000'000};

// One key with a generous limit (every request allowed, and every request runs the limiter),
// in a MemoryKeyStore, behind a Verifier using `limiter` (null: the local one).
struct World {
  std::shared_ptr<RedisRateLimiter> redis;  // when the Verifier uses it
  std::unique_ptr<Verifier> verifier;
  std::string header;
};

std::unique_ptr<World> BuildWorld(bool with_redis) {
  auto w = std::make_unique<World>();
  auto store = std::make_shared<MemoryKeyStore>();
  KeyManager::Options mo;
  mo.deployment = BenchDeployment();
  mo.store = store;
  absl::StatusOr<std::unique_ptr<KeyManager>> manager = KeyManager::Create(std::move(mo));
  if (!manager.ok()) std::abort();
  CreateKeyRequest req;
  req.name = "bench";
  req.owner = "bench";
  req.environment = "production";
  req.scopes = {"read:all"};
  req.rate_limit = kGenerous;
  absl::StatusOr<CreatedKey> key = (*manager)->Create(req, "bench");
  if (!key.ok()) std::abort();
  w->header = "Bearer " + std::string(key->token.Reveal(InsecureSecretAccess::Get()));

  VerifierOptions vo;
  vo.deployment = BenchDeployment();
  vo.store = store;
  vo.environment = "production";
  vo.follow_changes = false;
  vo.usage_flush_interval = absl::ZeroDuration();
  if (with_redis) {
    RedisRateLimiterOptions ro;
    ro.url = Redis()->url();
    ro.fleet_size = 1;
    absl::StatusOr<std::unique_ptr<RedisRateLimiter>> l = RedisRateLimiter::Create(ro);
    if (!l.ok()) {
      std::fprintf(stderr, "redis limiter: %s\n", l.status().ToString().c_str());
      std::abort();
    }
    w->redis = *std::move(l);
    vo.rate_limiter = w->redis;
  }
  absl::StatusOr<std::unique_ptr<Verifier>> v = Verifier::Create(std::move(vo));
  if (!v.ok()) {
    std::fprintf(stderr, "verifier: %s\n", v.status().ToString().c_str());
    std::abort();
  }
  w->verifier = *std::move(v);
  return w;
}

World& GetWorld(bool with_redis) {
  static std::unique_ptr<World> worlds[2];
  std::unique_ptr<World>& w = worlds[with_redis ? 1 : 0];
  if (w == nullptr) w = BuildWorld(with_redis);
  return *w;
}

// ---------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------

void BM_VerifyHit(benchmark::State& state, bool with_redis) {
  static World* world = nullptr;
  if (state.thread_index() == 0) {
    world = &GetWorld(with_redis);
    if (with_redis) {
      // Past the first lease: the steady state is what is measured.
      const absl::Time until = absl::Now() + absl::Seconds(5);
      while (world->verifier->Verify(world->header, ReadAll()).outcome != Outcome::kOk &&
             absl::Now() < until) {
      }
    }
  }
  const Requirement read = ReadAll();
  RedisRateLimiterStats before;
  Latencies lat;
  std::uint64_t n = 0;
  std::uint64_t wrong = 0;
  Outcome wrong_outcome = Outcome::kOk;
  for (auto _ : state) {
    if (n == 0 && state.thread_index() == 0 && world->redis != nullptr) {
      before = world->redis->Stats();
    }
    if (++n % 4 == 0) {
      const std::uint64_t t0 = Ticks();
      const Verdict v = world->verifier->Verify(world->header, read);
      const std::uint64_t t1 = Ticks();
      benchmark::DoNotOptimize(v);
      lat.Add(t1 - t0);
      if (v.outcome != Outcome::kOk) ++wrong, wrong_outcome = v.outcome;
    } else {
      const Verdict v = world->verifier->Verify(world->header, read);
      benchmark::DoNotOptimize(v);
      if (v.outcome != Outcome::kOk) ++wrong, wrong_outcome = v.outcome;
    }
  }
  if (wrong != 0) {
    static std::string why;  // SkipWithError keeps the pointer
    why = "unexpected verdicts: " + std::to_string(wrong) + " x " +
          std::string(OutcomeName(wrong_outcome));
    state.SkipWithError(why.c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations());
  lat.Report(state);
  if (state.thread_index() == 0 && world->redis != nullptr) {
    const RedisRateLimiterStats after = world->redis->Stats();
    // Every request of every thread was allowed, so the allowed count is the iterations of all
    // threads; thread 0's counter is averaged over them, hence the scale.
    const double allowed =
        static_cast<double>(state.iterations()) * static_cast<double>(state.threads());
    const auto per_thread = [&](double v) {
      return benchmark::Counter(v * state.threads(), benchmark::Counter::kAvgThreads);
    };
    state.counters["round_trips_per_1000"] =
        per_thread(static_cast<double>(after.round_trips - before.round_trips) / allowed * 1000);
    state.counters["lease_misses"] =
        per_thread(static_cast<double>(after.lease_misses - before.lease_misses));
    if (after.in_fallback || after.failures != before.failures) {
      state.SkipWithError("the limiter lost Redis during the run");
    }
  }
}

// The limiter alone on one hot key held at its limit: L = 100,000 per second (burst 10,000),
// requests as fast as one thread goes (tens of times L), so that most are denied and the leases
// run dry as fast as they can. Counters: round_trips_per_1000 allowed requests, and
// allowed_per_s against L (the limiter's accuracy at the limit, in one process).
void BM_RedisAcquireAtLimit(benchmark::State& state) {
  constexpr std::uint64_t kRate = 100'000;
  static const GcraPolicy policy = GcraPolicy::Compile({kRate, absl::Seconds(1), 10'000});
  static GcraCell cell;
  static const std::unique_ptr<RedisRateLimiter> limiter = [] {
    RedisRateLimiterOptions ro;
    ro.url = Redis()->url();
    ro.fleet_size = 1;
    absl::StatusOr<std::unique_ptr<RedisRateLimiter>> l = RedisRateLimiter::Create(ro);
    if (!l.ok()) std::abort();
    // Into the steady state: a second at the limit.
    const LimitRef ref(&policy, &cell, "key_at_limit");
    const absl::Time until = absl::Now() + absl::Seconds(1);
    while (absl::Now() < until) {
      (void)(*l)->Acquire({&ref, 1}, 1, absl::ToUnixNanos(absl::Now()));
    }
    return *std::move(l);
  }();
  const LimitRef ref(&policy, &cell, "key_at_limit");
  // Empty the bucket that refilled since the last run (up to its burst, which would count
  // against L), outside the timed loop.
  const absl::Time drained = absl::Now() + absl::Milliseconds(300);
  while (absl::Now() < drained) {
    (void)limiter->Acquire({&ref, 1}, 1, absl::ToUnixNanos(absl::Now()));
  }
  const RedisRateLimiterStats before = limiter->Stats();
  const std::int64_t start_ns = absl::ToUnixNanos(absl::Now());
  std::uint64_t allowed = 0;
  for (auto _ : state) {
    const LimitDecision d = limiter->Acquire({&ref, 1}, 1, absl::ToUnixNanos(absl::Now()));
    allowed += d.result == LimitResult::kAllowed;
  }
  const RedisRateLimiterStats after = limiter->Stats();
  const double seconds = static_cast<double>(absl::ToUnixNanos(absl::Now()) - start_ns) / 1e9;
  state.SetItemsProcessed(state.iterations());
  state.counters["round_trips_per_1000"] =
      static_cast<double>(after.round_trips - before.round_trips) /
      static_cast<double>(std::max<std::uint64_t>(allowed, 1)) * 1000;
  state.counters["allowed_per_s"] = static_cast<double>(allowed) / seconds;
  state.counters["L_per_s"] = static_cast<double>(kRate);
}

void BM_RedisLuaPerRequest(benchmark::State& state) {
  testing::LuaGcra lua(Redis()->socket_path());
  if (!lua.ok()) {
    state.SkipWithError("cannot connect to redis-server or load the script");
    return;
  }
  // The same answers as GCRA before timing: a burst of 3 (1 per hour) admits 3, then denies.
  const std::string check_key = "bench:lua:check:" + std::to_string(state.thread_index());
  const GcraPolicy tiny = GcraPolicy::Compile({1, absl::Hours(1), 3});
  lua.Delete(check_key);
  for (int i = 0; i < 4; ++i) {
    const testing::LuaGcra::Result want =
        i < 3 ? testing::LuaGcra::Result::kAllowed : testing::LuaGcra::Result::kDenied;
    if (lua.Acquire(check_key, tiny) != want) {
      state.SkipWithError("the Lua GCRA disagrees with GCRA (burst 3)");
      return;
    }
  }
  // The Verifier's key's policy, one key per thread: every call allowed.
  const std::string key = "bench:lua:" + std::to_string(state.thread_index());
  const GcraPolicy generous = GcraPolicy::Compile(kGenerous);
  std::vector<std::int64_t> ns;
  ns.reserve(1 << 20);
  std::uint64_t wrong = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const testing::LuaGcra::Result r = lua.Acquire(key, generous);
    const auto t1 = std::chrono::steady_clock::now();
    wrong += r != testing::LuaGcra::Result::kAllowed;
    if (ns.size() < ns.capacity()) {
      ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    }
  }
  if (wrong != 0) {
    state.SkipWithError("a Lua call failed or denied");
    return;
  }
  state.SetItemsProcessed(state.iterations());
  if (!ns.empty()) {
    std::sort(ns.begin(), ns.end());
    const auto pct = [&](double p) {
      return static_cast<double>(ns[std::min(
          ns.size() - 1, static_cast<std::size_t>(p * static_cast<double>(ns.size())))]);
    };
    state.counters["p50_ns"] = benchmark::Counter(pct(0.50), benchmark::Counter::kAvgThreads);
    state.counters["p99_ns"] = benchmark::Counter(pct(0.99), benchmark::Counter::kAvgThreads);
  }
}

void ThreadsOneTwo(benchmark::internal::Benchmark* b) { b->Threads(1)->Threads(2)->UseRealTime(); }

void Register() {
  benchmark::RegisterBenchmark("BM_VerifyHit/local", BM_VerifyHit, false)->Apply(ThreadsOneTwo);
  if (Redis() == nullptr) {
    if (testing::UnderCi()) {
      benchmark::RegisterBenchmark("BM_VerifyHit/redis", [](benchmark::State& state) {
        for (auto _ : state) {
        }
        state.SkipWithError("no redis-server (under CI it must be installed: scripts/setup.sh)");
      });
    } else {
      std::fprintf(stderr,
                   "redis_limiter_bench: no redis-server, so only BM_VerifyHit/local runs\n");
    }
    return;
  }
  benchmark::RegisterBenchmark("BM_VerifyHit/redis", BM_VerifyHit, true)->Apply(ThreadsOneTwo);
  benchmark::RegisterBenchmark("BM_RedisAcquireAtLimit", BM_RedisAcquireAtLimit)->UseRealTime();
  benchmark::RegisterBenchmark("BM_RedisLuaPerRequest", BM_RedisLuaPerRequest)
      ->Apply(ThreadsOneTwo);
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
