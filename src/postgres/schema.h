// Schema of the PostgreSQL store, and its migrations (schema.cc). Private to keygate::postgres.
#ifndef KEYGATE_SRC_POSTGRES_SCHEMA_H_
#define KEYGATE_SRC_POSTGRES_SCHEMA_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "postgres/pg_conn.h"

namespace keygate::internal {

// `name` in double quotes (an identifier keygate validated: no quote inside).
std::string QuoteIdent(std::string_view name);

// Brings `schema` to version `target` (1 .. PostgresKeyStore::kSchemaVersion), one migration per
// transaction, each under the advisory lock kMigrationLockKey, so that servers starting together
// migrate once. Errors: kFailedPrecondition (a newer schema; pg_trgm missing), the connection's.
absl::Status MigrateSchema(PgConn& conn, std::string_view schema, int target, absl::Time deadline);

// The schema's version (0: none).
absl::StatusOr<int> SchemaVersion(PgConn& conn, std::string_view schema, absl::Time deadline);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_POSTGRES_SCHEMA_H_
