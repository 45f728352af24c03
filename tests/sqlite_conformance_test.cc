// The KeyStore conformance suite on SqliteKeyStore: on a file in a temporary
// directory (WAL, the production configuration) and on ":memory:".

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite_test_util.h"

KEYGATE_KEY_STORE_CONFORMANCE(SqliteFile, "[sqlite][file]", keygate::testing::OpenTempSqliteStore())

KEYGATE_KEY_STORE_CONFORMANCE(SqliteMemory, "[sqlite][memory]",
                              keygate::testing::OpenMemorySqliteStore())

// Both bundled stores override TouchLastUsed: no version bump, no change.
KEYGATE_KSC_CASE_(SqliteFile, "[sqlite][file]", "touching last_used is not a change",
                  TouchLastUsedIsNotAChange, keygate::testing::OpenTempSqliteStore())

// Both bundled stores promise that a write returns after its subscribers saw
// it (sqlite_key_store.h), also while a callback runs on another thread (the
// poller's, or another writer's).
KEYGATE_KSC_CASE_(SqliteFile, "[sqlite][file][concurrent]",
                  "a write waits for a callback already running on another thread",
                  WriteWaitsForRunningCallback, keygate::testing::OpenTempSqliteStore())
KEYGATE_KSC_CASE_(SqliteMemory, "[sqlite][memory][concurrent]",
                  "a write waits for a callback already running on another thread",
                  WriteWaitsForRunningCallback, keygate::testing::OpenMemorySqliteStore())
