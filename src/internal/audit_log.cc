// Audit note and query checks shared by the bundled stores (audit_log.h).

#include "internal/audit_log.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "key_request_validation.h"

namespace keygate::internal {
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
             type == EventType::kRestored || type == EventType::kRolled;
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
  return "modified, revoked, restored or rolled";
}

bool IsFieldName(std::string_view name) {
  if (name.empty() || name.size() > kMaxFieldNameLength) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckAuditNote(const AuditNote& note, AuditWrite write) {
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
                     std::string_view owner, std::uint64_t version) {
  Event e;
  e.sequence = sequence;
  e.type = note.type;
  e.at = absl::FromUnixMicros(absl::ToUnixMicros(note.at));  // stores keep microseconds
  e.actor = note.actor;
  e.key_id = std::string(key_id);
  e.owner = std::string(owner);
  e.changed_fields = note.changed_fields;
  e.version = version;
  return e;
}

absl::Status CheckAuditQuery(const AuditQuery& query) {
  if (query.limit < 1 || query.limit > kMaxAuditLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be between 1 and ", kMaxAuditLimit));
  }
  if (query.since.has_value() && query.until.has_value() && *query.since >= *query.until) {
    return absl::InvalidArgumentError("since: must be before until");
  }
  return absl::OkStatus();
}

bool MatchesAuditFilters(const AuditQuery& query, const Event& event) {
  if (query.key_id.has_value() && event.key_id != *query.key_id) return false;
  if (query.actor.has_value() && event.actor != *query.actor) return false;
  if (query.since.has_value() && event.at < *query.since) return false;
  if (query.until.has_value() && event.at >= *query.until) return false;
  return true;
}

}  // namespace keygate::internal
