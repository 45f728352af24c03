// What keygate's own tests may reach inside a PostgresKeyStore. Not API.
#ifndef KEYGATE_SRC_POSTGRES_TEST_PEER_H_
#define KEYGATE_SRC_POSTGRES_TEST_PEER_H_

#include <memory>

#include "absl/status/statusor.h"

#include "keygate/postgres/postgres_key_store.h"

namespace keygate::internal {

struct PostgresTestPeer {
  // PostgresKeyStore::Create, migrating only to `schema_version` (an older schema, for the
  // migration test). The store's SQL is the current version's: use it only to write through.
  static absl::StatusOr<std::unique_ptr<PostgresKeyStore>> Create(PostgresOptions options,
                                                                  int schema_version);
  // The server process of the LISTEN connection (0: none now), for pg_terminate_backend.
  static int ListenerBackendPid(const PostgresKeyStore& store);
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_POSTGRES_TEST_PEER_H_
