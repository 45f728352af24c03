// Change notification for the SQLite KeyStore (notifier.h).

#include "sqlite/notifier.h"

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "sqlite/sqlite_db.h"

namespace keygate::internal {

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

absl::StatusOr<std::unique_ptr<Subscription>> Notifier::Subscribe(std::function<void()> on_change) {
  if (!on_change) return absl::InvalidArgumentError("on_change: must be callable");
  if (absl::Status s = Start(); !s.ok()) return s;
  return changes_.Subscribe(std::move(on_change));
}

// Another thread may be running a round: the writer waits for the one that
// covers its commit (ChangeNotifier::Notify).
void Notifier::Committed() { changes_.Notify(); }

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
      // No write waits on this; and a store destroyed inside a callback
      // joins this thread, which must not be waiting for that callback.
      changes_.NotifyWithoutWaiting();
    }
    lock.lock();
  }
  lock.unlock();
  poll_db_.reset();
}

}  // namespace keygate::internal
