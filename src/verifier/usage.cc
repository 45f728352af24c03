// The verifier's usage collector (usage.h).

#include "verifier/usage.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <utility>
#include <vector>

#include "internal/epoch.h"

namespace keygate::internal {

namespace {
constexpr std::size_t kUsageScanChunk = 4096;
}  // namespace

UsageCollector::UsageCollector(const IndexReader& reader, UsageConfig config)
    : reader_(reader), config_(config) {}

UsageCollector::~UsageCollector() { Stop(); }

absl::Status UsageCollector::Flush() {
  std::lock_guard<std::mutex> flush_lock(flush_mu_);
  std::unordered_map<std::string, PendingUse> agg;
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    agg.swap(pending_);
  }
  // Scan in short read sections so that writers' grace periods stay short.
  std::uint64_t generation = 0;
  std::size_t pos = 0;
  for (;;) {
    EpochReadGuard guard;
    if (!guard.ok()) return absl::ResourceExhaustedError("usage: cannot register thread");
    const Table* t = reader_.table();
    if (t->generation != generation) {
      // A new table: its slots carry no usage that was already taken (a
      // rebuild moves usage to pending_, read at the next flush), so scan it
      // from the start.
      generation = t->generation;
      pos = 0;
    }
    if (pos >= t->capacity) break;
    const std::size_t end = std::min<std::size_t>(t->capacity, pos + kUsageScanChunk);
    for (; pos < end; ++pos) {
      Slot& s = t->slots[pos];
      if ((s.ctrl.load(std::memory_order_acquire) & kKindMask) == kKindEmpty) continue;
      const std::uint32_t n = s.uses.load(std::memory_order_relaxed) == 0
                                  ? 0
                                  : s.uses.exchange(0, std::memory_order_relaxed);
      std::uint32_t denied = 0;
      std::uint32_t first_denied_s = 0;
      const bool was_denied = TakeDenials(t->denials[pos], &denied, &first_denied_s);
      if (n == 0 && !was_denied) continue;
      PendingUse& p = agg[IdOf(*t, pos)];
      if (n != 0) p.AddUses(n, s.last_used_s.load(std::memory_order_relaxed));
      if (was_denied) p.AddDenials(denied, first_denied_s);
    }
  }
  if (agg.empty()) return absl::OkStatus();

  std::vector<KeyUsage> batch;
  batch.reserve(agg.size());
  std::vector<LastUsedUpdate> touches;
  touches.reserve(agg.size());
  for (auto& [id, p] : agg) {
    // An entry with neither requests nor denials is a last_used a failed
    // flush put back.
    if (p.requests != 0 || p.denied != 0) {
      KeyUsage u;
      u.key_id = id;
      u.requests = p.requests;
      if (p.requests != 0) u.last_used = absl::FromUnixSeconds(p.last_s);
      u.denied = p.denied;
      if (p.denied != 0) u.first_denied = absl::FromUnixSeconds(p.first_denied_s);
      batch.push_back(std::move(u));
    }
    // Denied requests are not uses: a key with only those keeps its last_used.
    if (p.touch) touches.push_back(LastUsedUpdate{id, absl::FromUnixSeconds(p.last_s)});
  }
  if (config_.sink != nullptr && !batch.empty()) config_.sink->Record(batch);
  if (touches.empty()) return absl::OkStatus();

  absl::Status stored = config_.store->TouchLastUsed(touches, config_.last_used_granularity);
  if (!stored.ok()) {
    // Keep the last-used times for the next flush (the sink has had the
    // counts): a store that is down for one flush, or at Shutdown, must not
    // lose them.
    std::lock_guard<std::mutex> lock(pending_mu_);
    for (const auto& [id, p] : agg) {
      if (!p.touch) continue;
      PendingUse& q = pending_[id];
      q.last_s = std::max(q.last_s, p.last_s);
      q.touch = true;
    }
  }
  return stored;
}

void UsageCollector::Start() {
  if (config_.flush_interval <= absl::ZeroDuration()) return;
  thread_ = std::thread([this] { Loop(); });
}

void UsageCollector::Stop() {
  {
    std::lock_guard<std::mutex> lock(thread_mu_);
    stopping_ = true;
  }
  thread_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void UsageCollector::Loop() {
  const auto interval = absl::ToChronoNanoseconds(config_.flush_interval);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(thread_mu_);
      if (thread_cv_.wait_for(lock, interval, [&] { return stopping_; })) return;
    }
    (void)Flush();
  }
}

}  // namespace keygate::internal
