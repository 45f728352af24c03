// Event names, printing and consumer names (audit.h).

#include "keygate/audit.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/text_escape.h"
#include "key_request_validation.h"

namespace keygate {
namespace {

constexpr EventType kAllTypes[] = {EventType::kCreated,  EventType::kModified, EventType::kRevoked,
                                   EventType::kRestored, EventType::kDeleted,  EventType::kRolled,
                                   EventType::kRevealed};

constexpr std::size_t kMaxConsumerLength = 64;

bool IsConsumerChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

}  // namespace

std::string_view EventTypeName(EventType type) noexcept {
  switch (type) {
    case EventType::kCreated:
      return "created";
    case EventType::kModified:
      return "modified";
    case EventType::kRevoked:
      return "revoked";
    case EventType::kRestored:
      return "restored";
    case EventType::kDeleted:
      return "deleted";
    case EventType::kRolled:
      return "rolled";
    case EventType::kRevealed:
      return "revealed";
    case EventType::kUnspecifiedDoNotUse:
      break;
  }
  return "unspecified";
}

std::optional<EventType> ParseEventType(std::string_view name) noexcept {
  for (EventType t : kAllTypes) {
    if (EventTypeName(t) == name) return t;
  }
  return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, const Event& event) {
  // Ids and names come from records other code may have written: escaped,
  // so a log line cannot be forged or split.
  os << "#" << event.sequence << " " << EventTypeName(event.type) << " "
     << internal::EscapeText(event.key_id) << " by " << internal::EscapeText(event.actor)
     << " (owner " << internal::EscapeText(event.owner) << ") fields=[";
  for (std::size_t i = 0; i < event.changed_fields.size(); ++i) {
    if (i != 0) os << ",";
    os << internal::EscapeText(event.changed_fields[i]);
  }
  os << "] v" << event.version << " at "
     << absl::FormatTime(absl::RFC3339_full, event.at, absl::UTCTimeZone());
  return os;
}

absl::Status ValidateAuditConsumer(std::string_view consumer) {
  if (consumer.empty()) return absl::InvalidArgumentError("consumer: must not be empty");
  if (consumer.size() > kMaxConsumerLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("consumer: must be at most ", kMaxConsumerLength, " bytes"));
  }
  for (char c : consumer) {
    if (!IsConsumerChar(c)) {
      return absl::InvalidArgumentError("consumer: only letters, digits and . _ : - are allowed");
    }
  }
  return absl::OkStatus();
}

namespace {

constexpr std::size_t kMaxFieldNameLength = 32;

bool TypeFits(EventType type, AuditWrite write) {
  switch (write) {
    case AuditWrite::kInsert:
      return type == EventType::kCreated;
    case AuditWrite::kDelete:
      return type == EventType::kDeleted;
    case AuditWrite::kUpdate:
      return type == EventType::kModified || type == EventType::kRevoked ||
             type == EventType::kRestored || type == EventType::kRolled ||
             type == EventType::kRevealed;
  }
  return false;
}

std::string_view ExpectedTypes(AuditWrite write) {
  switch (write) {
    case AuditWrite::kInsert:
      return "created";
    case AuditWrite::kDelete:
      return "deleted";
    case AuditWrite::kUpdate:
      break;
  }
  return "modified, revoked, restored, rolled or revealed";
}

bool IsFieldName(std::string_view name) {
  if (name.empty() || name.size() > kMaxFieldNameLength) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
  }
  return true;
}

}  // namespace

absl::Status ValidateAuditNote(const AuditNote& note, AuditWrite write) {
  if (!TypeFits(note.type, write)) {
    return absl::InvalidArgumentError(absl::StrCat("audit.type: this write records ",
                                                   std::string(ExpectedTypes(write)), ", not ",
                                                   std::string(EventTypeName(note.type))));
  }
  if (absl::Status s = ValidateActor(note.actor); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("audit.", s.message()));
  }
  if (note.at == absl::InfinitePast() || note.at == absl::InfiniteFuture()) {
    return absl::InvalidArgumentError("audit.at: must be a finite time");
  }
  if (note.changed_fields.size() > kMaxChangedFields) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit.changed_fields: at most ", kMaxChangedFields, " entries"));
  }
  for (const std::string& f : note.changed_fields) {
    if (!IsFieldName(f)) {
      return absl::InvalidArgumentError(absl::StrCat("audit.changed_fields: each must be 1-",
                                                     kMaxFieldNameLength, " bytes of [a-z_]"));
    }
  }
  return absl::OkStatus();
}

Event MakeAuditEvent(const AuditNote& note, std::uint64_t sequence, std::string_view key_id,
                     std::string_view owner, std::uint64_t version, std::string_view webhook_url) {
  Event e;
  e.sequence = sequence;
  e.type = note.type;
  e.at = absl::FromUnixMicros(absl::ToUnixMicros(note.at));  // stores keep microseconds
  e.actor = note.actor;
  e.key_id = std::string(key_id);
  e.owner = std::string(owner);
  e.changed_fields = note.changed_fields;
  e.version = version;
  e.webhook_url = std::string(webhook_url);
  return e;
}

absl::Status ValidateAuditQuery(const AuditQuery& query) {
  if (query.limit < 1 || query.limit > kMaxAuditLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be between 1 and ", kMaxAuditLimit));
  }
  if (query.since.has_value() && query.until.has_value() && *query.since >= *query.until) {
    return absl::InvalidArgumentError("since: must be before until");
  }
  return absl::OkStatus();
}

bool AuditQueryMatches(const AuditQuery& query, const Event& event) {
  if (query.key_id.has_value() && event.key_id != *query.key_id) return false;
  if (query.actor.has_value() && event.actor != *query.actor) return false;
  // Bounds count at microseconds, truncated toward the past, as stores keep times.
  const auto micros = [](absl::Time t) { return absl::FromUnixMicros(absl::ToUnixMicros(t)); };
  if (query.since.has_value() && event.at < micros(*query.since)) return false;
  if (query.until.has_value() && event.at >= micros(*query.until)) return false;
  return true;
}

}  // namespace keygate
