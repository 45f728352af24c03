// Queueing webhook messages (dispatcher_impl.h): from the store's audit log, from keys' coming
// expiries and from verifiers' rate-limit denials.

#include <sqlite3.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "internal/json_writer.h"
#include "webhooks/dispatcher_impl.h"
#include "webhooks/messages.h"

namespace keygate {

using internal::JsonWriter;
using internal::Statement;
using internal::WriteTransaction;
using webhooks_internal::KeyJson;
using webhooks_internal::kPending;
using webhooks_internal::kSkipped;
using webhooks_internal::Micros;

namespace {

// What the dispatcher keeps of a key read before it was deleted: what its entry says.
std::string DeletedKeyJson(std::string_view key_id, std::string_view owner, std::string_view url) {
  JsonWriter w;
  w.BeginObject();
  w.Key("id").String(key_id);
  w.Key("owner").String(owner);
  w.Key("webhook_url").String(url);
  w.EndObject();
  return w.str();
}

// A read of a key that may be gone: a record that does not decode must not stop every webhook
// (sent as last known), nor may a deleted key.
absl::StatusOr<std::optional<KeyRecord>> ReadKey(KeyStore& store, std::string_view id) {
  absl::StatusOr<KeyRecord> r = store.Get(id);
  if (r.ok()) return std::optional<KeyRecord>(*std::move(r));
  if (r.status().code() == absl::StatusCode::kNotFound ||
      r.status().code() == absl::StatusCode::kDataLoss) {
    return std::optional<KeyRecord>();
  }
  return r.status();
}

}  // namespace

absl::StatusOr<std::optional<std::int64_t>> WebhookDispatcher::Impl::UpsertEndpoint(
    std::string_view key_id, const std::string& url, const std::optional<KeyRecord>& record,
    bool from_log, std::string* key_json) {
  std::optional<std::int64_t> gone;
  bool exists = false;
  {
    absl::StatusOr<Statement> s =
        Prepare("SELECT url, key_json, gone_us FROM endpoints WHERE key_id = ?1");
    if (!s.ok()) return s.status();
    s->BindText(1, key_id);
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (*row) {
      exists = true;
      if (key_json->empty()) *key_json = std::string(s->Text(1));
      // A 410 disabled the endpoint until the key's URL changes.
      if (s->Text(0) == url) gone = s->OptionalInt(2);
    }
  }
  if (record.has_value()) {
    // The URL it is sent to: a later URL of the key is not the old receiver's business.
    KeyRecord shown = *record;
    shown.webhook_url = url;
    *key_json = KeyJson(shown);
  }
  if (exists && !from_log) return gone;
  // Secrets: the record's when read, else as they were (NULL for a key never read: unknown).
  absl::StatusOr<Statement> up = Prepare(
      "INSERT INTO endpoints (key_id, url, key_json, gone_us, pending, due_us, sealed_secret) "
      "VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6) ON CONFLICT (key_id) DO UPDATE SET url = ?2, "
      "key_json = ?3, gone_us = ?4, sealed_secret = coalesce(?6, sealed_secret)");
  if (!up.ok()) return up.status();
  up->BindText(1, key_id);
  up->BindText(2, url);
  up->BindText(3, *key_json);
  up->BindOptionalInt(4, gone);
  up->BindInt(5, Micros(absl::Now()));
  if (record.has_value()) {
    up->BindText(6, record->sealed_webhook_secret);
  } else {
    up->BindNull(6);
  }
  if (absl::Status st = up->Run(); !st.ok()) return st;
  return gone;
}

absl::StatusOr<bool> WebhookDispatcher::Impl::QueueMessage(
    std::string_view key_id, const std::string& url, const std::string& webhook_id,
    std::uint64_t sequence, const std::string& type, const std::string& payload, bool gone,
    absl::Time now) {
  const int state = gone ? kSkipped : kPending;
  absl::StatusOr<Statement> ins = Prepare(
      "INSERT OR IGNORE INTO messages (webhook_id, sequence, key_id, url, type, payload, state, "
      "attempts, next_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)");
  if (!ins.ok()) return ins.status();
  ins->BindText(1, webhook_id);
  ins->BindInt(2, static_cast<std::int64_t>(sequence));
  ins->BindText(3, key_id);
  ins->BindText(4, url);
  ins->BindText(5, type);
  ins->BindText(6, payload);
  ins->BindInt(7, state);
  ins->BindInt(8, Micros(now));
  if (absl::Status s = ins->Run(); !s.ok()) return s;
  if (sqlite3_changes(db->raw()) == 0 || state != kPending) return false;
  // The endpoint's first pending message is due now.
  absl::StatusOr<Statement> ep = Prepare(
      "UPDATE endpoints SET due_us = CASE WHEN pending = 0 THEN ?2 ELSE due_us END, "
      "pending = pending + 1 WHERE key_id = ?1");
  if (!ep.ok()) return ep.status();
  ep->BindText(1, key_id);
  ep->BindInt(2, Micros(now));
  if (absl::Status s = ep->Run(); !s.ok()) return s;
  return true;
}

absl::StatusOr<std::size_t> WebhookDispatcher::Impl::Ingest() {
  std::lock_guard<std::mutex> serial(ingest_mu);
  std::size_t queued_total = 0;
  for (;;) {
    if (Stopping()) break;  // a backlog waits for the next start
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
    // Entries that are not sent (a new signing secret, a reseal) still update the endpoint.
    struct Item {
      const Event* event;
      std::optional<std::string> type;  // none: not sent
      std::optional<KeyRecord> record;  // none: deleted
    };
    std::vector<Item> items;
    for (const Event& e : page->events) {
      if (e.webhook_url.empty()) continue;
      absl::StatusOr<std::optional<KeyRecord>> r = ReadKey(*options.store, e.key_id);
      if (!r.ok()) return r.status();
      items.push_back({&e, webhooks_internal::MessageType(e), *std::move(r)});
    }
    std::size_t queued = 0;
    {
      std::lock_guard<std::mutex> lock(db_mu);
      WriteTransaction tx(db.get());
      if (absl::Status s = tx.Begin(); !s.ok()) return s;
      const absl::Time now = absl::Now();
      for (const Item& item : items) {
        const Event& e = *item.event;
        // Where it goes: the URL the key had at the change (a deletion: before it).
        const std::string& url = e.webhook_url;
        std::string key_json;
        absl::StatusOr<std::optional<std::int64_t>> gone =
            UpsertEndpoint(e.key_id, url, item.record, /*from_log=*/true, &key_json);
        if (!gone.ok()) return gone.status();
        if (!item.type.has_value()) continue;
        if (key_json.empty()) key_json = DeletedKeyJson(e.key_id, e.owner, url);
        absl::StatusOr<bool> one = QueueMessage(
            e.key_id, url, webhooks_internal::MessageId(e.key_id, e.sequence), e.sequence,
            *item.type, webhooks_internal::Payload(*item.type, e, key_json), gone->has_value(),
            now);
        if (!one.ok()) return one.status();
        if (*one) ++queued;
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

absl::StatusOr<std::size_t> WebhookDispatcher::Impl::ScanExpiring() {
  if (options.expiring_lead <= absl::ZeroDuration()) return 0;
  std::size_t queued = 0;
  ListOptions list;
  list.filter.state = KeyState::kActive;
  list.limit = kMaxListLimit;
  for (;;) {
    if (Stopping()) break;
    // A page at a time, read and queued without an Ingest in between (which could write a
    // key's newer state that this page's older one would then overwrite); Ingest runs between.
    std::lock_guard<std::mutex> serial(ingest_mu);
    absl::StatusOr<ListPage> page = options.store->List(list);
    if (!page.ok()) return page.status();
    const absl::Time now = absl::Now();
    std::vector<const KeyRecord*> due;
    for (const KeyRecord& r : page->keys) {
      if (r.webhook_url.empty() || !r.expires.has_value()) continue;
      if (*r.expires > now && *r.expires <= now + options.expiring_lead) due.push_back(&r);
    }
    if (!due.empty()) {
      std::lock_guard<std::mutex> lock(db_mu);
      WriteTransaction tx(db.get());
      if (absl::Status s = tx.Begin(); !s.ok()) return s;
      for (const KeyRecord* r : due) {
        std::string key_json;
        absl::StatusOr<std::optional<std::int64_t>> gone =
            UpsertEndpoint(r->id, r->webhook_url, *r, /*from_log=*/false, &key_json);
        if (!gone.ok()) return gone.status();
        absl::StatusOr<bool> q = QueueMessage(
            r->id, r->webhook_url, webhooks_internal::ExpiringId(r->id, *r->expires), 0,
            "key.expiring", webhooks_internal::ExpiringPayload(key_json, *r->expires, now),
            gone->has_value(), now);
        if (!q.ok()) return q.status();
        if (*q) ++queued;
      }
      if (absl::Status s = tx.Commit(); !s.ok()) return s;
    }
    if (page->next_cursor.empty()) break;
    list.cursor = page->next_cursor;
  }
  return queued;
}

absl::StatusOr<bool> WebhookDispatcher::Impl::QueueRateLimitedKey(
    const KeyRecord& record, const webhooks_internal::RateLimitInbox::Denials& d) {
  std::lock_guard<std::mutex> lock(db_mu);
  WriteTransaction tx(db.get());
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  const absl::Time now = absl::Now();
  std::string key_json;
  absl::StatusOr<std::optional<std::int64_t>> gone =
      UpsertEndpoint(record.id, record.webhook_url, record, /*from_log=*/false, &key_json);
  if (!gone.ok()) return gone.status();
  absl::StatusOr<bool> q = QueueMessage(
      record.id, record.webhook_url, webhooks_internal::RateLimitedId(record.id, d.first_denied), 0,
      "key.rate_limited", webhooks_internal::RateLimitedPayload(key_json, d.denied, d.first_denied),
      gone->has_value(), now);
  if (!q.ok()) return q.status();
  absl::StatusOr<Statement> window =
      Prepare("UPDATE endpoints SET limited_until_us = ?2 WHERE key_id = ?1");
  if (!window.ok()) return window.status();
  window->BindText(1, record.id);
  window->BindInt(2, Micros(d.first_denied + options.rate_limited_window));
  if (absl::Status s = window->Run(); !s.ok()) return s;
  if (absl::Status s = tx.Commit(); !s.ok()) return s;
  return *q;
}

absl::StatusOr<std::size_t> WebhookDispatcher::Impl::QueueRateLimited() {
  std::map<std::string, webhooks_internal::RateLimitInbox::Denials> taken;
  std::uint64_t dropped = 0;
  {
    std::lock_guard<std::mutex> lock(inbox->mu);
    taken.swap(inbox->keys);
    std::swap(dropped, inbox->dropped);
  }
  if (dropped != 0) {
    std::lock_guard<std::mutex> lock(mu);
    last_error = absl::ResourceExhaustedError(absl::StrCat("rate_limited: ", dropped,
                                                           " keys' denials dropped (more than ",
                                                           kMaxRateLimitInbox, " waiting)"));
  }
  std::size_t queued = 0;
  // On an error, what was not queued goes back to the inbox for the next pass.
  auto it = taken.begin();
  const auto give_back = [&](absl::Status s) {
    std::lock_guard<std::mutex> lock(inbox->mu);
    for (; it != taken.end(); ++it) {
      if (inbox->keys.size() >= kMaxRateLimitInbox && !inbox->keys.contains(it->first)) {
        ++inbox->dropped;  // the bound holds for what comes back too
        continue;
      }
      auto [slot, fresh] = inbox->keys.try_emplace(it->first, it->second);
      if (!fresh) {
        slot->second.denied += it->second.denied;
        slot->second.first_denied = std::min(slot->second.first_denied, it->second.first_denied);
      }
    }
    return s;
  };
  for (; it != taken.end(); ++it) {
    const std::string& key_id = it->first;
    const webhooks_internal::RateLimitInbox::Denials& d = it->second;
    std::lock_guard<std::mutex> serial(ingest_mu);  // a key at a time, as ScanExpiring's pages
    // Within the window the last key.rate_limited opened: coalesced, without a store read (a
    // key flooded for hours comes back in every usage batch).
    absl::StatusOr<bool> coalesced = [&]() -> absl::StatusOr<bool> {
      std::lock_guard<std::mutex> lock(db_mu);
      absl::StatusOr<Statement> s =
          Prepare("SELECT limited_until_us FROM endpoints WHERE key_id = ?1");
      if (!s.ok()) return s.status();
      s->BindText(1, key_id);
      absl::StatusOr<bool> row = s->Step();
      if (!row.ok()) return row.status();
      return *row && Micros(d.first_denied) < s->Int(0);
    }();
    if (!coalesced.ok()) return give_back(coalesced.status());
    if (*coalesced) continue;
    absl::StatusOr<std::optional<KeyRecord>> r = ReadKey(*options.store, key_id);
    if (!r.ok()) return give_back(r.status());
    if (!r->has_value() || (*r)->webhook_url.empty()) continue;
    const KeyRecord& record = **r;
    absl::StatusOr<bool> one = QueueRateLimitedKey(record, d);
    if (!one.ok()) return give_back(one.status());
    if (*one) ++queued;
  }
  return queued;
}

}  // namespace keygate
