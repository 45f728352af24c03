// The framework adapters: Boost.Beast (requests and responses in memory) and
// cpp-httplib (real servers on loopback, plain and TLS, driven by httplib's
// client).

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/time/time.h"

#include "catch.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "temp_cert.h"
#include "test_util.h"

#ifdef KEYGATE_TEST_BEAST
#include <boost/beast/http.hpp>

#include "keygate/adapters/beast.h"
#endif
#ifdef KEYGATE_TEST_HTTPLIB
#include "keygate/adapters/httplib.h"
#endif

namespace keygate {
namespace {

// Real keys in a MemoryKeyStore, checked by the ReferenceVerifier of
// "production".
struct Keys {
  Keys() {
    deployment = *Deployment::Create({});
    store = std::make_shared<MemoryKeyStore>();
    KeyManager::Options mo;
    mo.deployment = deployment;
    mo.store = store;
    manager = keygate::testing::MustOk(KeyManager::Create(std::move(mo)));
    auto verifier = ReferenceVerifier::Create(
        {.deployment = deployment, .store = store, .environment = "production"});
    REQUIRE(verifier.ok());
    HttpAuthOptions options;
    options.verifier = AdaptVerifier(std::move(*verifier));
    options.principal_lookup = LookupPrincipalInStore(store);
    absl::StatusOr<std::unique_ptr<HttpAuthenticator>> created = HttpAuthenticator::Create(options);
    REQUIRE(created.ok());
    auth = *std::move(created);
    read = testing::MustRequire(deployment->scopes(), {"read:all"});
    write = testing::MustRequire(deployment->scopes(), {"write:all"});
  }

  // An authenticator over this store that lets plain HTTP through, so that
  // a check goes on past the TLS rule (the loopback test servers).
  std::shared_ptr<HttpAuthenticator> PlainHttpAuth() const {
    auto verifier = ReferenceVerifier::Create(
        {.deployment = deployment, .store = store, .environment = "production"});
    REQUIRE(verifier.ok());
    HttpAuthOptions options;
    options.verifier = AdaptVerifier(std::move(*verifier));
    options.require_tls = false;
    absl::StatusOr<std::unique_ptr<HttpAuthenticator>> created = HttpAuthenticator::Create(options);
    REQUIRE(created.ok());
    return *std::move(created);
  }

  // The token of a new key of alice's.
  std::string Create(std::vector<std::string> scopes, std::string* id = nullptr) {
    CreateKeyRequest req;
    req.name = "adapter-test";
    req.owner = "alice";
    req.environment = "production";
    req.scopes = std::move(scopes);
    absl::StatusOr<CreatedKey> k = manager->Create(req, "test");
    REQUIRE(k.ok());
    if (id != nullptr) *id = k->record.id;
    return std::string(k->token.Reveal(InsecureSecretAccess::Get()));
  }

  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<MemoryKeyStore> store;
  std::unique_ptr<KeyManager> manager;
  std::shared_ptr<HttpAuthenticator> auth;
  Requirement read = Requirement::AnyValidKey();  // set by the constructor
  Requirement write = Requirement::AnyValidKey();
};

// The decision DecideHttp makes for `outcome`, to compare adapters' output
// with.
HttpDecision Expected(Outcome outcome,
                      const Requirement& requirement = Requirement::AnyValidKey()) {
  Verdict v;
  v.outcome = outcome;
  return DecideHttp(v, requirement);
}

#ifdef KEYGATE_TEST_BEAST

namespace http = boost::beast::http;

std::string Field(const BeastResponse& res, std::string_view name) {
  const auto it = res.find(boost::beast::string_view(name.data(), name.size()));
  if (it == res.end()) return "<absent>";
  return std::string(it->value());
}

http::request<http::string_body> BeastRequest(std::string target, http::verb verb = http::verb::get,
                                              unsigned version = 11) {
  http::request<http::string_body> req{verb, target, version};
  req.set(http::field::host, "api.example");
  return req;
}

TEST_CASE("Beast adapter answers a denied request with the full error response",
          "[adapters][beast]") {
  Keys keys;
  const BeastConnection tls{true, "127.0.0.1"};

  SECTION("no Authorization: 401 with a bare challenge") {
    auto req = BeastRequest("/v1/projects");
    BeastResponse res;
    const HttpAuthResult r = CheckBeastRequest(*keys.auth, req, tls, keys.read, &res);
    CHECK_FALSE(r.allowed());
    const HttpDecision want = Expected(Outcome::kMissing);
    CHECK(res.result_int() == 401);
    CHECK(Field(res, "WWW-Authenticate") == "Bearer realm=\"api\"");
    CHECK(Field(res, "Cache-Control") == "no-store");
    CHECK(Field(res, "Content-Type") == "application/json");
    CHECK(res.body() == want.body);
    CHECK(Field(res, "Content-Length") == std::to_string(want.body.size()));
    CHECK(res.version() == 11);
    CHECK(res.keep_alive());
  }
  SECTION("two Authorization fields: 400") {
    const std::string token = keys.Create({"read:all"});
    auto req = BeastRequest("/v1/projects");
    req.insert(http::field::authorization, "Bearer " + token);
    req.insert(http::field::authorization, "Bearer " + token);
    BeastResponse res;
    const HttpAuthResult r = CheckBeastRequest(*keys.auth, req, tls, keys.read, &res);
    CHECK(r.verdict.outcome == Outcome::kInvalidRequest);
    CHECK(res.result_int() == 400);
    CHECK(Field(res, "WWW-Authenticate").find("error=\"invalid_request\"") != std::string::npos);
  }
  SECTION("a credential in the target's query: 400; a fragment is not the query") {
    const std::string token = keys.Create({"read:all"});
    for (const std::string& target : std::vector<std::string>{
             "/v1/projects?api_key=" + token, "/v1/projects?a=1&access_token=x",
             "/v1/projects?API%5FKEY=1", "/v1/projects?x=1;api_key=abc"}) {
      auto req = BeastRequest(target);
      req.set(http::field::authorization, "Bearer " + token);
      BeastResponse res;
      INFO(target);
      CHECK(CheckBeastRequest(*keys.auth, req, tls, keys.read, &res).decision.status == 400);
      CHECK(res.result_int() == 400);
    }
    auto req = BeastRequest("/v1/projects?page=2#api_key=1");
    req.set(http::field::authorization, "Bearer " + token);
    BeastResponse res;
    CHECK(CheckBeastRequest(*keys.auth, req, tls, keys.read, &res).allowed());
  }
  SECTION("plain HTTP: 403, and HTTP/1.0 without keep-alive closes") {
    const std::string token = keys.Create({"read:all"});
    auto req = BeastRequest("/v1/projects", http::verb::get, 10);
    req.set(http::field::authorization, "Bearer " + token);
    BeastResponse res;
    const HttpAuthResult r =
        CheckBeastRequest(*keys.auth, req, BeastConnection{false, "127.0.0.1"}, keys.read, &res);
    CHECK(r.verdict.outcome == Outcome::kInsecureTransport);
    CHECK(res.result_int() == 403);
    CHECK(res.body().find("https_required") != std::string::npos);
    CHECK(res.version() == 10);
    CHECK_FALSE(res.keep_alive());
  }
  SECTION("Connection: close is honoured on HTTP/1.1") {
    auto req = BeastRequest("/v1/projects");
    req.set(http::field::connection, "close");
    BeastResponse res;
    (void)CheckBeastRequest(*keys.auth, req, tls, keys.read, &res);
    CHECK(res.result_int() == 401);
    CHECK_FALSE(res.keep_alive());
  }
  SECTION("an unusable token and a missing scope") {
    auto req = BeastRequest("/v1/projects", http::verb::post);
    req.set(http::field::authorization, "Bearer kg_live_nope");
    BeastResponse res;
    (void)CheckBeastRequest(*keys.auth, req, tls, keys.write, &res);
    CHECK(res.result_int() == 401);
    CHECK(res.body() == Expected(Outcome::kUnknown).body);

    req.set(http::field::authorization, "Bearer " + keys.Create({"read:all"}));
    BeastResponse res2;
    const HttpAuthResult r = CheckBeastRequest(*keys.auth, req, tls, keys.write, &res2);
    CHECK(r.verdict.outcome == Outcome::kInsufficientScope);
    CHECK(res2.result_int() == 403);
    CHECK(Field(res2, "WWW-Authenticate") ==
          "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"write:all\"");
  }
  SECTION("HEAD: the error's headers without its body") {
    auto req = BeastRequest("/v1/projects", http::verb::head);
    BeastResponse res;
    (void)CheckBeastRequest(*keys.auth, req, tls, keys.read, &res);
    CHECK(res.result_int() == 401);
    CHECK(res.body().empty());
    CHECK(Field(res, "Content-Length") == std::to_string(Expected(Outcome::kMissing).body.size()));
  }
}

TEST_CASE("Beast adapter lets an allowed request through untouched but for RateLimit headers",
          "[adapters][beast]") {
  Keys keys;
  std::string id;
  const std::string token = keys.Create({"admin"}, &id);
  auto req = BeastRequest("/v1/projects", http::verb::post);
  req.set(http::field::authorization, "Bearer " + token);
  BeastResponse res;
  res.result(http::status::created);
  res.body() = "{}";
  const HttpAuthResult r = CheckBeastRequest(*keys.auth, req, BeastConnection{true, "::1"},
                                             keys.write, &res, Attribution::kLookup);
  REQUIRE(r.allowed());
  CHECK(r.verdict.key() == id);
  REQUIRE(r.principal.has_value());
  CHECK(r.principal->owner == "alice");
  CHECK(res.result_int() == 201);
  CHECK(res.body() == "{}");
  CHECK(Field(res, "WWW-Authenticate") == "<absent>");

  // A rate-limited decision carries Retry-After and the RateLimit fields.
  Verdict limited;
  limited.outcome = Outcome::kRateLimited;
  limited.rate.limit = 2;
  limited.rate.window_ns = 1'000'000'000;
  limited.rate.retry_after_ns = 400'000'000;
  BeastResponse res429;
  ApplyBeastDecision(DecideHttp(limited, keys.read), req, &res429);
  CHECK(res429.result_int() == 429);
  CHECK(Field(res429, "Retry-After") == "1");
  CHECK(Field(res429, "RateLimit-Policy") == "\"default\";q=2;w=1");
  CHECK(Field(res429, "RateLimit") == "\"default\";r=0;t=1");

  Verdict ok_limited = limited;
  ok_limited.outcome = Outcome::kOk;
  ok_limited.rate.remaining = 1;
  ok_limited.rate.reset_ns = 500'000'000;
  BeastResponse res200;
  res200.result(http::status::ok);
  ApplyBeastDecision(DecideHttp(ok_limited, keys.read), req, &res200);
  CHECK(res200.result_int() == 200);
  CHECK(Field(res200, "RateLimit") == "\"default\";r=1;t=1");
  CHECK(Field(res200, "Cache-Control") == "<absent>");
}

#endif  // KEYGATE_TEST_BEAST

#ifdef KEYGATE_TEST_HTTPLIB

// Runs `server` on a free loopback port until destroyed.
class Running {
 public:
  explicit Running(httplib::Server* server) : server_(server) {
    port_ = server_->bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    // stop() is a no-op until the accept loop runs; wait for it.
    while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~Running() {
    server_->stop();
    thread_.join();
  }
  int port() const { return port_; }

 private:
  httplib::Server* server_;
  int port_ = 0;
  std::thread thread_;
};

// Installs the example's routes: /healthz public, GET /v1/projects read:all
// (through the pre-routing handler), POST /v1/projects write:all (through
// HttplibProtect, attributed).
struct Routes {
  explicit Routes(httplib::Server* server, Keys* keys) {
    server->set_pre_routing_handler(HttplibPreRoutingHandler(
        keys->auth,
        [keys](const httplib::Request& req) -> const Requirement* {
          if (req.path == "/v1/projects" && req.method == "GET") return &keys->read;
          return nullptr;
        },
        [this](const httplib::Request&, const HttpAuthResult& r) {
          std::lock_guard<std::mutex> lock(mu);
          seen.push_back(std::string(OutcomeName(r.verdict.outcome)));
        }));
    server->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok", "text/plain");
    });
    server->Get("/v1/projects", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("[]", "application/json");
    });
    server->Post("/v1/projects", HttplibProtect(
                                     keys->auth, keys->write,
                                     [this](const httplib::Request&, httplib::Response& res,
                                            const HttpAuthResult& r) {
                                       std::lock_guard<std::mutex> lock(mu);
                                       created_by = r.principal ? r.principal->owner : "?";
                                       res.status = 201;
                                       res.set_content("{\"id\":1}", "application/json");
                                     },
                                     Attribution::kLookup));
  }
  std::mutex mu;
  std::vector<std::string> seen;
  std::string created_by;
};

TEST_CASE("httplib adapter over TLS: the response table through a real server",
          "[adapters][httplib][tls]") {
  testing::TempCert cert;
  REQUIRE(cert.ok);
  Keys keys;
  httplib::SSLServer server(cert.cert.c_str(), cert.key.c_str());
  REQUIRE(server.is_valid());
  Routes routes(&server, &keys);
  Running running(&server);

  httplib::SSLClient client("127.0.0.1", running.port());
  client.enable_server_certificate_verification(false);
  const std::string reader = keys.Create({"read:all"});
  const std::string writer = keys.Create({"write:all"});

  auto get = [&](httplib::Headers headers, std::string path = "/v1/projects") {
    httplib::Result r = client.Get(path.c_str(), headers);
    REQUIRE(r);
    return *r;
  };

  const httplib::Response ok = get({{"Authorization", "Bearer " + reader}});
  CHECK(ok.status == 200);
  CHECK(ok.body == "[]");

  const httplib::Response missing = get({});
  CHECK(missing.status == 401);
  CHECK(missing.get_header_value("WWW-Authenticate") == "Bearer realm=\"api\"");
  CHECK(missing.get_header_value_count("Content-Type") == 1);
  CHECK(missing.get_header_value("Content-Type") == "application/json");
  CHECK(missing.get_header_value("Cache-Control") == "no-store");
  CHECK(missing.body == Expected(Outcome::kMissing).body);

  const httplib::Response two =
      get({{"Authorization", "Bearer " + reader}, {"Authorization", "Bearer " + reader}});
  CHECK(two.status == 400);

  const httplib::Response query =
      get({{"Authorization", "Bearer " + reader}}, "/v1/projects?api_key=" + reader);
  CHECK(query.status == 400);
  CHECK(query.get_header_value("WWW-Authenticate").find("invalid_request") != std::string::npos);

  const httplib::Response garbage = get({{"Authorization", "Bearer not-a-key"}});
  CHECK(garbage.status == 401);
  CHECK(garbage.body == Expected(Outcome::kMalformed).body);

  const httplib::Response scope = get({{"Authorization", "Bearer " + writer}});
  CHECK(scope.status == 403);
  CHECK(scope.get_header_value("WWW-Authenticate") ==
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read:all\"");

  const httplib::Response health = get({}, "/healthz");
  CHECK(health.status == 200);

  // HttplibProtect on POST, with attribution.
  httplib::Result denied = client.Post("/v1/projects", {{"Authorization", "Bearer " + reader}},
                                       "{}", "application/json");
  REQUIRE(denied);
  CHECK(denied->status == 403);
  httplib::Result created = client.Post("/v1/projects", {{"Authorization", "Bearer " + writer}},
                                        "{}", "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  std::lock_guard<std::mutex> lock(routes.mu);
  CHECK(routes.created_by == "alice");
  // The observer saw the pre-routed requests only (not /healthz, not POST).
  CHECK(routes.seen == std::vector<std::string>{"ok", "missing", "invalid_request",
                                                "invalid_request", "malformed",
                                                "insufficient_scope"});
}

TEST_CASE("httplib adapter rejects plain HTTP without looking at the key",
          "[adapters][httplib][tls]") {
  Keys keys;
  httplib::Server server;
  Routes routes(&server, &keys);
  Running running(&server);
  httplib::Client client("127.0.0.1", running.port());
  const std::string reader = keys.Create({"read:all"});

  httplib::Result r = client.Get("/v1/projects", {{"Authorization", "Bearer " + reader}});
  REQUIRE(r);
  CHECK(r->status == 403);
  CHECK(r->body == Expected(Outcome::kInsecureTransport).body);
  CHECK_FALSE(r->has_header("WWW-Authenticate"));
  httplib::Result health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  std::lock_guard<std::mutex> lock(routes.mu);
  CHECK(routes.seen == std::vector<std::string>{"insecure_transport"});
}

TEST_CASE("httplib adapter decides on the URL only, through both entry points",
          "[adapters][httplib][query]") {
  Keys keys;
  const std::shared_ptr<HttpAuthenticator> auth = keys.PlainHttpAuth();

  // /pre/... through the pre-routing handler, /protect/... through
  // HttplibProtect; both need write:all.
  httplib::Server server;
  server.set_pre_routing_handler(
      HttplibPreRoutingHandler(auth, [&keys](const httplib::Request& req) -> const Requirement* {
        return req.path.rfind("/pre/", 0) == 0 ? &keys.write : nullptr;
      }));
  auto saved = [](const httplib::Request&, httplib::Response& res) {
    res.set_content("saved", "text/plain");
  };
  auto protected_saved = [](const httplib::Request&, httplib::Response& res,
                            const HttpAuthResult&) { res.set_content("saved", "text/plain"); };
  server.Post("/pre/settings", saved);
  server.Get("/pre/items", saved);
  server.Post("/protect/settings", HttplibProtect(auth, keys.write, protected_saved));
  server.Get("/protect/items", HttplibProtect(auth, keys.write, protected_saved));
  Running running(&server);

  httplib::Client client("127.0.0.1", running.port());
  // Send the target as written: by default httplib's client escapes ';' as
  // %3B, which is a different (harmless) query.
  client.set_url_encode(false);
  const std::string writer = keys.Create({"write:all"});
  const httplib::Headers authorization = {{"Authorization", "Bearer " + writer}};

  for (const std::string entry : {"/pre", "/protect"}) {
    INFO(entry);
    // A form field named like a credential parameter is data, not a key in
    // the URL (httplib merges body fields into Request::params).
    for (const char* body :
         {"webhook=https%3A%2F%2Fexample.com&api_key=third-party-key-to-store", "access_token="}) {
      INFO(body);
      httplib::Result r = client.Post((entry + "/settings").c_str(), authorization, body,
                                      "application/x-www-form-urlencoded");
      REQUIRE(r);
      CHECK(r->status == 200);
      CHECK(r->body == "saved");
    }
    // The same field in the URL is refused, body or not.
    httplib::Result in_url = client.Post((entry + "/settings?api_key=x").c_str(), authorization,
                                         "webhook=1", "application/x-www-form-urlencoded");
    REQUIRE(in_url);
    CHECK(in_url->status == 400);

    // ';' separates parameters, as QueryCarriesCredential (and so the Beast
    // adapter) reads a query; httplib's own parser splits on '&' only.
    for (const char* query : {"?x=1;api_key=abc", "?x=1;access_token=abc", "?API%5FKEY=1"}) {
      INFO(query);
      httplib::Result r = client.Get((entry + "/items" + query).c_str(), authorization);
      REQUIRE(r);
      CHECK(r->status == 400);
      CHECK(r->body == Expected(Outcome::kInvalidRequest).body);
    }
    httplib::Result clean = client.Get((entry + "/items?page=2").c_str(), authorization);
    REQUIRE(clean);
    CHECK(clean->status == 200);
  }
}

TEST_CASE("CheckHttplibRequest reads the query from the target, not from params",
          "[adapters][httplib][query]") {
  Keys keys;
  const std::shared_ptr<HttpAuthenticator> plain = keys.PlainHttpAuth();
  const HttpAuthenticator& auth = *plain;
  const std::string reader = keys.Create({"read:all"});

  httplib::Request req;
  req.method = "POST";
  req.path = "/settings";
  req.target = "/settings?page=1";
  req.set_header("Authorization", "Bearer " + reader);
  req.params.emplace("page", "1");
  req.params.emplace("api_key", "from-the-body");  // what a form body adds
  httplib::Response res;
  CHECK(CheckHttplibRequest(auth, req, keys.read, &res).allowed());

  for (const char* target : {"/settings?x=1;api_key=abc", "/settings?access_token=1#f"}) {
    INFO(target);
    req.target = target;
    req.params.clear();
    httplib::Response denied;
    CHECK(CheckHttplibRequest(auth, req, keys.read, &denied).verdict.outcome ==
          Outcome::kInvalidRequest);
    CHECK(denied.status == 400);
  }
  req.target = "/settings?page=1#api_key=1";  // a fragment is no part of the query
  httplib::Response fragment;
  CHECK(CheckHttplibRequest(auth, req, keys.read, &fragment).allowed());
}

#endif  // KEYGATE_TEST_HTTPLIB

}  // namespace
}  // namespace keygate
