// Change notification for the SQLite KeyStore (notifier.h).

#include "sqlite/notifier.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "sqlite/sqlite_db.h"

namespace keygate::internal {
namespace {

// How many subscriber callbacks the current thread is inside (any store's).
thread_local int callback_depth = 0;

// Delivers one notification: returns once a callback round that STARTED after
// it has finished, so the write that notified returns only after its
// subscribers have seen it, even when a round (the poller's, another
// writer's) is already running on another thread: then this thread waits,
// and that thread runs one more round. A callback never runs on two threads
// at once and no notification is lost.
//
// Three cases return without waiting (the running round's loop still
// covers the notification): `wait` false (the poller: no write waits on it,
// and a store destroyed inside a callback joins the poller, which must not
// be waiting for that very callback); a write from inside this subscriber's
// own callback (waiting would wait for itself); and a write from inside any
// other callback (two callbacks each writing, each waiting for the other's
// round, would deadlock). Such a write may return before the other
// subscribers have seen it.
void Notify(const std::shared_ptr<SubscriberState>& s, bool wait) {
  std::unique_lock<std::mutex> lock(s->mu);
  const std::uint64_t ticket = ++s->requested;
  const std::thread::id self = std::this_thread::get_id();
  for (;;) {
    if (!s->active || s->completed >= ticket) return;
    if (!s->running) break;
    if (!wait || s->runner == self || callback_depth > 0) return;
    s->idle.wait(lock);
  }
  s->running = true;
  s->runner = self;
  while (s->active && s->completed < s->requested) {
    const std::uint64_t round = s->requested;
    lock.unlock();
    ++callback_depth;
    s->callback();
    --callback_depth;
    lock.lock();
    s->completed = round;
    s->idle.notify_all();
  }
  s->running = false;
  s->runner = std::thread::id();
  s->idle.notify_all();
}

}  // namespace

absl::Status Notifier::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return absl::OkStatus();
  if (!in_memory_) {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, open_path_);
    if (!db.ok()) return db.status();
    poll_db_ = *std::move(db);
    poll_db_->SetBusyTimeout(absl::Milliseconds(100));
    absl::StatusOr<std::int64_t> v = poll_db_->QueryInt("PRAGMA data_version", "poll");
    if (!v.ok()) return v.status();
    data_version_ = *v;
    // The thread keeps the notifier alive until it exits (see StopAndJoin).
    thread_ = std::thread([self = shared_from_this()] { self->Run(); });
  }
  started_ = true;
  return absl::OkStatus();
}

void Notifier::Add(std::shared_ptr<SubscriberState> s) {
  std::lock_guard<std::mutex> lock(subs_mu_);
  subs_.push_back(std::move(s));
  has_subscribers_.store(true, std::memory_order_release);
}

void Notifier::Remove(const std::shared_ptr<SubscriberState>& s) {
  std::lock_guard<std::mutex> lock(subs_mu_);
  subs_.erase(std::remove(subs_.begin(), subs_.end(), s), subs_.end());
  has_subscribers_.store(!subs_.empty(), std::memory_order_release);
}

void Notifier::Committed() {
  if (!has_subscribers_.load(std::memory_order_acquire)) return;
  Dispatch(/*wait=*/true);
}

void Notifier::StopAndJoin() {
  std::thread t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    t = std::move(thread_);
  }
  cv_.notify_one();
  if (!t.joinable()) return;
  if (t.get_id() == std::this_thread::get_id()) {
    // The store is being destroyed from inside a callback on the poller:
    // the thread ends by itself once the callback returns (it holds a
    // reference to us).
    t.detach();
  } else {
    t.join();
  }
}

void Notifier::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, absl::ToChronoMilliseconds(interval_), [&] { return stop_; });
    if (stop_) break;
    lock.unlock();
    // Another connection committed since the last look (our own commits
    // count too; they were already dispatched, and one more call is
    // harmless: calls may be coalesced or repeated).
    absl::StatusOr<std::int64_t> v = poll_db_->QueryInt("PRAGMA data_version", "poll");
    if (v.ok() && *v != data_version_) {
      data_version_ = *v;
      Dispatch(/*wait=*/false);
    }
    lock.lock();
  }
  lock.unlock();
  poll_db_.reset();
}

void Notifier::Dispatch(bool wait) {
  std::vector<std::shared_ptr<SubscriberState>> subs;
  {
    std::lock_guard<std::mutex> lock(subs_mu_);
    subs = subs_;
  }
  for (const std::shared_ptr<SubscriberState>& s : subs) Notify(s, wait);
}

SqliteSubscription::~SqliteSubscription() {
  {
    std::unique_lock<std::mutex> lock(sub_->mu);
    sub_->active = false;
    sub_->idle.notify_all();  // writers waiting for a round: it is not coming
    const std::thread::id self = std::this_thread::get_id();
    sub_->idle.wait(lock, [&] { return !sub_->running || sub_->runner == self; });
  }
  notifier_->Remove(sub_);
}

}  // namespace keygate::internal
