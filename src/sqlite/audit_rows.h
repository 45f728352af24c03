// The SQLite store's audit log and consumer cursors (private; schema.cc has the tables).
// Every function runs on the caller's connection, inside its transaction where one is open.

#ifndef KEYGATE_SRC_SQLITE_AUDIT_ROWS_H_
#define KEYGATE_SRC_SQLITE_AUDIT_ROWS_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "keygate/audit.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {

// Appends `event` (its sequence is the change's).
absl::Status AppendAuditRow(SqliteDb& db, const Event& event);

// The page ReadAudit answers (the query is already checked). A row that cannot be decoded is
// kDataLoss naming its sequence.
absl::StatusOr<AuditPage> ReadAuditRows(SqliteDb& db, const AuditQuery& query);

absl::StatusOr<std::uint64_t> ReadAuditCursor(SqliteDb& db, std::string_view consumer);

// Moves the cursor forward to `sequence` (never back).
absl::Status WriteAuditCursor(SqliteDb& db, std::string_view consumer, std::uint64_t sequence);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_AUDIT_ROWS_H_
