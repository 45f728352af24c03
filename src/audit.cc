// Event names, printing and consumer names (audit.h).

#include "keygate/audit.h"

#include <cstddef>
#include <optional>
#include <ostream>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/text_escape.h"

namespace keygate {
namespace {

constexpr EventType kAllTypes[] = {EventType::kCreated,  EventType::kModified, EventType::kRevoked,
                                   EventType::kRestored, EventType::kDeleted,  EventType::kRolled};

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

}  // namespace keygate
