// RedisRateLimiter::Impl and the state it shares between the request path
// (redis_rate_limiter.cc) and the thread that settles with Redis (exchange.cc). Private.

#ifndef KEYGATE_SRC_REDIS_LIMITER_IMPL_H_
#define KEYGATE_SRC_REDIS_LIMITER_IMPL_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#include "keygate/redis/redis_rate_limiter.h"
#include "redis/redis_client.h"

namespace keygate {
// The Redis rate limiter's private types (rl: rate limiter), for its two source files.
namespace rl {

constexpr std::size_t kMaxLimits = 4;
constexpr std::size_t kMaxSubject = kMaxOwnerLength + 32;  // "owner:<owner>"
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::min();

enum class Mode : std::uint8_t { kGlobal, kFallback, kClosed };

// One tracked subject, constructed by the request that first names it (before it is published
// in the index) and never freed. The first cache line is what Acquire touches.
struct alignas(64) Slot {
  // Tokens this process may spend: > 0 leased (for requests stamped before lease_expires_ns),
  // < 0 spent on credit and not yet accepted by Redis. Only the background thread adds;
  // requests subtract.
  std::atomic<std::int64_t> tokens{0};
  // Leased tokens a request took off the balance after their lease expired, to be returned.
  std::atomic<std::int64_t> expired{0};
  std::atomic<std::int64_t> lease_expires_ns{0};
  std::atomic<std::int64_t> credit{0};
  std::atomic<std::int64_t> fallback_tat{kNever};
  std::atomic<std::uint64_t> denied{0};  // cost denied by this limit
  // What Redis said the bucket still held after this process's last exchange; -1 before one.
  std::atomic<std::int64_t> remaining_hint{-1};

  // The policy last seen on a request, for the background thread.
  std::atomic<std::int64_t> emission_ns{0};
  std::atomic<std::int64_t> capacity_ns{0};
  std::atomic<std::int64_t> period_ns{0};
  std::atomic<std::uint32_t> rate{0};
  std::atomic<std::uint32_t> burst{0};
  std::atomic<std::int64_t> wait_hint_ns{0};
  std::atomic<std::int64_t> reset_hint_ns{0};
  std::atomic<std::uint64_t> lease_misses{0};
  std::atomic<std::uint64_t> fallback_spent{0};
  std::uint8_t subject_size = 0;
  char subject[kMaxSubject] = {};

  std::string_view Subject() const noexcept { return {subject, subject_size}; }
};

// What only the background thread knows about a slot.
struct SlotState {
  // Spends are not counted on the hot path: they are what the balance lost between two writes
  // of this thread (requests only subtract, and give back only what they took).
  std::int64_t balance = 0;  // the balance as this thread last left it
  std::int64_t expired = 0;  // moved off the balance by requests, not yet returned
  std::uint64_t spent = 0;   // cost allowed, in global mode, up to the last observation
  std::uint64_t seen_spent = 0;
  std::uint64_t seen_denied = 0;
  std::uint64_t reported_fallback = 0;
  std::int64_t demand_at_ns = 0;  // when seen_* were taken
  double demand_per_ns = 0;       // smoothed
  std::int64_t debit = 0;
  std::int64_t refund = 0;
  std::int64_t forced = 0;
  std::int64_t lease = 0;
  std::int64_t sent_ns = 0;
  std::int64_t not_before_ns = 0;  // Redis was short: no request before this
};

inline std::int64_t ToNs(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

// Raw storage for the slots: pages are only touched by the subjects that are used.
struct SlotStorageDeleter {
  void operator()(rl::Slot* p) const noexcept {
    ::operator delete (p, std::align_val_t{alignof(rl::Slot)});
  }
};

}  // namespace rl

class RedisRateLimiter::Impl {
 public:
  Impl(RedisRateLimiterOptions options, internal::RedisEndpoint endpoint)
      : options_(std::move(options)),
        endpoint_(std::move(endpoint)),
        clock_(options_.clock != nullptr ? options_.clock : &SystemClock::Get()),
        interval_ns_(rl::ToNs(options_.exchange_interval)),
        max_(static_cast<std::uint32_t>(options_.max_subjects)) {
    std::size_t cap = 1;
    while (cap < options_.max_subjects * 2) cap <<= 1;
    mask_ = cap - 1;
    index_ = std::make_unique<std::atomic<std::uint64_t>[]>(cap);
    slots_.reset(static_cast<rl::Slot*>(::operator new (sizeof(rl::Slot) * options_.max_subjects,
                                                        std::align_val_t{alignof(rl::Slot)})));
    built_ = std::make_unique<std::atomic<std::uint8_t>[]>(options_.max_subjects);
    state_.resize(options_.max_subjects);
    std::random_device rd;
    member_id_ = absl::StrFormat("%08x%08x", rd(), rd());
    rng_.seed(rd());
    fleet_.store(options_.fleet_size, std::memory_order_relaxed);
  }

  ~Impl() {
    stop_.Notify();
    if (thread_.joinable()) thread_.join();
  }

  // Starts the thread and waits for its first attempt to connect, so that a limiter created
  // with Redis up starts global. Every exchange with Redis happens on that thread.
  void Start() {
    thread_ = std::thread([this] { Run(); });
    started_.WaitForNotification();
  }

  LimitDecision Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                        std::int64_t now_ns) noexcept;
  RedisRateLimiterStats Stats() const;

 private:
  static std::int64_t SteadyNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  std::int64_t Now() const { return absl::ToUnixNanos(clock_->Now()); }
  // Slots reserved so far: each is constructed once built_ says so (some are orphans: Lookup).
  std::uint32_t Reserved() const noexcept {
    return std::min(count_.load(std::memory_order_acquire), max_);
  }
  bool Built(std::uint32_t j) const noexcept {
    return built_[j].load(std::memory_order_acquire) != 0;
  }

  rl::Slot* Find(const LimitRef& ref) noexcept;
  rl::Slot* Lookup(std::string_view subject) noexcept;
  void Publish(rl::Slot& s, const GcraPolicy& p) noexcept;
  std::int64_t CreditFor(std::uint32_t rate) const noexcept {
    const std::uint32_t n = std::max<std::uint32_t>(1, fleet_.load(std::memory_order_relaxed));
    const double c = options_.overshoot * static_cast<double>(rate) / n;
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(c));
  }
  static GcraPolicy Share(const GcraPolicy& p, std::uint32_t n) noexcept;

  LimitDecision AcquireGlobal(const std::array<rl::Slot*, rl::kMaxLimits>& slot, std::size_t n,
                              std::uint32_t cost, std::int64_t now_ns) noexcept;
  LimitDecision AcquireFallback(const std::array<rl::Slot*, rl::kMaxLimits>& slot,
                                const std::array<const GcraPolicy*, rl::kMaxLimits>& policy,
                                std::size_t n, std::uint32_t cost, std::int64_t now_ns) noexcept;

  // Background thread.
  void Run();
  bool Connect();
  void Disconnect();
  void Heartbeat();
  void Exchange(std::int64_t now);
  void EnterFallback();
  void LeaveFallback();
  // The balance operations of the background thread; each accounts for what requests spent
  // since the previous one.
  std::int64_t TakeBalance(std::uint32_t j);
  // Takes a positive balance (leftover lease); a negative one stays. Returns the balance seen.
  std::int64_t TakeLeftover(std::uint32_t j);
  void AddBalance(std::uint32_t j, std::int64_t delta);
  void ObserveBalance(std::uint32_t j);

  const RedisRateLimiterOptions options_;
  const internal::RedisEndpoint endpoint_;
  const Clock* const clock_;
  const std::int64_t interval_ns_;
  const std::uint32_t max_;
  std::size_t mask_ = 0;
  // Open addressing: 0 empty, else (hash >> 32) << 32 | (slot + 1).
  std::unique_ptr<std::atomic<std::uint64_t>[]> index_;
  std::unique_ptr<rl::Slot, rl::SlotStorageDeleter> slots_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> built_;
  std::atomic<std::uint32_t> count_{0};  // slots reserved (constructed before they are indexed)

  std::atomic<rl::Mode> mode_{rl::Mode::kGlobal};
  std::atomic<std::uint32_t> fleet_{0};
  std::atomic<std::uint64_t> round_trips_{0};
  std::atomic<std::uint64_t> commands_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::uint64_t> reconnects_{0};
  std::atomic<std::uint64_t> table_full_{0};
  std::atomic<std::int64_t> fallback_ns_{0};
  std::atomic<std::int64_t> fallback_since_{0};

  // Owned by the background thread.
  std::vector<rl::SlotState> state_;
  std::unique_ptr<internal::RedisClient> client_;
  std::string exchange_sha_;
  std::string members_sha_;
  std::string member_id_;
  std::mt19937_64 rng_;
  bool connected_once_ = false;
  std::int64_t next_heartbeat_ = 0;  // steady clock
  std::int64_t next_connect_ = 0;
  std::vector<std::uint32_t> batch_;
  std::uint32_t cursor_ = 0;  // where Exchange starts
  std::vector<internal::RedisIntReply> replies_;
  absl::Notification started_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace keygate

#endif  // KEYGATE_SRC_REDIS_LIMITER_IMPL_H_
