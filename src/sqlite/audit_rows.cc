// The SQLite store's audit log rows (audit_rows.h).
//
// One row per entry, keyed by the change sequence. The query is built from a fixed set of
// shapes (which filters are set), so the connection's statement cache stays bounded; the key
// and actor filters are served by their indexes (key_id, sequence) and (actor, sequence), the
// time range by a scan in sequence order.

#include "sqlite/audit_rows.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "internal/json_collections.h"
#include "internal/record_columns.h"

namespace keygate::internal {
namespace {

constexpr char kAuditColumns[] =
    "sequence, at_us, type, actor, key_id, owner, fields, version, webhook_url";

absl::Status CorruptAuditRow(const SqliteDb& db, std::int64_t sequence, std::string_view column) {
  return absl::DataLossError(absl::StrCat("sqlite ", db.path(), ": audit entry #", sequence,
                                          ": corrupt row (column ", std::string(column), ")"));
}

absl::StatusOr<Event> DecodeAuditRow(const SqliteDb& db, const Statement& q) {
  Event e;
  const std::int64_t seq = q.Int(0);
  if (seq <= 0) return CorruptAuditRow(db, seq, "sequence");
  e.sequence = static_cast<std::uint64_t>(seq);
  e.at = MicrosToTime(q.Int(1));
  const std::int64_t type = q.Int(2);
  if (type < static_cast<int>(EventType::kCreated) ||
      type > static_cast<int>(EventType::kRevealed)) {
    return CorruptAuditRow(db, seq, "type");
  }
  e.type = static_cast<EventType>(type);
  e.actor = std::string(q.Text(3));
  e.key_id = std::string(q.Text(4));
  e.owner = std::string(q.Text(5));
  if (!DecodeJsonStringArray(q.Text(6), &e.changed_fields)) {
    return CorruptAuditRow(db, seq, "fields");
  }
  const std::int64_t version = q.Int(7);
  if (version < 0) return CorruptAuditRow(db, seq, "version");
  e.version = static_cast<std::uint64_t>(version);
  e.webhook_url = std::string(q.Text(8));
  return e;
}

}  // namespace

absl::Status AppendAuditRow(SqliteDb& db, const Event& event) {
  absl::StatusOr<Statement> ins = db.Prepare(
      "INSERT INTO audit(sequence, at_us, type, actor, key_id, owner, fields, version, "
      "webhook_url) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
  if (!ins.ok()) return ins.status();
  ins->BindInt(1, static_cast<std::int64_t>(event.sequence));
  ins->BindInt(2, TimeToMicros(event.at));
  ins->BindInt(3, static_cast<std::int64_t>(event.type));
  ins->BindText(4, event.actor);
  ins->BindText(5, event.key_id);
  ins->BindText(6, event.owner);
  ins->BindText(7, EncodeJsonStringArray(event.changed_fields));
  ins->BindInt(8, static_cast<std::int64_t>(event.version));
  ins->BindText(9, event.webhook_url);
  return ins->Run();
}

absl::StatusOr<AuditPage> ReadAuditRows(SqliteDb& db, const AuditQuery& query) {
  // Sequences are SQLite integers: nothing lies beyond INT64_MAX (binding a larger `after`
  // would wrap to a negative number and match everything).
  if (query.after >= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    AuditPage empty;
    empty.next_after = query.after;
    return empty;
  }
  // ?1 after, ?2 key, ?3 actor, ?4 since, ?5 until, ?6 limit + 1. Unset filters are left out of
  // the text rather than bound to a catch-all, so the planner sees which index applies.
  std::string sql = absl::StrCat("SELECT ", kAuditColumns, " FROM audit WHERE sequence > ?1");
  if (query.key_id.has_value()) sql += " AND key_id = ?2";
  if (query.actor.has_value()) sql += " AND actor = ?3";
  if (query.since.has_value()) sql += " AND at_us >= ?4";
  if (query.until.has_value()) sql += " AND at_us < ?5";
  sql += " ORDER BY sequence LIMIT ?6";
  absl::StatusOr<Statement> q = db.Prepare(sql);
  if (!q.ok()) return q.status();
  q->BindInt(1, static_cast<std::int64_t>(query.after));
  if (query.key_id.has_value()) q->BindText(2, *query.key_id);
  if (query.actor.has_value()) q->BindText(3, *query.actor);
  if (query.since.has_value()) q->BindInt(4, TimeToMicros(*query.since));
  if (query.until.has_value()) q->BindInt(5, TimeToMicros(*query.until));
  q->BindInt(6, static_cast<std::int64_t>(query.limit) + 1);
  AuditPage page;
  page.next_after = query.after;
  for (;;) {
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (page.events.size() == query.limit) {
      page.more = true;
      break;
    }
    absl::StatusOr<Event> e = DecodeAuditRow(db, *q);
    if (!e.ok()) return e.status();
    page.next_after = e->sequence;
    page.events.push_back(*std::move(e));
  }
  return page;
}

absl::StatusOr<std::uint64_t> ReadAuditCursor(SqliteDb& db, std::string_view consumer) {
  absl::StatusOr<Statement> q =
      db.Prepare("SELECT sequence FROM audit_cursors WHERE consumer = ?1");
  if (!q.ok()) return q.status();
  q->BindText(1, consumer);
  absl::StatusOr<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return 0;
  const std::int64_t seq = q->Int(0);
  if (seq < 0) {
    return absl::DataLossError(
        absl::StrCat("sqlite ", db.path(), ": audit cursor: corrupt row (column sequence)"));
  }
  return static_cast<std::uint64_t>(seq);
}

absl::Status WriteAuditCursor(SqliteDb& db, std::string_view consumer, std::uint64_t sequence) {
  absl::StatusOr<Statement> up = db.Prepare(
      "INSERT INTO audit_cursors(consumer, sequence) VALUES (?1, ?2) "
      "ON CONFLICT(consumer) DO UPDATE SET sequence = max(sequence, excluded.sequence)");
  if (!up.ok()) return up.status();
  up->BindText(1, consumer);
  up->BindInt(2, static_cast<std::int64_t>(sequence));
  return up->Run();
}

}  // namespace keygate::internal
