// The KeyStore conformance suite on SqliteKeyStore: on a file in a temporary
// directory (WAL, the production configuration) and on ":memory:".

#include <sqlite3.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite_test_util.h"
#include "test_util.h"

namespace {

// SqliteKeyStore's cursors are "s1." and the id in lower-case hex.
std::string CursorFor(std::string_view id) { return keygate::testing::HexCursor("s1.", id); }

// Breaks a key's row as a hand edit would: its scopes column no longer
// holds a JSON array. Through a second connection, as another process.
absl::Status CorruptRow(keygate::KeyStore& store, std::string_view id) {
  auto* sqlite = dynamic_cast<keygate::SqliteKeyStore*>(&store);
  if (sqlite == nullptr) return absl::InvalidArgumentError("store: not a SqliteKeyStore");
  sqlite3* db = nullptr;
  if (sqlite3_open(sqlite->path().c_str(), &db) != SQLITE_OK) {
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open ", sqlite->path()));
  }
  sqlite3_busy_timeout(db, 10'000);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, "UPDATE keys SET scopes = 'read:all' WHERE id = ?1", -1, &stmt,
                              nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    rc = sqlite3_step(stmt);
  }
  const int changed = sqlite3_changes(db);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  if (rc != SQLITE_DONE || changed != 1) {
    return absl::InternalError(
        absl::StrCat("corrupting the row failed: rc ", rc, ", ", changed, " row(s) changed"));
  }
  return absl::OkStatus();
}

keygate::conformance::BackendHooks SqliteHooks(bool file) {
  keygate::conformance::BackendHooks hooks;
  hooks.cursor_for = CursorFor;
  hooks.malformed_cursors = {"s1.", "s1.6", "s1.zz", "s1.6B", "S1.6b", "s2.6b", "s1.6b ", "6b"};
  // A ":memory:" database has no second connection to edit it through.
  if (file) hooks.corrupt_record = CorruptRow;
  // Touches are not changes, and a write waits for a callback round that
  // covers it, also while one runs on another thread (the poller's, or
  // another writer's).
  hooks.touch_is_not_a_change = true;
  hooks.writes_wait_for_subscribers = true;
  return hooks;
}

}  // namespace

KEYGATE_KEY_STORE_CONFORMANCE(SqliteFile, "[sqlite][file]", SqliteHooks(true),
                              keygate::testing::OpenTempSqliteStore())

KEYGATE_KEY_STORE_CONFORMANCE(SqliteMemory, "[sqlite][memory]", SqliteHooks(false),
                              keygate::testing::OpenMemorySqliteStore())
