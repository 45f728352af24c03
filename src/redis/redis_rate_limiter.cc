// RedisRateLimiter: local balances spent on the hot path, exchanged with Redis by one thread.
// The design and its bound are in the header; this file is the mechanism.

#include "keygate/redis/redis_rate_limiter.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"

#include "internal/gcra.h"
#include "redis/redis_client.h"
#include "redis/scripts.h"

namespace keygate {
namespace {

using internal::GcraAccess;

constexpr std::size_t kMaxLimits = 4;
constexpr std::size_t kMaxSubject = kMaxOwnerLength + 32;  // "owner:<owner>"
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::min();
// A GcraCell given to this limiter caches its subject's slot: kCellTag | index.
constexpr std::int64_t kCellTag = std::int64_t{0x4B47} << 48;
constexpr std::int64_t kCellTagMask = std::int64_t{0x7FFF} << 48;
constexpr absl::Duration kHeartbeatInterval = absl::Milliseconds(250);
constexpr absl::Duration kLivenessHorizon = absl::Seconds(2);
// After Redis was short, a subject is asked for again within this at most.
constexpr std::int64_t kMaxShortWaitNs = 250'000'000;
// Script calls per round trip, at most.
constexpr std::size_t kMaxBatch = 1024;

enum class Mode : std::uint8_t { kGlobal, kFallback, kClosed };

// A stable hash (the slot table is per process, so any hash would do; this one is cheap).
std::uint64_t HashSubject(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 32;
  return h;
}

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

std::int64_t ToNs(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

std::string FormatMicros(std::int64_t ns) { return absl::StrFormat("%.3f", ns / 1000.0); }

}  // namespace

// Raw storage for the slots: pages are only touched by the subjects that are used.
struct SlotStorageDeleter {
  void operator()(Slot* p) const noexcept {
    ::operator delete (p, std::align_val_t{alignof(Slot)});
  }
};

class RedisRateLimiter::Impl {
 public:
  Impl(RedisRateLimiterOptions options, internal::RedisEndpoint endpoint)
      : options_(std::move(options)),
        endpoint_(std::move(endpoint)),
        clock_(options_.clock != nullptr ? options_.clock : &SystemClock::Get()),
        interval_ns_(ToNs(options_.exchange_interval)),
        max_(static_cast<std::uint32_t>(options_.max_subjects)) {
    std::size_t cap = 1;
    while (cap < options_.max_subjects * 2) cap <<= 1;
    mask_ = cap - 1;
    index_ = std::make_unique<std::atomic<std::uint64_t>[]>(cap);
    slots_.reset(static_cast<Slot*>(
        ::operator new (sizeof(Slot) * options_.max_subjects, std::align_val_t{alignof(Slot)})));
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

  Slot* Find(const LimitRef& ref) noexcept;
  Slot* Lookup(std::string_view subject) noexcept;
  void Publish(Slot& s, const GcraPolicy& p) noexcept;
  std::int64_t CreditFor(std::uint32_t rate) const noexcept {
    const std::uint32_t n = std::max<std::uint32_t>(1, fleet_.load(std::memory_order_relaxed));
    const double c = options_.overshoot * static_cast<double>(rate) / n;
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(c));
  }
  static GcraPolicy Share(const GcraPolicy& p, std::uint32_t n) noexcept;

  LimitDecision AcquireGlobal(const std::array<Slot*, kMaxLimits>& slot, std::size_t n,
                              std::uint32_t cost, std::int64_t now_ns) noexcept;
  LimitDecision AcquireFallback(const std::array<Slot*, kMaxLimits>& slot,
                                const std::array<const GcraPolicy*, kMaxLimits>& policy,
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
  std::unique_ptr<Slot, SlotStorageDeleter> slots_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> built_;
  std::atomic<std::uint32_t> count_{0};  // slots reserved (constructed before they are indexed)

  std::atomic<Mode> mode_{Mode::kGlobal};
  std::atomic<std::uint32_t> fleet_{0};
  std::atomic<std::uint64_t> round_trips_{0};
  std::atomic<std::uint64_t> commands_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::uint64_t> reconnects_{0};
  std::atomic<std::uint64_t> table_full_{0};
  std::atomic<std::int64_t> fallback_ns_{0};
  std::atomic<std::int64_t> fallback_since_{0};

  // Owned by the background thread.
  std::vector<SlotState> state_;
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

// ---- Request path ----

void RedisRateLimiter::Impl::Publish(Slot& s, const GcraPolicy& p) noexcept {
  s.capacity_ns.store(p.capacity_ns, std::memory_order_relaxed);
  s.period_ns.store(p.period_ns, std::memory_order_relaxed);
  s.rate.store(p.rate, std::memory_order_relaxed);
  s.burst.store(p.burst, std::memory_order_relaxed);
  s.credit.store(CreditFor(p.rate), std::memory_order_relaxed);
  s.emission_ns.store(p.emission_ns, std::memory_order_release);  // last: the others are set
}

Slot* RedisRateLimiter::Impl::Lookup(std::string_view subject) noexcept {
  const std::uint64_t h = HashSubject(subject);
  const std::uint64_t hi = h & 0xFFFFFFFF00000000ULL;
  Slot* mine = nullptr;  // constructed for this subject, not yet indexed
  std::uint32_t mine_index = 0;
  for (std::size_t i = 0; i <= mask_; ++i) {
    std::atomic<std::uint64_t>& bucket = index_[(h + i) & mask_];
    std::uint64_t e = bucket.load(std::memory_order_acquire);
    if (e == 0) {
      if (mine == nullptr) {
        mine_index = count_.load(std::memory_order_relaxed);
        do {
          if (mine_index >= max_) return nullptr;
        } while (
            !count_.compare_exchange_weak(mine_index, mine_index + 1, std::memory_order_acq_rel));
        mine = new (slots_.get() + mine_index) Slot();
        mine->subject_size = static_cast<std::uint8_t>(subject.size());
        if (!subject.empty()) std::memcpy(mine->subject, subject.data(), subject.size());
        built_[mine_index].store(1, std::memory_order_release);
      }
      if (bucket.compare_exchange_strong(e, hi | (std::uint64_t{mine_index} + 1),
                                         std::memory_order_acq_rel)) {
        return mine;
      }
      // Another request indexed a subject here first: `e` is its entry.
    }
    if ((e & 0xFFFFFFFF00000000ULL) != hi) continue;
    Slot& s = slots_.get()[(e & 0xFFFFFFFFULL) - 1];
    // If this request built a slot for a subject that another request indexed meanwhile, the
    // built one stays an orphan (never indexed; the background thread sees no policy on it).
    if (s.Subject() == subject) return &s;
  }
  return nullptr;
}

Slot* RedisRateLimiter::Impl::Find(const LimitRef& ref) noexcept {
  if (ref.subject.size() > kMaxSubject) return nullptr;
  std::atomic<std::int64_t>* cell = GcraAccess::Tat(ref);
  if (cell != nullptr) {
    // The cell remembers the subject's slot (a cell given to this limiter holds nothing else).
    const std::int64_t v = cell->load(std::memory_order_relaxed);
    if ((v & kCellTagMask) == kCellTag) {
      const auto j = static_cast<std::uint64_t>(v & ~kCellTagMask);
      if (j < max_ && built_[j].load(std::memory_order_acquire) != 0) {
        Slot& s = slots_.get()[j];
        if (s.Subject() == ref.subject) return &s;
      }
    }
  }
  Slot* s = Lookup(ref.subject);
  if (s != nullptr && cell != nullptr) {
    cell->store(kCellTag | static_cast<std::int64_t>(s - slots_.get()), std::memory_order_relaxed);
  }
  return s;
}

LimitDecision RedisRateLimiter::Impl::Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                                              std::int64_t now_ns) noexcept {
  if (limits.size() > kMaxLimits) {
    std::size_t valid = 0;
    for (const LimitRef& l : limits) valid += l.policy != nullptr && l.policy->valid() ? 1 : 0;
    // Refused before any subject is tracked: slots are never freed.
    if (valid > kMaxLimits) return LimitDecision{LimitResult::kUnavailable, {}};
  }
  std::array<Slot*, kMaxLimits> slot{};
  std::array<const GcraPolicy*, kMaxLimits> policy{};
  std::size_t n = 0;
  for (const LimitRef& l : limits) {
    if (l.policy == nullptr || !l.policy->valid()) continue;
    Slot* s = Find(l);
    if (s == nullptr) {
      table_full_.fetch_add(1, std::memory_order_relaxed);
      return LimitDecision{LimitResult::kUnavailable, {}};
    }
    if (s->emission_ns.load(std::memory_order_acquire) != l.policy->emission_ns ||
        s->capacity_ns.load(std::memory_order_relaxed) != l.policy->capacity_ns) {
      Publish(*s, *l.policy);
    }
    slot[n] = s;
    policy[n] = l.policy;
    ++n;
  }
  if (n == 0) return LimitDecision{LimitResult::kAllowed, {}};
  switch (mode_.load(std::memory_order_acquire)) {
    case Mode::kGlobal:
      return AcquireGlobal(slot, n, cost, now_ns);
    case Mode::kFallback:
      return AcquireFallback(slot, policy, n, cost, now_ns);
    case Mode::kClosed:
      break;
  }
  return LimitDecision{LimitResult::kUnavailable, {}};
}

namespace {

// How low the balance may go for a request of `c`: credit (at least `c`, so that a request
// costing more than a lease still gets through) only while Redis last said the bucket had room
// for it, or before the first exchange; a process that saw the bucket short spends none.
std::int64_t Floor(const Slot& s, std::int64_t c) noexcept {
  const std::int64_t hint = s.remaining_hint.load(std::memory_order_relaxed);
  return hint < 0 || hint >= c ? -std::max(s.credit.load(std::memory_order_relaxed), c) : 0;
}

// Whether a positive balance (leased tokens) may serve a request stamped `now_ns`; if not, the
// request moves them to `expired` (for the next exchange to return) and may spend credit. A request
// stamped before the lease arrived (its thread read the clock, then was held up) may use it:
// refusing it would answer 429 under a generous limit, and each thread has one such request
// at most.
bool LeaseServes(const Slot& s, std::int64_t now_ns) noexcept {
  return now_ns < s.lease_expires_ns.load(std::memory_order_acquire);
}

RateLimitStatus StatusOf(const Slot& s, std::int64_t local_left) noexcept {
  RateLimitStatus st;
  st.limit = s.rate.load(std::memory_order_relaxed);
  st.window_ns = s.period_ns.load(std::memory_order_relaxed);
  const std::int64_t burst = s.burst.load(std::memory_order_relaxed);
  const std::int64_t hint = s.remaining_hint.load(std::memory_order_relaxed);
  const std::int64_t remaining = hint < 0 ? burst : hint + std::max<std::int64_t>(local_left, 0);
  st.remaining = static_cast<std::uint64_t>(std::clamp<std::int64_t>(remaining, 0, burst));
  st.reset_ns = s.reset_hint_ns.load(std::memory_order_relaxed);
  return st;
}

}  // namespace

LimitDecision RedisRateLimiter::Impl::AcquireGlobal(const std::array<Slot*, kMaxLimits>& slot,
                                                    std::size_t n, std::uint32_t cost,
                                                    std::int64_t now_ns) noexcept {
  const auto c = static_cast<std::int64_t>(cost);
  auto deny = [&](Slot& s) {
    s.denied.fetch_add(std::max<std::uint64_t>(cost, 1), std::memory_order_relaxed);
    LimitDecision d{LimitResult::kDenied, StatusOf(s, 0)};
    const bool budget_left = s.remaining_hint.load(std::memory_order_relaxed) >= c;
    if (budget_left) s.lease_misses.fetch_add(1, std::memory_order_relaxed);
    // A lease miss clears at the next exchange; otherwise Redis said when room returns.
    d.status.retry_after_ns =
        budget_left ? interval_ns_
                    : std::max(s.wait_hint_ns.load(std::memory_order_relaxed), interval_ns_);
    return d;
  };
  // Phase 1, read-only: a denial writes nothing but the demand counter.
  for (std::size_t i = 0; i < n; ++i) {
    Slot& s = *slot[i];
    if (cost > s.burst.load(std::memory_order_relaxed)) return deny(s);  // can never fit
    std::int64_t have = s.tokens.load(std::memory_order_acquire);
    if (have > 0 && !LeaseServes(s, now_ns)) have = 0;  // an expired lease: credit only
    if (have - c < Floor(s, c)) return deny(s);
  }
  if (cost == 0) {
    LimitDecision best{LimitResult::kAllowed, StatusOf(*slot[0], 0)};
    for (std::size_t i = 1; i < n; ++i) {
      RateLimitStatus st = StatusOf(*slot[i], 0);
      if (st.remaining < best.status.remaining) best.status = st;
    }
    return best;
  }
  // Phase 2: take from each; if a concurrent request got there first, give back and deny.
  LimitDecision best{LimitResult::kAllowed, {}};
  for (std::size_t i = 0; i < n; ++i) {
    Slot& s = *slot[i];
    std::int64_t current = s.tokens.load(std::memory_order_acquire);
    const std::int64_t floor = Floor(s, c);
    for (;;) {
      if (current > 0 && !LeaseServes(s, now_ns)) {
        // The lease expired: its tokens go back to Redis, not to this request.
        if (s.tokens.compare_exchange_weak(current, 0, std::memory_order_acq_rel)) {
          s.expired.fetch_add(current, std::memory_order_relaxed);
          current = 0;
        }
        continue;
      }
      if (current - c < floor) {
        for (std::size_t j = 0; j < i; ++j) {
          slot[j]->tokens.fetch_add(c, std::memory_order_acq_rel);
        }
        return deny(s);
      }
      if (s.tokens.compare_exchange_weak(current, current - c, std::memory_order_acq_rel)) break;
    }
    RateLimitStatus st = StatusOf(s, current - c);
    if (i == 0 || st.remaining < best.status.remaining) best.status = st;
  }
  return best;
}

// The share of `p` a process keeps in fallback: L / N, burst / N.
GcraPolicy RedisRateLimiter::Impl::Share(const GcraPolicy& p, std::uint32_t n) noexcept {
  GcraPolicy s = p;
  if (n <= 1) return s;
  s.emission_ns = p.emission_ns > GcraPolicy::kMaxCapacityNs / n ? GcraPolicy::kMaxCapacityNs
                                                                 : p.emission_ns * n;
  s.burst = std::max<std::uint32_t>(1, p.burst / n);
  s.capacity_ns = s.emission_ns > GcraPolicy::kMaxCapacityNs / s.burst ? GcraPolicy::kMaxCapacityNs
                                                                       : s.emission_ns * s.burst;
  s.rate = std::max<std::uint32_t>(1, p.rate / n);
  return s;
}

LimitDecision RedisRateLimiter::Impl::AcquireFallback(
    const std::array<Slot*, kMaxLimits>& slot,
    const std::array<const GcraPolicy*, kMaxLimits>& policy, std::size_t n, std::uint32_t cost,
    std::int64_t now_ns) noexcept {
  const std::uint32_t fleet = std::max<std::uint32_t>(1, fleet_.load(std::memory_order_relaxed));
  std::array<GcraPolicy, kMaxLimits> share{};
  std::array<LimitRef, kMaxLimits> refs{};
  for (std::size_t i = 0; i < n; ++i) {
    share[i] = Share(*policy[i], fleet);
    refs[i] = GcraAccess::Ref(&share[i], &slot[i]->fallback_tat, slot[i]->Subject());
  }
  // A share starts empty (kNever: not used since the fallback began): a burst from every process
  // at once would exceed the fleet's budget.
  for (std::size_t i = 0; i < n; ++i) {
    std::int64_t expected = kNever;
    slot[i]->fallback_tat.compare_exchange_strong(
        expected,
        std::clamp(now_ns, -internal::kGcraNowBound, internal::kGcraNowBound) +
            share[i].capacity_ns,
        std::memory_order_relaxed);
  }
  LocalRateLimiter local;
  LimitDecision d = local.Acquire({refs.data(), n}, cost, now_ns);
  if (d.result == LimitResult::kAllowed) {
    for (std::size_t i = 0; i < n; ++i) {
      slot[i]->fallback_spent.fetch_add(cost, std::memory_order_relaxed);
    }
  }
  return d;
}

// ---- Background thread ----

std::int64_t RedisRateLimiter::Impl::TakeBalance(std::uint32_t j) {
  SlotState& st = state_[j];
  const std::int64_t was = slots_.get()[j].tokens.exchange(0, std::memory_order_acq_rel);
  st.spent += static_cast<std::uint64_t>(std::max<std::int64_t>(st.balance - was, 0));
  st.balance = 0;
  return was;
}

std::int64_t RedisRateLimiter::Impl::TakeLeftover(std::uint32_t j) {
  SlotState& st = state_[j];
  std::atomic<std::int64_t>& tokens = slots_.get()[j].tokens;
  std::int64_t was = tokens.load(std::memory_order_acquire);
  while (was > 0 && !tokens.compare_exchange_weak(was, 0, std::memory_order_acq_rel)) {
  }
  st.spent += static_cast<std::uint64_t>(std::max<std::int64_t>(st.balance - was, 0));
  st.balance = was > 0 ? 0 : was;
  return was;
}

void RedisRateLimiter::Impl::AddBalance(std::uint32_t j, std::int64_t delta) {
  SlotState& st = state_[j];
  const std::int64_t was = slots_.get()[j].tokens.fetch_add(delta, std::memory_order_acq_rel);
  st.spent += static_cast<std::uint64_t>(std::max<std::int64_t>(st.balance - was, 0));
  st.balance = was + delta;
}

void RedisRateLimiter::Impl::ObserveBalance(std::uint32_t j) {
  SlotState& st = state_[j];
  const std::int64_t now = slots_.get()[j].tokens.load(std::memory_order_acquire);
  st.spent += static_cast<std::uint64_t>(std::max<std::int64_t>(st.balance - now, 0));
  st.balance = now;
}

bool RedisRateLimiter::Impl::Connect() {
  absl::StatusOr<std::unique_ptr<internal::RedisClient>> c =
      internal::RedisClient::Connect(endpoint_, options_.command_timeout);
  if (c.ok()) {
    absl::StatusOr<std::string> ex = (*c)->LoadScript(internal::kExchangeScript);
    absl::StatusOr<std::string> mb =
        ex.ok() ? (*c)->LoadScript(internal::kMembersScript) : ex.status();
    if (ex.ok() && mb.ok()) {
      exchange_sha_ = *std::move(ex);
      members_sha_ = *std::move(mb);
      client_ = *std::move(c);
      if (connected_once_) reconnects_.fetch_add(1, std::memory_order_relaxed);
      connected_once_ = true;
      return true;
    }
  }
  failures_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void RedisRateLimiter::Impl::Disconnect() {
  client_.reset();
  failures_.fetch_add(1, std::memory_order_relaxed);
  EnterFallback();
}

void RedisRateLimiter::Impl::EnterFallback() {
  if (mode_.load(std::memory_order_relaxed) != Mode::kGlobal) return;
  const std::uint32_t fleet = fleet_.load(std::memory_order_relaxed);
  // Every share starts empty (at its first use) and leases are dropped: what the fleet admitted
  // under Redis stays admitted, and from now on each process adds at most its share. Spends on
  // credit that Redis has not seen are reported with the fallback's, once it is back.
  for (std::uint32_t j = 0; j < Reserved(); ++j) {
    if (!Built(j)) continue;
    Slot& s = slots_.get()[j];
    s.fallback_tat.store(kNever, std::memory_order_relaxed);
    // Debt becomes a fallback spend; a previous fallback's unreported spends stay unreported.
    const std::int64_t was = TakeBalance(j);
    state_[j].reported_fallback -= static_cast<std::uint64_t>(std::max<std::int64_t>(-was, 0));
  }
  fallback_since_.store(SteadyNs(), std::memory_order_relaxed);
  mode_.store(options_.fail_closed || fleet == 0 ? Mode::kClosed : Mode::kFallback,
              std::memory_order_release);
}

void RedisRateLimiter::Impl::LeaveFallback() {
  if (mode_.load(std::memory_order_relaxed) == Mode::kGlobal) return;
  const std::int64_t since = fallback_since_.exchange(0, std::memory_order_relaxed);
  if (since != 0) fallback_ns_.fetch_add(SteadyNs() - since, std::memory_order_relaxed);
  mode_.store(Mode::kGlobal, std::memory_order_release);
}

void RedisRateLimiter::Impl::Heartbeat() {
  if (client_ == nullptr) return;
  client_->AppendEvalSha(members_sha_, options_.key_prefix + "members",
                         {member_id_, std::to_string(ToNs(kLivenessHorizon) / 1000), "0"});
  if (!client_->Flush(&replies_).ok() || replies_.size() != 1 || !replies_[0].ok ||
      replies_[0].values.empty()) {
    Disconnect();
    return;
  }
  round_trips_.fetch_add(1, std::memory_order_relaxed);
  commands_.fetch_add(1, std::memory_order_relaxed);
  const auto live = static_cast<std::uint32_t>(std::clamp<std::int64_t>(
      replies_[0].values[0], 1, std::numeric_limits<std::uint32_t>::max()));
  fleet_.store(std::max(options_.fleet_size, live), std::memory_order_relaxed);
  next_heartbeat_ = SteadyNs() + ToNs(kHeartbeatInterval);
}

void RedisRateLimiter::Impl::Exchange(std::int64_t now) {
  batch_.clear();
  // Round robin from where the last full batch stopped: with more subjects to serve than one
  // batch holds, the later ones must not starve.
  const std::uint32_t reserved = Reserved();
  if (cursor_ >= reserved) cursor_ = 0;
  for (std::uint32_t k = 0; k < reserved; ++k) {
    const std::uint32_t j = (cursor_ + k) % reserved;
    if (batch_.size() == kMaxBatch) {
      cursor_ = j;
      break;
    }
    if (!Built(j)) continue;
    Slot& s = slots_.get()[j];
    SlotState& st = state_[j];
    const std::int64_t emission = s.emission_ns.load(std::memory_order_acquire);
    if (emission <= 0) continue;  // an orphan, or no policy published yet
    const std::int64_t period = s.period_ns.load(std::memory_order_relaxed);
    const auto burst = static_cast<std::int64_t>(s.burst.load(std::memory_order_relaxed));
    s.credit.store(CreditFor(s.rate.load(std::memory_order_relaxed)), std::memory_order_relaxed);

    // Tokens requests moved off the balance after their lease expired: not spent, to return.
    const std::int64_t moved = s.expired.exchange(0, std::memory_order_acq_rel);
    st.balance -= moved;
    st.expired += moved;

    // Demand since the last look (allowed + denied), smoothed.
    ObserveBalance(j);
    const std::uint64_t denied = s.denied.load(std::memory_order_relaxed);
    const std::uint64_t new_denied = denied - st.seen_denied;
    const std::uint64_t demand = (st.spent - st.seen_spent) + new_denied;
    const double dt = static_cast<double>(std::max(now - st.demand_at_ns, interval_ns_));
    const double rate_now = static_cast<double>(demand) / dt;
    st.demand_per_ns = st.demand_at_ns == 0 ? rate_now : 0.5 * st.demand_per_ns + 0.5 * rate_now;
    st.seen_spent = st.spent;
    st.seen_denied = denied;
    st.demand_at_ns = now;

    const std::uint64_t fallback_spent = s.fallback_spent.load(std::memory_order_relaxed);
    const auto forced = static_cast<std::int64_t>(fallback_spent - st.reported_fallback);
    const std::int64_t tokens = st.balance;
    const std::int64_t expires = s.lease_expires_ns.load(std::memory_order_relaxed);
    const std::int64_t ttl = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(options_.lease_fraction * static_cast<double>(period)));
    const auto want = static_cast<std::int64_t>(std::min<double>(
        std::ceil(1.5 * st.demand_per_ns * static_cast<double>(ttl)), static_cast<double>(burst)));
    const bool expiring = (tokens > 0 && now + interval_ns_ >= expires) || st.expired > 0;
    const bool low = tokens >= 0 && want >= 2 && tokens * 4 < want;
    if (!(tokens < 0 || expiring || low || new_denied > 0 || forced > 0)) continue;
    // Redis said the bucket was short: ask again once what is missing has accrued. Fallback
    // reports and expiring leases go at once (an unusable lease holds the subject's credit).
    if (now < st.not_before_ns && forced == 0 && !expiring) continue;

    // Leftovers go back to Redis. Debt is reported but stays on the balance until Redis covers
    // it: a process in debt must not spend its credit again while the report is in flight.
    const std::int64_t took = TakeLeftover(j);
    st.refund = std::max<std::int64_t>(took, 0) + std::exchange(st.expired, 0);
    st.debit = std::max<std::int64_t>(-took, 0);
    st.forced = forced;
    st.reported_fallback = fallback_spent;
    st.sent_ns = now;
    st.lease = want >= 2 ? want : (new_denied > 0 ? 1 : 0);
    client_->AppendEvalSha(
        exchange_sha_, absl::StrCat(options_.key_prefix, "b:", std::string(s.Subject())),
        {FormatMicros(emission), FormatMicros(s.capacity_ns.load(std::memory_order_relaxed)),
         std::to_string(st.debit), std::to_string(st.lease), std::to_string(forced),
         std::to_string(st.refund),
         std::to_string(std::max<std::uint32_t>(1, fleet_.load(std::memory_order_relaxed)))});
    batch_.push_back(j);
  }
  if (batch_.empty()) return;

  const absl::Status sent = client_->Flush(&replies_);
  if (!sent.ok() || replies_.size() != batch_.size()) {
    // Nothing is known to have reached Redis: the debt stays (and is reported with the
    // fallback's); leases taken back are lost, which only admits less.
    for (std::uint32_t j : batch_) {
      state_[j].reported_fallback -= static_cast<std::uint64_t>(state_[j].forced);
    }
    Disconnect();
    return;
  }
  round_trips_.fetch_add(1, std::memory_order_relaxed);
  commands_.fetch_add(batch_.size(), std::memory_order_relaxed);
  bool noscript = false;
  for (std::size_t k = 0; k < batch_.size(); ++k) {
    const std::uint32_t j = batch_[k];
    Slot& s = slots_.get()[j];
    SlotState& st = state_[j];
    const internal::RedisIntReply& r = replies_[k];
    if (!r.ok || r.values.size() != 5) {
      noscript = noscript || r.noscript;
      st.reported_fallback -= static_cast<std::uint64_t>(st.forced);
      continue;
    }
    const std::int64_t covered = r.values[0];
    const std::int64_t granted = r.values[1];
    const std::int64_t wait_ns = r.values[3] * 1000;
    s.remaining_hint.store(r.values[2], std::memory_order_relaxed);
    s.wait_hint_ns.store(wait_ns, std::memory_order_relaxed);
    s.reset_hint_ns.store(r.values[4] * 1000, std::memory_order_relaxed);
    const std::int64_t period = s.period_ns.load(std::memory_order_relaxed);
    const std::int64_t ttl = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(options_.lease_fraction * static_cast<double>(period)));
    // The lease ends a lifetime after it was asked for (Redis granted it later than that).
    s.lease_expires_ns.store(st.sent_ns + ttl, std::memory_order_release);
    AddBalance(j, granted + covered);
    const std::int64_t missing = (st.lease - granted) + (st.debit - covered);
    const std::int64_t emission = s.emission_ns.load(std::memory_order_relaxed);
    // At most a quarter second (or one interval), whatever the period: a long period's lease
    // lifetime (36 s for an hourly quota) would leave budget unasked for.
    const std::int64_t longest = std::max(interval_ns_, std::min(ttl, kMaxShortWaitNs));
    st.not_before_ns = missing <= 0
                           ? 0
                           : now + std::clamp<std::int64_t>(wait_ns + (missing - 1) * emission,
                                                            interval_ns_, longest);
  }
  if (noscript) Disconnect();  // reloads the scripts on reconnect
}

void RedisRateLimiter::Impl::Run() {
  // hiredis writes with write(2): a Redis that died under a connection would raise SIGPIPE,
  // whose default action ends the process. On this thread it stays blocked (and pending).
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);

  if (Connect()) Heartbeat();
  if (client_ == nullptr) EnterFallback();
  started_.Notify();

  std::uniform_int_distribution<std::int64_t> jitter(ToNs(absl::Milliseconds(100)),
                                                     ToNs(absl::Milliseconds(250)));
  while (!stop_.WaitForNotificationWithTimeout(absl::Nanoseconds(interval_ns_))) {
    const std::int64_t now = Now();
    if (client_ == nullptr) {
      if (SteadyNs() < next_connect_) continue;
      if (!Connect()) {
        next_connect_ = SteadyNs() + jitter(rng_);
        continue;
      }
      Heartbeat();
      if (client_ == nullptr) {
        next_connect_ = SteadyNs() + jitter(rng_);
        continue;
      }
      // Back: limit globally again; the first exchange reports what fallback admitted.
      LeaveFallback();
    }
    if (SteadyNs() >= next_heartbeat_) Heartbeat();
    if (client_ != nullptr) Exchange(now);
    if (client_ == nullptr) next_connect_ = SteadyNs() + jitter(rng_);
  }
  if (client_ != nullptr) {  // leave the membership, so that the others learn N sooner
    client_->AppendEvalSha(members_sha_, options_.key_prefix + "members",
                           {member_id_, std::to_string(ToNs(kLivenessHorizon) / 1000), "1"});
    (void)client_->Flush(&replies_);
  }
}

RedisRateLimiterStats RedisRateLimiter::Impl::Stats() const {
  RedisRateLimiterStats s;
  s.round_trips = round_trips_.load(std::memory_order_relaxed);
  s.commands = commands_.load(std::memory_order_relaxed);
  s.failures = failures_.load(std::memory_order_relaxed);
  s.reconnects = reconnects_.load(std::memory_order_relaxed);
  s.table_full = table_full_.load(std::memory_order_relaxed);
  s.in_fallback = mode_.load(std::memory_order_acquire) != Mode::kGlobal;
  s.fleet_size = fleet_.load(std::memory_order_relaxed);
  for (std::uint32_t j = 0; j < Reserved(); ++j) {
    if (!Built(j)) continue;
    const Slot& slot = slots_.get()[j];
    if (slot.emission_ns.load(std::memory_order_relaxed) == 0) continue;
    ++s.subjects;
    s.lease_misses += slot.lease_misses.load(std::memory_order_relaxed);
  }
  s.fallback_ns = fallback_ns_.load(std::memory_order_relaxed);
  const std::int64_t since = fallback_since_.load(std::memory_order_relaxed);
  if (s.in_fallback && since != 0) s.fallback_ns += SteadyNs() - since;
  return s;
}

// ---- Public surface ----

absl::StatusOr<std::unique_ptr<RedisRateLimiter>> RedisRateLimiter::Create(
    RedisRateLimiterOptions options) {
  absl::StatusOr<internal::RedisEndpoint> endpoint = internal::ParseRedisUrl(options.url);
  if (!endpoint.ok()) return endpoint.status();
  if (options.key_prefix.empty() || options.key_prefix.size() > 256) {
    return absl::InvalidArgumentError("key_prefix: must be 1-256 bytes");
  }
  if (options.command_timeout < absl::Milliseconds(1) ||
      options.command_timeout > absl::Seconds(60)) {
    return absl::InvalidArgumentError("command_timeout: must be 1ms-60s");
  }
  if (options.exchange_interval < absl::Milliseconds(1) ||
      options.exchange_interval > absl::Seconds(1)) {
    return absl::InvalidArgumentError("exchange_interval: must be 1ms-1s");
  }
  if (!(options.lease_fraction >= 0.001 && options.lease_fraction <= 0.1)) {
    return absl::InvalidArgumentError("lease_fraction: must be 0.001-0.1");
  }
  if (!(options.overshoot >= 0 && options.overshoot <= 0.1)) {
    return absl::InvalidArgumentError("overshoot: must be 0-0.1");
  }
  if (options.max_subjects == 0 || options.max_subjects > (std::size_t{1} << 24)) {
    return absl::InvalidArgumentError("max_subjects: must be 1-16777216");
  }
  auto impl = std::make_unique<Impl>(std::move(options), *std::move(endpoint));
  impl->Start();
  return std::unique_ptr<RedisRateLimiter>(new RedisRateLimiter(std::move(impl)));
}

RedisRateLimiter::RedisRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RedisRateLimiter::~RedisRateLimiter() = default;

LimitDecision RedisRateLimiter::Acquire(absl::Span<const LimitRef> limits, std::uint32_t cost,
                                        std::int64_t now_ns) noexcept {
  return impl_->Acquire(limits, cost, now_ns);
}

RedisRateLimiterStats RedisRateLimiter::Stats() const { return impl_->Stats(); }

}  // namespace keygate
