// The webhook dispatcher's state (webhook_dispatcher.h), private to keygate::webhooks:
// webhook_dispatcher.cc runs the threads and the attempts; queueing.cc turns audit entries,
// expiries and rate-limit denials into queued messages.
//
// Locks, always taken in this order when nested: ingest_mu (one queueing unit at a time), then
// db_mu (the state file's connection) or inbox->mu (denials waiting), then mu (the threads'
// shared fields).
#ifndef KEYGATE_SRC_WEBHOOKS_DISPATCHER_IMPL_H_
#define KEYGATE_SRC_WEBHOOKS_DISPATCHER_IMPL_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/key.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "sqlite/sqlite_db.h"

namespace keygate::webhooks_internal {

inline constexpr int kPending = 0;
inline constexpr int kDelivered = 1;
inline constexpr int kFailed = 2;
inline constexpr int kSkipped = 3;

inline std::int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

// A queued message handed to a worker.
struct Job {
  std::int64_t id = 0;  // messages.id
  std::string webhook_id;
  std::string key_id;
  std::string url;
  std::string payload;
  // The key's sealed secrets as last read; empty: none (the deployment's sign); nullopt: the key
  // was gone before it was ever read (unknown).
  std::optional<std::string> sealed_secret;
  int attempts = 0;
};

// Denials a verifier reported, waiting for the reader to queue them. Shared with the sinks
// RateLimitSink hands out, which may outlive the dispatcher.
struct RateLimitInbox {
  struct Denials {
    std::uint64_t denied = 0;
    absl::Time first_denied = absl::InfiniteFuture();
  };
  std::mutex mu;
  std::map<std::string, Denials> keys;  // under mu; at most kMaxRateLimitInbox
  std::uint64_t dropped = 0;            // under mu: keys refused for want of room
  std::function<void()> wake;           // under mu; cleared when the dispatcher goes
};

}  // namespace keygate::webhooks_internal

namespace keygate {

struct WebhookDispatcher::Impl {
  WebhookDispatcherOptions options;
  std::unique_ptr<WebhookSender> sender;
  mutable std::mutex db_mu;  // guards db
  std::unique_ptr<internal::SqliteDb> db;

  std::mutex ingest_mu;  // one queueing pass at a time: each reads the position the last wrote

  std::mutex mu;                    // guards the fields below
  std::condition_variable wake;     // the reader's: a change, a finished attempt, Stop
  std::condition_variable work;     // the workers': a job queued, Stop
  std::condition_variable scan_cv;  // the expiry scanner's: Stop
  bool running = false;
  bool stopping = false;
  bool poked = false;
  std::set<std::string> in_flight;            // keys with an attempt running
  std::map<std::string, absl::Time> cooling;  // keys whose last attempt could not be recorded
  std::deque<webhooks_internal::Job> jobs;
  absl::Status last_error;
  std::vector<std::thread> threads;
  std::unique_ptr<Subscription> subscription;
  std::mt19937_64 rng{std::random_device{}()};

  std::shared_ptr<webhooks_internal::RateLimitInbox> inbox =
      std::make_shared<webhooks_internal::RateLimitInbox>();

  absl::StatusOr<internal::Statement> Prepare(std::string_view sql) const {
    return db->Prepare(sql);
  }

  // Whether Stop was called (queueing stops between batches).
  bool Stopping() {
    std::lock_guard<std::mutex> lock(mu);
    return stopping;
  }
  void Poke() {
    {
      std::lock_guard<std::mutex> lock(mu);
      poked = true;
    }
    wake.notify_one();  // only the reader waits on it
  }
  absl::Duration Delay(int attempt);

  // queueing.cc. Each takes ingest_mu.
  absl::StatusOr<std::size_t> Ingest();
  absl::StatusOr<std::size_t> ScanExpiring();
  absl::StatusOr<std::size_t> QueueRateLimited();
  // Takes db_mu: key.rate_limited for `record`, opening its window (the caller, holding
  // ingest_mu, found it outside the last one); whether it was queued.
  absl::StatusOr<bool> QueueRateLimitedKey(const KeyRecord& record,
                                           const webhooks_internal::RateLimitInbox::Denials& d);
  // Under db_mu, in a transaction: the key's endpoint row brought up to `url`, its public fields
  // and secrets (`record` none: kept as they are); returns when a 410 disabled `url`, if it did.
  // Only the log's entries move an endpoint (`from_log`): the others (expiries, denials), read
  // from the key's current state, only add a row for a key that has none, so that they never
  // undo a 410 or put back a URL the log has not reached yet.
  absl::StatusOr<std::optional<std::int64_t>> UpsertEndpoint(std::string_view key_id,
                                                             const std::string& url,
                                                             const std::optional<KeyRecord>& record,
                                                             bool from_log, std::string* key_json);
  // Under db_mu, in a transaction: queues one message unless its webhook_id is known; returns
  // whether it was queued as pending.
  absl::StatusOr<bool> QueueMessage(std::string_view key_id, const std::string& url,
                                    const std::string& webhook_id, std::uint64_t sequence,
                                    const std::string& type, const std::string& payload, bool gone,
                                    absl::Time now);

  // webhook_dispatcher.cc.
  absl::StatusOr<std::vector<webhooks_internal::Job>> DueJobs(std::size_t max);
  void Record(const webhooks_internal::Job& job, const WebhookAttempt& a);
  absl::StatusOr<std::vector<WebhookSecret>> SigningSecrets(const webhooks_internal::Job& job);
  void Reader();
  void Scanner();
  void Worker();
};

}  // namespace keygate

#endif  // KEYGATE_SRC_WEBHOOKS_DISPATCHER_IMPL_H_
