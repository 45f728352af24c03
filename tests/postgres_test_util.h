// tests/postgres_test_util.h: one real PostgreSQL server per test process (postgres_server.h),
// and stores on it, each in a schema of its own (a fresh, empty store per call).
#ifndef KEYGATE_TESTS_POSTGRES_TEST_UTIL_H_
#define KEYGATE_TESTS_POSTGRES_TEST_UTIL_H_

#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "catch.h"
#include "keygate/postgres/postgres_key_store.h"
#include "postgres_server.h"

namespace keygate::testing {

// The process's server, started on first use; nullptr when there is none outside CI (a
// warning; StartPostgresOrSkip). Shared by the test cases of one binary.
inline PostgresServer* SharedPostgres() {
  static std::unique_ptr<PostgresServer> server = StartPostgresOrSkip();
  return server.get();
}

// A schema name no other store of this process uses.
inline std::string FreshSchema(std::string_view stem = "t") {
  static std::atomic<int> next{0};
  return absl::StrCat("kg_", std::string(stem), "_", next.fetch_add(1));
}

// Options for a fresh store on `server`: a schema of its own, short timeouts for tests.
inline PostgresOptions TestPostgresOptions(const PostgresServer& server) {
  PostgresOptions o;
  o.url = server.url();
  o.schema = FreshSchema();
  o.pool_size = 4;
  o.call_timeout = absl::Seconds(10);
  o.poll_interval = absl::Milliseconds(200);
  return o;
}

// A fresh, empty store on the shared server; REQUIREs success.
inline std::shared_ptr<PostgresKeyStore> OpenTempPostgresStore() {
  PostgresServer* server = SharedPostgres();
  REQUIRE(server != nullptr);
  absl::StatusOr<std::unique_ptr<PostgresKeyStore>> store =
      PostgresKeyStore::Create(TestPostgresOptions(*server));
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  return std::shared_ptr<PostgresKeyStore>(*std::move(store));
}

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_POSTGRES_TEST_UTIL_H_
