// keygate/redis/redis_rate_limiter.h: a `RateLimiter` whose limits are shared by every process
// that uses the same Redis, with nothing but local memory on the request path; target
// `keygate::redis`.
//
// How it decides. Redis keeps one GCRA per subject (a key id, an owner), updated only by one Lua
// script that reads Redis's own clock (`TIME`), so the processes' clocks never enter the budget.
// Each process holds, per subject, a local balance of tokens. `Acquire` spends from it with one
// compare-and-swap; a background thread exchanges with Redis every `exchange_interval`, in one
// pipelined round trip for all subjects that need it:
//   - it leases tokens for subjects with demand (about 1.5x the demand of one lease lifetime);
//     leased tokens expire `lease_fraction * period` after the request that leased them was sent
//     (measured on `clock`) and are returned to Redis unspent;
//   - it reports spends made on credit: with no lease, a process may spend up to `credit` tokens
//     per subject before Redis has seen them, where credit = max(1, overshoot * rate / N). Redis
//     accepts reported spends only while its bucket has room; the rest stays a local debt, and a
//     process in debt spends no more credit, so credit cannot compound.
// Bound: in any window of one period after the first (the first also holds the bucket's burst, as
// with any GCRA), the fleet admits at most L * (1 + lease_fraction) + N * credit + 1 requests,
// that is L * 1.02 + 1 with the defaults whenever L >= 100 * N. Under demand above L it admits
// at least L * (1 - lease_fraction) minus what expires unspent. A request denied by one of its
// limits consumes nothing of the others, locally and in Redis.
//
// Redis unavailable (a command past `command_timeout`, a refused connection): the limiter turns to
// fallback. Each process then limits every subject to its share, L / N and burst / N, starting from
// an empty bucket, so the fleet admits at most L per period while Redis is gone; N is
// `fleet_size`, or the largest number of live processes learned from Redis (each process
// announces itself every 250 ms) if that is larger. With `fail_closed`, or with N unknown (never
// connected and no `fleet_size`), `Acquire` answers kUnavailable instead (the verifier's 503).
// Reconnects are tried every 100-250 ms; the first exchange that succeeds ends the fallback
// (within 1 s of Redis returning) and reports the fallback's spends to Redis. Redis restarted
// empty forgets every bucket: the window around the restart may admit up to burst + L more.
//
// `RateLimitStatus` in verdicts: `limit` and `window_ns` are the policy's; `remaining`,
// `reset_ns` and `retry_after_ns` come from the last exchange with Redis, so they may be up to
// one exchange interval old (a denial by an exhausted lease says retry after one interval).
//
// Ownership: the limiter owns its Redis connection and its thread (stopped by the destructor).
// Thread safety: thread-safe. Cost on the hot path: one CAS per limit plus a comparison of the
// subject (the Verifier caches each subject's slot in its `GcraCell`; a subject without a cell is
// hashed on every call); no lock, no allocation, no I/O. Redis traffic: one round trip per
// `exchange_interval` at most, whatever the number of subjects and requests.
//
// Example:
//   keygate::RedisRateLimiterOptions o;
//   o.url = "unix:///run/redis/redis.sock";   // or "redis://:password@10.0.0.5:6379"
//   o.fleet_size = 4;                         // the fallback share is L / 4
//   absl::StatusOr<std::unique_ptr<keygate::RedisRateLimiter>> limiter =
//       keygate::RedisRateLimiter::Create(o);
//   if (!limiter.ok()) { /* names the option; a password never appears */ }
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
  // "redis://[[user]:password@]host[:port][/db]" or "unix://[[user]:password@]/path/to/socket".
  std::string url;
  // Prefix of every Redis key the limiter writes ("<prefix>b:<subject>", "<prefix>members").
  std::string key_prefix = "keygate:rl:";
  // Deadline of a connect and of one round trip; past it, Redis counts as unavailable.
  absl::Duration command_timeout = absl::Milliseconds(100);
  // How often the background thread exchanges with Redis (1 ms - 1 s).
  absl::Duration exchange_interval = absl::Milliseconds(2);
  // A lease lives this fraction of the policy's period (0.001 - 0.1).
  double lease_fraction = 0.01;
  // Credit shared by the fleet, as a fraction of the rate (0 - 0.1); at least one token per
  // process and subject.
  double overshoot = 0.01;
  // N, the processes sharing the limits (0: learn it from Redis).
  std::uint32_t fleet_size = 0;
  // Redis unavailable: answer kUnavailable instead of limiting to the local share.
  bool fail_closed = false;
  // Subjects (keys and owners) this process can track; past it, new subjects are kUnavailable.
  std::size_t max_subjects = std::size_t{1} << 16;
  // The clock the callers' `now_ns` comes from (the Verifier's). Null: SystemClock. Must outlive
  // the limiter.
  const Clock* clock = nullptr;
};

// Counters since Create (monotonic, except the gauges marked).
struct RedisRateLimiterStats {
  std::uint64_t round_trips = 0;   // pipelined exchanges with Redis that were answered
  std::uint64_t commands = 0;      // script calls in them
  std::uint64_t failures = 0;      // exchanges or connects that failed or timed out
  std::uint64_t reconnects = 0;    // connections established after the first
  std::uint64_t lease_misses = 0;  // denials while Redis last reported budget left
  std::uint64_t table_full = 0;    // requests refused because max_subjects were tracked
  std::int64_t fallback_ns = 0;    // time spent in fallback (local shares or fail closed)
  bool in_fallback = false;        // gauge
  std::uint32_t fleet_size = 0;    // gauge: N in use (configured or learned; 0: unknown)
  std::size_t subjects = 0;        // gauge: subjects tracked
};

class RedisRateLimiter final : public RateLimiter {
 public:
  // Validates `options` and starts the background thread after one attempt to connect. Redis
  // being down is not an error (the limiter starts in fallback and keeps trying). Errors:
  // kInvalidArgument naming the option ("url: unsupported scheme", "exchange_interval: must be
  // 1ms-1s", ...), never echoing a password.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RedisRateLimiter>> Create(
      RedisRateLimiterOptions options);

  ~RedisRateLimiter() override;
  RedisRateLimiter(const RedisRateLimiter&) = delete;
  RedisRateLimiter& operator=(const RedisRateLimiter&) = delete;

  // See RateLimiter. kUnavailable: in fallback with `fail_closed` or N unknown, more limits
  // than 4 in one call, or a new subject past `max_subjects`.
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
