// Webhook messages and the state file's schema and delivery log (messages.h).

#include "webhooks/messages.h"

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

namespace keygate {

std::string_view WebhookDeliveryStateName(WebhookDelivery::State state) noexcept {
  switch (state) {
    case WebhookDelivery::State::kPending:
      return "pending";
    case WebhookDelivery::State::kDelivered:
      return "delivered";
    case WebhookDelivery::State::kFailed:
      return "failed";
    case WebhookDelivery::State::kSkipped:
      return "skipped";
  }
  return "unknown";
}

namespace webhooks_internal {

using internal::JsonWriter;
using internal::SqliteDb;
using internal::Statement;

const char kStateSchema[] = R"sql(
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
  due_us INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS endpoints_due ON endpoints (due_us) WHERE pending > 0;
CREATE TABLE IF NOT EXISTS messages (
  sequence INTEGER PRIMARY KEY,
  key_id TEXT NOT NULL,
  url TEXT NOT NULL,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  next_us INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS messages_key ON messages (key_id, sequence);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY,
  sequence INTEGER NOT NULL,
  at_us INTEGER NOT NULL,
  status INTEGER NOT NULL,
  latency_us INTEGER NOT NULL,
  address TEXT NOT NULL,
  error TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (sequence, id);
PRAGMA user_version = 1;
)sql";

// The event types sent, by audit type; nullopt: not sent.
std::optional<std::string> MessageType(const Event& e) {
  switch (e.type) {
    case EventType::kCreated:
      return "key.created";
    case EventType::kModified:
      // A reseal (KEK rotation) changes nothing a receiver knows of.
      if (e.changed_fields == std::vector<std::string>{"sealed_token"}) return std::nullopt;
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
          ? "SELECT sequence, key_id, type, url, state, next_us FROM messages "
            "ORDER BY sequence DESC LIMIT ?2"
          : "SELECT sequence, key_id, type, url, state, next_us FROM messages WHERE key_id = ?1 "
            "ORDER BY sequence DESC LIMIT ?2");
  if (!s.ok()) return s.status();
  if (!key_id.empty()) s->BindText(1, key_id);
  s->BindInt(2, static_cast<std::int64_t>(limit));
  std::vector<WebhookDelivery> out;
  for (;;) {
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    WebhookDelivery d;
    d.sequence = static_cast<std::uint64_t>(s->Int(0));
    d.key_id = std::string(s->Text(1));
    d.id = MessageId(d.key_id, d.sequence);
    d.type = std::string(s->Text(2));
    d.url = std::string(s->Text(3));
    const std::int64_t state = s->Int(4);
    if (state < 0 || state > 3) {
      return absl::DataLossError(absl::StrCat("webhook state ", db.path(),
                                              ": corrupt message state at sequence ", d.sequence));
    }
    d.state = static_cast<WebhookDelivery::State>(state);
    d.next_attempt = absl::FromUnixMicros(s->Int(5));
    out.push_back(std::move(d));
  }
  for (WebhookDelivery& d : out) {
    absl::StatusOr<Statement> a = db.Prepare(
        "SELECT at_us, status, latency_us, address, error FROM attempts WHERE sequence = ?1 "
        "ORDER BY id");
    if (!a.ok()) return a.status();
    a->BindInt(1, static_cast<std::int64_t>(d.sequence));
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
