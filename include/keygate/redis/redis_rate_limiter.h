// keygate/redis/redis_rate_limiter.h: a `RateLimiter` whose limits are shared by every process
// on the same Redis, with only local memory on the request path; target `keygate::redis`.
//
// Redis keeps one GCRA per subject (key id, owner), changed only by a Lua script on its clock.
// `Acquire` spends leased tokens (a lease lives `lease_fraction` of the period), else up to
// credit = max(1, overshoot * L / N, cost) tokens Redis has not seen yet, while Redis last
// showed room. A thread settles with Redis every `exchange_interval` (docs/design.md).
//
// Bound: in any window of one period after the first, the fleet admits at most
// L * (1 + lease_fraction) + N * credit + 1 (L * 1.02 + 1 by default when L >= 100 N), counting
// the calls that lie in the window from their `now_ns` to their return (a call stamped inside a
// lease, then held up, still spends that lease). Known gap: leftover leases refunded inside a
// window return capacity that Redis grants again; where exchanges come late (a loaded machine,
// ASan) a window has exceeded the bound by up to 0.6 % of L (redis_fleet_test). A request denied by
// one of its limits consumes nothing of the others, here or in Redis.
//
// Redis unavailable (past `command_timeout`): each process limits every subject to L / N and
// burst / N from an empty bucket (N: `fleet_size`, or more live processes learned from Redis);
// with `fail_closed` or N unknown, kUnavailable. Shared limiting resumes within 1 s of Redis's
// return; Redis restarted empty may admit burst + L more in one window.
//
// Status in verdicts is from the last exchange. Owns its connection and thread; thread-safe.
// Cost: a CAS per limit and a subject comparison (the Verifier's `GcraCell` caches the slot).
//
// Example:
//   keygate::RedisRateLimiterOptions o;
//   o.url = "unix:///run/redis/redis.sock";  // or "redis://:password@10.0.0.5:6379"
//   o.fleet_size = 4;                        // the fallback share is L / 4
//   auto limiter = keygate::RedisRateLimiter::Create(o);
//   if (!limiter.ok()) { /* names the option; never the password */ }
//   keygate::VerifierOptions v;
//   v.rate_limiter = std::move(*limiter);

#ifndef KEYGATE_REDIS_REDIS_RATE_LIMITER_H_
#define KEYGATE_REDIS_REDIS_RATE_LIMITER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "keygate/clock.h"
#include "keygate/rate_limiter.h"

namespace keygate {

struct RedisRateLimiterOptions {
  std::string url;  // redis://[[user]:password@]host[:port][/db], unix://[[user]:password@]/path
  std::string key_prefix = "keygate:rl:";                    // of every key written
  absl::Duration command_timeout = absl::Milliseconds(100);  // connect or round trip
  absl::Duration exchange_interval = absl::Milliseconds(2);  // 1 ms - 1 s
  double lease_fraction = 0.01;  // of the period, a lease's lifetime (0.001 - 0.1)
  double overshoot = 0.01;       // the fleet's credit, a fraction of the rate (0 - 0.1)
  std::uint32_t fleet_size = 0;  // N (0: learned from Redis)
  bool fail_closed = false;      // Redis unavailable: kUnavailable instead of the L / N share
  std::size_t max_subjects = std::size_t{1} << 16;  // more new subjects are kUnavailable
  // Where the callers' `now_ns` comes from (the Verifier's clock); null: SystemClock. Outlives
  // the limiter.
  const Clock* clock = nullptr;
};

// Counters since Create, and gauges.
struct RedisRateLimiterStats {
  std::uint64_t round_trips = 0;   // answered pipelined exchanges
  std::uint64_t commands = 0;      // script calls in them
  std::uint64_t failures = 0;      // failed or timed-out exchanges and connects
  std::uint64_t reconnects = 0;    // connections after the first
  std::uint64_t lease_misses = 0;  // denials while Redis last reported budget left
  std::uint64_t table_full = 0;    // requests refused past max_subjects
  std::int64_t fallback_ns = 0;    // time in fallback (shares or fail closed)
  bool in_fallback = false;        // gauge
  std::uint32_t fleet_size = 0;    // gauge: N in use (0: unknown)
  std::size_t subjects = 0;        // gauge: subjects tracked
};

class RedisRateLimiter final : public RateLimiter {
 public:
  // Validates `options`, starts the thread and waits for its first connect attempt (Redis down
  // is no error: it starts in fallback). Errors: kInvalidArgument naming the option
  // ("url: unsupported scheme ..."), never a password.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RedisRateLimiter>> Create(
      RedisRateLimiterOptions options);

  ~RedisRateLimiter() override;
  RedisRateLimiter(const RedisRateLimiter&) = delete;
  RedisRateLimiter& operator=(const RedisRateLimiter&) = delete;

  // See RateLimiter. kUnavailable also for more than 4 limits or past `max_subjects`.
  LimitDecision Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                        std::int64_t now_ns) noexcept override;

  [[nodiscard]] RedisRateLimiterStats Stats() const;

  class Impl;

 private:
  explicit RedisRateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_REDIS_REDIS_RATE_LIMITER_H_
