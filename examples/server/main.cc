// keygate-example-server: an HTTPS API protected by keygate, with its keys in
// the SQLite file or the PostgreSQL database the `keygate` command-line tool
// manages.
//
//   keygate-example-server --db keygate.db [--port 8443] [--http-port 8080]
//   keygate-example-server --db 'postgresql://keygate@db.internal/keys?sslmode=verify-full'
//
// Keys made, revoked, restored or rolled with `keygate --db ... ` while the
// server runs take effect on it through the store's change feed, which the
// hot-path Verifier follows: on a SQLite file within the poll interval
// (--feed-poll-ms, default 50 ms); on PostgreSQL at once through
// LISTEN/NOTIFY, and within the poll interval (default 1000 ms) when a
// notification is lost. Several servers on one PostgreSQL database each keep
// their own Verifier, a replica in memory: while PostgreSQL is down they keep
// verifying from it, and writes fail (503). With --verifier=reference every
// request reads the store instead (changes are immediate; ~20 us per request
// on SQLite, a round trip on PostgreSQL).
//
// Without --cert/--key it makes a self-signed certificate for localhost at
// start (write it out with --write-cert so that clients can trust it:
// `curl --cacert cert.pem https://localhost:8443/...`).
//
// Deployment: as the CLI's (token prefix "kg"; environments preview/test and
// production/live; $KEYGATE_PEPPER_FILE for the pepper).
//
// Webhooks (built with keygate::webhooks): with --webhook-state, a
// WebhookDispatcher next to the verifier delivers each key's lifecycle events
// to its webhook URL, signed with the secrets of --webhook-secret-file, and
// (with --verifier hotpath) key.rate_limited when the verifier refuses a key
// over its rate limit; the admin API shows its delivery log
// (/admin/api/v1/webhook-deliveries).
//
// SIGINT / SIGTERM: stop accepting, finish requests in flight, stop the
// webhook dispatcher (what is pending stays in its state file), flush key
// usage to the store, exit 0.

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "internal/self_signed_cert.h"
#include "keygate/deployment.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#include "keygate/key_store_wrapper.h"
#ifdef KEYGATE_EXAMPLE_WITH_POSTGRES
#include "keygate/postgres/postgres_key_store.h"
#endif
#include "keygate/reference_verifier.h"
#ifdef KEYGATE_EXAMPLE_WITH_REDIS
#include "keygate/redis/redis_rate_limiter.h"
#endif
#include "keygate/secret.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/verifier.h"
#ifdef KEYGATE_EXAMPLE_WITH_WEBHOOKS
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"

#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#endif
#include "server.h"

namespace keygate_example {
namespace {

constexpr char kUsage[] = R"(usage: keygate-example-server [options]

  --db PATH|URL             keygate SQLite database file, or a PostgreSQL URL postgresql://...
                            (libpq's URI form) (default: $KEYGATE_DB, else ./keygate.db)
  --db-schema NAME          PostgreSQL only: the schema of keygate's tables (default: keygate)
  --db-no-listen            PostgreSQL only: no LISTEN, poll only (behind a pooler in
                            transaction mode, such as PgBouncer's, which cannot deliver NOTIFY)
  --env NAME                environment this server serves (default: production)
  --listen ADDR             address to listen on (default: 127.0.0.1)
  --port N                  HTTPS port (default: 8443; 0: any free port)
  --http-port N             also listen for plain HTTP, to show it is rejected (0: any free port)
  --cert PEM --key PEM      TLS certificate chain and private key (default: self-signed, in memory)
  --write-cert PATH         write the self-signed certificate (not the key) to PATH
  --port-file PATH          write "https=N\nhttp=N" to PATH once listening
  --threads N               I/O threads (default: 2)
  --max-connections N       connections served at once; more are closed at accept (default: 512)
  --verifier KIND           hotpath (default: lock-free in-memory index following the store's
                            change feed) or reference (reads the store on every request)
  --feed-poll-ms N          how often to look for changes made by other processes, without a
                            notification (default: 50; PostgreSQL, which notifies: 1000);
                            also spelled --db-poll-interval
  --redis URL               share rate limits with every server on this Redis
                            (redis://[:password@]host:port or unix:///path/to/socket; hotpath only)
  --redis-fleet N           servers sharing the limits: each keeps L/N while Redis is down
                            (default: 0, learned from Redis)
  --redis-fail-closed       answer 503 while Redis is down instead of limiting to L/N
  --realm NAME              realm in WWW-Authenticate, printable ASCII (default: api)
  --access-log PATH         access log: - for stdout (default), off, or a file (appended)
  --bench-routes            add GET /open/v1/projects: GET /v1/projects without keygate
  --simulate-outage-file P  test hook: while file P exists, every store call fails (unavailable)
  --webhook-state PATH      deliver the keys' events to their webhook URLs: the dispatcher's
                            queue and delivery log in PATH (created; keygate webhooks reads it)
  --webhook-secret-file P   the signing secrets: one whsec_... a line, the current one first
                            (a private file, read like the pepper); required with --webhook-state
  --webhook-threads N       deliveries at once, at most one per key (default: 4)
  --help                    this text
)";

struct Flags {
  std::string db;
  std::optional<std::string> db_schema;
  bool db_no_listen = false;
  std::string env = "production";
  std::string listen = "127.0.0.1";
  int port = 8443;
  int http_port = -1;
  std::string cert;
  std::string key;
  std::string write_cert;
  std::string port_file;
  int threads = 2;
  int max_connections = 512;
  std::string verifier = "hotpath";
  int feed_poll_ms = 0;  // 0: the store's default (kSqliteFeedPollMs, kPostgresFeedPollMs)
  std::string redis;
  int redis_fleet = 0;
  bool redis_fail_closed = false;
  std::string realm = "api";
  std::string access_log = "-";
  bool bench_routes = false;
  std::string outage_file;
  std::string webhook_state;
  std::string webhook_secret_file;
  int webhook_threads = 4;
};

constexpr int kSqliteFeedPollMs = 50;
constexpr int kPostgresFeedPollMs = 1000;

// libpq's URI form: a PostgreSQL database rather than a SQLite file.
bool IsPostgresUrl(std::string_view db) {
  return db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "keygate-example-server: %s\n\n%s", message.c_str(), kUsage);
  return 2;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, std::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(std::string(flag), " ", path, ": cannot read"));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The CLI's deployment (src/cli/main.cc): the default one, with the pepper
// from $KEYGATE_PEPPER_FILE when set.
absl::StatusOr<std::shared_ptr<const keygate::Deployment>> LoadDeployment() {
  keygate::DeploymentOptions o;
  const char* pepper_file = std::getenv("KEYGATE_PEPPER_FILE");
  if (pepper_file != nullptr && *pepper_file != '\0') {
    // A regular, private file of at most 4 KiB (ReadPepperFile refuses the rest).
    absl::StatusOr<keygate::PepperFile> pepper = keygate::ReadPepperFile(pepper_file);
    if (!pepper.ok()) return pepper.status();
    o.pepper = std::move(pepper->pepper);
  }
  return keygate::Deployment::Create(std::move(o));
}

#ifdef KEYGATE_EXAMPLE_WITH_WEBHOOKS
// The signing secrets: a private regular file read like the pepper (ReadPepperFile), one
// whsec_... secret a line, the current one first. Errors never quote a secret.
absl::StatusOr<std::vector<keygate::WebhookSecret>> ReadWebhookSecrets(const std::string& path) {
  absl::StatusOr<keygate::PepperFile> file = keygate::ReadPepperFile(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("--webhook-secret-file: ", file.status().message()));
  }
  const std::string_view text = file->pepper.Reveal(keygate::InsecureSecretAccess::Get());
  std::vector<keygate::WebhookSecret> secrets;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    absl::StatusOr<keygate::WebhookSecret> secret =
        keygate::WebhookSecret::Parse(std::string_view(line.data(), line.size()));
    if (!secret.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--webhook-secret-file: line ", line_number,
                                                     ": ", secret.status().message()));
    }
    secrets.push_back(*std::move(secret));
  }
  if (secrets.empty()) {
    return absl::InvalidArgumentError("--webhook-secret-file: holds no whsec_... secret");
  }
  return secrets;
}
#endif

// A store that is down while a marker file exists: lets the end-to-end tests
// show what clients get when the store is unavailable (503 + Retry-After,
// never 200) without breaking a real database.
class OutageSwitchStore final : public keygate::KeyStoreWrapper {
 public:
  OutageSwitchStore(std::shared_ptr<keygate::KeyStore> inner, std::string marker)
      : KeyStoreWrapper(std::move(inner)), marker_(std::move(marker)) {}

  absl::Status Insert(const keygate::KeyRecord& record, const keygate::AuditNote& note) override {
    if (Down()) return Outage();
    return target().Insert(record, note);
  }
  absl::StatusOr<keygate::KeyRecord> Get(std::string_view id) override {
    if (Down()) return Outage();
    return target().Get(id);
  }
  absl::StatusOr<keygate::KeyRecord> FindByDigest(const keygate::Digest& digest) override {
    if (Down()) return Outage();
    return target().FindByDigest(digest);
  }
  absl::StatusOr<keygate::KeyRecord> Update(const keygate::KeyRecord& record,
                                            const keygate::AuditNote& note) override {
    if (Down()) return Outage();
    return target().Update(record, note);
  }
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> expected,
                      const keygate::AuditNote& note) override {
    if (Down()) return Outage();
    return target().Delete(id, expected, note);
  }
  absl::StatusOr<keygate::AuditPage> ReadAudit(const keygate::AuditQuery& query) override {
    if (Down()) return Outage();
    return target().ReadAudit(query);
  }
  absl::StatusOr<keygate::ListPage> List(const keygate::ListOptions& options) override {
    if (Down()) return Outage();
    return target().List(options);
  }
  absl::StatusOr<keygate::ChangeBatch> ChangesSince(std::uint64_t after,
                                                    std::size_t limit) override {
    if (Down()) return Outage();
    return target().ChangesSince(after, limit);
  }
  // The wrapped store's own (a usage flush that bumps no version and
  // appends no change), not the KeyStore default's Get + Update per key.
  absl::Status TouchLastUsed(absl::Span<const keygate::LastUsedUpdate> updates,
                             absl::Duration min_advance) override {
    if (Down()) return Outage();
    return target().TouchLastUsed(updates, min_advance);
  }
  absl::StatusOr<std::uint64_t> LastSequence() override {
    if (Down()) return Outage();
    return target().LastSequence();
  }
  // Subscribe and AwaitSubscribers are forwarded as they are: notifications
  // do not fail during an outage.

 private:
  bool Down() const { return ::access(marker_.c_str(), F_OK) == 0; }
  static absl::Status Outage() { return absl::UnavailableError("store: simulated outage"); }

  std::string marker_;
};

// Parses the command line into `*f` (CLI11; the usage text is kUsage).
// Returns the exit status when the process should end now: 0 after --help,
// 2 (usage error) for an unknown option or a bad or missing value.
std::optional<int> ParseFlags(int argc, char** argv, Flags* f) {
  CLI::App app{"keygate-example-server", "keygate-example-server"};
  app.set_help_flag();  // kUsage instead of CLI11's help
  bool help = false;
  app.add_flag("-h,--help", help);
  const CLI::Validator non_empty(
      [](const std::string& v) { return v.empty() ? std::string("must not be empty") : ""; },
      "NONEMPTY");
  const auto text = [&](const char* name, std::string* out) {
    app.add_option(name, *out)->check(non_empty);
  };
  const auto number = [&](const char* name, int* out, int min, int max) {
    app.add_option(name, *out)->check(CLI::Range(min, max));
  };
  text("--db", &f->db);
  app.add_option("--db-schema", f->db_schema)->check(non_empty);
  app.add_flag("--db-no-listen", f->db_no_listen);
  text("--env", &f->env);
  text("--listen", &f->listen);
  number("--port", &f->port, 0, 65535);
  number("--http-port", &f->http_port, 0, 65535);
  text("--cert", &f->cert);
  text("--key", &f->key);
  text("--write-cert", &f->write_cert);
  text("--port-file", &f->port_file);
  number("--threads", &f->threads, 1, 256);
  number("--max-connections", &f->max_connections, 1, 1'000'000);
  app.add_option("--verifier", f->verifier)->check(CLI::IsMember({"hotpath", "reference"}));
  number("--feed-poll-ms,--db-poll-interval", &f->feed_poll_ms, 1, 60'000);
  text("--redis", &f->redis);
  number("--redis-fleet", &f->redis_fleet, 0, 100'000);
  app.add_flag("--redis-fail-closed", f->redis_fail_closed);
  text("--realm", &f->realm);
  text("--access-log", &f->access_log);
  app.add_flag("--bench-routes", f->bench_routes);
  text("--simulate-outage-file", &f->outage_file);
  text("--webhook-state", &f->webhook_state);
  text("--webhook-secret-file", &f->webhook_secret_file);
  number("--webhook-threads", &f->webhook_threads, 1, 64);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return UsageError(e.what());
  }
  if (help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  return std::nullopt;
}

int Main(int argc, char** argv) {
  Flags f;
  const char* env_db = std::getenv("KEYGATE_DB");
  f.db = env_db != nullptr && *env_db != '\0' ? env_db : "./keygate.db";
  if (const std::optional<int> status = ParseFlags(argc, argv, &f)) return *status;
  if (f.cert.empty() != f.key.empty()) return UsageError("--cert and --key go together");
  if (f.db_schema.has_value() && !IsPostgresUrl(f.db)) {
    return UsageError("--db-schema: only for a PostgreSQL --db (postgresql://...)");
  }
  if (f.db_no_listen && !IsPostgresUrl(f.db)) {
    return UsageError("--db-no-listen: only for a PostgreSQL --db (postgresql://...)");
  }
  if (f.feed_poll_ms == 0) {
    f.feed_poll_ms = IsPostgresUrl(f.db) ? kPostgresFeedPollMs : kSqliteFeedPollMs;
  }
  if (!f.redis.empty() && f.verifier != "hotpath") {
    return UsageError("--redis needs --verifier=hotpath");
  }
#ifndef KEYGATE_EXAMPLE_WITH_REDIS
  if (!f.redis.empty()) return UsageError("--redis: built without keygate::redis (libhiredis-dev)");
#endif
#ifndef KEYGATE_EXAMPLE_WITH_WEBHOOKS
  if (!f.webhook_state.empty()) {
    return UsageError("--webhook-state: built without keygate::webhooks (libcurl4-openssl-dev)");
  }
#endif
  if (f.webhook_state.empty() && !f.webhook_secret_file.empty()) {
    return UsageError("--webhook-secret-file: only with --webhook-state");
  }
  if (!f.webhook_state.empty() && f.webhook_secret_file.empty()) {
    return UsageError("--webhook-state: needs --webhook-secret-file (the signing secrets)");
  }
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 &&
                       nofile.rlim_cur != RLIM_INFINITY &&
                       static_cast<rlim_t>(f.max_connections) + 32 > nofile.rlim_cur) {
    // Not fatal: accept backs off when descriptors run out.
    std::fprintf(stderr,
                 "keygate-example-server: warning: --max-connections %d does not fit the "
                 "descriptor limit (%llu, ulimit -n) with room for the server's own\n",
                 f.max_connections, static_cast<unsigned long long>(nofile.rlim_cur));
  }

  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "keygate-example-server: %s\n", std::string(s.message()).c_str());
    return 1;
  };

  // TLS material.
  ServerConfig config;
  if (!f.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(f.cert, "--cert");
    if (!cert.ok()) return fail(cert.status());
    absl::StatusOr<std::string> key = ReadFile(f.key, "--key");
    if (!key.ok()) return fail(key.status());
    config.tls = keygate::internal::PemPair{std::move(*cert), std::move(*key)};
  } else {
    absl::StatusOr<keygate::internal::PemPair> pair =
        keygate::internal::MakeSelfSignedCertificate("keygate example", /*days=*/7);
    if (!pair.ok()) return fail(pair.status());
    config.tls = std::move(*pair);
    if (!f.write_cert.empty()) {
      std::ofstream out(f.write_cert, std::ios::binary | std::ios::trunc);
      out << config.tls.certificate;
      if (!out.flush())
        return fail(absl::InternalError("--write-cert: cannot write " + f.write_cert));
    }
  }

  // Keys: the SQLite file or the PostgreSQL database the CLI manages. Named in
  // messages by `described`: a PostgreSQL URL may hold a password.
  absl::StatusOr<std::shared_ptr<const keygate::Deployment>> deployment = LoadDeployment();
  if (!deployment.ok()) return fail(deployment.status());
  std::shared_ptr<keygate::KeyStore> store;
  std::string described;
  if (IsPostgresUrl(f.db)) {
#ifdef KEYGATE_EXAMPLE_WITH_POSTGRES
    keygate::PostgresOptions po;
    po.url = f.db;
    if (f.db_schema.has_value()) po.schema = *f.db_schema;
    po.poll_interval = absl::Milliseconds(f.feed_poll_ms);
    po.listen = !f.db_no_listen;
    po.on_listener_status = [](const absl::Status& s) {
      std::fprintf(stderr, "keygate-example-server: change feed: %s\n",
                   s.ok() ? "listening for notifications" : std::string(s.message()).c_str());
    };
    absl::StatusOr<std::unique_ptr<keygate::PostgresKeyStore>> pg =
        keygate::PostgresKeyStore::Create(std::move(po));
    if (!pg.ok()) return fail(pg.status());
    described = (*pg)->description();
    store = *std::move(pg);
#else
    return UsageError(
        "--db: a PostgreSQL URL, but this server was built without PostgreSQL "
        "support (keygate::postgres; Debian: libpq-dev)");
#endif
  } else {
    keygate::SqliteOptions so;
    so.path = f.db;
    so.poll_interval = absl::Milliseconds(f.feed_poll_ms);
    absl::StatusOr<std::shared_ptr<keygate::SqliteKeyStore>> sqlite =
        keygate::SqliteKeyStore::Create(so);
    if (!sqlite.ok()) return fail(sqlite.status());
    described = f.db;
    store = *std::move(sqlite);
  }
  if (!f.outage_file.empty()) {
    store = std::make_shared<OutageSwitchStore>(store, f.outage_file);
  }

#ifdef KEYGATE_EXAMPLE_WITH_WEBHOOKS
  // Webhooks: a dispatcher on the same store, started just before serving, stopped after.
  std::shared_ptr<keygate::WebhookDispatcher> webhooks;
  if (!f.webhook_state.empty()) {
    absl::StatusOr<std::vector<keygate::WebhookSecret>> secrets =
        ReadWebhookSecrets(f.webhook_secret_file);
    if (!secrets.ok()) return fail(secrets.status());
    keygate::WebhookDispatcherOptions wo;
    wo.store = store;
    wo.state_path = f.webhook_state;
    wo.secrets = *std::move(secrets);
    wo.threads = f.webhook_threads;
    absl::StatusOr<std::unique_ptr<keygate::WebhookDispatcher>> d =
        keygate::WebhookDispatcher::Create(std::move(wo));
    if (!d.ok()) return fail(d.status());
    webhooks = *std::move(d);
  }
  // Keys refused by their rate limit: key.rate_limited (once per key per hour), from the hot
  // path verifier's usage batches (every minute).
  std::shared_ptr<keygate::UsageSink> rate_limit_sink =
      webhooks != nullptr ? webhooks->RateLimitSink() : nullptr;
#endif

  std::shared_ptr<keygate::Verifier> hotpath;
  std::shared_ptr<const keygate::RequestVerifier> verifier;
  if (f.verifier == "hotpath") {
    keygate::VerifierOptions vo;
    vo.deployment = *deployment;
    vo.store = store;
    vo.environment = f.env;
    vo.poll_interval = absl::Milliseconds(f.feed_poll_ms);
#ifdef KEYGATE_EXAMPLE_WITH_WEBHOOKS
    vo.usage_sink = rate_limit_sink;
#endif
#ifdef KEYGATE_EXAMPLE_WITH_REDIS
    if (!f.redis.empty()) {
      keygate::RedisRateLimiterOptions ro;
      ro.url = f.redis;
      ro.fleet_size = static_cast<std::uint32_t>(f.redis_fleet);
      ro.fail_closed = f.redis_fail_closed;
      absl::StatusOr<std::unique_ptr<keygate::RedisRateLimiter>> limiter =
          keygate::RedisRateLimiter::Create(std::move(ro));
      if (!limiter.ok()) return UsageError(absl::StrCat("--redis: ", limiter.status().message()));
      vo.rate_limiter = *std::move(limiter);
    }
#endif
    absl::StatusOr<std::unique_ptr<keygate::Verifier>> v = keygate::Verifier::Create(vo);
    if (!v.ok()) return fail(v.status());
    hotpath = std::move(*v);
    verifier = keygate::AdaptVerifier(hotpath);
  } else {
    absl::StatusOr<std::unique_ptr<keygate::ReferenceVerifier>> v =
        keygate::ReferenceVerifier::Create(
            {.deployment = *deployment, .store = store, .environment = f.env});
    if (!v.ok()) return fail(v.status());
    verifier = keygate::AdaptVerifier(std::move(*v));
  }

  keygate::HttpAuthOptions ao;
  ao.verifier = verifier;
  ao.http.realm = f.realm;
  if (absl::Status s = keygate::ValidateHttpOptions(ao.http); !s.ok()) {
    return UsageError(absl::StrCat("--", s.message()));  // "--realm: byte ..."
  }
  ao.principal_lookup = keygate::LookupPrincipalInStore(store);
  const keygate::ScopeRegistry& scopes = (*deployment)->scopes();
  absl::StatusOr<keygate::Requirement> read = scopes.Require({keygate::kScopeReadAll});
  absl::StatusOr<keygate::Requirement> write = scopes.Require({keygate::kScopeWriteAll});
  absl::StatusOr<keygate::Requirement> admin = scopes.Require({keygate::kScopeAdmin});
  for (const auto* r : {&read, &write, &admin}) {
    if (!r->ok()) return fail(r->status());
  }
  absl::StatusOr<std::unique_ptr<keygate::HttpAuthenticator>> auth =
      keygate::HttpAuthenticator::Create(std::move(ao));
  if (!auth.ok()) return fail(auth.status());
  Api api{*std::move(auth), *std::move(read), *std::move(write), *std::move(admin), nullptr};
#ifdef KEYGATE_EXAMPLE_WITH_ADMIN
  // The admin API at /admin, for admin keys of this environment (the same authenticator).
  keygate::KeyManager::Options mo;
  mo.deployment = *deployment;
  mo.store = store;
  absl::StatusOr<std::unique_ptr<keygate::KeyManager>> manager =
      keygate::KeyManager::Create(std::move(mo));
  if (!manager.ok()) return fail(manager.status());
  keygate::AdminApi::Options admin_options;
  admin_options.manager = *std::move(manager);
  admin_options.authenticator = api.auth;
  admin_options.max_body_bytes = kMaxBodyBytes;
#ifdef KEYGATE_EXAMPLE_WITH_WEBHOOKS
  if (webhooks != nullptr) {
    admin_options.webhook_deliveries = [webhooks](std::string_view key_id, std::size_t limit) {
      return webhooks->Deliveries(key_id, limit);
    };
  }
#endif
  absl::StatusOr<std::unique_ptr<keygate::AdminApi>> admin_api =
      keygate::AdminApi::Create(std::move(admin_options));
  if (!admin_api.ok()) return fail(admin_api.status());
  api.admin_api = *std::move(admin_api);
#endif

  config.address = f.listen;
  config.https_port = f.port;
  config.http_port = f.http_port;
  config.threads = f.threads;
  config.port_file = f.port_file;
  config.bench_routes = f.bench_routes;
  config.token_prefix = (*deployment)->token_prefix();
  config.environment_tags.clear();
  for (const keygate::EnvironmentSpec& e : (*deployment)->environments()) {
    config.environment_tags.push_back(e.tag);
  }
  config.max_connections = f.max_connections;
  std::FILE* log_file = nullptr;
  if (f.access_log == "-") {
    config.access_log = stdout;
  } else if (f.access_log != "off") {
    log_file = std::fopen(f.access_log.c_str(), "a");
    if (log_file == nullptr) {
      return fail(absl::InternalError(
          absl::StrCat("--access-log ", f.access_log, ": ", std::strerror(errno))));
    }
    config.access_log = log_file;
  }
  std::fprintf(stderr, "keygate-example-server: %s, environment %s, %s verifier%s\n",
               described.c_str(), f.env.c_str(), f.verifier.c_str(),
               f.redis.empty() ? "" : ", rate limits shared through Redis");

#ifdef KEYGATE_EXAMPLE_WITH_WEBHOOKS
  if (webhooks != nullptr) {
    if (absl::Status s = webhooks->Start(); !s.ok()) return fail(s);
    std::fprintf(stderr, "keygate-example-server: webhooks on, delivery log in %s\n",
                 f.webhook_state.c_str());
  }
#endif
  const absl::Status served = Serve(config, api);
#ifdef KEYGATE_EXAMPLE_WITH_WEBHOOKS
  if (webhooks != nullptr) webhooks->Stop();  // waits for the attempts in flight
#endif
  if (hotpath) hotpath->Shutdown();  // flushes key usage (last used) to the store
  if (log_file != nullptr) std::fclose(log_file);
  if (!served.ok()) return fail(served);
  std::fprintf(stderr, "keygate-example-server: stopped\n");
  return 0;
}

}  // namespace
}  // namespace keygate_example

int main(int argc, char** argv) { return keygate_example::Main(argc, argv); }
