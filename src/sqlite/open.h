// Opening the SQLite KeyStore's file: the file system checks before SQLite
// touches anything, creating a new file under a temporary name and linking
// it into place, refusing journal files and files another user could have
// planted, and checking, configuring and migrating the connection. Private
// to keygate::sqlite.
#ifndef KEYGATE_SRC_SQLITE_OPEN_H_
#define KEYGATE_SRC_SQLITE_OPEN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {

// The path SQLite opens: the file's name in its directory's canonical path.
std::string OpenPath(const std::string& path);

// Checks the file system before SQLite touches anything. Returns true when
// the file does not exist and is to be created (CreateDatabase).
absl::StatusOr<bool> PrepareFile(const SqliteOptions& o);

// When ConfigureAndMigrate puts the file in WAL mode.
enum class WalSwitch : std::uint8_t {
  kNever,         // ":memory:"
  kBeforeSchema,  // a file in use: WAL first, as every other connection runs
  kAfterSchema,   // a new file nobody else sees yet (CreateDatabase): the schema
                  // is committed through a rollback journal, straight into the
                  // file, so that closing the connection leaves nothing in a log
};

// Validates the file's identity and schema version, sets the connection up and
// migrates.
absl::Status ConfigureAndMigrate(SqliteDb& db, const SqliteOptions& o, WalSwitch wal);

// Creates the database file `o.path`, which did not exist (PrepareFile),
// without ever leaving a file behind that Open cannot use.
absl::Status CreateDatabase(const SqliteOptions& o);

// Refuses (or, with allow_foreign_file, reports in `warnings`) a database
// file, or one of its journal files, that is not the effective user's alone.
absl::Status CheckFileTrust(const SqliteOptions& o, std::vector<std::string>* warnings);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_OPEN_H_
