// The framework-agnostic HTTP request check (http_request.h): the pre-checks,
// their order, the response table of DESIGN.md section 6 with real keys, and
// attribution.

#include "keygate/http_request.h"

#include <atomic>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "keygate/token.h"
#include "outage_key_store.h"
#include "test_util.h"

namespace keygate {
namespace {

// An authenticator over `verifier`, failing the test case when Create refuses the options.
std::unique_ptr<HttpAuthenticator> MakeAuth(std::shared_ptr<const RequestVerifier> verifier,
                                            HttpAuthOptions options = {}) {
  options.verifier = std::move(verifier);
  absl::StatusOr<std::unique_ptr<HttpAuthenticator>> auth =
      HttpAuthenticator::Create(std::move(options));
  REQUIRE(auth.ok());
  return *std::move(auth);
}

std::map<std::string, std::string> Headers(const HttpDecision& d) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : d.headers) {
    REQUIRE(m.count(k) == 0);
    m[k] = v;
  }
  return m;
}

// A verifier that counts calls and answers what it is told, so the tests can
// prove which checks run before the verifier.
class ScriptedVerifier final : public RequestVerifier {
 public:
  Verdict Verify(std::string_view authorization, const Requirement&,
                 absl::Time now) const override {
    calls.fetch_add(1);
    last_authorization = std::string(authorization);
    last_now = now;
    if (throw_) throw std::runtime_error("boom");
    return answer;
  }
  Verdict answer;
  bool throw_ = false;
  mutable std::atomic<int> calls{0};
  mutable std::string last_authorization;
  mutable absl::Time last_now;
};

Verdict OkVerdict(std::string_view key_id) {
  Verdict v;
  v.outcome = Outcome::kOk;
  v.set_key(key_id);
  return v;
}

constexpr std::string_view kKeyId = "key_0123456789abcdefghijkl";

// Real keys in a MemoryKeyStore, checked by the ReferenceVerifier of the
// "production" environment.
struct Fixture {
  Fixture() {
    deployment = *Deployment::Create({});
    store = std::make_shared<testing::OutageKeyStore>();
    clock = std::make_shared<FakeClock>(absl::FromUnixSeconds(1'800'000'000));
    KeyManager::Options mo;
    mo.deployment = deployment;
    mo.store = store;
    mo.clock = clock;
    manager = keygate::testing::MustOk(KeyManager::Create(std::move(mo)));
    auto verifier = ReferenceVerifier::Create(
        {.deployment = deployment, .store = store, .environment = "production"});
    REQUIRE(verifier.ok());
    HttpAuthOptions options;
    options.clock = clock;
    options.principal_lookup = LookupPrincipalInStore(store);
    auth = MakeAuth(AdaptVerifier(std::move(*verifier)), options);
    read = testing::MustRequire(deployment->scopes(), {"read:all"});
    write = testing::MustRequire(deployment->scopes(), {"write:all"});
  }

  // Returns the "Bearer <token>" header for a new key.
  std::string Create(std::string name, std::vector<std::string> scopes,
                     std::string environment = "production",
                     std::optional<absl::Time> expires = std::nullopt, std::string* id = nullptr) {
    CreateKeyRequest req;
    req.name = std::move(name);
    req.owner = "alice";
    req.environment = std::move(environment);
    req.scopes = std::move(scopes);
    req.expires = expires;
    req.accounts = {"acct_1"};
    req.metadata = {{"team", "billing"}};
    absl::StatusOr<CreatedKey> k = manager->Create(req, "test");
    REQUIRE(k.ok());
    if (id != nullptr) *id = k->record.id;
    return "Bearer " + std::string(k->token.Reveal(InsecureSecretAccess::Get()));
  }

  HttpAuthResult Check(std::string_view authorization, const Requirement& req,
                       Attribution attribution = Attribution::kKeyIdOnly) {
    const std::string_view values[] = {authorization};
    HttpRequestFacts facts;
    facts.authorization = values;
    facts.tls = true;
    facts.client_address = "127.0.0.1";
    return auth->Check(facts, req, attribution);
  }

  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<testing::OutageKeyStore> store;
  std::shared_ptr<FakeClock> clock;
  std::unique_ptr<KeyManager> manager;
  std::unique_ptr<HttpAuthenticator> auth;
  Requirement read = Requirement::AnyValidKey();  // set by the constructor
  Requirement write = Requirement::AnyValidKey();
};

HttpRequestFacts Tls(absl::Span<const std::string_view> authorization) {
  HttpRequestFacts f;
  f.authorization = authorization;
  f.tls = true;
  f.client_address = "192.0.2.7";
  return f;
}

TEST_CASE("Plain HTTP is rejected before any credential is looked at", "[http_request][tls]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  verifier->answer = OkVerdict(kKeyId);
  const auto auth = MakeAuth(verifier);
  const std::string_view values[] = {"Bearer kg_live_whatever"};
  HttpRequestFacts f = Tls(values);
  f.tls = false;
  const HttpAuthResult r = auth->Check(f, Requirement::AnyValidKey());
  CHECK_FALSE(r.allowed());
  CHECK(r.verdict.outcome == Outcome::kInsecureTransport);
  CHECK(r.verdict.key().empty());
  CHECK(r.decision.status == 403);
  CHECK(Headers(r.decision).count("WWW-Authenticate") == 0);
  CHECK(Headers(r.decision)["Cache-Control"] == "no-store");
  CHECK(r.decision.body.find("https_required") != std::string::npos);
  CHECK(verifier->calls.load() == 0);

  // Opting out (a trusted TLS-terminating proxy sets `tls` itself, or a test).
  HttpAuthOptions o;
  o.require_tls = false;
  const auto lax = MakeAuth(verifier, o);
  CHECK(lax->Check(f, Requirement::AnyValidKey()).allowed());
  CHECK(verifier->calls.load() == 1);
}

TEST_CASE("Two Authorization headers are a 400 invalid_request, even if both are valid",
          "[http_request][invalid_request]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  verifier->answer = OkVerdict(kKeyId);
  const auto auth = MakeAuth(verifier);
  const std::string_view two[] = {"Bearer a", "Bearer a"};
  const HttpAuthResult r = auth->Check(Tls(two), Requirement::AnyValidKey());
  CHECK(r.verdict.outcome == Outcome::kInvalidRequest);
  CHECK(r.decision.status == 400);
  CHECK(Headers(r.decision)["WWW-Authenticate"] ==
        "Bearer realm=\"api\", error=\"invalid_request\", error_description=\"Malformed "
        "Authorization request\"");
  CHECK(verifier->calls.load() == 0);

  const std::string_view one[] = {"Bearer a"};
  CHECK(auth->Check(Tls(one), Requirement::AnyValidKey()).allowed());
  CHECK(verifier->last_authorization == "Bearer a");
}

TEST_CASE("No Authorization header reaches the verifier as an empty value",
          "[http_request][missing]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  verifier->answer.outcome = Outcome::kMissing;
  verifier->last_authorization = "not called";
  const auto auth = MakeAuth(verifier);
  const HttpAuthResult r = auth->Check(Tls({}), Requirement::AnyValidKey());
  CHECK(verifier->calls.load() == 1);
  CHECK(verifier->last_authorization.empty());
  CHECK(r.decision.status == 401);
  CHECK(Headers(r.decision)["WWW-Authenticate"] == "Bearer realm=\"api\"");
}

TEST_CASE("A credential in the query string is a 400 invalid_request",
          "[http_request][invalid_request][query]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  verifier->answer = OkVerdict(kKeyId);
  const auto auth = MakeAuth(verifier);
  const std::string_view values[] = {"Bearer a"};

  SECTION("parsed parameter names") {
    for (std::string_view name : {"api_key", "access_token", "API_KEY", "Access_Token"}) {
      const std::string_view names[] = {"page", name};
      HttpRequestFacts f = Tls(values);
      f.query_parameter_names = names;
      INFO(name);
      CHECK(auth->Check(f, Requirement::AnyValidKey()).decision.status == 400);
    }
    const std::string_view harmless[] = {"page", "api_keys", "token", "key"};
    HttpRequestFacts f = Tls(values);
    f.query_parameter_names = harmless;
    CHECK(auth->Check(f, Requirement::AnyValidKey()).allowed());
  }
  SECTION("raw query strings") {
    for (std::string_view q :
         {"api_key=kg_live_x", "page=2&api_key=x", "api_key", "api_key=", "access_token=abc&x=1",
          "x=1;access_token=y", "api%5Fkey=x", "%61ccess_token=x", "ApI_KeY=1", "a=1&&api_key"}) {
      HttpRequestFacts f = Tls(values);
      f.raw_query = q;
      INFO(q);
      const HttpAuthResult r = auth->Check(f, Requirement::AnyValidKey());
      CHECK(r.verdict.outcome == Outcome::kInvalidRequest);
      CHECK(r.decision.status == 400);
    }
    for (std::string_view q : {"", "page=2", "x=api_key", "api_keys=1", "my_api_key=1",
                               "q=access_token%3D1", "api+key=1", "%ZZapi_key=1"}) {
      HttpRequestFacts f = Tls(values);
      f.raw_query = q;
      INFO(q);
      CHECK(auth->Check(f, Requirement::AnyValidKey()).allowed());
    }
  }
  SECTION("the list of credential parameters is configurable") {
    HttpAuthOptions o;
    o.credential_query_parameters = {"apikey"};
    const auto custom = MakeAuth(verifier, o);
    HttpRequestFacts f = Tls(values);
    f.raw_query = "apikey=1";
    CHECK(custom->Check(f, Requirement::AnyValidKey()).decision.status == 400);
    f.raw_query = "api_key=1";
    CHECK(custom->Check(f, Requirement::AnyValidKey()).allowed());
  }
  CHECK(QueryCarriesCredential("a=1&api_key=2", HttpAuthOptions{}.credential_query_parameters));
  CHECK_FALSE(QueryCarriesCredential("a=1", HttpAuthOptions{}.credential_query_parameters));
}

TEST_CASE("QueryOfTarget takes the query of a request target, without the fragment",
          "[http_request][query]") {
  CHECK(QueryOfTarget("/v1/projects?a=1&b=2") == "a=1&b=2");
  CHECK(QueryOfTarget("/v1/projects?x=1;api_key=2#frag") == "x=1;api_key=2");
  CHECK(QueryOfTarget("/p?a=1?b=2") == "a=1?b=2");
  CHECK(QueryOfTarget("https://api.example/p?q=1") == "q=1");
  CHECK(QueryOfTarget("/p?") == "");
  CHECK(QueryOfTarget("/p") == "");
  CHECK(QueryOfTarget("/p#api_key=1") == "");
  CHECK(QueryOfTarget("") == "");
}

TEST_CASE("The response table with real keys: one identical 401 for every unusable token",
          "[http_request][oracle]") {
  Fixture fx;
  std::string revoked_id;
  const std::string good = fx.Create("good", {"read:all"});
  const std::string revoked =
      fx.Create("revoked", {"read:all"}, "production", std::nullopt, &revoked_id);
  REQUIRE(fx.manager->Revoke(revoked_id, "test").ok());
  const std::string expired =
      fx.Create("expired", {"read:all"}, "production", fx.clock->Now() + absl::Seconds(5));
  fx.clock->Advance(absl::Seconds(10));
  const std::string preview = fx.Create("preview", {"read:all"}, "preview");
  // A well-formed token with a valid checksum that the store does not know:
  // the token of a deleted key.
  std::string deleted_id;
  const std::string deleted =
      fx.Create("deleted", {"read:all"}, "production", std::nullopt, &deleted_id);
  REQUIRE(fx.manager->Delete(deleted_id, "test").ok());
  std::string corrupted = good;
  corrupted.back() = corrupted.back() == 'a' ? 'b' : 'a';  // checksum no longer matches

  const HttpAuthResult ok = fx.Check(good, fx.read);
  CHECK(ok.allowed());
  CHECK(ok.verdict.key().size() == kKeyIdLength);
  CHECK(ok.decision.status == 0);
  CHECK_FALSE(ok.principal.has_value());  // not asked for

  struct Case {
    std::string_view name;
    std::string header;
    Outcome outcome;
  };
  const std::vector<Case> cases = {
      {"malformed", "Bearer garbage", Outcome::kMalformed},
      {"bad checksum", corrupted, Outcome::kMalformed},
      {"unknown", deleted, Outcome::kUnknown},
      {"revoked", revoked, Outcome::kRevoked},
      {"expired", expired, Outcome::kExpired},
      {"wrong environment", preview, Outcome::kWrongEnvironment},
  };
  const HttpAuthResult first = fx.Check(cases.front().header, fx.read);
  CHECK(first.decision.status == 401);
  CHECK(Headers(first.decision)["WWW-Authenticate"] ==
        "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"The API key is "
        "invalid\"");
  for (const Case& c : cases) {
    INFO(c.name);
    const HttpAuthResult r = fx.Check(c.header, fx.read);
    CHECK(r.verdict.outcome == c.outcome);  // distinct for the server's logs
    CHECK(r.decision.status == first.decision.status);
    CHECK(r.decision.headers == first.decision.headers);
    CHECK(r.decision.body == first.decision.body);
  }

  SECTION("a non-Bearer scheme is a plain 401 challenge (RFC 6750 3.1)") {
    const HttpAuthResult r = fx.Check("Basic YWxpY2U6c2VjcmV0", fx.read);
    CHECK(r.verdict.outcome == Outcome::kMissing);
    CHECK(r.decision.status == 401);
    const HttpAuthResult none = fx.Check("", fx.read);
    CHECK(r.decision.headers == none.decision.headers);  // no error code
  }
  SECTION("a missing scope is a 403 naming it") {
    const HttpAuthResult r = fx.Check(good, fx.write);
    CHECK(r.verdict.outcome == Outcome::kInsufficientScope);
    CHECK(r.verdict.key() == ok.verdict.key());
    CHECK(r.decision.status == 403);
    CHECK(Headers(r.decision)["WWW-Authenticate"] ==
          "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"write:all\"");
  }
  SECTION("a store that is down is a 503 with Retry-After, never a 200") {
    fx.store->SetUnavailable(true);
    const HttpAuthResult r = fx.Check(good, fx.read);
    CHECK(r.verdict.outcome == Outcome::kUnavailable);
    CHECK(r.decision.status == 503);
    CHECK(Headers(r.decision)["Retry-After"] == "1");
    CHECK(Headers(r.decision)["Cache-Control"] == "no-store");
  }
}

TEST_CASE("Attribution fetches the owner, accounts and metadata of the key",
          "[http_request][attribution]") {
  Fixture fx;
  std::string id;
  const std::string good = fx.Create("ci", {"admin"}, "production", std::nullopt, &id);

  const HttpAuthResult r = fx.Check(good, fx.write, Attribution::kLookup);
  REQUIRE(r.allowed());
  REQUIRE(r.principal.has_value());
  CHECK(r.principal->key_id == id);
  CHECK(r.principal->key_name == "ci");
  CHECK(r.principal->owner == "alice");
  CHECK(r.principal->environment == "production");
  CHECK(r.principal->accounts == std::vector<std::string>{"acct_1"});
  CHECK(r.principal->metadata.at("team") == "billing");
  CHECK(r.principal->scopes == std::vector<std::string>{"admin"});

  SECTION("a lookup that fails turns an allowed request into a 503") {
    auto verifier = std::make_shared<ScriptedVerifier>();
    verifier->answer = OkVerdict(id);
    HttpAuthOptions o;
    o.principal_lookup = LookupPrincipalInStore(fx.store);
    const auto auth = MakeAuth(verifier, o);
    fx.store->SetUnavailable(true);
    const std::string_view values[] = {"Bearer x"};
    const HttpAuthResult down = auth->Check(Tls(values), fx.write, Attribution::kLookup);
    CHECK_FALSE(down.allowed());
    CHECK(down.verdict.outcome == Outcome::kUnavailable);
    CHECK(down.decision.status == 503);
    // Without attribution the same request is allowed (nothing to look up).
    CHECK(auth->Check(Tls(values), fx.write).allowed());
  }
  SECTION("a key deleted before the lookup answers as an unknown key") {
    auto verifier = std::make_shared<ScriptedVerifier>();
    verifier->answer = OkVerdict(id);
    HttpAuthOptions o;
    o.principal_lookup = LookupPrincipalInStore(fx.store);
    const auto auth = MakeAuth(verifier, o);
    REQUIRE(fx.manager->Delete(id, "test").ok());
    const std::string_view values[] = {"Bearer x"};
    const HttpAuthResult gone = auth->Check(Tls(values), fx.write, Attribution::kLookup);
    CHECK(gone.verdict.outcome == Outcome::kUnknown);
    CHECK(gone.decision.status == 401);
  }
  SECTION("a lookup that returns another key's record is not trusted") {
    auto verifier = std::make_shared<ScriptedVerifier>();
    verifier->answer = OkVerdict(kKeyId);
    HttpAuthOptions o;
    o.principal_lookup = [&](std::string_view) -> absl::StatusOr<Principal> {
      Principal p;
      p.key_id = id;  // not the verified key
      return p;
    };
    const auto auth = MakeAuth(verifier, o);
    const std::string_view values[] = {"Bearer x"};
    CHECK(auth->Check(Tls(values), fx.write, Attribution::kLookup).decision.status == 503);
  }
  SECTION("no lookup configured fails closed") {
    auto verifier = std::make_shared<ScriptedVerifier>();
    verifier->answer = OkVerdict(kKeyId);
    const auto auth = MakeAuth(verifier);
    const std::string_view values[] = {"Bearer x"};
    CHECK(auth->Check(Tls(values), fx.write, Attribution::kLookup).decision.status == 503);
  }
}

TEST_CASE("A verifier that throws fails closed with a 503", "[http_request][unavailable]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  verifier->answer = OkVerdict(kKeyId);
  verifier->throw_ = true;
  const auto auth = MakeAuth(verifier);
  const std::string_view values[] = {"Bearer x"};
  const HttpAuthResult r = auth->Check(Tls(values), Requirement::AnyValidKey());
  CHECK(verifier->calls.load() == 1);
  CHECK(r.verdict.outcome == Outcome::kUnavailable);
  CHECK(r.decision.status == 503);
}

TEST_CASE("HttpAuthenticator::Create refuses options that cannot work", "[http_request][create]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  absl::StatusOr<std::unique_ptr<HttpAuthenticator>> a = HttpAuthenticator::Create({});
  CHECK(a.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(a.status().message() == "verifier: must not be null");

  HttpAuthOptions o;
  o.verifier = verifier;
  o.http.realm = "api\r\nSet-Cookie: x";
  a = HttpAuthenticator::Create(o);
  CHECK(a.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(a.status().message().rfind("http.realm: ", 0) == 0);

  o.http = {};
  o.credential_query_parameters = {"access_token", ""};
  a = HttpAuthenticator::Create(o);
  CHECK(a.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(a.status().message() == "credential_query_parameters[1]: must not be empty");

  o.credential_query_parameters = {"access_token"};
  CHECK(HttpAuthenticator::Create(o).ok());
}

TEST_CASE("Rate-limit state reaches the response headers", "[http_request][rate_limit]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  verifier->answer = OkVerdict(kKeyId);
  verifier->answer.rate.limit = 5;
  verifier->answer.rate.remaining = 4;
  verifier->answer.rate.window_ns = 60'000'000'000;
  verifier->answer.rate.reset_ns = 12'000'000'000;
  HttpAuthOptions o;
  o.http.policy_name = "per-key";
  const auto auth = MakeAuth(verifier, o);
  const std::string_view values[] = {"Bearer x"};

  HttpAuthResult r = auth->Check(Tls(values), Requirement::AnyValidKey());
  CHECK(r.allowed());
  CHECK(Headers(r.decision)["RateLimit-Policy"] == "\"per-key\";q=5;w=60");
  CHECK(Headers(r.decision)["RateLimit"] == "\"per-key\";r=4;t=12");

  verifier->answer.outcome = Outcome::kRateLimited;
  verifier->answer.rate.remaining = 0;
  verifier->answer.rate.retry_after_ns = 2'500'000'000;
  r = auth->Check(Tls(values), Requirement::AnyValidKey());
  CHECK(r.decision.status == 429);
  CHECK(Headers(r.decision)["Retry-After"] == "3");
  CHECK(Headers(r.decision)["RateLimit"] == "\"per-key\";r=0;t=3");
}

TEST_CASE("The verifier sees the authenticator's clock", "[http_request][clock]") {
  auto verifier = std::make_shared<ScriptedVerifier>();
  auto clock = std::make_shared<FakeClock>(absl::FromUnixSeconds(1'900'000'000));
  HttpAuthOptions o;
  o.clock = clock;
  const auto auth = MakeAuth(verifier, o);
  const std::string_view values[] = {"Bearer x"};
  (void)auth->Check(Tls(values), Requirement::AnyValidKey());
  CHECK(verifier->last_now == absl::FromUnixSeconds(1'900'000'000));
}

TEST_CASE("AddressFilter quotes a rejected entry only if it looks like an address",
          "[http_request][address][secrets]") {
  auto message = [](std::vector<std::string> allowed) {
    absl::StatusOr<std::shared_ptr<const AddressFilter>> r = AddressFilter::Create(allowed);
    REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  };
  // Plausible typos are quoted, so the operator sees what is wrong.
  CHECK(message({"10.0.0.0/8", "10.0.0.300/8"}) ==
        "allowed[1]: '10.0.0.300/8' is not an IP address or CIDR block");
  CHECK(message({"2001:db8::/129"}) ==
        "allowed[0]: '2001:db8::/129' is not an IP address or CIDR block");
  CHECK(message({"[::1/64"}) == "allowed[0]: '[::1/64' is not an IP address or CIDR block");

  // A token pasted into the wrong option is never echoed, nor is any part
  // of it.
  absl::StatusOr<Secret> token = GenerateToken("kg", "live");
  REQUIRE(token.ok());
  const std::string revealed(token->Reveal(InsecureSecretAccess::Get()));
  const std::string token_message = message({"10.0.0.0/8", revealed});
  CHECK(token_message == "allowed[1]: not an IP address or CIDR block");
  CHECK(token_message.find(revealed.substr(8, 12)) == std::string::npos);

  // Nor anything outside the address characters (control characters, a
  // word) or too long to be an address, even if made of hex digits.
  for (const std::string& bad :
       {std::string("10.0.0.1\n"), std::string("10.0.0.1\x1b[2J"), std::string("localhost"),
        std::string("10.0.0.0 /8"), std::string(51, 'a'), std::string(64, '1')}) {
    INFO(bad.size());
    CHECK(message({bad}) == "allowed[0]: not an IP address or CIDR block");
  }
  // The longest IPv6 block written out is still quoted when mistyped.
  const std::string longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/129";
  REQUIRE(longest.size() == 49);
  CHECK(message({longest}) == "allowed[0]: '" + longest + "' is not an IP address or CIDR block");
}

TEST_CASE("AddressFilter matches IPv4 and IPv6 CIDR blocks", "[http_request][address]") {
  const std::vector<std::string> blocks = {"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"};
  auto filter = AddressFilter::Create(blocks);
  REQUIRE(filter.ok());
  const AddressFilter& f = **filter;
  CHECK(f.Allows("10.1.2.3"));
  CHECK(f.Allows("::ffff:10.200.0.1"));
  CHECK(f.Allows("192.0.2.7"));
  CHECK_FALSE(f.Allows("192.0.2.8"));
  CHECK_FALSE(f.Allows("11.0.0.1"));
  CHECK(f.Allows("2001:db8:1::5"));
  CHECK(f.Allows("[2001:db8::1]"));
  CHECK(f.Allows("::1"));
  CHECK_FALSE(f.Allows("2001:db9::1"));
  CHECK_FALSE(f.Allows("not an address"));
  CHECK_FALSE(f.Allows(""));

  const std::vector<std::string> odd = {"10.0.0.0/12"};
  auto odd_filter = AddressFilter::Create(odd);
  REQUIRE(odd_filter.ok());
  CHECK((*odd_filter)->Allows("10.15.255.255"));
  CHECK_FALSE((*odd_filter)->Allows("10.16.0.0"));

  for (std::string bad :
       {"10.0.0.0/33", "::/129", "10.0.0/8", "nonsense", "1.2.3.4/", "1.2.3.4/x"}) {
    const std::vector<std::string> one = {bad};
    auto r = AddressFilter::Create(one);
    INFO(bad);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(r.status().message()).find("allowed[0]") != std::string::npos);
  }

  auto verifier = std::make_shared<ScriptedVerifier>();
  verifier->answer = OkVerdict(kKeyId);
  HttpAuthOptions o;
  o.address_filter = *filter;
  const auto auth = MakeAuth(verifier, o);
  const std::string_view values[] = {"Bearer x"};
  HttpRequestFacts facts = Tls(values);
  facts.client_address = "10.9.9.9";
  CHECK(auth->Check(facts, Requirement::AnyValidKey()).allowed());
  facts.client_address = "203.0.113.1";
  const HttpAuthResult denied = auth->Check(facts, Requirement::AnyValidKey());
  CHECK(denied.verdict.outcome == Outcome::kDeniedByIp);
  CHECK(denied.decision.status == 403);
  CHECK(verifier->calls.load() == 1);
}

TEST_CASE("AddressFilter refuses an address with a NUL byte instead of reading up to it",
          "[http_request][address]") {
  // The address is parsed as a C string: before the fix, "::" followed by a
  // NUL and anything at all was the block "::/90", and a client address
  // "10.0.0.1<NUL>junk" was 10.0.0.1 (found by fuzz/address_filter_fuzz.cc).
  auto bytes = [](const auto& literal) { return std::string(literal, sizeof(literal) - 1); };
  for (const std::string& bad :
       {bytes("::\0garbage/90"), bytes("10.0.0.1\0junk"), bytes("10.0.0.1\0/8")}) {
    const std::vector<std::string> one = {bad};
    auto r = AddressFilter::Create(one);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(r.status().message() == "allowed[0]: not an IP address or CIDR block");
  }
  const std::vector<std::string> blocks = {"10.0.0.0/8", "::/0"};
  auto filter = AddressFilter::Create(blocks);
  REQUIRE(filter.ok());
  CHECK((*filter)->Allows("10.0.0.1"));
  CHECK_FALSE((*filter)->Allows(bytes("10.0.0.1\0junk")));
  CHECK_FALSE((*filter)->Allows(bytes("::1\0")));
  CHECK((*filter)->Allows("::1%eth0"));  // a zone is still ignored
}

TEST_CASE("AddressFilter accepts IPv4-mapped IPv6 blocks as the IPv4 blocks they cover",
          "[http_request][address]") {
  // "::ffff:10.0.0.0/104" is 10.0.0.0/8 written in IPv6: the prefix counts
  // the 96 bits of "::ffff:" too. It matches a client in either notation.
  const std::vector<std::string> blocks = {"::ffff:10.0.0.0/104", "[::ffff:192.0.2.0]/120",
                                           "::ffff:198.51.100.7"};
  auto filter = AddressFilter::Create(blocks);
  REQUIRE(filter.ok());
  const AddressFilter& f = **filter;
  CHECK(f.Allows("::ffff:10.1.2.3"));
  CHECK(f.Allows("10.1.2.3"));
  CHECK(f.Allows("10.255.255.255"));
  CHECK_FALSE(f.Allows("11.0.0.1"));
  CHECK_FALSE(f.Allows("::ffff:11.0.0.1"));
  CHECK_FALSE(f.Allows("9.255.255.255"));
  CHECK(f.Allows("192.0.2.200"));
  CHECK(f.Allows("::ffff:192.0.2.1"));
  CHECK_FALSE(f.Allows("192.0.3.1"));
  CHECK(f.Allows("198.51.100.7"));
  CHECK_FALSE(f.Allows("198.51.100.8"));
  // IPv6 clients are not IPv4: neither the bytes after "::ffff:" in another
  // prefix nor the IPv4-compatible form match.
  CHECK_FALSE(f.Allows("::10.1.2.3"));
  CHECK_FALSE(f.Allows("64:ff9b::10.1.2.3"));
  CHECK_FALSE(f.Allows("2001:db8::a01:203"));

  // /96 is every IPv4 address (and nothing else); /128 one address.
  const std::vector<std::string> all_v4 = {"::ffff:0.0.0.0/96"};
  auto all = AddressFilter::Create(all_v4);
  REQUIRE(all.ok());
  CHECK((*all)->Allows("203.0.113.9"));
  CHECK((*all)->Allows("::ffff:0.0.0.1"));
  CHECK_FALSE((*all)->Allows("::1"));
  CHECK_FALSE((*all)->Allows("2001:db8::1"));
  const std::vector<std::string> one_v4 = {"::ffff:10.0.0.1/128"};
  auto one = AddressFilter::Create(one_v4);
  REQUIRE(one.ok());
  CHECK((*one)->Allows("10.0.0.1"));
  CHECK_FALSE((*one)->Allows("10.0.0.2"));

  // A prefix shorter than 96 bits would span IPv4 and IPv6 space alike (and
  // was once read as an IPv4 prefix: "::ffff:10.0.0.0/8" as 10.0.0.0/8): it
  // is refused, quoted, saying why.
  for (const std::string bad : {"::ffff:10.0.0.0/8", "::ffff:0.0.0.0/95", "::ffff:0:0/80"}) {
    INFO(bad);
    const std::vector<std::string> list = {"10.0.0.0/8", bad};
    auto r = AddressFilter::Create(list);
    REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(r.status().message()) ==
          "allowed[1]: '" + bad +
              "' is an IPv4-mapped IPv6 block with a prefix shorter than /96; write it as an "
              "IPv4 block (a.b.c.d/n)");
  }
  for (const std::string bad : {"::ffff:10.0.0.0/129", "::ffff:10.0.0.0/"}) {
    INFO(bad);
    const std::vector<std::string> list = {bad};
    auto r = AddressFilter::Create(list);
    REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(r.status().message()) ==
          "allowed[0]: '" + bad + "' is not an IP address or CIDR block");
  }
  // Never an echo of a long entry, whatever the reason: one that is no
  // address, and one that is (its zone id is ignored) with too short a
  // prefix.
  const std::vector<std::string> too_long = {"0000:0000:0000:0000:0000:ffff:10.0.0.0/8" +
                                             std::string(20, '0')};
  auto tl = AddressFilter::Create(too_long);
  REQUIRE(tl.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(tl.status().message()) == "allowed[0]: not an IP address or CIDR block");
  const std::vector<std::string> long_short_prefix = {"::ffff:10.0.0.0%" + std::string(40, 'a') +
                                                      "/8"};
  auto lp = AddressFilter::Create(long_short_prefix);
  REQUIRE(lp.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(lp.status().message()) ==
        "allowed[0]: an IPv4-mapped IPv6 block with a prefix shorter than /96; write it as an "
        "IPv4 block (a.b.c.d/n)");
}

}  // namespace
}  // namespace keygate
