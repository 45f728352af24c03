// What an API-key check costs per request: keygate's in-process Verifier
// against what users do without keygate, a lookup per request in
// PostgreSQL (by digest) and in Redis (GET + INCR/EXPIRE rate limit), both
// real servers on loopback (bench/http/run.sh starts them).
//
//   lookup_baselines [--pg CONNINFO] [--redis HOST:PORT] [--keys N] [--json PATH]
//
// Each contender does the whole check for one request, single-threaded, on
// the same token set (N keys, requests spread uniformly over them):
//   keygate    Verifier::Verify("Bearer <token>", read:all): parse, checksum,
//              hash, index probe, state/expiry/environment/scope checks,
//              GCRA rate limit (every key has a generous limit)
//   keygate+http  the same through HttpAuthenticator::Check (TLS and
//              query-string pre-checks, the response decision with its
//              RateLimit headers): what the example server pays per request
//   postgres   SHA-256 of the token, then a prepared
//              SELECT id, state, environment, scopes, expires FROM api_keys
//              WHERE digest = $1 (primary key, binary parameter) over TCP,
//              then the same checks
//   redis      SHA-256, GET apikey:<digest> (the record), then INCR + EXPIRE
//              of a per-key, per-minute counter pipelined in one round trip
// Before timing, each baseline must accept every token and reject an
// unknown one, as the Verifier does. Reported: mean ns/op, p50, p99, and
// each contender's mean and p50 as multiples of keygate's (the p50 ratio is
// the steadier one on a shared machine).

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <openssl/sha.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "keygate/deployment.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/scope.h"
#include "keygate/secret.h"
#include "keygate/verifier.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  std::string name;
  double mean_ns = 0;
  double p50_ns = 0;
  double p99_ns = 0;
  std::size_t ops = 0;
};

struct Key {
  std::string id;
  std::string token;
  unsigned char digest[SHA256_DIGEST_LENGTH];
};

std::string Hex(const unsigned char* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "lookup_baselines: %s\n", message.c_str());
  std::exit(1);
}

// Times `op(i)` for `ops` requests: per-op latencies for the percentiles,
// and the whole run for the mean.
template <typename Op>
Result Measure(const char* name, std::size_t ops, Op op) {
  std::vector<std::int64_t> lat(ops);
  const auto begin = Clock::now();
  for (std::size_t i = 0; i < ops; ++i) {
    const auto t0 = Clock::now();
    op(i);
    lat[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }
  const double total = static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - begin).count());
  std::sort(lat.begin(), lat.end());
  Result r;
  r.name = name;
  r.ops = ops;
  r.mean_ns = total / static_cast<double>(ops);
  r.p50_ns = static_cast<double>(lat[ops / 2]);
  r.p99_ns = static_cast<double>(lat[std::min(ops - 1, ops * 99 / 100)]);
  return r;
}

// The mean of keygate alone, without the per-op clock reads (they cost about
// as much as a verification).
template <typename Op>
double MeanOnly(std::size_t ops, Op op) {
  const auto begin = Clock::now();
  for (std::size_t i = 0; i < ops; ++i) op(i);
  return static_cast<double>(
             std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - begin).count()) /
         static_cast<double>(ops);
}

// The checks every contender applies to the record it found.
bool RecordAllows(bool active, std::string_view environment, std::string_view scopes) {
  return active && environment == "production" &&
         (scopes.find("read:all") != std::string_view::npos ||
          scopes.find("admin") != std::string_view::npos);
}

std::optional<Result> RunPostgres(const std::string& conninfo, const std::vector<Key>& keys,
                                  const std::vector<std::uint32_t>& order) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::fprintf(stderr, "postgres: %s", PQerrorMessage(conn));
    PQfinish(conn);
    return std::nullopt;
  }
  auto exec = [&](const std::string& sql) {
    PGresult* r = PQexec(conn, sql.c_str());
    const ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
      Die("postgres: " + sql + ": " + PQresultErrorMessage(r));
    PQclear(r);
  };
  exec("SET client_min_messages TO warning");
  exec("DROP TABLE IF EXISTS api_keys");
  exec(
      "CREATE TABLE api_keys (digest bytea PRIMARY KEY, id text NOT NULL, owner text NOT NULL, "
      "environment text NOT NULL, scopes text[] NOT NULL, state smallint NOT NULL, "
      "expires timestamptz)");
  for (std::size_t i = 0; i < keys.size(); i += 500) {
    std::string sql =
        "INSERT INTO api_keys (digest, id, owner, environment, scopes, state) VALUES ";
    for (std::size_t j = i; j < std::min(keys.size(), i + 500); ++j) {
      if (j != i) sql += ",";
      sql += "('\\x" + Hex(keys[j].digest, SHA256_DIGEST_LENGTH) + "','" + keys[j].id +
             "','alice','production','{read:all}',1)";
    }
    exec(sql);
  }
  exec("ANALYZE api_keys");
  PGresult* prep = PQprepare(conn, "find",
                             "SELECT id, state, environment, scopes, expires FROM api_keys "
                             "WHERE digest = $1",
                             1, nullptr);
  if (PQresultStatus(prep) != PGRES_COMMAND_OK) Die("postgres: prepare failed");
  PQclear(prep);

  auto check = [&](std::string_view token) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
    const char* values[1] = {reinterpret_cast<const char*>(digest)};
    const int lengths[1] = {SHA256_DIGEST_LENGTH};
    const int formats[1] = {1};
    PGresult* r = PQexecPrepared(conn, "find", 1, values, lengths, formats, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) Die("postgres: lookup failed");
    bool ok = false;
    if (PQntuples(r) == 1) {
      ok = RecordAllows(std::strcmp(PQgetvalue(r, 0, 1), "1") == 0, PQgetvalue(r, 0, 2),
                        PQgetvalue(r, 0, 3)) &&
           PQgetisnull(r, 0, 4);
    }
    PQclear(r);
    return ok;
  };
  for (const Key& k : keys) {
    if (!check(k.token)) Die("postgres baseline rejected a valid token");
  }
  if (check("kg_live_unknown")) Die("postgres baseline accepted an unknown token");

  const std::size_t ops = std::min<std::size_t>(order.size(), 20'000);
  Result r = Measure("postgres", ops, [&](std::size_t i) {
    if (!check(keys[order[i]].token)) Die("postgres: rejected");
  });
  PQfinish(conn);
  return r;
}

std::optional<Result> RunRedis(const std::string& host_port, const std::vector<Key>& keys,
                               const std::vector<std::uint32_t>& order) {
  const std::size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) Die("--redis: want HOST:PORT");
  redisContext* c =
      redisConnect(host_port.substr(0, colon).c_str(), std::atoi(host_port.c_str() + colon + 1));
  if (c == nullptr || c->err != 0) {
    std::fprintf(stderr, "redis: cannot connect to %s\n", host_port.c_str());
    if (c != nullptr) redisFree(c);
    return std::nullopt;
  }
  auto reply = [&](void* p) {
    auto* r = static_cast<redisReply*>(p);
    if (r == nullptr) Die("redis: connection lost");
    return std::unique_ptr<redisReply, void (*)(void*)>(r, freeReplyObject);
  };
  (void)reply(redisCommand(c, "FLUSHALL"));
  for (const Key& k : keys) {
    const std::string value = k.id + "|1|production|read:all|alice";
    redisAppendCommand(c, "SET apikey:%b %b", k.digest,
                       static_cast<std::size_t>(SHA256_DIGEST_LENGTH), value.data(), value.size());
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    void* r = nullptr;
    if (redisGetReply(c, &r) != REDIS_OK) Die("redis: SET failed");
    (void)reply(r);
  }

  const long long minute = absl::ToUnixSeconds(absl::Now()) / 60;
  auto check = [&](std::string_view token) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
    auto got = reply(
        redisCommand(c, "GET apikey:%b", digest, static_cast<std::size_t>(SHA256_DIGEST_LENGTH)));
    if (got->type != REDIS_REPLY_STRING) return false;
    const std::string_view v(got->str, got->len);
    const std::size_t a = v.find('|');
    const std::size_t b = v.find('|', a + 1);
    const std::size_t e = v.find('|', b + 1);
    const std::size_t s = v.find('|', e + 1);
    if (!RecordAllows(v.substr(a + 1, b - a - 1) == "1", v.substr(b + 1, e - b - 1),
                      v.substr(e + 1, s - e - 1))) {
      return false;
    }
    // Fixed-window rate limit: INCR and EXPIRE in one round trip.
    const std::string counter =
        std::string("rl:").append(v.substr(0, a)).append(":").append(std::to_string(minute));
    redisAppendCommand(c, "INCR %b", counter.data(), counter.size());
    redisAppendCommand(c, "EXPIRE %b 60", counter.data(), counter.size());
    void* r1 = nullptr;
    void* r2 = nullptr;
    if (redisGetReply(c, &r1) != REDIS_OK || redisGetReply(c, &r2) != REDIS_OK) {
      Die("redis: INCR/EXPIRE failed");
    }
    auto count = reply(r1);
    (void)reply(r2);
    return count->type == REDIS_REPLY_INTEGER && count->integer <= 1'000'000'000;
  };
  for (const Key& k : keys) {
    if (!check(k.token)) Die("redis baseline rejected a valid token");
  }
  if (check("kg_live_unknown")) Die("redis baseline accepted an unknown token");

  const std::size_t ops = std::min<std::size_t>(order.size(), 20'000);
  Result r = Measure("redis", ops, [&](std::size_t i) {
    if (!check(keys[order[i]].token)) Die("redis: rejected");
  });
  redisFree(c);
  return r;
}

int Main(int argc, char** argv) {
  std::string pg;
  std::string redis;
  std::string json_path;
  std::size_t n_keys = 4096;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(std::string(a) + ": missing value");
      return argv[++i];
    };
    if (a == "--pg") {
      pg = value();
    } else if (a == "--redis") {
      redis = value();
    } else if (a == "--json") {
      json_path = value();
    } else if (a == "--keys") {
      n_keys = static_cast<std::size_t>(std::strtoull(value().c_str(), nullptr, 10));
      if (n_keys == 0 || n_keys > 1'000'000) Die("--keys: 1 .. 1000000");
    } else {
      Die("usage: lookup_baselines [--pg CONNINFO] [--redis HOST:PORT] [--keys N] [--json PATH]");
    }
  }

  // The keys, made the way an application makes them.
  auto deployment = keygate::Deployment::Create({});
  if (!deployment.ok()) Die("deployment");
  auto store = std::make_shared<keygate::MemoryKeyStore>();
  keygate::KeyManager::Options mo;
  mo.deployment = *deployment;
  mo.store = store;
  absl::StatusOr<std::unique_ptr<keygate::KeyManager>> made = keygate::KeyManager::Create(mo);
  if (!made.ok()) Die("manager: " + std::string(made.status().message()));
  keygate::KeyManager& manager = **made;
  std::vector<Key> keys(n_keys);
  for (std::size_t i = 0; i < n_keys; ++i) {
    keygate::CreateKeyRequest req;
    req.name = "bench-" + std::to_string(i);
    req.owner = "alice";
    req.environment = "production";
    req.scopes = {"read:all"};
    req.rate_limit = keygate::RateLimitPolicy{1'000'000, absl::Seconds(1), 1'000'000};
    auto created = manager.Create(req, "bench");
    if (!created.ok()) Die("create: " + std::string(created.status().message()));
    keys[i].id = created->record.id;
    keys[i].token = std::string(created->token.Reveal(keygate::InsecureSecretAccess::Get()));
    SHA256(reinterpret_cast<const unsigned char*>(keys[i].token.data()), keys[i].token.size(),
           keys[i].digest);
  }
  keygate::VerifierOptions vo;
  vo.deployment = *deployment;
  vo.store = store;
  vo.environment = "production";
  vo.follow_changes = false;
  auto verifier = keygate::Verifier::Create(vo);
  if (!verifier.ok()) Die("verifier: " + std::string(verifier.status().message()));
  absl::StatusOr<keygate::Requirement> read_or = (*deployment)->scopes().Require({"read:all"});
  if (!read_or.ok()) Die("requirement: " + std::string(read_or.status().message()));
  const keygate::Requirement read = *std::move(read_or);

  std::vector<std::string> headers(n_keys);
  for (std::size_t i = 0; i < n_keys; ++i) headers[i] = "Bearer " + keys[i].token;
  std::mt19937 rng(42);
  std::vector<std::uint32_t> order(2'000'000);
  for (auto& o : order) o = static_cast<std::uint32_t>(rng() % n_keys);

  for (std::size_t i = 0; i < n_keys; ++i) {
    if (!(*verifier)->Verify(headers[i], read).ok()) Die("keygate rejected a valid token");
  }
  if ((*verifier)->Verify("Bearer kg_live_unknown", read).ok()) Die("keygate accepted garbage");

  std::size_t rejected = 0;
  Result kg = Measure("keygate", order.size(), [&](std::size_t i) {
    rejected += !(*verifier)->Verify(headers[order[i]], read).ok();
  });
  kg.mean_ns = MeanOnly(order.size(), [&](std::size_t i) {
    rejected += !(*verifier)->Verify(headers[order[i]], read).ok();
  });
  if (rejected != 0) Die("keygate rejected valid tokens while timed");

  keygate::HttpAuthOptions auth_options;
  auth_options.verifier =
      keygate::AdaptVerifier(std::shared_ptr<keygate::Verifier>(std::move(*verifier)));
  absl::StatusOr<std::unique_ptr<keygate::HttpAuthenticator>> created =
      keygate::HttpAuthenticator::Create(std::move(auth_options));
  if (!created.ok()) Die("HttpAuthenticator::Create failed");
  const keygate::HttpAuthenticator& auth = **created;
  auto http_check = [&](std::size_t i) {
    const std::string_view authorization[] = {headers[order[i]]};
    keygate::HttpRequestFacts facts;
    facts.authorization = authorization;
    facts.raw_query = "page=2";
    facts.tls = true;
    facts.client_address = "127.0.0.1";
    rejected += !auth.Check(facts, read).allowed();
  };
  Result kg_http = Measure("keygate+http", order.size(), http_check);
  kg_http.mean_ns = MeanOnly(order.size(), http_check);
  if (rejected != 0) Die("keygate+http rejected valid tokens while timed");

  std::vector<Result> results = {kg, kg_http};
  if (!pg.empty()) {
    if (auto r = RunPostgres(pg, keys, order)) results.push_back(*r);
  }
  if (!redis.empty()) {
    if (auto r = RunRedis(redis, keys, order)) results.push_back(*r);
  }

  std::printf("%-13s %12s %10s %10s %10s %10s\n", "check", "mean ns/op", "p50 ns", "p99 ns",
              "x (mean)", "x (p50)");
  for (const Result& r : results) {
    std::printf("%-13s %12.0f %10.0f %10.0f %9.1fx %9.1fx\n", r.name.c_str(), r.mean_ns, r.p50_ns,
                r.p99_ns, r.mean_ns / kg.mean_ns, r.p50_ns / kg.p50_ns);
  }
  if (!json_path.empty()) {
    std::FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) Die("--json: cannot write " + json_path);
    std::fprintf(f, "{\"keys\":%zu,\"results\":[", n_keys);
    for (std::size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f,
                   "%s{\"name\":\"%s\",\"ops\":%zu,\"mean_ns\":%.1f,\"p50_ns\":%.0f,"
                   "\"p99_ns\":%.0f,\"ratio_to_keygate\":%.2f,\"p50_ratio_to_keygate\":%.2f}",
                   i == 0 ? "" : ",", r.name.c_str(), r.ops, r.mean_ns, r.p50_ns, r.p99_ns,
                   r.mean_ns / kg.mean_ns, r.p50_ns / kg.p50_ns);
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
