// The PostgreSQL store's listener thread (postgres_key_store.h): LISTEN on a dedicated
// connection, wake the subscribers on every notification, every poll interval, and after each
// reconnect (LISTEN first, then the wake-up, so no change falls between). Private.
#ifndef KEYGATE_SRC_POSTGRES_LISTENER_H_
#define KEYGATE_SRC_POSTGRES_LISTENER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "keygate/change_notifier.h"

namespace keygate::internal {

struct ListenerConfig {
  std::string url;
  std::string setup;      // SET statements for the connection
  std::string described;  // the database as errors name it
  std::string channel;    // the NOTIFY channel; "": poll only (no connection)
  absl::Duration connect_timeout;
  absl::Duration poll_interval;
  absl::Duration backoff;
  absl::Duration backoff_max;
  std::function<void(const absl::Status&)> on_status;
};

struct ListenerCounters {
  std::atomic<std::uint64_t> connects{0};
  std::atomic<std::uint64_t> notifications{0};
  std::atomic<std::uint64_t> polls{0};
  std::atomic<int> backend_pid{0};  // of the LISTEN connection (0: none), for tests
};

class Listener {
 public:
  // Starts the thread. `notifier` is woken without waiting (NotifyWithoutWaiting).
  Listener(ListenerConfig config, std::shared_ptr<ChangeNotifier> notifier,
           std::shared_ptr<ListenerCounters> counters);
  // Stops the thread and joins it (within one poll(2) return, or a connection attempt's
  // connect_timeout). Run by a callback on the listener's own thread (a subscriber that drops
  // the store), it detaches instead: the thread then ends on its own.
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

 private:
  struct State;  // shared with the thread, which may outlive this object
  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_POSTGRES_LISTENER_H_
