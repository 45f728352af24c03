// RedisRateLimiter's background thread: connects, announces this process, settles every
// subject's balance with Redis (leases, debt, refunds, fallback reports) and switches between
// global limiting and fallback. The request path is in redis_rate_limiter.cc.

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "redis/limiter_impl.h"
#include "redis/redis_client.h"
#include "redis/scripts.h"

namespace keygate {
namespace {

using rl::kNever;
using rl::Mode;
using rl::Slot;
using rl::SlotState;
using rl::ToNs;

constexpr absl::Duration kHeartbeatInterval = absl::Milliseconds(250);
constexpr absl::Duration kLivenessHorizon = absl::Seconds(2);
// After Redis was short, a subject is asked for again within this at most.
constexpr std::int64_t kMaxShortWaitNs = 250'000'000;
// Script calls per round trip, at most.
constexpr std::size_t kMaxBatch = 1024;

std::string FormatMicros(std::int64_t ns) { return absl::StrFormat("%.3f", ns / 1000.0); }

}  // namespace

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

}  // namespace keygate
