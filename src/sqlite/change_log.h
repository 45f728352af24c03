// The SQLite store's change log (private): sequences and the one row per key id the feed reads.
// Every function runs inside the caller's write transaction.

#ifndef KEYGATE_SRC_SQLITE_CHANGE_LOG_H_
#define KEYGATE_SRC_SQLITE_CHANGE_LOG_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sqlite/sqlite_db.h"

namespace keygate::internal {

// The next change sequence (only meaningful inside the write transaction).
absl::StatusOr<std::int64_t> NextSequence(SqliteDb& db);

// Appends row `seq` for key `id`, removing the key's previous row `old_seq` (0: none); `key_pk`
// is the key's row, or 0 for a delete (a tombstone).
absl::Status AppendChange(SqliteDb& db, std::int64_t seq, std::string_view id, std::int64_t key_pk,
                          std::int64_t old_seq);

// Removes the tombstone of an earlier key with this id, before the id is inserted again.
absl::Status DropTombstone(SqliteDb& db, std::string_view id);

// AppendChange with the next sequence; returns it.
absl::StatusOr<std::int64_t> AppendNextChange(SqliteDb& db, std::string_view id,
                                              std::int64_t key_pk, std::int64_t old_seq);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_CHANGE_LOG_H_
