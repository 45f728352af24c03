// Change notification for the SQLite KeyStore: the subscribers of one store,
// called by a writer after its commit (same process) or by a poller thread
// that watches PRAGMA data_version on its own connection (other processes).
// Private to keygate::sqlite.
#ifndef KEYGATE_SRC_SQLITE_NOTIFIER_H_
#define KEYGATE_SRC_SQLITE_NOTIFIER_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/change_notifier.h"
#include "keygate/key_store.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {

// Tells subscribers (a ChangeNotifier) about commits: this process's own
// through Committed() (ChangeNotifier::Notify: the write returns after its
// subscribers saw it); other processes', from a poller thread that checks
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

  // Starts the poller (once), then subscribes `on_change`.
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::function<void()> on_change);

  // After a commit by this process (store mutex released): notify now, on
  // the calling thread.
  void Committed();

  void StopAndJoin();

 private:
  absl::Status Start();
  void Run();

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

  ChangeNotifier changes_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_NOTIFIER_H_
