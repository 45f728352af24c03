// GCRA (rate_limiter.h): policy compilation, exact boundary times, cost > 1,
// a clock going backwards, "denial writes nothing", all-or-nothing across
// several limits, and agreement with an independently written model of the
// ITU-T I.371 virtual scheduling algorithm.

#include "keygate/rate_limiter.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "absl/time/time.h"

#include "catch.h"
#include "internal/gcra.h"

namespace keygate {
namespace {

using internal::GcraAcquireOne;
using internal::GcraPeek;
using internal::GcraRefund;
using internal::GcraStep;
using internal::kGcraNeverUsed;

std::atomic<std::int64_t>& Tat(GcraCell& cell) { return internal::GcraAccess::Tat(cell); }

constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kSec = 1'000'000'000;
constexpr std::int64_t kT0 = 1'700'000'000 * kSec;

GcraPolicy Policy(std::uint64_t rate, absl::Duration period, std::uint32_t burst) {
  RateLimitPolicy p;
  p.rate = rate;
  p.period = period;
  p.burst = burst;
  return GcraPolicy::Compile(p);
}

// The virtual scheduling algorithm as the ITU-T describes it, one cell at a
// time: a cell arriving at `now` conforms iff TAT <= now + L (L = tau, the
// burst tolerance = (burst - 1) * T), and then TAT = max(TAT, now) + T. A
// request of cost c is c cells arriving at the same instant, all or none.
struct ModelLimiter {
  std::int64_t t;    // emission interval
  std::int64_t tau;  // burst tolerance
  std::int64_t burst;
  bool has_tat = false;
  std::int64_t tat = 0;

  bool Request(std::int64_t now, std::uint32_t cost) {
    if (cost > burst) return false;
    std::int64_t trial = has_tat ? tat : now;
    for (std::uint32_t k = 0; k < cost; ++k) {
      if (trial > now + tau) return false;
      trial = std::max(trial, now) + t;
    }
    if (cost > 0) {
      tat = trial;
      has_tat = true;
    }
    return true;
  }
};

TEST_CASE("GCRA policy compiles rate, period and burst", "[rate_limiter]") {
  GcraPolicy p = Policy(10, absl::Seconds(1), 3);
  CHECK(p.valid());
  CHECK(p.emission_ns == 100 * kMs);
  CHECK(p.capacity_ns == 300 * kMs);
  CHECK(p.period_ns == kSec);
  CHECK(p.burst == 3);
  // 3 per second: rounded to the nearest nanosecond.
  CHECK(Policy(3, absl::Seconds(1), 1).emission_ns == 333'333'333);
  CHECK(Policy(2, absl::Nanoseconds(3), 1).emission_ns == 2);
  // More than one per nanosecond clamps to one per nanosecond.
  CHECK(Policy(1'000'000'000, absl::Milliseconds(1), 1).emission_ns == 1);
  // Huge capacity is capped, never overflowing.
  GcraPolicy slow = Policy(1, absl::Hours(24), 1'000'000);
  CHECK(slow.capacity_ns == GcraPolicy::kMaxCapacityNs);
  CHECK_FALSE(Policy(0, absl::Seconds(1), 1).valid());
  CHECK_FALSE(Policy(1, absl::Seconds(1), 0).valid());
  CHECK_FALSE(Policy(1, absl::ZeroDuration(), 1).valid());
}

TEST_CASE("GCRA allows a burst, then exactly one request per interval", "[rate_limiter]") {
  const GcraPolicy p = Policy(10, absl::Seconds(1), 3);  // T = 100 ms
  GcraCell cell;
  for (int i = 0; i < 3; ++i) {
    LimitDecision d = GcraAcquireOne(p, Tat(cell), 1, kT0);
    REQUIRE(d.result == LimitResult::kAllowed);
    CHECK(d.status.limit == 10);                                     // the quota: 10 per window
    CHECK(d.status.remaining == static_cast<std::uint64_t>(2 - i));  // the burst left
    CHECK(d.status.window_ns == kSec);
    CHECK(d.status.reset_ns == (i + 1) * 100 * kMs);
  }
  const std::int64_t tat_after_burst = Tat(cell).load();
  CHECK(tat_after_burst == kT0 + 300 * kMs);

  LimitDecision denied = GcraAcquireOne(p, Tat(cell), 1, kT0);
  CHECK(denied.result == LimitResult::kDenied);
  CHECK(denied.status.remaining == 0);
  CHECK(denied.status.retry_after_ns == 100 * kMs);
  CHECK(denied.status.reset_ns == 300 * kMs);
  CHECK(Tat(cell).load() == tat_after_burst);  // a denial writes nothing

  // One nanosecond before the boundary: still denied, retry in 1 ns.
  denied = GcraAcquireOne(p, Tat(cell), 1, kT0 + 100 * kMs - 1);
  CHECK(denied.result == LimitResult::kDenied);
  CHECK(denied.status.retry_after_ns == 1);
  // Exactly at the boundary: allowed.
  LimitDecision ok = GcraAcquireOne(p, Tat(cell), 1, kT0 + 100 * kMs);
  CHECK(ok.result == LimitResult::kAllowed);
  CHECK(ok.status.remaining == 0);
  // After a full idle period the whole burst is back.
  LimitDecision later = GcraPeek(p, Tat(cell).load(), 1, kT0 + 10 * kSec);
  CHECK(later.result == LimitResult::kAllowed);
  CHECK(later.status.remaining == 2);
}

TEST_CASE("GCRA charges a request's cost and never admits cost above the burst", "[rate_limiter]") {
  const GcraPolicy p = Policy(10, absl::Seconds(1), 5);  // T = 100 ms, C = 500 ms
  GcraCell cell;
  LimitDecision d = GcraAcquireOne(p, Tat(cell), 3, kT0);
  REQUIRE(d.result == LimitResult::kAllowed);
  CHECK(d.status.remaining == 2);
  d = GcraAcquireOne(p, Tat(cell), 3, kT0);
  CHECK(d.result == LimitResult::kDenied);
  CHECK(d.status.remaining == 2);  // two cost-1 requests would still fit
  CHECK(d.status.retry_after_ns == 100 * kMs);
  d = GcraAcquireOne(p, Tat(cell), 2, kT0);
  CHECK(d.result == LimitResult::kAllowed);
  CHECK(d.status.remaining == 0);

  GcraCell fresh;
  d = GcraAcquireOne(p, Tat(fresh), 6, kT0);
  CHECK(d.result == LimitResult::kDenied);
  CHECK(d.status.retry_after_ns > 0);
  CHECK(Tat(fresh).load() == kGcraNeverUsed);

  // Cost zero reports the state and consumes nothing.
  d = GcraAcquireOne(p, Tat(fresh), 0, kT0);
  CHECK(d.result == LimitResult::kAllowed);
  CHECK(d.status.remaining == 5);
  CHECK(Tat(fresh).load() == kGcraNeverUsed);
}

TEST_CASE("GCRA stays safe and strict when the clock goes backwards", "[rate_limiter]") {
  const GcraPolicy p = Policy(10, absl::Seconds(1), 2);
  GcraCell cell;
  REQUIRE(GcraAcquireOne(p, Tat(cell), 1, kT0).result == LimitResult::kAllowed);
  REQUIRE(GcraAcquireOne(p, Tat(cell), 1, kT0 + 200 * kMs).result == LimitResult::kAllowed);
  // The clock steps back 1 s: the schedule is now 1.3 s ahead; denied.
  LimitDecision d = GcraAcquireOne(p, Tat(cell), 1, kT0 - 800 * kMs);
  CHECK(d.result == LimitResult::kDenied);
  // TAT = T0 + 300 ms; now = T0 - 800 ms: 1.1 s ahead, + T - C = 1 s.
  CHECK(d.status.retry_after_ns == 1'000 * kMs);
  // A clock stepping back by years is denied, not overflowed.
  d = GcraAcquireOne(p, Tat(cell), 1, kT0 - 20LL * 365 * 24 * 3600 * kSec);
  CHECK(d.result == LimitResult::kDenied);
  CHECK(d.status.retry_after_ns > 0);
}

TEST_CASE("GCRA stays in range for any policy, cost and time", "[rate_limiter]") {
  // A policy ValidateRateLimitPolicy refuses (its bucket would be 2,700
  // years) but Compile accepts: C is capped, so it holds 26,687 requests.
  const GcraPolicy capped = Policy(1, absl::Hours(24), 1'000'000);
  REQUIRE(capped.capacity_ns == GcraPolicy::kMaxCapacityNs);
  GcraCell cell;
  // cost x T overflows int64 here: denied as "never fits", nothing written.
  LimitDecision d = GcraAcquireOne(capped, Tat(cell), 200'000, kT0);
  CHECK(d.result == LimitResult::kDenied);
  CHECK(d.status.retry_after_ns == GcraPolicy::kMaxCapacityNs);
  CHECK(Tat(cell).load() == kGcraNeverUsed);
  // Below the overflow but above C: also never fits.
  CHECK(GcraAcquireOne(capped, Tat(cell), 30'000, kT0).result == LimitResult::kDenied);
  // What fits, fits exactly once.
  CHECK(GcraAcquireOne(capped, Tat(cell), 26'687, kT0).result == LimitResult::kAllowed);
  CHECK(GcraAcquireOne(capped, Tat(cell), 1, kT0).result == LimitResult::kDenied);

  // Extreme clocks (UBSan checks the arithmetic): the far future and the far
  // past are held to 2116 and 1824; a TAT far ahead of a clock far behind is
  // a denial.
  const GcraPolicy p = Policy(10, absl::Seconds(1), 2);
  for (std::int64_t now :
       {std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::max() - 1000,
        std::numeric_limits<std::int64_t>::min(), std::int64_t{0}}) {
    INFO("now " << now);
    GcraCell c;
    CHECK(GcraAcquireOne(p, Tat(c), 1, now).result == LimitResult::kAllowed);
    CHECK(GcraAcquireOne(p, Tat(c), 1, now).result == LimitResult::kAllowed);
    d = GcraAcquireOne(p, Tat(c), 1, now);
    CHECK(d.result == LimitResult::kDenied);
    CHECK(d.status.retry_after_ns == 100 * kMs);
    CHECK(Tat(c).load() >= -(std::int64_t{1} << 62));
    CHECK(Tat(c).load() <= (std::int64_t{1} << 62) + (std::int64_t{1} << 61));
  }
  GcraCell ahead;
  REQUIRE(GcraAcquireOne(p, Tat(ahead), 2, std::numeric_limits<std::int64_t>::max()).result ==
          LimitResult::kAllowed);
  d = GcraAcquireOne(p, Tat(ahead), 1, std::numeric_limits<std::int64_t>::min());
  CHECK(d.result == LimitResult::kDenied);
  CHECK(d.status.retry_after_ns > 0);
  CHECK(d.status.reset_ns <= GcraPolicy::kMaxCapacityNs + 1);
}

TEST_CASE("GCRA matches the virtual scheduling model on random traffic", "[rate_limiter]") {
  std::mt19937_64 rng(20240601);
  for (int round = 0; round < 40; ++round) {
    const std::uint64_t rate = 1 + rng() % 50;
    const std::int64_t period_ms = 1 + static_cast<std::int64_t>(rng() % 2000);
    const std::uint32_t burst = 1 + static_cast<std::uint32_t>(rng() % 8);
    const GcraPolicy p = Policy(rate, absl::Milliseconds(period_ms), burst);
    ModelLimiter model{p.emission_ns, p.capacity_ns - p.emission_ns, burst};
    GcraCell cell;
    std::int64_t now = kT0;
    for (int step = 0; step < 2000; ++step) {
      // Mostly small forward steps, some exact multiples of T (boundaries),
      // some backward steps.
      switch (rng() % 6) {
        case 0:
          now += p.emission_ns;
          break;
        case 1:
          now -= static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(2 * p.emission_ns));
          break;
        case 2:
          break;
        default:
          now += static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(p.emission_ns));
      }
      const std::uint32_t cost = static_cast<std::uint32_t>(rng() % (burst + 2));
      const std::int64_t before = Tat(cell).load();
      const LimitDecision d = GcraAcquireOne(p, Tat(cell), cost, now);
      const bool expected = model.Request(now, cost);
      INFO("round " << round << " step " << step << " cost " << cost);
      REQUIRE((d.result == LimitResult::kAllowed) == expected);
      if (d.result == LimitResult::kAllowed && cost > 0) {
        REQUIRE(Tat(cell).load() == model.tat);
      } else {
        REQUIRE(Tat(cell).load() == before);
      }
      if (d.result == LimitResult::kDenied && cost <= burst) {
        // Retrying exactly after retry_after succeeds, one ns earlier fails.
        const std::int64_t tat = Tat(cell).load();
        REQUIRE(GcraPeek(p, tat, cost, now + d.status.retry_after_ns).result ==
                LimitResult::kAllowed);
        REQUIRE(GcraPeek(p, tat, cost, now + d.status.retry_after_ns - 1).result ==
                LimitResult::kDenied);
      }
    }
  }
}

TEST_CASE("A request denied by one limit consumes none of the others", "[rate_limiter]") {
  LocalRateLimiter limiter;
  const GcraPolicy key_policy = Policy(10, absl::Seconds(1), 5);
  const GcraPolicy owner_policy = Policy(1, absl::Seconds(1), 2);
  GcraCell key_cell, owner_cell;
  const LimitRef refs[2] = {{&key_policy, &key_cell, "key_a"},
                            {&owner_policy, &owner_cell, "owner:alice"}};
  LimitDecision d = limiter.Acquire(refs, 1, kT0);
  REQUIRE(d.result == LimitResult::kAllowed);
  // The owner limit (1 left of 2) is tighter than the key's (4 left of 5).
  CHECK(d.status.limit == 1);
  CHECK(d.status.remaining == 1);
  REQUIRE(limiter.Acquire(refs, 1, kT0).result == LimitResult::kAllowed);
  const std::int64_t key_before = Tat(key_cell).load();
  const std::int64_t owner_before = Tat(owner_cell).load();
  d = limiter.Acquire(refs, 1, kT0);
  CHECK(d.result == LimitResult::kDenied);
  CHECK(d.status.limit == 1);  // the denying limit (the owner's) is reported
  CHECK(d.status.retry_after_ns == kSec);
  CHECK(Tat(key_cell).load() == key_before);
  CHECK(Tat(owner_cell).load() == owner_before);

  // Denied by the key limit: the owner's is untouched.
  GcraCell key2, owner2;
  const GcraPolicy tight = Policy(1, absl::Seconds(1), 1);
  const LimitRef refs2[2] = {{&tight, &key2, "key_b"}, {&owner_policy, &owner2, "o"}};
  REQUIRE(limiter.Acquire(refs2, 1, kT0).result == LimitResult::kAllowed);
  const std::int64_t owner2_before = Tat(owner2).load();
  CHECK(limiter.Acquire(refs2, 1, kT0).result == LimitResult::kDenied);
  CHECK(Tat(owner2).load() == owner2_before);

  // No applicable limit: allowed, nothing reported. A limit without state:
  // fail closed.
  CHECK(limiter.Acquire({}, 1, kT0).result == LimitResult::kAllowed);
  CHECK_FALSE(limiter.Acquire({}, 1, kT0).status.applies());
  const LimitRef broken{&key_policy, nullptr, "x"};
  CHECK(limiter.Acquire({&broken, 1}, 1, kT0).result == LimitResult::kUnavailable);
  NoRateLimiter none;
  CHECK(none.Acquire(refs, 1000, kT0).result == LimitResult::kAllowed);
}

TEST_CASE("A refund restores the TAT it found, or subtracts what it took",
          "[rate_limiter][refund]") {
  const GcraPolicy p = Policy(10, absl::Seconds(1), 10);  // T = 100 ms
  std::int64_t next = 0;
  // A full bucket (TAT behind now): a request at kT0 moves it to kT0 + T.
  std::atomic<std::int64_t> tat{kGcraNeverUsed};
  REQUIRE(GcraStep(p, tat.load(), 1, kT0, &next).result == LimitResult::kAllowed);
  tat.store(next);
  GcraRefund(tat, kGcraNeverUsed, next, p.emission_ns);
  // Exactly as before: not left at kT0, where a request stamped 1 ns
  // earlier on another thread would find 1 ns of the bucket used.
  CHECK(tat.load() == kGcraNeverUsed);
  std::int64_t unused = 0;
  CHECK(GcraStep(p, tat.load(), 10, kT0 - 1, &unused).result == LimitResult::kAllowed);
  // Another request moved the TAT in between: keep its charge.
  tat.store(next + p.emission_ns);
  GcraRefund(tat, kGcraNeverUsed, next, p.emission_ns);
  CHECK(tat.load() == next);
}

TEST_CASE("Concurrent requests never over-admit and refunds are exact",
          "[rate_limiter][concurrent]") {
  LocalRateLimiter limiter;
  // No time passes: exactly `burst` requests may ever succeed.
  const GcraPolicy owner_policy = Policy(1, absl::Hours(1), 1000);
  const GcraPolicy key_policy = Policy(1, absl::Hours(1), 700);
  GcraCell owner;
  constexpr int kThreads = 4;
  std::vector<GcraCell> keys(kThreads);
  std::vector<int> admitted(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const LimitRef refs[2] = {{&key_policy, &keys[t], "k"}, {&owner_policy, &owner, "o"}};
      for (int i = 0; i < 1000; ++i) {
        if (limiter.Acquire(refs, 1, kT0).result == LimitResult::kAllowed) ++admitted[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  int total = 0;
  for (int t = 0; t < kThreads; ++t) {
    total += admitted[t];
    CHECK(admitted[t] <= 700);
    // Each key cell holds exactly what its admitted requests consumed:
    // refunds after a lost race left nothing behind.
    if (admitted[t] > 0) {
      CHECK(Tat(keys[t]).load() == kT0 + admitted[t] * key_policy.emission_ns);
    }
  }
  CHECK(total == 1000);
  CHECK(Tat(owner).load() == kT0 + 1000 * owner_policy.emission_ns);
}

}  // namespace
}  // namespace keygate
