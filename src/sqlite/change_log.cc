// The SQLite store's change log rows (change_log.h; schema.cc has the table).

#include "sqlite/change_log.h"

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace keygate::internal {

// The next change sequence. Only meaningful inside the write transaction,
// where nobody else can take it; AUTOINCREMENT's counter then moves with
// the explicit value written.
absl::StatusOr<std::int64_t> NextSequence(SqliteDb& db) {
  absl::StatusOr<Statement> next = db.Prepare(
      "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0) + 1");
  if (!next.ok()) return next.status();
  absl::StatusOr<bool> row = next->Step();
  if (!row.ok()) return row.status();
  return next->Int(0);
}

// Appends change-log row `seq` for key `id`, removing the key's previous
// row `old_seq` (0: none). `key_pk` is the key's row, or 0 for a delete (a
// tombstone). A new key's row takes its first sequence as pk, so pks are
// never reused either.
absl::Status AppendChange(SqliteDb& db, std::int64_t seq, std::string_view id, std::int64_t key_pk,
                          std::int64_t old_seq) {
  if (old_seq != 0) {
    absl::StatusOr<Statement> del = db.Prepare("DELETE FROM changes WHERE sequence = ?1");
    if (!del.ok()) return del.status();
    del->BindInt(1, old_seq);
    if (absl::Status s = del->Run(); !s.ok()) return s;
  }
  absl::StatusOr<Statement> ins =
      db.Prepare("INSERT INTO changes(sequence, key_id, key_pk) VALUES (?1, ?2, ?3)");
  if (!ins.ok()) return ins.status();
  ins->BindInt(1, seq);
  ins->BindText(2, id);
  ins->BindInt(3, key_pk);
  return ins->Run();
}

// Removes the tombstone of an earlier key with this id, before the id is
// inserted again: the feed holds one row per key id (key_store.h: one
// entry per key). The partial index changes_tombstones makes this one
// lookup in the (usually empty) set of tombstones; the literal `key_pk = 0`
// is what lets the planner use it.
absl::Status DropTombstone(SqliteDb& db, std::string_view id) {
  absl::StatusOr<Statement> del =
      db.Prepare("DELETE FROM changes WHERE key_id = ?1 AND key_pk = 0");
  if (!del.ok()) return del.status();
  del->BindText(1, id);
  return del->Run();
}

// AppendChange with the next sequence; returns it.
absl::StatusOr<std::int64_t> AppendNextChange(SqliteDb& db, std::string_view id,
                                              std::int64_t key_pk, std::int64_t old_seq) {
  absl::StatusOr<std::int64_t> seq = NextSequence(db);
  if (!seq.ok()) return seq.status();
  if (absl::Status s = AppendChange(db, *seq, id, key_pk, old_seq); !s.ok()) return s;
  return *seq;
}

}  // namespace keygate::internal
