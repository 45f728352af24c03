// The SQLite store's schema and its migrations.
//
// Versioning: `PRAGMA user_version` holds the schema version (0 = empty file),
// `PRAGMA application_id` marks the file as keygate's. Migration i (0-based)
// takes a database from version i to i+1; they run in one write transaction
// on open, after re-reading the version inside it, so two processes opening
// a new file at once do not both migrate.
#ifndef KEYGATE_SRC_SQLITE_SCHEMA_H_
#define KEYGATE_SRC_SQLITE_SCHEMA_H_

#include <cstddef>

namespace keygate::internal {

// kMigrations[i] upgrades version i to i+1. The last index + 1 is the current
// schema version (SqliteKeyStore::kSchemaVersion).
extern const char* const kMigrations[];
extern const std::size_t kMigrationCount;

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_SCHEMA_H_
