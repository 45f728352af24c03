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
#include "webhooks/messages.h"

namespace keygate {
namespace {

using internal::JsonWriter;
using internal::SqliteDb;
using internal::Statement;
using internal::WriteTransaction;
using webhooks_internal::KeyJson;
using webhooks_internal::MessageId;
using webhooks_internal::MessageType;
using webhooks_internal::Payload;

constexpr int kPending = 0;
constexpr int kDelivered = 1;
constexpr int kFailed = 2;
constexpr int kSkipped = 3;

std::int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

// A queued message handed to a worker.
struct Job {
  std::uint64_t sequence = 0;
  std::string key_id;
  std::string url;
  std::string payload;
  int attempts = 0;
};

}  // namespace

struct WebhookDispatcher::Impl {
  WebhookDispatcherOptions options;
  std::unique_ptr<WebhookSender> sender;
  mutable std::mutex db_mu;  // guards db
  std::unique_ptr<SqliteDb> db;

  std::mutex ingest_mu;  // one Ingest at a time: each reads the position the last one wrote

  std::mutex mu;  // guards the fields below
  std::condition_variable wake;
  bool running = false;
  bool stopping = false;
  bool poked = false;
  std::set<std::string> in_flight;            // keys with an attempt running
  std::map<std::string, absl::Time> cooling;  // keys whose last attempt could not be recorded
  std::deque<Job> jobs;
  absl::Status last_error;
  std::vector<std::thread> threads;
  std::unique_ptr<Subscription> subscription;
  std::mt19937_64 rng{std::random_device{}()};

  absl::StatusOr<Statement> Prepare(std::string_view sql) const { return db->Prepare(sql); }

  absl::Duration Delay(int attempt) {
    const absl::Duration d = options.retry_schedule[static_cast<std::size_t>(attempt - 1)];
    std::uniform_real_distribution<double> f(1.0 - options.jitter, 1.0 + options.jitter);
    double factor;
    {
      std::lock_guard<std::mutex> lock(mu);
      factor = f(rng);
    }
    return d * factor;
  }

  absl::StatusOr<std::size_t> Ingest();
  absl::StatusOr<std::vector<Job>> DueJobs(std::size_t max);
  void Record(const Job& job, const WebhookAttempt& a);
  void Reader();
  void Worker();
  void Poke() {
    {
      std::lock_guard<std::mutex> lock(mu);
      poked = true;
    }
    wake.notify_all();
  }
};

absl::StatusOr<std::size_t> WebhookDispatcher::Impl::Ingest() {
  std::lock_guard<std::mutex> serial(ingest_mu);
  std::size_t queued_total = 0;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) break;  // a backlog waits for the next start
    }
    std::uint64_t after = 0;
    {
      std::lock_guard<std::mutex> lock(db_mu);
      absl::StatusOr<std::int64_t> a = db->QueryInt("SELECT after FROM position", "read position");
      if (!a.ok()) return a.status();
      after = static_cast<std::uint64_t>(*a);
    }
    AuditQuery q;
    q.after = after;
    q.limit = options.batch;
    absl::StatusOr<AuditPage> page = options.store->ReadAudit(q);
    if (!page.ok()) return page.status();
    // What each entry's key looks like now (outside the file's lock: store reads may wait).
    struct Item {
      const Event* event;
      std::string type;
      std::optional<KeyRecord> record;  // none: deleted
    };
    std::vector<Item> items;
    for (const Event& e : page->events) {
      std::optional<std::string> type = MessageType(e);
      if (!type.has_value() || e.webhook_url.empty()) continue;
      absl::StatusOr<KeyRecord> r = options.store->Get(e.key_id);
      // A record that does not decode must not stop every webhook: sent as last known.
      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound &&
          r.status().code() != absl::StatusCode::kDataLoss) {
        return r.status();
      }
      items.push_back(
          {&e, *std::move(type), r.ok() ? std::optional<KeyRecord>(*std::move(r)) : std::nullopt});
    }
    std::size_t queued = 0;
    {
      std::lock_guard<std::mutex> lock(db_mu);
      WriteTransaction tx(db.get());
      if (absl::Status s = tx.Begin(); !s.ok()) return s;
      const std::int64_t now = Micros(absl::Now());
      for (const Item& item : items) {
        const Event& e = *item.event;
        // Where it goes: the URL the key had at the change (a deletion: before it).
        const std::string& url = e.webhook_url;
        if (url.empty()) continue;
        std::string key_json;
        std::optional<std::int64_t> gone;
        {
          absl::StatusOr<Statement> s =
              Prepare("SELECT url, key_json, gone_us FROM endpoints WHERE key_id = ?1");
          if (!s.ok()) return s.status();
          s->BindText(1, e.key_id);
          absl::StatusOr<bool> row = s->Step();
          if (!row.ok()) return row.status();
          if (*row) {
            key_json = std::string(s->Text(1));
            // A 410 disabled the endpoint until the key's URL changes.
            if (s->Text(0) == url) gone = s->OptionalInt(2);
          }
        }
        if (item.record.has_value()) {
          // The URL it is sent to: a later URL of the key is not the old receiver's business.
          KeyRecord shown = *item.record;
          shown.webhook_url = url;
          key_json = KeyJson(shown);
        } else if (key_json.empty()) {
          // Deleted before it was ever read: what the entry itself says.
          JsonWriter w;
          w.BeginObject();
          w.Key("id").String(e.key_id);
          w.Key("owner").String(e.owner);
          w.Key("webhook_url").String(url);
          w.EndObject();
          key_json = w.str();
        }
        {
          absl::StatusOr<Statement> up = Prepare(
              "INSERT INTO endpoints (key_id, url, key_json, gone_us, pending, due_us) "
              "VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT (key_id) DO UPDATE SET url = ?2, "
              "key_json = ?3, gone_us = ?4");
          if (!up.ok()) return up.status();
          up->BindText(1, e.key_id);
          up->BindText(2, url);
          up->BindText(3, key_json);
          up->BindOptionalInt(4, gone);
          up->BindInt(5, now);
          if (absl::Status st = up->Run(); !st.ok()) return st;
        }
        const int state = gone.has_value() ? kSkipped : kPending;
        absl::StatusOr<Statement> ins = Prepare(
            "INSERT OR IGNORE INTO messages (sequence, key_id, url, type, payload, state, "
            "attempts, next_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)");
        if (!ins.ok()) return ins.status();
        ins->BindInt(1, static_cast<std::int64_t>(e.sequence));
        ins->BindText(2, e.key_id);
        ins->BindText(3, url);
        ins->BindText(4, item.type);
        ins->BindText(5, Payload(item.type, e, key_json));
        ins->BindInt(6, state);
        ins->BindInt(7, now);
        if (absl::Status s = ins->Run(); !s.ok()) return s;
        if (sqlite3_changes(db->raw()) == 0 || state != kPending) continue;
        ++queued;
        // The endpoint's first pending message is due now.
        absl::StatusOr<Statement> ep = Prepare(
            "UPDATE endpoints SET due_us = CASE WHEN pending = 0 THEN ?2 ELSE due_us END, "
            "pending = pending + 1 WHERE key_id = ?1");
        if (!ep.ok()) return ep.status();
        ep->BindText(1, e.key_id);
        ep->BindInt(2, now);
        if (absl::Status s = ep->Run(); !s.ok()) return s;
      }
      absl::StatusOr<Statement> pos = Prepare("UPDATE position SET after = max(after, ?1)");
      if (!pos.ok()) return pos.status();
      pos->BindInt(1, static_cast<std::int64_t>(page->next_after));
      if (absl::Status s = pos->Run(); !s.ok()) return s;
      if (absl::Status s = tx.Commit(); !s.ok()) return s;
    }
    queued_total += queued;
    // Only for the store's record of progress; the file is the truth.
    if (page->next_after > after) (void)options.store->AckAudit(options.consumer, page->next_after);
    if (!page->more) break;
  }
  return queued_total;
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
      "SELECT key_id FROM endpoints WHERE pending > 0 AND due_us <= ?1 ORDER BY due_us "
      "LIMIT ?2");
  if (!s.ok()) return s.status();
  s->BindInt(1, Micros(absl::Now()));
  s->BindInt(2, static_cast<std::int64_t>(max + busy.size()));
  std::vector<std::string> keys;
  for (;;) {
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    std::string key(s->Text(0));
    if (!busy.contains(key)) keys.push_back(std::move(key));
  }
  for (const std::string& key : keys) {
    if (out.size() == max) break;
    absl::StatusOr<Statement> m = Prepare(
        "SELECT sequence, url, payload, attempts FROM messages WHERE key_id = ?1 AND state = 0 "
        "ORDER BY sequence LIMIT 1");
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
    out.push_back({static_cast<std::uint64_t>(m->Int(0)), key, std::string(m->Text(1)),
                   std::string(m->Text(2)), static_cast<int>(m->Int(3))});
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
        "INSERT INTO attempts (sequence, at_us, status, latency_us, address, error) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!at.ok()) return at.status();
    at->BindInt(1, static_cast<std::int64_t>(job.sequence));
    at->BindInt(2, Micros(now - a.latency));
    at->BindInt(3, a.status);
    at->BindInt(4, absl::ToInt64Microseconds(a.latency));
    at->BindText(5, a.address);
    at->BindText(6, a.error);
    if (absl::Status s = at->Run(); !s.ok()) return s;
    // Only the attempt this job was for (a stale job of a stopped run changes nothing).
    absl::StatusOr<Statement> m = Prepare(
        "UPDATE messages SET state = ?2, attempts = ?3, next_us = ?4 "
        "WHERE sequence = ?1 AND state = 0 AND attempts = ?5");
    if (!m.ok()) return m.status();
    m->BindInt(1, static_cast<std::int64_t>(job.sequence));
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
      wake.wait(lock, [this] { return stopping || !jobs.empty(); });
      if (stopping) return;  // what is queued goes back to the file's queue
      job = std::move(jobs.front());
      jobs.pop_front();
    }
    WebhookMessage m;
    m.url = job.url;
    m.id = MessageId(job.key_id, job.sequence);
    m.timestamp = absl::ToUnixSeconds(absl::Now());
    m.body = job.payload;
    absl::StatusOr<std::string> signature =
        WebhookSignatureHeader(options.secrets, m.id, m.timestamp, m.body);
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

void WebhookDispatcher::Impl::Reader() {
  for (;;) {
    absl::StatusOr<std::size_t> ingested = Ingest();
    std::size_t room = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return;
      if (!ingested.ok()) last_error = ingested.status();
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
        }
        if (!due->empty()) wake.notify_all();
      }
      const absl::Duration wait = options.poll_interval;
      wake.wait_for(lock, absl::ToChronoNanoseconds(wait), [this] { return stopping || poked; });
      poked = false;
      if (stopping) return;
    }
  }
}

WebhookDispatcher::WebhookDispatcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WebhookDispatcher::~WebhookDispatcher() { Stop(); }

absl::StatusOr<std::unique_ptr<WebhookDispatcher>> WebhookDispatcher::Create(
    WebhookDispatcherOptions options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("store: must be set");
  if (options.state_path.empty()) return absl::InvalidArgumentError("state_path: must be set");
  if (options.secrets.empty()) return absl::InvalidArgumentError("secrets: at least one");
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
  if (absl::Status s = impl->db->Exec(webhooks_internal::kStateSchema, "create the schema");
      !s.ok())
    return s;
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
  m.subscription.reset();
  for (std::thread& t : m.threads) t.join();
  m.threads.clear();
  std::lock_guard<std::mutex> lock(m.mu);
  m.running = false;
  m.jobs.clear();
  m.in_flight.clear();
}

absl::StatusOr<std::size_t> WebhookDispatcher::Ingest() { return impl_->Ingest(); }

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
