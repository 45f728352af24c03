// The webhook dispatcher (keygate/webhooks/webhook_dispatcher.h).
//
// State file: messages.h. One connection behind a mutex; attempts run outside it.

#include "keygate/webhooks/webhook_dispatcher.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "internal/json_writer.h"
#include "sqlite/sqlite_db.h"
#include "webhooks/dispatcher_impl.h"
#include "webhooks/messages.h"

namespace keygate {

using internal::SqliteDb;
using internal::Statement;
using internal::WriteTransaction;
using webhooks_internal::Job;
using webhooks_internal::kDelivered;
using webhooks_internal::kFailed;
using webhooks_internal::kPending;
using webhooks_internal::Micros;

namespace {

// The sink RateLimitSink hands out: moves denials to the inbox and wakes the reader.
class InboxSink final : public UsageSink {
 public:
  explicit InboxSink(std::shared_ptr<webhooks_internal::RateLimitInbox> inbox)
      : inbox_(std::move(inbox)) {}

  void Record(absl::Span<const KeyUsage> batch) noexcept override {
    bool any = false;
    std::lock_guard<std::mutex> lock(inbox_->mu);
    if (!inbox_->wake) return;  // the dispatcher is gone
    for (const KeyUsage& u : batch) {
      if (u.denied == 0) continue;
      auto it = inbox_->keys.find(u.key_id);
      if (it == inbox_->keys.end()) {
        if (inbox_->keys.size() >= kMaxRateLimitInbox) {
          ++inbox_->dropped;
          continue;
        }
        it = inbox_->keys.emplace(u.key_id, webhooks_internal::RateLimitInbox::Denials{}).first;
      }
      it->second.denied += u.denied;
      it->second.first_denied = std::min(it->second.first_denied, u.first_denied);
      any = true;
    }
    if (any) inbox_->wake();
  }

 private:
  std::shared_ptr<webhooks_internal::RateLimitInbox> inbox_;
};

}  // namespace

absl::Duration WebhookDispatcher::Impl::Delay(int attempt) {
  const absl::Duration d = options.retry_schedule[static_cast<std::size_t>(attempt - 1)];
  std::uniform_real_distribution<double> f(1.0 - options.jitter, 1.0 + options.jitter);
  double factor;
  {
    std::lock_guard<std::mutex> lock(mu);
    factor = f(rng);
  }
  return d * factor;
}

absl::StatusOr<std::vector<Job>> WebhookDispatcher::Impl::DueJobs(std::size_t max) {
  std::vector<Job> out;
  if (max == 0) return out;
  std::set<std::string> busy;
  {
    std::lock_guard<std::mutex> lock(mu);
    busy = in_flight;
    const absl::Time now = absl::Now();
    for (auto it = cooling.begin(); it != cooling.end();) {
      if (it->second <= now) {
        it = cooling.erase(it);
      } else {
        busy.insert(it->first);
        ++it;
      }
    }
  }
  std::lock_guard<std::mutex> lock(db_mu);
  absl::StatusOr<Statement> s = Prepare(
      "SELECT key_id, sealed_secret, sealed_secret IS NULL FROM endpoints WHERE pending > 0 AND "
      "due_us <= ?1 ORDER BY due_us LIMIT ?2");
  if (!s.ok()) return s.status();
  s->BindInt(1, Micros(absl::Now()));
  s->BindInt(2, static_cast<std::int64_t>(max + busy.size()));
  std::vector<std::pair<std::string, std::optional<std::string>>> keys;  // id, sealed secrets
  for (;;) {
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    std::string key(s->Text(0));
    if (busy.contains(key)) continue;
    keys.emplace_back(std::move(key),
                      s->Int(2) != 0 ? std::nullopt : std::optional<std::string>(s->Text(1)));
  }
  for (const auto& [key, sealed_secret] : keys) {
    if (out.size() == max) break;
    absl::StatusOr<Statement> m = Prepare(
        "SELECT id, webhook_id, url, payload, attempts FROM messages WHERE key_id = ?1 AND "
        "state = 0 ORDER BY id LIMIT 1");
    if (!m.ok()) return m.status();
    m->BindText(1, key);
    absl::StatusOr<bool> row = m->Step();
    if (!row.ok()) return row.status();
    if (!*row) {
      // A count that drifted from the messages (never expected): put it right, or the key
      // would sort first forever.
      absl::StatusOr<Statement> fix = Prepare("UPDATE endpoints SET pending = 0 WHERE key_id = ?1");
      if (!fix.ok()) return fix.status();
      fix->BindText(1, key);
      if (absl::Status st = fix->Run(); !st.ok()) return st;
      continue;
    }
    Job j;
    j.id = m->Int(0);
    j.webhook_id = std::string(m->Text(1));
    j.key_id = key;
    j.url = std::string(m->Text(2));
    j.payload = std::string(m->Text(3));
    j.sealed_secret = sealed_secret;
    j.attempts = static_cast<int>(m->Int(4));
    out.push_back(std::move(j));
  }
  return out;
}

void WebhookDispatcher::Impl::Record(const Job& job, const WebhookAttempt& a) {
  const absl::Time now = absl::Now();
  const int attempts = job.attempts + 1;
  int state = kPending;
  std::int64_t next_us = Micros(now);
  if (a.result == WebhookResult::kDelivered) {
    state = kDelivered;
  } else if (a.result == WebhookResult::kGone ||
             attempts > static_cast<int>(options.retry_schedule.size())) {
    state = kFailed;
  } else {
    next_us = Micros(now + Delay(attempts));
  }
  absl::Status status = [&]() -> absl::Status {
    std::lock_guard<std::mutex> lock(db_mu);
    WriteTransaction tx(db.get());
    if (absl::Status s = tx.Begin(); !s.ok()) return s;
    absl::StatusOr<Statement> at = Prepare(
        "INSERT INTO attempts (message, at_us, status, latency_us, address, error) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!at.ok()) return at.status();
    at->BindInt(1, job.id);
    at->BindInt(2, Micros(now - a.latency));
    at->BindInt(3, a.status);
    at->BindInt(4, absl::ToInt64Microseconds(a.latency));
    at->BindText(5, a.address);
    at->BindText(6, a.error);
    if (absl::Status s = at->Run(); !s.ok()) return s;
    // Only the attempt this job was for (a stale job of a stopped run changes nothing).
    absl::StatusOr<Statement> m = Prepare(
        "UPDATE messages SET state = ?2, attempts = ?3, next_us = ?4 "
        "WHERE id = ?1 AND state = 0 AND attempts = ?5");
    if (!m.ok()) return m.status();
    m->BindInt(1, job.id);
    m->BindInt(2, state);
    m->BindInt(3, attempts);
    m->BindInt(4, next_us);
    m->BindInt(5, job.attempts);
    if (absl::Status s = m->Run(); !s.ok()) return s;
    if (sqlite3_changes(db->raw()) != 1) return tx.Commit();  // the attempt row stays as a log
    if (a.result == WebhookResult::kGone) {
      // The endpoint asked to be disabled: the rest of its queue to that URL is skipped, and
      // so is what comes for it until the key's URL changes.
      absl::StatusOr<Statement> skip =
          Prepare("UPDATE messages SET state = 3 WHERE key_id = ?1 AND state = 0 AND url = ?2");
      if (!skip.ok()) return skip.status();
      skip->BindText(1, job.key_id);
      skip->BindText(2, job.url);
      if (absl::Status s = skip->Run(); !s.ok()) return s;
      absl::StatusOr<Statement> gone = Prepare(
          "UPDATE endpoints SET gone_us = CASE WHEN url = ?3 THEN ?2 ELSE gone_us END WHERE "
          "key_id = ?1");
      if (!gone.ok()) return gone.status();
      gone->BindText(1, job.key_id);
      gone->BindInt(2, Micros(now));
      gone->BindText(3, job.url);
      if (absl::Status s = gone->Run(); !s.ok()) return s;
    }
    // The key's queue: how many wait, and when the oldest is due.
    absl::StatusOr<Statement> ep = Prepare(
        "UPDATE endpoints SET pending = (SELECT count(*) FROM messages WHERE key_id = ?1 AND "
        "state = 0), due_us = ?2 WHERE key_id = ?1");
    if (!ep.ok()) return ep.status();
    ep->BindText(1, job.key_id);
    ep->BindInt(2, next_us);
    if (absl::Status s = ep->Run(); !s.ok()) return s;
    return tx.Commit();
  }();
  std::lock_guard<std::mutex> lock(mu);
  // Unrecorded, the attempt is made again (at least once), after a pause rather than at once.
  if (!status.ok()) {
    last_error = status;
    cooling[job.key_id] = absl::Now() + absl::Seconds(1);
  }
  in_flight.erase(job.key_id);
}

void WebhookDispatcher::Impl::Worker() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu);
      work.wait(lock, [this] { return stopping || !jobs.empty(); });
      if (stopping) return;  // what is queued goes back to the file's queue
      job = std::move(jobs.front());
      jobs.pop_front();
    }
    WebhookMessage m;
    m.url = job.url;
    m.id = job.webhook_id;
    m.timestamp = absl::ToUnixSeconds(absl::Now());
    m.body = job.payload;
    absl::StatusOr<std::vector<WebhookSecret>> secrets = SigningSecrets(job);
    absl::StatusOr<std::string> signature =
        secrets.ok() ? WebhookSignatureHeader(*secrets, m.id, m.timestamp, m.body)
                     : absl::StatusOr<std::string>(secrets.status());
    WebhookAttempt a;
    if (signature.ok()) {
      m.signature = *std::move(signature);
      a = sender->Send(m);
    } else {
      a.error = std::string(signature.status().message());  // not sent unsigned
    }
    Record(job, a);
    Poke();  // the key's next message may be due now
  }
}

absl::StatusOr<std::vector<WebhookSecret>> WebhookDispatcher::Impl::SigningSecrets(const Job& job) {
  if (!job.sealed_secret.has_value() && options.envelope != nullptr) {
    // Keys here may have secrets of their own: guessing the deployment's could sign for a
    // receiver that holds another. Fail closed.
    return absl::FailedPreconditionError(
        "no signing secret: the key was gone before the dispatcher first read it, so whether it "
        "had a secret of its own is not known");
  }
  if (job.sealed_secret.has_value() && !job.sealed_secret->empty()) {
    // The key's receiver holds the key's secret: the deployment's would be refused there.
    if (options.envelope == nullptr) {
      return absl::FailedPreconditionError(
          "no signing secret: the key's own is sealed and the dispatcher has no envelope");
    }
    absl::StatusOr<KeyWebhookSecrets> own =
        OpenWebhookSecrets(*options.envelope, job.key_id, *job.sealed_secret);
    if (!own.ok()) {
      return absl::Status(own.status().code(),
                          absl::StrCat("the key's webhook secret: ", own.status().message()));
    }
    const absl::Time now = absl::Now();
    std::vector<WebhookSecret> secrets = own->SigningAt(now);
    // A key's first secret of its own, overlapping the deployment's.
    if (own->DeploymentSignsAt(now)) {
      secrets.insert(secrets.end(), options.secrets.begin(), options.secrets.end());
    }
    return secrets;
  }
  if (!options.secrets.empty()) return options.secrets;
  return absl::FailedPreconditionError(
      "no signing secret: the key has none of its own and the dispatcher has no deployment "
      "secrets (roll the key's webhook secret)");
}

void WebhookDispatcher::Impl::Scanner() {
  // On a thread of its own: a read of every active key must not hold up the reader's handing
  // out of due messages.
  for (;;) {
    absl::StatusOr<std::size_t> queued = ScanExpiring();
    if (queued.ok() && *queued > 0) Poke();
    std::unique_lock<std::mutex> lock(mu);
    if (!queued.ok()) last_error = queued.status();
    if (scan_cv.wait_for(lock, absl::ToChronoNanoseconds(options.expiring_scan_interval),
                         [this] { return stopping; })) {
      return;
    }
  }
}

void WebhookDispatcher::Impl::Reader() {
  for (;;) {
    absl::Status queued = Ingest().status();
    if (queued.ok()) queued = QueueRateLimited().status();
    std::size_t room = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return;
      if (!queued.ok()) last_error = queued;
      const std::size_t slots = static_cast<std::size_t>(options.threads);
      room = in_flight.size() < slots ? slots - in_flight.size() : 0;
    }
    absl::StatusOr<std::vector<Job>> due = DueJobs(room);
    {
      std::unique_lock<std::mutex> lock(mu);
      if (stopping) return;
      if (!due.ok()) {
        last_error = due.status();
      } else {
        for (Job& j : *due) {
          if (in_flight.contains(j.key_id)) continue;
          in_flight.insert(j.key_id);
          jobs.push_back(std::move(j));
          work.notify_one();  // one worker per job, not all of them
        }
      }
      const absl::Duration wait = options.poll_interval;
      wake.wait_for(lock, absl::ToChronoNanoseconds(wait), [this] { return stopping || poked; });
      poked = false;
      if (stopping) return;
    }
  }
}

WebhookDispatcher::WebhookDispatcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WebhookDispatcher::~WebhookDispatcher() {
  Stop();
  std::lock_guard<std::mutex> lock(impl_->inbox->mu);
  impl_->inbox->wake = nullptr;  // sinks that outlive the dispatcher drop what they get
}

absl::StatusOr<std::unique_ptr<WebhookDispatcher>> WebhookDispatcher::Create(
    WebhookDispatcherOptions options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("store: must be set");
  if (options.state_path.empty()) return absl::InvalidArgumentError("state_path: must be set");
  if (options.secrets.empty() && options.envelope == nullptr) {
    return absl::InvalidArgumentError("secrets: at least one unless envelope is set");
  }
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError("threads: must be 1 to 64");
  }
  if (options.retry_schedule.empty() || options.retry_schedule.size() > 20) {
    return absl::InvalidArgumentError("retry_schedule: 1 to 20 delays");
  }
  for (const absl::Duration d : options.retry_schedule) {
    if (d < absl::Milliseconds(1) || d > absl::Hours(48)) {
      return absl::InvalidArgumentError("retry_schedule: each delay 1 ms to 2 days");
    }
  }
  if (!(options.jitter >= 0.0 && options.jitter < 1.0)) {
    return absl::InvalidArgumentError("jitter: must be in [0, 1)");
  }
  if (options.batch < 1 || options.batch > kMaxAuditLimit) {
    return absl::InvalidArgumentError("batch: must be 1 to 1000");
  }
  if (options.poll_interval < absl::Milliseconds(1) || options.poll_interval > absl::Minutes(1)) {
    return absl::InvalidArgumentError("poll_interval: must be 1 ms to 1 min");
  }
  if (options.expiring_lead < absl::ZeroDuration() ||
      options.expiring_lead > absl::Hours(24 * 365)) {
    return absl::InvalidArgumentError("expiring_lead: must be 0 to 365 days");
  }
  if (options.expiring_scan_interval < absl::Seconds(1) ||
      options.expiring_scan_interval > absl::Hours(24)) {
    return absl::InvalidArgumentError("expiring_scan_interval: must be 1 s to 1 day");
  }
  if (options.rate_limited_window < absl::Seconds(1) ||
      options.rate_limited_window > absl::Hours(24 * 30)) {
    return absl::InvalidArgumentError("rate_limited_window: must be 1 s to 30 days");
  }
  if (absl::Status s = ValidateAuditConsumer(options.consumer); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender = WebhookSender::Create(options.sender);
  if (!sender.ok()) {
    return absl::Status(sender.status().code(), absl::StrCat("sender.", sender.status().message()));
  }
  impl->sender = *std::move(sender);
  // Private to its owner, like the key store's file: it holds webhook URLs (which may carry
  // credentials) and key fields. SQLite gives the -wal and -shm files the same mode.
  if (const int fd = ::open(options.state_path.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      fd >= 0) {
    ::close(fd);
  } else if (errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_path: cannot create ", options.state_path, ": ", std::strerror(errno)));
  }
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(
      options.state_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW);
  if (!db.ok()) return db.status();
  impl->db = *std::move(db);
  impl->db->SetBusyTimeout(absl::Seconds(5));
  if (absl::Status s = impl->db->Exec("PRAGMA journal_mode = WAL", "set WAL"); !s.ok()) return s;
  // No fsync per commit (one per checkpoint): a crash of the process loses nothing, a power loss
  // only the last commits, and every one of them can be lost without losing an event. The log
  // is read again from the position that survived (the store keeps it) and attempts whose
  // record is lost are made again, with the same webhook-id: at least once either way.
  if (absl::Status s = impl->db->Exec("PRAGMA synchronous = NORMAL", "set synchronous"); !s.ok()) {
    return s;
  }
  if (absl::Status s = webhooks_internal::MigrateState(*impl->db); !s.ok()) return s;
  absl::StatusOr<std::int64_t> rows =
      impl->db->QueryInt("SELECT count(*) FROM position", "read position");
  if (!rows.ok()) return rows.status();
  if (*rows == 0) {
    // A new file: from the consumer's position, or the log's end for a new consumer.
    absl::StatusOr<std::uint64_t> start = options.store->AuditCursor(options.consumer);
    if (!start.ok()) return start.status();
    if (*start == 0) {
      absl::StatusOr<std::uint64_t> last = options.store->LastSequence();
      if (!last.ok()) return last.status();
      start = *last;
    }
    absl::StatusOr<Statement> s = impl->db->Prepare("INSERT INTO position VALUES (1, ?1)");
    if (!s.ok()) return s.status();
    s->BindInt(1, static_cast<std::int64_t>(*start));
    if (absl::Status st = s->Run(); !st.ok()) return st;
  }
  impl->options = std::move(options);
  {
    Impl* raw = impl.get();  // the destructor clears this before the Impl goes
    std::lock_guard<std::mutex> lock(impl->inbox->mu);
    impl->inbox->wake = [raw] { raw->Poke(); };
  }
  return std::unique_ptr<WebhookDispatcher>(new WebhookDispatcher(std::move(impl)));
}

absl::Status WebhookDispatcher::Start() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.running) return absl::FailedPreconditionError("already started");
    m.running = true;
    m.stopping = false;
  }
  absl::StatusOr<std::unique_ptr<Subscription>> sub =
      m.options.store->Subscribe([&m] { m.Poke(); });
  if (!sub.ok()) {
    std::lock_guard<std::mutex> lock(m.mu);
    m.running = false;
    return sub.status();
  }
  m.subscription = *std::move(sub);
  for (int i = 0; i < m.options.threads; ++i) m.threads.emplace_back([&m] { m.Worker(); });
  m.threads.emplace_back([&m] { m.Reader(); });
  if (m.options.expiring_lead > absl::ZeroDuration()) {
    m.threads.emplace_back([&m] { m.Scanner(); });
  }
  return absl::OkStatus();
}

void WebhookDispatcher::Stop() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.running) return;
    m.stopping = true;
    // Jobs not started go back to the file's queue: nothing was recorded for them.
    for (const Job& j : m.jobs) m.in_flight.erase(j.key_id);
    m.jobs.clear();
  }
  m.wake.notify_all();
  m.work.notify_all();
  m.scan_cv.notify_all();
  m.subscription.reset();
  for (std::thread& t : m.threads) t.join();
  m.threads.clear();
  std::lock_guard<std::mutex> lock(m.mu);
  m.running = false;
  m.stopping = false;  // Ingest and ScanExpiring work again when called by hand
  m.jobs.clear();
  m.in_flight.clear();
}

absl::StatusOr<std::size_t> WebhookDispatcher::Ingest() {
  absl::StatusOr<std::size_t> audit = impl_->Ingest();
  if (!audit.ok()) return audit;
  absl::StatusOr<std::size_t> limited = impl_->QueueRateLimited();
  if (!limited.ok()) return limited;
  return *audit + *limited;
}

absl::StatusOr<std::size_t> WebhookDispatcher::ScanExpiring() { return impl_->ScanExpiring(); }

std::shared_ptr<UsageSink> WebhookDispatcher::RateLimitSink() {
  return std::make_shared<InboxSink>(impl_->inbox);
}

absl::Status WebhookDispatcher::last_error() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->last_error;
}

absl::StatusOr<std::vector<WebhookDelivery>> WebhookDispatcher::Deliveries(
    std::string_view key_id, std::size_t limit) const {
  std::lock_guard<std::mutex> lock(impl_->db_mu);
  return webhooks_internal::ReadDeliveries(*impl_->db, key_id, limit);
}

}  // namespace keygate
