// Webhook messages and the state file's schema and delivery log (messages.h).

#include "webhooks/messages.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/json_writer.h"
#include "internal/webhook_delivery_json.h"

namespace keygate {

std::string_view WebhookDeliveryStateName(WebhookDelivery::State state) noexcept {
  return internal::DeliveryStateText(state);
}

namespace webhooks_internal {

using internal::JsonWriter;
using internal::SqliteDb;
using internal::Statement;

constexpr char kSchemaV2[] = R"sql(
CREATE TABLE IF NOT EXISTS position (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  after INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS endpoints (
  key_id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  key_json TEXT NOT NULL,
  gone_us INTEGER,
  pending INTEGER NOT NULL,
  due_us INTEGER NOT NULL,
  sealed_secret TEXT,
  limited_until_us INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS endpoints_due ON endpoints (due_us) WHERE pending > 0;
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY,
  webhook_id TEXT NOT NULL UNIQUE,
  sequence INTEGER NOT NULL,
  key_id TEXT NOT NULL,
  url TEXT NOT NULL,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  next_us INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS messages_key ON messages (key_id, id);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY,
  message INTEGER NOT NULL,
  at_us INTEGER NOT NULL,
  status INTEGER NOT NULL,
  latency_us INTEGER NOT NULL,
  address TEXT NOT NULL,
  error TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message, id);
)sql";

// Version 1 -> 2: messages keyed by a queue id with a unique webhook-id (the audit sequence and
// "msg_<key>_<sequence>" for those there are), endpoints' sealed secrets and rate-limit windows.
constexpr char kMigrateV1[] = R"sql(
ALTER TABLE messages RENAME TO messages_v1;
DROP INDEX IF EXISTS messages_key;
ALTER TABLE endpoints ADD COLUMN sealed_secret TEXT DEFAULT '';
ALTER TABLE endpoints ADD COLUMN limited_until_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts RENAME COLUMN sequence TO message;
DROP INDEX IF EXISTS attempts_message;
)sql";

constexpr char kCopyV1[] = R"sql(
INSERT INTO messages (id, webhook_id, sequence, key_id, url, type, payload, state, attempts,
                      next_us)
  SELECT sequence, 'msg_' || key_id || '_' || sequence, sequence, key_id, url, type, payload,
         state, attempts, next_us FROM messages_v1;
DROP TABLE messages_v1;
)sql";

constexpr std::int64_t kStateVersion = 2;

absl::Status MigrateState(SqliteDb& db) {
  internal::WriteTransaction tx(&db);
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  absl::StatusOr<std::int64_t> version = db.QueryInt("PRAGMA user_version", "read the version");
  if (!version.ok()) return version.status();
  if (*version > kStateVersion) {
    return absl::FailedPreconditionError(absl::StrCat("webhook state ", db.path(), ": version ",
                                                      *version, " is newer than this keygate's (",
                                                      kStateVersion, "); upgrade keygate"));
  }
  if (*version == kStateVersion) return tx.Commit();
  if (*version == 1) {
    if (absl::Status s = db.Exec(kMigrateV1, "migrate the state from version 1"); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = db.Exec(kSchemaV2, "create the schema"); !s.ok()) return s;
  if (*version == 1) {
    if (absl::Status s = db.Exec(kCopyV1, "copy version 1 messages"); !s.ok()) return s;
  }
  if (absl::Status s = db.Exec("PRAGMA user_version = 2", "set the version"); !s.ok()) return s;
  return tx.Commit();
}

// The event types sent, by audit type; nullopt: not sent.
std::optional<std::string> MessageType(const Event& e) {
  switch (e.type) {
    case EventType::kCreated:
      return "key.created";
    case EventType::kModified:
      // A reseal (KEK rotation) or a new signing secret changes nothing the payload shows.
      if (!e.changed_fields.empty() &&
          std::all_of(e.changed_fields.begin(), e.changed_fields.end(), [](const std::string& f) {
            return f == "sealed_token" || f == "webhook_secret";
          })) {
        return std::nullopt;
      }
      return "key.modified";
    case EventType::kRevoked:
      return "key.revoked";
    case EventType::kRestored:
      return "key.restored";
    case EventType::kDeleted:
      return "key.deleted";
    case EventType::kRolled:
      return "key.rolled";
    case EventType::kRevealed:
    case EventType::kUnspecifiedDoNotUse:
      break;
  }
  return std::nullopt;
}

std::string MessageId(std::string_view key_id, std::uint64_t sequence) {
  return absl::StrCat("msg_", std::string(key_id), "_", sequence);
}

std::string ExpiringId(std::string_view key_id, absl::Time expires) {
  return absl::StrCat("msg_", std::string(key_id), "_expiring_", absl::ToUnixMicros(expires));
}

std::string RateLimitedId(std::string_view key_id, absl::Time first_denied) {
  return absl::StrCat("msg_", std::string(key_id), "_limited_", absl::ToUnixMicros(first_denied));
}

std::string ExpiringPayload(const std::string& key_json, absl::Time expires, absl::Time now) {
  JsonWriter w;
  w.BeginObject();
  w.Key("type").String("key.expiring");
  w.Key("timestamp").Time(now);
  w.Key("data").BeginObject();
  w.Key("key").Raw(key_json);
  w.Key("expires").Time(expires);
  w.EndObject();
  w.EndObject();
  return w.str();
}

std::string RateLimitedPayload(const std::string& key_json, std::uint64_t denied,
                               absl::Time first_denied) {
  JsonWriter w;
  w.BeginObject();
  w.Key("type").String("key.rate_limited");
  w.Key("timestamp").Time(first_denied);
  w.Key("data").BeginObject();
  w.Key("key").Raw(key_json);
  w.Key("denied").Uint(denied);
  w.Key("first_denied").Time(first_denied);
  w.EndObject();
  w.EndObject();
  return w.str();
}

std::string KeyJson(const KeyRecord& r) {
  JsonWriter w;
  internal::WriteRecordJson(w, r);
  return w.str();
}

std::string Payload(const std::string& type, const Event& e, const std::string& key_json) {
  JsonWriter w;
  w.BeginObject();
  w.Key("type").String(type);
  w.Key("timestamp").Time(e.at);
  w.Key("data").BeginObject();
  w.Key("key").Raw(key_json);
  w.Key("actor").String(e.actor);
  w.Key("changed_fields").StringArray(e.changed_fields);
  w.Key("version").Uint(e.version);
  w.EndObject();
  w.EndObject();
  return w.str();
}

absl::StatusOr<std::vector<WebhookDelivery>> ReadDeliveries(SqliteDb& db, std::string_view key_id,
                                                            std::size_t limit) {
  if (limit < 1 || limit > 1000) return absl::InvalidArgumentError("limit: must be 1 to 1000");
  absl::StatusOr<Statement> s = db.Prepare(
      key_id.empty()
          ? "SELECT id, sequence, key_id, type, url, state, next_us, webhook_id FROM messages "
            "ORDER BY id DESC LIMIT ?2"
          : "SELECT id, sequence, key_id, type, url, state, next_us, webhook_id FROM messages "
            "WHERE key_id = ?1 ORDER BY id DESC LIMIT ?2");
  if (!s.ok()) return s.status();
  if (!key_id.empty()) s->BindText(1, key_id);
  s->BindInt(2, static_cast<std::int64_t>(limit));
  std::vector<WebhookDelivery> out;
  std::vector<std::int64_t> ids;
  for (;;) {
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    WebhookDelivery d;
    ids.push_back(s->Int(0));
    d.sequence = static_cast<std::uint64_t>(s->Int(1));
    d.key_id = std::string(s->Text(2));
    d.type = std::string(s->Text(3));
    d.url = std::string(s->Text(4));
    const std::int64_t state = s->Int(5);
    if (state < 0 || state > 3) {
      return absl::DataLossError(
          absl::StrCat("webhook state ", db.path(), ": corrupt message state at id ", ids.back()));
    }
    d.state = static_cast<WebhookDelivery::State>(state);
    d.next_attempt = absl::FromUnixMicros(s->Int(6));
    d.id = std::string(s->Text(7));
    out.push_back(std::move(d));
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    WebhookDelivery& d = out[i];
    absl::StatusOr<Statement> a = db.Prepare(
        "SELECT at_us, status, latency_us, address, error FROM attempts WHERE message = ?1 "
        "ORDER BY id");
    if (!a.ok()) return a.status();
    a->BindInt(1, ids[i]);
    for (;;) {
      absl::StatusOr<bool> row = a->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      d.attempts.push_back({absl::FromUnixMicros(a->Int(0)), static_cast<int>(a->Int(1)),
                            absl::Microseconds(a->Int(2)), std::string(a->Text(3)),
                            std::string(a->Text(4))});
    }
  }
  return out;
}

}  // namespace webhooks_internal
}  // namespace keygate
