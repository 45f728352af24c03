// The verifier's feed follower (feed.h).

#include "verifier/feed.h"

#include <chrono>
#include <utility>

#include "absl/status/statusor.h"

namespace keygate::internal {

FeedFollower::FeedFollower(IndexWriter& writer, FeedConfig config)
    : writer_(writer), config_(config) {}

FeedFollower::~FeedFollower() { Stop(); }

absl::Status FeedFollower::Start() {
  absl::StatusOr<std::unique_ptr<Subscription>> sub = config_.store->Subscribe([this] {
    if (config_.sync_in_callback && writer_.Sync().ok()) return;
    Wake();  // failed or deferred: let the feed thread retry
  });
  if (!sub.ok()) return sub.status();
  subscription_ = std::move(*sub);
  // Changes committed between the initial load and the subscription reached
  // no callback of ours. Apply them before returning, so that a revoke that
  // returned before Create did is in force when it returns.
  if (absl::Status s = writer_.Sync(); !s.ok()) return s;
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void FeedFollower::Stop() {
  // First stop notifications, then the thread.
  subscription_.reset();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FeedFollower::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_pending_ = true;
  }
  cv_.notify_all();
}

void FeedFollower::Loop() {
  const auto poll = absl::ToChronoNanoseconds(config_.poll_interval);
  const bool resync = config_.full_resync_interval > absl::ZeroDuration();
  auto next_resync = std::chrono::steady_clock::now() +
                     (resync ? absl::ToChronoNanoseconds(config_.full_resync_interval)
                             : std::chrono::nanoseconds(0));
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, poll, [&] { return stopping_ || wake_pending_; });
      if (stopping_) return;
      wake_pending_ = false;
    }
    if (resync && std::chrono::steady_clock::now() >= next_resync) {
      (void)writer_.Reload();  // failures are counted; the old index keeps serving
      next_resync = std::chrono::steady_clock::now() +
                    absl::ToChronoNanoseconds(config_.full_resync_interval);
    } else {
      (void)writer_.Sync();
      // The store's history went back (restored or recreated): only a full read is current.
      if (writer_.StoreWentBack()) (void)writer_.Reload();
    }
  }
}

}  // namespace keygate::internal
