// The PostgreSQL store's listener thread (listener.h).

#include "postgres/listener.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
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

Listener::Listener(ListenerConfig config, std::shared_ptr<ChangeNotifier> notifier,
                   std::shared_ptr<ListenerCounters> counters)
    : config_(std::move(config)), notifier_(std::move(notifier)), counters_(std::move(counters)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    wake_[0] = wake_[1] = -1;  // stop then waits for the next poll interval
  }
  thread_ = std::thread([this] { Run(); });
}

Listener::~Listener() {
  stop_.store(true, std::memory_order_release);
  if (wake_[1] >= 0) {
    const char c = 1;
    (void)!::write(wake_[1], &c, 1);
  }
  thread_.join();
  for (const int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

bool Listener::SleepUnlessStopped(absl::Duration d) {
  pollfd p{wake_[0], POLLIN, 0};
  const auto ms = static_cast<int>(std::max<std::int64_t>(0, absl::ToInt64Milliseconds(d)));
  (void)::poll(&p, wake_[0] >= 0 ? 1 : 0, ms);
  return !stop_.load(std::memory_order_acquire);
}

void Listener::Run() {
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = config_.backoff;
  bool reported_down = false;
  if (config_.channel.empty()) {  // poll only
    while (SleepUnlessStopped(config_.poll_interval)) {
      counters_->polls.fetch_add(1, std::memory_order_relaxed);
      notifier_->NotifyWithoutWaiting();
    }
    return;
  }
  while (!stop_.load(std::memory_order_acquire)) {
    // Connect, LISTEN, then wake the subscribers: anything committed while no connection
    // listened is caught up by their ChangesSince.
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(
        config_.url, config_.setup, config_.described, absl::Now() + config_.connect_timeout);
    absl::Status st = conn.status();
    if (st.ok()) {
      st = (*conn)->ExecScript(absl::StrCat("LISTEN ", QuoteIdent(config_.channel)),
                               absl::Now() + config_.connect_timeout);
    }
    if (!st.ok()) {
      if (!reported_down && config_.on_status) config_.on_status(st);
      reported_down = true;
      // Full jitter: a fleet that lost its database does not come back in lockstep.
      std::uniform_int_distribution<std::int64_t> jitter(
          0, std::max<std::int64_t>(1, absl::ToInt64Microseconds(backoff)));
      if (!SleepUnlessStopped(absl::Microseconds(jitter(rng)))) return;
      backoff = std::min(backoff * 2, config_.backoff_max);
      continue;
    }
    backoff = config_.backoff;
    counters_->connects.fetch_add(1, std::memory_order_relaxed);
    counters_->backend_pid.store((*conn)->backend_pid(), std::memory_order_relaxed);
    if (reported_down && config_.on_status) config_.on_status(absl::OkStatus());
    notifier_->NotifyWithoutWaiting();
    PgConn& c = **conn;
    absl::Time next_poll = absl::Now() + config_.poll_interval;
    while (!stop_.load(std::memory_order_acquire)) {
      pollfd p[2] = {{c.socket(), POLLIN, 0}, {wake_[0], POLLIN, 0}};
      const absl::Duration left = std::max(absl::ZeroDuration(), next_poll - absl::Now());
      const auto ms =
          static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
      const int rc = ::poll(p, wake_[0] >= 0 ? 2 : 1, ms);
      if (rc < 0 && errno != EINTR) break;
      if (stop_.load(std::memory_order_acquire)) return;
      if (rc > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
        absl::StatusOr<int> n = c.ReadNotifications();
        if (!n.ok()) {
          st = n.status();
          break;
        }
        if (*n > 0) {
          counters_->notifications.fetch_add(static_cast<std::uint64_t>(*n),
                                             std::memory_order_relaxed);
          notifier_->NotifyWithoutWaiting();
        }
      }
      if (absl::Now() >= next_poll) {
        counters_->polls.fetch_add(1, std::memory_order_relaxed);
        notifier_->NotifyWithoutWaiting();
        next_poll = absl::Now() + config_.poll_interval;
      }
    }
    counters_->backend_pid.store(0, std::memory_order_relaxed);
    if (!st.ok() && config_.on_status) config_.on_status(st);
    reported_down = !st.ok();
    // A lost connection: wake once more (the outage may have hidden a change), then reconnect.
    notifier_->NotifyWithoutWaiting();
  }
}

}  // namespace keygate::internal
