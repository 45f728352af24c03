// GCRA policy compilation and the multi-limit, all-or-nothing acquire.

#include "keygate/rate_limiter.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>

#include "internal/gcra.h"

namespace keygate {

GcraPolicy GcraPolicy::Compile(const RateLimitPolicy& policy) noexcept {
  GcraPolicy out;
  const std::int64_t period = absl::ToInt64Nanoseconds(policy.period);
  if (policy.rate == 0 || policy.burst == 0 || period <= 0) return out;  // invalid: no limit
  const std::uint64_t rate = policy.rate;
  const std::uint64_t p = static_cast<std::uint64_t>(period);
  // Rounded to nearest so that e.g. 3 per second stays within 1 ns per period.
  std::uint64_t t = (p + rate / 2) / rate;
  if (t == 0) t = 1;
  out.emission_ns = static_cast<std::int64_t>(t);
  const std::uint64_t max_cap = static_cast<std::uint64_t>(kMaxCapacityNs);
  const std::uint64_t cap =
      t > max_cap / policy.burst ? max_cap : t * static_cast<std::uint64_t>(policy.burst);
  out.capacity_ns = static_cast<std::int64_t>(cap);
  out.period_ns = period;
  out.rate = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(rate, std::numeric_limits<std::uint32_t>::max()));
  out.burst = policy.burst;
  return out;
}

namespace {

using internal::GcraAccess;
using internal::GcraAcquireOne;
using internal::GcraPeek;
using internal::GcraRefund;
using internal::GcraStep;

// Callers pass a handful of limits (key, owner, account). The list of active
// ones lives on the stack; beyond this many we fail closed rather than
// allocate on the hot path.
constexpr std::size_t kMaxLimits = 16;

// Of two allowed statuses, the tighter one (fewer requests remaining; on a
// tie the later reset) is what the client should see.
bool Tighter(const RateLimitStatus& a, const RateLimitStatus& b) noexcept {
  if (a.remaining != b.remaining) return a.remaining < b.remaining;
  return a.reset_ns > b.reset_ns;
}

}  // namespace

LimitDecision LocalRateLimiter::Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                                        std::int64_t now_ns) noexcept {
  // Limits with no policy (or an invalid one) do not apply.
  std::array<const GcraPolicy*, kMaxLimits> policy{};
  std::array<std::atomic<std::int64_t>*, kMaxLimits> tat{};
  std::size_t n = 0;
  for (const LimitRef& l : limits) {
    if (l.policy == nullptr || !l.policy->valid()) continue;
    if (GcraAccess::Tat(l) == nullptr || n == kMaxLimits) {
      return LimitDecision{LimitResult::kUnavailable, {}};
    }
    policy[n] = l.policy;
    tat[n] = GcraAccess::Tat(l);
    ++n;
  }
  if (n == 0) return LimitDecision{LimitResult::kAllowed, {}};
  if (n == 1) return GcraAcquireOne(*policy[0], *tat[0], cost, now_ns);

  // Phase 1, read-only: if any limit denies now, deny without writing
  // anything (the common way a flood is turned away).
  for (std::size_t i = 0; i < n; ++i) {
    LimitDecision d = GcraPeek(*policy[i], tat[i]->load(std::memory_order_relaxed), cost, now_ns);
    if (d.result != LimitResult::kAllowed) return d;
  }
  if (cost == 0) {
    LimitDecision best{LimitResult::kAllowed, {}};
    for (std::size_t i = 0; i < n; ++i) {
      LimitDecision d = GcraPeek(*policy[i], tat[i]->load(std::memory_order_relaxed), 0, now_ns);
      if (i == 0 || Tighter(d.status, best.status)) best.status = d.status;
    }
    return best;
  }

  // Phase 2: consume from each in turn. A concurrent request may have used
  // up a later limit since phase 1; then give back what this request took.
  std::array<std::int64_t, kMaxLimits> prev{};
  std::array<std::int64_t, kMaxLimits> next{};
  LimitDecision best{LimitResult::kAllowed, {}};
  for (std::size_t i = 0; i < n; ++i) {
    std::atomic<std::int64_t>& cell = *tat[i];
    std::int64_t current = cell.load(std::memory_order_relaxed);
    LimitDecision d;
    for (;;) {
      d = GcraStep(*policy[i], current, cost, now_ns, &next[i]);
      if (d.result != LimitResult::kAllowed) break;
      if (cell.compare_exchange_weak(current, next[i], std::memory_order_relaxed)) break;
    }
    if (d.result != LimitResult::kAllowed) {
      for (std::size_t j = 0; j < i; ++j) {
        GcraRefund(*tat[j], prev[j], next[j],
                   static_cast<std::int64_t>(cost) * policy[j]->emission_ns);
      }
      return d;
    }
    prev[i] = current;
    if (i == 0 || Tighter(d.status, best.status)) best.status = d.status;
  }
  return best;
}

}  // namespace keygate
