// GCRA's step math and direct access to the state behind GcraCell and
// GcraCellRef (private): LocalRateLimiter and the Verifier's hot path, which
// keeps each key's state in the key's own slot.
#ifndef KEYGATE_SRC_INTERNAL_GCRA_H_
#define KEYGATE_SRC_INTERNAL_GCRA_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <string_view>

#include "keygate/rate_limiter.h"
#include "keygate/verdict.h"

namespace keygate::internal {

// The TAT of a subject that has never been seen: any `now` is later.
inline constexpr std::int64_t kGcraNeverUsed = std::numeric_limits<std::int64_t>::min();

struct GcraAccess {
  static std::atomic<std::int64_t>& Tat(GcraCell& cell) noexcept { return cell.tat_; }
  // Null when the LimitRef has no cell.
  static std::atomic<std::int64_t>* Tat(const LimitRef& ref) noexcept { return ref.tat_; }
  // A LimitRef over state held outside a GcraCell (the Verifier's slots).
  static LimitRef Ref(const GcraPolicy* policy, std::atomic<std::int64_t>* tat,
                      std::string_view subject) noexcept {
    LimitRef r(policy, nullptr, subject);
    r.tat_ = tat;
    return r;
  }
};

// GcraStep holds `now` to +-kGcraNowBound (the years 1824-2116); with a lead
// of at most GcraPolicy::kMaxCapacityNs, every TAT it stores is below
// kGcraTatCeiling.
inline constexpr std::int64_t kGcraNowBound = std::int64_t{1} << 62;
inline constexpr std::int64_t kGcraTatCeiling = kGcraNowBound + GcraPolicy::kMaxCapacityNs;

// The pure GCRA step: the decision for a request of `cost` at `now` given the
// current `tat`, and the TAT to store if allowed (`*new_tat`).
inline LimitDecision GcraStep(const GcraPolicy& p, std::int64_t tat, std::uint32_t cost,
                              std::int64_t now, std::int64_t* new_tat) noexcept {
  LimitDecision d;
  d.status.limit = p.rate;
  d.status.window_ns = p.period_ns;
  // Every sum below stays in range for any input: `now` is held to the years
  // 1824-2116 (+-2^62 ns), the lead over it to C + 1 (C <= 2^61), and an
  // allowed request's cost * T to C; so a stored TAT is below 2^62 + 2^61.
  now = std::clamp(now, -kGcraNowBound, kGcraNowBound);
  const std::int64_t t = std::max(tat, now);
  // How far the schedule runs ahead of now (> C after the clock stepped
  // back: denied until it catches up). The difference is taken unsigned: a
  // TAT far ahead of a clock that jumped far back must not overflow.
  const std::int64_t ahead = static_cast<std::int64_t>(
      std::min<std::uint64_t>(static_cast<std::uint64_t>(t) - static_cast<std::uint64_t>(now),
                              static_cast<std::uint64_t>(GcraPolicy::kMaxCapacityNs) + 1));
  // Requests of cost 1 that would fit now (denials and free requests only:
  // the allowed path divides once, below).
  auto remaining_now = [&]() -> std::uint64_t {
    return ahead >= p.capacity_ns
               ? 0
               : static_cast<std::uint64_t>((p.capacity_ns - ahead) / p.emission_ns);
  };
  if (cost == 0) {
    // A free request: always allowed, consumes nothing, reports the state.
    d.result = LimitResult::kAllowed;
    d.status.remaining = remaining_now();
    d.status.reset_ns = ahead;
    *new_tat = tat;
    return d;
  }
  // cost * T; more than C (possible only for a policy whose burst * T was
  // capped, or one never validated) can never fit, like cost > burst.
  std::int64_t inc = 0;
  if (cost > p.burst ||
      __builtin_mul_overflow(static_cast<std::int64_t>(cost), p.emission_ns, &inc) ||
      inc > p.capacity_ns) {
    // Can never fit in the bucket; report the full window as the wait.
    d.result = LimitResult::kDenied;
    d.status.remaining = remaining_now();
    d.status.reset_ns = ahead;
    d.status.retry_after_ns = p.capacity_ns;
    return d;
  }
  const std::int64_t after = ahead + inc;  // <= 2^61 + 1 + 2^61
  if (after > p.capacity_ns) {
    d.result = LimitResult::kDenied;
    d.status.remaining = remaining_now();
    d.status.reset_ns = ahead;
    d.status.retry_after_ns = after - p.capacity_ns;
    return d;
  }
  d.result = LimitResult::kAllowed;
  d.status.remaining = static_cast<std::uint64_t>((p.capacity_ns - after) / p.emission_ns);
  d.status.reset_ns = after;
  *new_tat = now + after;
  return d;
}

// Gives back what an allowed request of cost*T (`inc`) took from `tat`,
// after it moved `prev` to `next`. If nothing else has touched the TAT
// since, it goes back to `prev` exactly. (Subtracting alone would leave a
// TAT that was behind `now` at `now`: a request stamped a little earlier, on
// another thread, would then find less room than nobody had used.)
// Otherwise `inc` is subtracted. That is exact when the requests allowed in
// between queued behind `next`; one stamped later than the TAT it found
// (more than T after this request's stamp, so possible only when T is
// shorter than the time between the two phases, e.g. a thread preempted
// there) was charged from its own stamp, and subtracting then forgives up
// to `inc` of its charge. The TAT alone cannot tell the two apart; the
// choice keeps the contract that a denied request consumes nothing.
inline void GcraRefund(std::atomic<std::int64_t>& tat, std::int64_t prev, std::int64_t next,
                       std::int64_t inc) noexcept {
  std::int64_t expected = next;
  if (tat.compare_exchange_strong(expected, prev, std::memory_order_relaxed)) return;
  tat.fetch_sub(inc, std::memory_order_relaxed);
}

// What a request of `cost` at `now_ns` would get, without consuming.
inline LimitDecision GcraPeek(const GcraPolicy& policy, std::int64_t tat, std::uint32_t cost,
                              std::int64_t now_ns) noexcept {
  std::int64_t unused;
  return GcraStep(policy, tat, cost, now_ns, &unused);
}

// LocalRateLimiter::Acquire for a single limit, inline for the verifier's hot
// path: one CAS when allowed, a load when denied.
inline LimitDecision GcraAcquireOne(const GcraPolicy& policy, std::atomic<std::int64_t>& tat,
                                    std::uint32_t cost, std::int64_t now_ns) noexcept {
  std::int64_t current = tat.load(std::memory_order_relaxed);
  for (;;) {
    std::int64_t next = 0;
    LimitDecision d = GcraStep(policy, current, cost, now_ns, &next);
    // Denials write nothing; a zero-cost request reads the state only.
    if (d.result != LimitResult::kAllowed || cost == 0) return d;
    // Relaxed is enough: the TAT guards no other memory.
    if (tat.compare_exchange_weak(current, next, std::memory_order_relaxed)) return d;
  }
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_GCRA_H_
