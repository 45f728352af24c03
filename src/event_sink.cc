// Event names, printing and the bundled sinks (event_sink.h).

#include "keygate/event_sink.h"

#include <mutex>
#include <ostream>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

#include "internal/text_escape.h"

namespace keygate {

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

std::ostream& operator<<(std::ostream& os, const Event& event) {
  // Ids and names come from records other code may have written: escaped,
  // so a log line cannot be forged or split.
  os << EventTypeName(event.type) << " " << internal::EscapeText(event.key_id) << " by "
     << internal::EscapeText(event.actor) << " (owner " << internal::EscapeText(event.owner)
     << ") fields=[";
  for (std::size_t i = 0; i < event.changed_fields.size(); ++i) {
    if (i != 0) os << ",";
    os << event.changed_fields[i];
  }
  os << "] v" << event.version << " at "
     << absl::FormatTime(absl::RFC3339_full, event.at, absl::UTCTimeZone());
  return os;
}

void CollectingEventSink::Emit(const Event& event) noexcept {
  // Emit must not throw; on allocation failure the event is dropped rather
  // than terminating the process that just committed a change.
  try {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
  } catch (...) {
  }
}

std::vector<Event> CollectingEventSink::Events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

void OstreamEventSink::Emit(const Event& event) noexcept {
  try {
    std::lock_guard<std::mutex> lock(mu_);
    os_ << event << "\n";
    os_.flush();
  } catch (...) {
  }
}

}  // namespace keygate
