// The verifier's feed follower (private): subscribes to the store's change
// notifications, applies the feed through the writer (in the callback, or
// on its thread when woken), polls when no notification comes, and runs the
// periodic full resync.
//
// Thread safety: thread-safe. Its wake-up state is under mu_; applying
// changes takes the writer's lock, never mu_ with it.

#ifndef KEYGATE_SRC_VERIFIER_FEED_H_
#define KEYGATE_SRC_VERIFIER_FEED_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "keygate/key_store.h"
#include "verifier/writer.h"

namespace keygate::internal {

struct FeedConfig {
  KeyStore* store = nullptr;
  bool sync_in_callback = true;         // apply inside the store's callback
  absl::Duration poll_interval;         // positive
  absl::Duration full_resync_interval;  // zero: never
};

class FeedFollower {
 public:
  // `writer` must outlive the follower.
  FeedFollower(IndexWriter& writer, FeedConfig config);
  ~FeedFollower();  // Stop()
  FeedFollower(const FeedFollower&) = delete;
  FeedFollower& operator=(const FeedFollower&) = delete;

  // Subscribes, applies what was committed since the initial load (so that
  // every change that returned before this call is in force), then starts
  // the feed thread. Errors: the store's (Subscribe, ChangesSince).
  absl::Status Start();
  // Ends the subscription (after this returns, the callback is not running
  // and will not run again), then stops and joins the thread. Idempotent.
  void Stop();

 private:
  void Wake();
  void Loop();

  IndexWriter& writer_;
  const FeedConfig config_;
  std::unique_ptr<Subscription> subscription_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_pending_ = false;  // under mu_
  bool stopping_ = false;      // under mu_
  std::thread thread_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_VERIFIER_FEED_H_
