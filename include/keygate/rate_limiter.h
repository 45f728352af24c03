// keygate/rate_limiter.h: rate limits enforced with GCRA, the interface the
// verifier calls for them, and the local lock-free implementation.
//
// GCRA (the generic cell rate algorithm, as in redis-cell) keeps one value per
// limited subject: the theoretical arrival time (TAT), the instant at which
// the subject's schedule would be caught up. A policy of `rate` requests per
// `period` with bursts of `burst` compiles to an emission interval
// T = period / rate and a capacity C = burst * T. A request of cost c at time
// `now` is allowed iff  max(TAT, now) + c*T - now <= C, and then sets
// TAT = max(TAT, now) + c*T. That is exactly a token bucket of `burst` tokens
// refilled at rate/period, in one 64-bit integer: a check is load, compute,
// compare-and-swap, and a denial writes nothing, so a flooding client does
// not even bounce its cache line between cores.
//
// Several limits may apply to one request (the key's and its owner's, say).
// `RateLimiter::Acquire` takes them all at once and either consumes `cost`
// from every one or from none: a request denied by one limit consumes none
// of the others.
//
// Example (a stand-alone limiter; the Verifier does this for every key):
//
//   keygate::GcraPolicy policy = keygate::GcraPolicy::Compile(
//       {.rate = 100, .period = absl::Seconds(1), .burst = 20});
//   keygate::GcraCell cell;                       // one per limited subject
//   keygate::LocalRateLimiter limiter;
//   keygate::LimitRef ref{&policy, &cell.tat, "user-42"};
//   keygate::LimitDecision d = limiter.Acquire({&ref, 1}, /*cost=*/1,
//                                              absl::ToUnixNanos(absl::Now()));
//   if (d.result != keygate::LimitResult::kAllowed) { /* 429, d.status */ }
//
// Thread safety: `RateLimiter` implementations must be thread-safe; the
// local one is lock-free. Cost on the hot path: one uncontended CAS per limit
// for an allowed request (~5 ns), a load per limit for a denied one.

#ifndef KEYGATE_RATE_LIMITER_H_
#define KEYGATE_RATE_LIMITER_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "absl/time/time.h"
#include "absl/types/span.h"

#include "keygate/key.h"
#include "keygate/verdict.h"

namespace keygate {

// The TAT of a subject that has never been seen: any `now` is later.
inline constexpr std::int64_t kGcraNeverUsed = std::numeric_limits<std::int64_t>::min();

// A RateLimitPolicy compiled for GCRA. Times are nanoseconds.
struct GcraPolicy {
  std::int64_t emission_ns = 0;  // T = period / rate, rounded to nearest, >= 1 ns
  std::int64_t capacity_ns = 0;  // C = burst * T, capped at kMaxCapacityNs
  std::int64_t period_ns = 0;    // reported as the window
  std::uint32_t rate = 0;        // requests per period, reported as the limit (capped at 2^32-1)
  std::uint32_t burst = 0;       // requests the bucket holds

  // C is capped so that TAT arithmetic cannot overflow (73 years). Policies
  // that pass ValidateRateLimitPolicy are never capped; for others the
  // bucket holds fewer than `burst` requests, and larger costs are denied.
  static constexpr std::int64_t kMaxCapacityNs = kMaxRateLimitBucketNs;

  // Rates above one request per nanosecond are clamped to one per
  // nanosecond (T >= 1 ns): no hardware verifies faster than that. A policy
  // with rate 0 or burst 0 compiles to an invalid policy (valid() false),
  // which limiters treat as "no limit".
  static GcraPolicy Compile(const RateLimitPolicy& policy) noexcept;

  bool valid() const noexcept { return emission_ns > 0; }
  friend bool operator==(const GcraPolicy&, const GcraPolicy&) = default;
};

// The state of one limited subject for LocalRateLimiter, alone on its cache
// line so that two hot subjects never share one (false sharing costs 6x).
struct alignas(64) GcraCell {
  std::atomic<std::int64_t> tat{kGcraNeverUsed};
};

// One limit that applies to a request. The views must outlive the call.
struct LimitRef {
  const GcraPolicy* policy = nullptr;
  // The subject's TAT, owned by the caller (the Verifier keeps each key's in
  // the key's own cache line). Used by LocalRateLimiter; a limiter that keeps
  // state elsewhere (e.g. in Redis) may ignore it.
  std::atomic<std::int64_t>* tat = nullptr;
  // A stable name of the subject ("key_...", "owner:alice"): what a shared,
  // remote limiter keys its state by. Never a secret.
  std::string_view subject;
};

enum class LimitResult : std::uint8_t {
  kAllowed = 0,
  kDenied,       // over a limit; nothing was consumed
  kUnavailable,  // the limiter could not decide (remote backend down): fail closed
};

struct LimitDecision {
  LimitResult result = LimitResult::kUnavailable;
  // For kAllowed, the limit with the fewest requests remaining; for kDenied,
  // the denying limit. All zero when no limit applied.
  RateLimitStatus status;
};

// Decides whether a request may proceed under a set of limits.
//
// Contract: noexcept and allocation-free (it runs on the verifier's hot
// path); thread-safe; all-or-nothing across `limits`. `now_ns` is Unix time
// in nanoseconds, read once per request by the caller; it may go backwards
// (implementations must stay safe: GCRA simply denies more).
class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  virtual LimitDecision Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                                std::int64_t now_ns) noexcept = 0;
};

// GCRA on caller-owned atomics (LimitRef::tat must be non-null). Lock-free:
// one CAS per limit when allowed, plain loads when denied. With several
// limits it first checks every limit read-only, then consumes each with a
// CAS; if a concurrent request made a later limit deny in between, the
// amounts already taken are handed back (internal::GcraRefund), so a denied
// request consumes nothing. Stateless itself: one instance may serve any
// number of verifiers.
class LocalRateLimiter final : public RateLimiter {
 public:
  LimitDecision Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                        std::int64_t now_ns) noexcept override;

  // The single-limit case, inline for the verifier's hot path.
  static LimitDecision AcquireOne(const GcraPolicy& policy, std::atomic<std::int64_t>& tat,
                                  std::uint32_t cost, std::int64_t now_ns) noexcept;

  // What a request of `cost` at `now_ns` would get, without consuming.
  static LimitDecision Peek(const GcraPolicy& policy, std::int64_t tat, std::uint32_t cost,
                            std::int64_t now_ns) noexcept;
};

// Applies no limit: every request is allowed and reports no rate state.
class NoRateLimiter final : public RateLimiter {
 public:
  LimitDecision Acquire(absl::Span<const LimitRef>, std::uint32_t, std::int64_t) noexcept override {
    return LimitDecision{LimitResult::kAllowed, {}};
  }
};

namespace internal {

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

}  // namespace internal

inline LimitDecision LocalRateLimiter::Peek(const GcraPolicy& policy, std::int64_t tat,
                                            std::uint32_t cost, std::int64_t now_ns) noexcept {
  std::int64_t unused;
  return internal::GcraStep(policy, tat, cost, now_ns, &unused);
}

inline LimitDecision LocalRateLimiter::AcquireOne(const GcraPolicy& policy,
                                                  std::atomic<std::int64_t>& tat,
                                                  std::uint32_t cost,
                                                  std::int64_t now_ns) noexcept {
  std::int64_t current = tat.load(std::memory_order_relaxed);
  for (;;) {
    std::int64_t next = 0;
    LimitDecision d = internal::GcraStep(policy, current, cost, now_ns, &next);
    // Denials write nothing; a zero-cost request reads the state only.
    if (d.result != LimitResult::kAllowed || cost == 0) return d;
    // Relaxed is enough: the TAT guards no other memory.
    if (tat.compare_exchange_weak(current, next, std::memory_order_relaxed)) return d;
  }
}

}  // namespace keygate

#endif  // KEYGATE_RATE_LIMITER_H_
