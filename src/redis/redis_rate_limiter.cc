// RedisRateLimiter's request path (Acquire: slot lookup, balances, fallback shares) and its
// public surface. The background thread is in exchange.cc; the design in the header.

#include "keygate/redis/redis_rate_limiter.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#include "internal/gcra.h"
#include "redis/limiter_impl.h"
#include "redis/redis_client.h"

namespace keygate {
namespace {

using internal::GcraAccess;
using rl::kMaxLimits;
using rl::kMaxSubject;
using rl::kNever;
using rl::Mode;
using rl::Slot;

// A GcraCell given to this limiter caches its subject's slot: kCellTag | index.
constexpr std::int64_t kCellTag = std::int64_t{0x4B47} << 48;
constexpr std::int64_t kCellTagMask = std::int64_t{0x7FFF} << 48;

// The slot table's hash (per process: any hash will do).
std::uint64_t HashSubject(std::string_view s) noexcept {
  return absl::Hash<absl::string_view>{}(absl::string_view(s.data(), s.size()));
}

}  // namespace

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
  auto never_fits = [&](const Slot& s) { return cost > s.burst.load(std::memory_order_relaxed); };
  // Phase 1, read-only, for several limits: a denial writes nothing but the demand counter. (One
  // limit goes straight to phase 2, which denies the same way without writing.)
  for (std::size_t i = 0; i < n && (n > 1 || cost == 0); ++i) {
    Slot& s = *slot[i];
    if (never_fits(s)) return deny(s);
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
      if (current - c < floor || never_fits(s)) {
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
