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
//   keygate::LimitRef ref{&policy, &cell, "user-42"};
//   keygate::LimitDecision d = limiter.Acquire({&ref, 1}, /*cost=*/1,
//                                              absl::ToUnixNanos(absl::Now()));
//   if (d.result != keygate::LimitResult::kAllowed) { /* 429, d.status */ }
//
// Thread safety: `RateLimiter` implementations must be thread-safe; the
// local one is lock-free. Cost on the hot path: one uncontended CAS per limit
// for an allowed request (~5 ns), a load per limit for a denied one.

#ifndef KEYGATE_RATE_LIMITER_H_
#define KEYGATE_RATE_LIMITER_H_

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

namespace internal {
struct GcraAccess;  // not API: the limiter's and the Verifier's access to the state
}  // namespace internal

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
// Starts unused (the subject's first request finds a full bucket).
class alignas(64) GcraCell {
 public:
  GcraCell() = default;
  GcraCell(const GcraCell&) = delete;
  GcraCell& operator=(const GcraCell&) = delete;

 private:
  friend struct LimitRef;
  friend struct internal::GcraAccess;
  // The theoretical arrival time; the minimum means "never used".
  std::atomic<std::int64_t> tat_{std::numeric_limits<std::int64_t>::min()};
};

// One limit that applies to a request. The policy, the cell and the subject
// must outlive the call.
struct LimitRef {
  LimitRef() = default;
  // `cell`: the subject's state, owned by the caller (the Verifier keeps each
  // key's in the key's own cache line). Used by LocalRateLimiter; a limiter
  // that keeps state elsewhere (e.g. in Redis) ignores it, and it may be null.
  LimitRef(const GcraPolicy* limit_policy, GcraCell* cell, std::string_view limit_subject) noexcept
      : policy(limit_policy),
        subject(limit_subject),
        tat_(cell != nullptr ? &cell->tat_ : nullptr) {}

  const GcraPolicy* policy = nullptr;
  // A stable name of the subject ("key_...", "owner:alice"): what a shared,
  // remote limiter keys its state by. Never a secret.
  std::string_view subject;

 private:
  friend struct internal::GcraAccess;
  std::atomic<std::int64_t>* tat_ = nullptr;
};

enum class LimitResult : std::uint8_t {
  kAllowed = 0,
  kDenied,       // over a limit; nothing was consumed
  kUnavailable,  // the limiter could not decide (remote backend down): fail closed
};

struct [[nodiscard]] LimitDecision {
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

// GCRA on caller-owned cells (each LimitRef with a policy needs a cell). Lock-free: one
// CAS per limit when allowed, plain loads when denied. With several limits it
// first checks every limit read-only, then consumes each with a CAS; if a
// concurrent request made a later limit deny in between, the amounts already
// taken are handed back, so a denied request consumes nothing. Stateless
// itself: one instance may serve any number of verifiers.
class LocalRateLimiter final : public RateLimiter {
 public:
  LimitDecision Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                        std::int64_t now_ns) noexcept override;
};

// Applies no limit: every request is allowed and reports no rate state.
class NoRateLimiter final : public RateLimiter {
 public:
  LimitDecision Acquire(absl::Span<const LimitRef>, std::uint32_t, std::int64_t) noexcept override {
    return LimitDecision{LimitResult::kAllowed, {}};
  }
};

}  // namespace keygate

#endif  // KEYGATE_RATE_LIMITER_H_
