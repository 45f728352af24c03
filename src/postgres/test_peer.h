// What keygate's own tests may reach inside a PostgresKeyStore. Not API.
#ifndef KEYGATE_SRC_POSTGRES_TEST_PEER_H_
#define KEYGATE_SRC_POSTGRES_TEST_PEER_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"

#include "keygate/postgres/postgres_key_store.h"

namespace keygate::internal {

struct PostgresTestPeer {
  // PostgresKeyStore::Create, migrating only to `schema_version` (an older schema, for the
  // migration test). The store's SQL is the current version's: use it only to write through.
  static absl::StatusOr<std::unique_ptr<PostgresKeyStore>> Create(PostgresOptions options,
                                                                  int schema_version);
  // Runs `hook` in every write transaction after its last statement, before COMMIT (the
  // sequence taken, not yet visible). Set before the store is used.
  static void SetBeforeCommit(PostgresKeyStore& store, std::function<void()> hook);
  // The server process of the LISTEN connection (0: none now), for pg_terminate_backend.
  static int ListenerBackendPid(const PostgresKeyStore& store);
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_POSTGRES_TEST_PEER_H_
