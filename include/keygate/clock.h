// keygate/clock.h: an injectable source of wall-clock time.
//
// Everything in keygate that compares against "now" (expiry, roll grace
// deadlines, rate limits, event times) reads a `Clock`, so tests can drive
// time by hand with `FakeClock`.
//
// Example:
//
//   keygate::FakeClock clock(absl::FromUnixSeconds(1'700'000'000));
//   clock.Advance(absl::Minutes(5));
//
// Thread safety: every implementation here is thread-safe.

#ifndef KEYGATE_CLOCK_H_
#define KEYGATE_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace keygate {

class Clock {
 public:
  virtual ~Clock() = default;
  // Current time. Must be thread-safe. On the hot path the verifier reads it
  // once per request: implementations should cost tens of nanoseconds.
  virtual absl::Time Now() const noexcept = 0;
};

// The system clock (`absl::Now()`, about 20 ns).
class SystemClock final : public Clock {
 public:
  absl::Time Now() const noexcept override { return absl::Now(); }
  // A process-wide instance; never destroyed.
  static SystemClock& Get();
};

// A clock that only moves when told to. Thread-safe (one atomic).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000))
      : nanos_(absl::ToUnixNanos(start)) {}
  absl::Time Now() const noexcept override {
    return absl::FromUnixNanos(nanos_.load(std::memory_order_acquire));
  }
  void Set(absl::Time t) noexcept { nanos_.store(absl::ToUnixNanos(t), std::memory_order_release); }
  // May be negative, to test clocks that step backwards.
  void Advance(absl::Duration d) noexcept {
    nanos_.fetch_add(absl::ToInt64Nanoseconds(d), std::memory_order_acq_rel);
  }

 private:
  std::atomic<std::int64_t> nanos_;
};

}  // namespace keygate

#endif  // KEYGATE_CLOCK_H_
