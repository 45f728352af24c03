// Change notification for the SQLite KeyStore: the subscribers of one store,
// called by a writer after its commit (same process) or by a poller thread
// that watches PRAGMA data_version on its own connection (other processes).
// Private to keygate::sqlite.
#ifndef KEYGATE_SRC_SQLITE_NOTIFIER_H_
#define KEYGATE_SRC_SQLITE_NOTIFIER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "keygate/key_store.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {

struct SubscriberState {
  explicit SubscriberState(std::function<void()> cb) : callback(std::move(cb)) {}
  std::mutex mu;
  std::condition_variable idle;
  bool active = true;    // false once the Subscription is being destroyed
  bool running = false;  // a thread is inside the round loop
  std::thread::id runner;
  std::uint64_t requested = 0;  // notifications received
  std::uint64_t completed = 0;  // every notification <= this was followed by a whole round
  const std::function<void()> callback;
};

// Tells subscribers about commits: this process's own, at once on the
// committing thread, or by waiting for a round on another thread (Notify),
// after the store mutex is released and before the write returns, so a
// Verifier that applies changes in its callback rejects a revoked key as soon
// as Revoke() returns; other processes', from a poller thread that checks
// PRAGMA data_version on its own connection every poll interval. The poller
// starts with the first Subscribe.
class Notifier : public std::enable_shared_from_this<Notifier> {
 public:
  Notifier(std::string path, std::string open_path, bool in_memory, absl::Duration interval)
      : path_(std::move(path)),
        open_path_(std::move(open_path)),
        in_memory_(in_memory),
        interval_(interval) {}

  ~Notifier() { StopAndJoin(); }

  absl::Status Start();
  void Add(std::shared_ptr<SubscriberState> s);
  void Remove(const std::shared_ptr<SubscriberState>& s);

  // After a commit by this process (store mutex released): notify now, on
  // the calling thread.
  void Committed();

  void StopAndJoin();

 private:
  void Run();
  void Dispatch(bool wait);

  const std::string path_;
  const std::string open_path_;  // what SQLite opens (OpenPath)
  const bool in_memory_;
  const absl::Duration interval_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool stop_ = false;
  std::thread thread_;
  std::unique_ptr<SqliteDb> poll_db_;  // used by the poller thread only
  std::int64_t data_version_ = 0;      // poller thread only

  std::mutex subs_mu_;
  std::vector<std::shared_ptr<SubscriberState>> subs_;
  std::atomic<bool> has_subscribers_{false};
};

class SqliteSubscription final : public Subscription {
 public:
  SqliteSubscription(std::shared_ptr<SubscriberState> sub, std::shared_ptr<Notifier> notifier)
      : sub_(std::move(sub)), notifier_(std::move(notifier)) {}

  // Waits for a callback running on another thread, unless called from
  // inside that callback (then it is simply not called again).
  ~SqliteSubscription() override;

 private:
  std::shared_ptr<SubscriberState> sub_;
  std::shared_ptr<Notifier> notifier_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_NOTIFIER_H_
