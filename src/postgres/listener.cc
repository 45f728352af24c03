// The PostgreSQL store's listener thread (listener.h).

#include "postgres/listener.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "postgres/pg_conn.h"
#include "postgres/schema.h"

namespace keygate::internal {

struct Listener::State {
  State(ListenerConfig c, std::shared_ptr<ChangeNotifier> n, std::shared_ptr<ListenerCounters> k)
      : config(std::move(c)), notifier(std::move(n)), counters(std::move(k)) {
    if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
      wake[0] = wake[1] = -1;  // stop then waits for the next poll interval
    }
  }
  ~State() {
    for (const int fd : wake) {
      if (fd >= 0) ::close(fd);
    }
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  void Run();
  bool SleepUnlessStopped(absl::Duration d);  // false: stopping

  const ListenerConfig config;
  const std::shared_ptr<ChangeNotifier> notifier;
  const std::shared_ptr<ListenerCounters> counters;
  int wake[2] = {-1, -1};  // a pipe: the destructor writes to stop the thread
  std::atomic<bool> stop{false};
};

Listener::Listener(ListenerConfig config, std::shared_ptr<ChangeNotifier> notifier,
                   std::shared_ptr<ListenerCounters> counters)
    : state_(std::make_shared<State>(std::move(config), std::move(notifier), std::move(counters))) {
  thread_ = std::thread([state = state_] { state->Run(); });
}

Listener::~Listener() {
  state_->stop.store(true, std::memory_order_release);
  if (state_->wake[1] >= 0) {
    const char c = 1;
    (void)!::write(state_->wake[1], &c, 1);
  }
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();  // a callback on this thread destroyed the store; Run returns next
  } else {
    thread_.join();
  }
}

bool Listener::State::SleepUnlessStopped(absl::Duration d) {
  pollfd p{wake[0], POLLIN, 0};
  const auto ms = static_cast<int>(std::max<std::int64_t>(0, absl::ToInt64Milliseconds(d)));
  (void)::poll(&p, wake[0] >= 0 ? 1 : 0, ms);
  return !stop.load(std::memory_order_acquire);
}

void Listener::State::Run() {
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = config.backoff;
  bool reported_down = false;
  absl::Time next_poll = absl::Now() + config.poll_interval;
  if (config.channel.empty()) {  // poll only
    while (SleepUnlessStopped(config.poll_interval)) {
      counters->polls.fetch_add(1, std::memory_order_relaxed);
      notifier->NotifyWithoutWaiting();
    }
    return;
  }
  while (!stop.load(std::memory_order_acquire)) {
    // Connect, LISTEN, then wake the subscribers: anything committed while no connection
    // listened is caught up by their ChangesSince.
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(
        config.url, config.setup, config.described, absl::Now() + config.connect_timeout);
    absl::Status st = conn.status();
    if (st.ok()) {
      st = (*conn)->ExecScript(absl::StrCat("LISTEN ", QuoteIdent(config.channel)),
                               absl::Now() + config.connect_timeout);
    }
    if (!st.ok()) {
      if (!reported_down && config.on_status) config.on_status(st);
      reported_down = true;
      // Full jitter: a fleet that lost its database does not come back in lockstep.
      std::uniform_int_distribution<std::int64_t> jitter(
          0, std::max<std::int64_t>(1, absl::ToInt64Microseconds(backoff)));
      // The poll goes on meanwhile: a subscriber still learns of changes every poll_interval
      // (the reads may fail while the server is down; they succeed as soon as it is back).
      const absl::Time retry_at = absl::Now() + absl::Microseconds(jitter(rng));
      while (absl::Now() < retry_at) {
        if (!SleepUnlessStopped(std::min(retry_at, next_poll) - absl::Now())) return;
        if (absl::Now() >= next_poll) {
          counters->polls.fetch_add(1, std::memory_order_relaxed);
          notifier->NotifyWithoutWaiting();
          next_poll = absl::Now() + config.poll_interval;
        }
      }
      backoff = std::min(backoff * 2, config.backoff_max);
      continue;
    }
    backoff = config.backoff;
    counters->connects.fetch_add(1, std::memory_order_relaxed);
    counters->backend_pid.store((*conn)->backend_pid(), std::memory_order_relaxed);
    if (reported_down && config.on_status) config.on_status(absl::OkStatus());
    notifier->NotifyWithoutWaiting();
    PgConn& c = **conn;
    while (!stop.load(std::memory_order_acquire)) {
      pollfd p[2] = {{c.socket(), POLLIN, 0}, {wake[0], POLLIN, 0}};
      const absl::Duration left = std::max(absl::ZeroDuration(), next_poll - absl::Now());
      const auto ms =
          static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
      const int rc = ::poll(p, wake[0] >= 0 ? 2 : 1, ms);
      if (rc < 0 && errno != EINTR) {
        st = absl::UnavailableError(
            absl::StrCat(config.described, ": poll: ", std::strerror(errno)));
        break;
      }
      if (stop.load(std::memory_order_acquire)) return;
      if (rc > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
        absl::StatusOr<int> n = c.ReadNotifications();
        if (!n.ok()) {
          st = n.status();
          break;
        }
        if (*n > 0) {
          counters->notifications.fetch_add(static_cast<std::uint64_t>(*n),
                                            std::memory_order_relaxed);
          notifier->NotifyWithoutWaiting();
        }
      }
      if (absl::Now() >= next_poll) {
        counters->polls.fetch_add(1, std::memory_order_relaxed);
        notifier->NotifyWithoutWaiting();
        next_poll = absl::Now() + config.poll_interval;
      }
    }
    counters->backend_pid.store(0, std::memory_order_relaxed);
    if (!st.ok() && config.on_status) config.on_status(st);
    reported_down = !st.ok();
    // A lost connection: wake once more (the outage may have hidden a change), then reconnect.
    notifier->NotifyWithoutWaiting();
  }
}

}  // namespace keygate::internal
