// What every bundled store checks and builds for the audit log (private; audit.h, key_store.h).

#ifndef KEYGATE_SRC_INTERNAL_AUDIT_LOG_H_
#define KEYGATE_SRC_INTERNAL_AUDIT_LOG_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

#include "keygate/audit.h"

namespace keygate::internal {

enum class AuditWrite : std::uint8_t { kInsert, kUpdate, kDelete };

// kInvalidArgument "audit.<field>: <reason>" unless `note` fits a write of kind `write`.
absl::Status CheckAuditNote(const AuditNote& note, AuditWrite write);

// The entry a write with `note` appends.
Event MakeAuditEvent(const AuditNote& note, std::uint64_t sequence, std::string_view key_id,
                     std::string_view owner, std::uint64_t version);

// kInvalidArgument for a limit out of range or an empty time range.
absl::Status CheckAuditQuery(const AuditQuery& query);

// Whether `event` passes the query's filters (key, actor, time; not `after`).
bool MatchesAuditFilters(const AuditQuery& query, const Event& event);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_AUDIT_LOG_H_
