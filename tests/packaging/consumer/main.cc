// Creates a key in an in-memory SQLite store and verifies it: proves that the
// headers, the libraries (core and the sqlite component, plus the Beast
// adapter, the PostgreSQL store and the Redis limiter when installed) and
// their dependencies resolve for a consumer.
#include <iostream>

#include "keygate/keygate.h"
#include "keygate/sqlite/sqlite_key_store.h"
#ifdef KEYGATE_CONSUMER_ADMIN
#include "keygate/admin/admin_api.h"
#endif
#ifdef KEYGATE_CONSUMER_BEAST
#include "keygate/adapters/beast.h"
#endif
#ifdef KEYGATE_CONSUMER_POSTGRES
#include "keygate/postgres/postgres_key_store.h"
#endif
#ifdef KEYGATE_CONSUMER_REDIS
#include "keygate/redis/redis_rate_limiter.h"
#endif
#ifdef KEYGATE_CONSUMER_WEBHOOKS
#include "keygate/webhooks/webhook_sender.h"
#endif

int main() {
  auto deployment = keygate::Deployment::Create({});
  if (!deployment.ok()) return 1;
  keygate::SqliteOptions options;
  options.path = ":memory:";
  absl::StatusOr<std::shared_ptr<keygate::SqliteKeyStore>> store =
      keygate::SqliteKeyStore::Create(options);
  if (!store.ok()) return 1;
  auto manager = keygate::KeyManager::Create({*deployment, *store, nullptr});
  if (!manager.ok()) return 1;
  keygate::CreateKeyRequest req;
  req.name = "consumer";
  req.owner = "alice";
  req.environment = "production";
  req.scopes = {"read:all"};
  auto key = (*manager)->Create(req, "alice");
  if (!key.ok()) return 2;
  auto verifier = keygate::ReferenceVerifier::Create(
      {.deployment = *deployment, .store = *store, .environment = "production"});
  if (!verifier.ok()) return 3;
  const std::string header =
      "Bearer " + std::string(key->token.Reveal(keygate::InsecureSecretAccess::Get()));
  auto read = (*deployment)->scopes().Require({"read:all"});
  if (!read.ok()) return 5;
  const keygate::Verdict v = (*verifier)->Verify(header, *read, absl::Now());
#ifdef KEYGATE_CONSUMER_REDIS
  // Links keygate::redis: a URL it refuses needs no server.
  keygate::RedisRateLimiterOptions redis;
  redis.url = "memcached://localhost";
  if (keygate::RedisRateLimiter::Create(redis).status().code() !=
      absl::StatusCode::kInvalidArgument) {
    return 6;
  }
#endif
#ifdef KEYGATE_CONSUMER_WEBHOOKS
  // Links keygate::webhooks and libcurl: options it refuses need no receiver.
  keygate::WebhookSenderOptions webhooks;
  webhooks.connect_timeout = absl::ZeroDuration();
  if (keygate::WebhookSender::Create(webhooks).status().code() !=
      absl::StatusCode::kInvalidArgument) {
    return 10;
  }
  std::cout << "keygate::webhooks linked\n";
#endif
#ifdef KEYGATE_CONSUMER_POSTGRES
  // Links keygate::postgres and libpq: a URL libpq cannot parse needs no server.
  keygate::PostgresOptions postgres;
  postgres.url = "postgresql://[unclosed";
  if (keygate::PostgresKeyStore::Create(postgres).status().code() !=
      absl::StatusCode::kInvalidArgument) {
    return 7;
  }
  std::cout << "keygate::postgres linked\n";
#endif
#ifdef KEYGATE_CONSUMER_ADMIN
  // Links keygate::admin: its OpenAPI document is served without a key.
  auto authenticator = keygate::HttpAuthenticator::Create(
      {.verifier = keygate::AdaptVerifier(std::move(*verifier))});
  if (!authenticator.ok()) return 8;
  keygate::AdminApi::Options admin;
  admin.manager = std::move(*manager);
  admin.authenticator = std::move(*authenticator);
  auto api = keygate::AdminApi::Create(std::move(admin));
  if (!api.ok()) return 8;
  if ((*api)
          ->Handle({.method = "GET", .target = "/admin/api/v1/openapi.json", .tls = true})
          .status != 200) {
    return 9;
  }
  std::cout << "keygate::admin linked\n";
#endif
  std::cout << "keygate " << KEYGATE_VERSION_STRING << ": " << v << "\n";
  return v.ok() ? 0 : 4;
}
