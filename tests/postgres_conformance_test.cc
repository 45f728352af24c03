// The KeyStore conformance suite on PostgresKeyStore, against a real PostgreSQL server started
// for this process (tests/postgres_server.h), each check on a fresh schema.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/postgres/postgres_key_store.h"
#include "postgres_test_util.h"
#include "test_util.h"

namespace {

// PostgresKeyStore's cursors are "p1." and the id in lower-case hex.
std::string CursorFor(std::string_view id) { return keygate::testing::HexCursor("p1.", id); }

// Breaks a key's row as a hand edit would: its scopes column no longer holds a JSON array.
// Through psql, as another client.
absl::Status CorruptRow(keygate::KeyStore& store, std::string_view id) {
  auto* pg = dynamic_cast<keygate::PostgresKeyStore*>(&store);
  if (pg == nullptr) return absl::InvalidArgumentError("store: not a PostgresKeyStore");
  for (const char c : id) {
    if (c == '\'') return absl::InvalidArgumentError("id: has a quote");
  }
  absl::StatusOr<std::string> out = keygate::testing::SharedPostgres()->Psql(absl::StrCat(
      "UPDATE \"", pg->options().schema, "\".keys SET scopes = 'read:all' WHERE id = '",
      std::string(id), "' RETURNING 1"));
  if (!out.ok()) return out.status();
  if (*out != "1") return absl::InternalError(absl::StrCat("corrupting the row: got '", *out, "'"));
  return absl::OkStatus();
}

keygate::conformance::BackendHooks PostgresHooks() {
  keygate::conformance::BackendHooks hooks;
  hooks.cursor_for = CursorFor;
  hooks.malformed_cursors = {"p1.", "p1.6", "p1.zz", "p1.6B", "P1.6b", "p2.6b", "p1.6b ", "6b"};
  hooks.corrupt_record = CorruptRow;
  hooks.touch_is_not_a_change = true;
  // A write returns after this process's subscribers ran a round covering it (ChangeNotifier).
  hooks.writes_wait_for_subscribers = true;
  return hooks;
}

}  // namespace

KEYGATE_KEY_STORE_CONFORMANCE(Postgres, "[postgres]", PostgresHooks(),
                              keygate::testing::OpenTempPostgresStore())
