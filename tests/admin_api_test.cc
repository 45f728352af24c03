// AdminApi (keygate/admin/admin_api.h): authentication of every route, each route's answers and
// audit entries, strict input (problems naming the field, never a 500) and the headers every
// response carries.

#include "keygate/admin/admin_api.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/envelope.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "test_util.h"

namespace keygate {
namespace {

using nlohmann::json;
using testing::MustOk;

using Fields = std::vector<std::pair<std::string, std::string>>;

std::string HeaderOf(const AdminResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "";
}

std::size_t CountHeader(const AdminResponse& r, std::string_view name) {
  std::size_t n = 0;
  for (const auto& h : r.headers) n += h.first == name ? 1 : 0;
  return n;
}

json Body(const AdminResponse& r) {
  INFO(r.body);
  json j = json::parse(r.body, nullptr, false);
  REQUIRE(!j.is_discarded());
  return j;
}

// A deployment, a memory store, a manager and an AdminApi whose admin keys verify in
// "production"; alice holds an admin key, bob a read:all key.
std::shared_ptr<const Envelope> TestEnvelope() {
  return MustOk(Envelope::FromKeys(Secret(std::string(32, 'k'))));
}

struct Admin {
  // With `envelope`, recoverable keys are on; with `webhook_secret_per_key` too, keys with a
  // webhook URL get their own signing secrets.
  explicit Admin(AdminApi::Options tweaks = {}, bool require_tls = true,
                 std::shared_ptr<const Envelope> envelope = nullptr,
                 bool webhook_secret_per_key = false) {
    deployment = MustOk(Deployment::Create({}));
    store = std::make_shared<MemoryKeyStore>();
    KeyManager::Options m;
    m.deployment = deployment;
    m.store = store;
    m.envelope = std::move(envelope);
    m.webhook_secret_per_key = webhook_secret_per_key;
    manager = MustOk(KeyManager::Create(std::move(m)));
    auto verifier = MustOk(ReferenceVerifier::Create(
        {.deployment = deployment, .store = store, .environment = "production"}));
    HttpAuthOptions auth;
    auth.verifier = AdaptVerifier(std::move(verifier));
    auth.require_tls = require_tls;
    tweaks.manager = manager;
    tweaks.authenticator = MustOk(HttpAuthenticator::Create(std::move(auth)));
    api = MustOk(AdminApi::Create(std::move(tweaks)));
    admin_token = Mint("alice", {"admin"});
    reader_token = Mint("bob", {"read:all"});
  }

  // A new key's token (and its id in *id).
  std::string Mint(const std::string& owner, std::vector<std::string> scopes,
                   const std::string& environment = "production", std::string* id = nullptr) {
    CreateKeyRequest r;
    r.name = owner + "-key";
    r.owner = owner;
    r.environment = environment;
    r.scopes = std::move(scopes);
    CreatedKey k = MustOk(manager->Create(r, "setup"));
    if (id != nullptr) *id = k.record.id;
    return std::string(k.token.Reveal(InsecureSecretAccess::Get()));
  }

  AdminResponse Call(std::string_view method, std::string_view target, std::string_view body = "",
                     Fields extra = {}, std::optional<std::string> token = std::nullopt) const {
    const std::string bearer = "Bearer " + token.value_or(admin_token);
    Fields fields = std::move(extra);
    if (!(token.has_value() && token->empty())) fields.emplace_back("Authorization", bearer);
    if (!body.empty()) {
      bool typed = false;
      for (const auto& f : fields) typed = typed || f.first == "Content-Type";
      if (!typed) fields.emplace_back("Content-Type", "application/json");
    }
    std::vector<std::pair<std::string_view, std::string_view>> views;
    for (const auto& [n, v] : fields) views.emplace_back(n, v);
    AdminRequest req;
    req.method = method;
    req.target = target;
    req.headers = views;
    req.body = body;
    req.tls = true;
    req.client_address = "127.0.0.1";
    return api->Handle(req);
  }

  // Creates a key through the API; returns the response body.
  json CreateKey(const json& request) const {
    AdminResponse r = Call("POST", "/admin/api/v1/keys", request.dump());
    INFO(r.body);
    REQUIRE(r.status == 201);
    return Body(r);
  }

  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<MemoryKeyStore> store;
  std::shared_ptr<KeyManager> manager;
  std::unique_ptr<AdminApi> api;
  std::string admin_token;
  std::string reader_token;
};

// Every route of the API with a method it takes ({id}: an existing key).
struct RouteCall {
  std::string method;
  std::string path;
  std::string body;
};
std::vector<RouteCall> EveryRoute(const std::string& id) {
  const std::string k = "/admin/api/v1/keys/" + id;
  return {
      {"GET", "/admin/api/v1/keys", ""},
      {"POST", "/admin/api/v1/keys", R"({"name":"n","environment":"preview"})"},
      {"GET", k, ""},
      {"PATCH", k, R"({"name":"m"})"},
      {"DELETE", k, ""},
      {"POST", k + "/revoke", ""},
      {"POST", k + "/restore", ""},
      {"POST", k + "/roll", ""},
      {"POST", k + "/reveal", ""},
      {"POST", "/admin/api/v1/personal-keys", R"({"owner":"carol","environment":"preview"})"},
      {"GET", "/admin/api/v1/audit", ""},
      {"GET", "/admin/api/v1/scopes", ""},
      {"GET", "/admin/api/v1/environments", ""},
      {"GET", "/admin/api/v1/me", ""},
      {"GET", k + "/webhook-deliveries", ""},
      {"GET", "/admin/api/v1/webhook-deliveries", ""},
      {"POST", k + "/webhook-secret", ""},
  };
}

TEST_CASE("AdminApi refuses every route to a request without an admin key", "[admin][auth]") {
  Admin a;
  const json key = a.CreateKey({{"name", "target"}, {"environment", "preview"}});
  const std::string id = key["key"]["id"];
  std::string mallory_id;
  const std::string revoked_admin = a.Mint("mallory", {"admin"}, "production", &mallory_id);
  REQUIRE(MustOk(a.manager->Revoke(mallory_id, "setup")).state == KeyState::kRevoked);
  const std::string preview_admin = a.Mint("eve", {"admin"}, "preview");

  for (const RouteCall& c : EveryRoute(id)) {
    INFO(c.method << " " << c.path);
    const Fields if_match = {{"If-Match", "*"}};
    // No key: 401 with the Bearer challenge.
    AdminResponse r = a.Call(c.method, c.path, c.body, if_match, std::string());
    CHECK(r.status == 401);
    CHECK(HeaderOf(r, "WWW-Authenticate").rfind("Bearer", 0) == 0);
    CHECK(HeaderOf(r, "Content-Type") == "application/problem+json");
    // A valid key without the admin scope: 403.
    r = a.Call(c.method, c.path, c.body, if_match, a.reader_token);
    CHECK(r.status == 403);
    CHECK(Body(r)["status"] == 403);
    // A revoked admin key, an admin key of another environment, a malformed token: 401.
    CHECK(a.Call(c.method, c.path, c.body, if_match, revoked_admin).status == 401);
    CHECK(a.Call(c.method, c.path, c.body, if_match, preview_admin).status == 401);
    CHECK(a.Call(c.method, c.path, c.body, if_match, "kg_live_nope").status == 401);
  }
  // Nothing was changed by the refused requests.
  CHECK(MustOk(a.manager->Get(id)).version == 1);
  CHECK(MustOk(a.manager->List({})).keys.size() == 5);
}

TEST_CASE("AdminApi refuses plain HTTP unless the authenticator allows it", "[admin][auth]") {
  Admin a;
  std::pair<std::string_view, std::string_view> auth[] = {
      {"Authorization", "Bearer " + a.admin_token}};
  const std::string bearer = "Bearer " + a.admin_token;
  auth[0].second = bearer;
  AdminRequest req;
  req.method = "GET";
  req.target = "/admin/api/v1/me";
  req.headers = auth;
  req.tls = false;
  AdminResponse r = a.api->Handle(req);
  CHECK(r.status == 403);
  CHECK(r.body.find(a.admin_token) == std::string::npos);

  Admin plain({}, /*require_tls=*/false);
  const std::string plain_bearer = "Bearer " + plain.admin_token;
  auth[0].second = plain_bearer;
  CHECK(plain.api->Handle(req).status == 200);
}

TEST_CASE("AdminApi creates a key, shows its token once and records the caller", "[admin]") {
  Admin a;
  const json request = {{"name", "ci-pipeline"},
                        {"description", "builds\nand deploys"},
                        {"environment", "production"},
                        {"scopes", {"read:all", "write:all"}},
                        {"expires", "2099-01-01T00:00:00Z"},
                        {"rate_limit", {{"rate", 10}, {"period_ms", 1000}, {"burst", 20}}},
                        {"webhook_url", "https://hooks.example.com/keygate"},
                        {"accounts", {"acct-1", "acct-2"}},
                        {"metadata", {{"team", "infra"}}}};
  AdminResponse r = a.Call("POST", "/admin/api/v1/keys", request.dump());
  INFO(r.body);
  REQUIRE(r.status == 201);
  CHECK(HeaderOf(r, "Cache-Control") == "no-store");
  CHECK(CountHeader(r, "Cache-Control") == 1);
  const json body = Body(r);
  const json& key = body["key"];
  const std::string token = body["token"];
  CHECK(token.rfind("kg_live_", 0) == 0);
  CHECK(HeaderOf(r, "Location") == "/admin/api/v1/keys/" + key["id"].get<std::string>());
  CHECK(HeaderOf(r, "ETag") == "\"1\"");
  CHECK(key["name"] == "ci-pipeline");
  CHECK(key["owner"] == "alice");  // the caller's owner by default
  CHECK(key["kind"] == "general");
  CHECK(key["scopes"] == json({"read:all", "write:all"}));
  CHECK(key["expires"] == "2099-01-01T00:00:00Z");
  CHECK(key["rate_limit"] == json({{"rate", 10}, {"period_ms", 1000}, {"burst", 20}}));
  CHECK(key["accounts"] == json({"acct-1", "acct-2"}));
  CHECK(key["metadata"] == json({{"team", "infra"}}));
  CHECK(key["state"] == "active");
  CHECK(!key.contains("digest"));

  // The token works, and is never shown again.
  const KeyRecord stored = MustOk(a.manager->Get(key["id"].get<std::string>()));
  CHECK(stored.hint.substr(stored.hint.size() - 4) == token.substr(token.size() - 4));
  AdminResponse shown = a.Call("GET", "/admin/api/v1/keys/" + stored.id);
  REQUIRE(shown.status == 200);
  CHECK(shown.body.find(token) == std::string::npos);
  CHECK(HeaderOf(shown, "ETag") == "\"1\"");

  // The audit entry names the caller's owner as the actor.
  AdminResponse audit = a.Call("GET", "/admin/api/v1/audit?key_id=" + stored.id);
  REQUIRE(audit.status == 200);
  const json events = Body(audit)["events"];
  REQUIRE(events.size() == 1);
  CHECK(events[0]["type"] == "created");
  CHECK(events[0]["actor"] == "alice");
  CHECK(audit.body.find(token) == std::string::npos);

  // An owner given explicitly is kept.
  const json other = a.CreateKey({{"name", "svc"}, {"environment", "preview"}, {"owner", "dave"}});
  CHECK(other["key"]["owner"] == "dave");
}

TEST_CASE("AdminApi lists, filters, searches and pages keys", "[admin]") {
  Admin a;
  for (int i = 0; i < 7; ++i) {
    a.CreateKey({{"name", absl::StrCat("svc-", i)},
                 {"environment", i % 2 == 0 ? "preview" : "production"}});
  }
  json page = Body(a.Call("GET", "/admin/api/v1/keys?environment=preview"));
  CHECK(page["keys"].size() == 4);
  for (const json& k : page["keys"]) CHECK(k["environment"] == "preview");
  page = Body(a.Call("GET", "/admin/api/v1/keys?name=SVC-3"));
  REQUIRE(page["keys"].size() == 1);
  CHECK(page["keys"][0]["name"] == "svc-3");
  page = Body(a.Call("GET", "/admin/api/v1/keys?owner=bob"));
  REQUIRE(page["keys"].size() == 1);
  CHECK(page["keys"][0]["owner"] == "bob");

  // Every key, three at a time, each once.
  std::vector<std::string> ids;
  std::string cursor;
  for (int pages = 0; pages < 10; ++pages) {
    std::string target = "/admin/api/v1/keys?limit=3";
    if (!cursor.empty()) target += "&cursor=" + cursor;
    page = Body(a.Call("GET", target));
    CHECK(page["keys"].size() <= 3);
    for (const json& k : page["keys"]) ids.push_back(k["id"]);
    if (page["next_cursor"].is_null()) break;
    cursor = page["next_cursor"];
  }
  CHECK(ids.size() == 9);  // 7 + the two setup keys
  std::sort(ids.begin(), ids.end());
  CHECK(std::unique(ids.begin(), ids.end()) == ids.end());

  AdminResponse bad = a.Call("GET", "/admin/api/v1/keys?state=blocked");
  CHECK(bad.status == 400);
  CHECK(Body(bad)["field"] == "state");
  bad = a.Call("GET", "/admin/api/v1/keys?limit=0");
  CHECK(bad.status == 400);
  CHECK(Body(bad)["field"] == "limit");
  bad = a.Call("GET", "/admin/api/v1/keys?colour=red");
  CHECK(bad.status == 400);
  CHECK(Body(bad)["detail"] == "query: unknown parameter 'colour'");
  bad = a.Call("GET", "/admin/api/v1/keys?limit=1&limit=2");
  CHECK(bad.status == 400);
  bad = a.Call("GET", "/admin/api/v1/keys?cursor=zzz");
  CHECK(bad.status == 400);
}

TEST_CASE("AdminApi modifies a key only with a current If-Match", "[admin]") {
  Admin a;
  const std::string id = a.CreateKey({{"name", "svc"}, {"environment", "preview"}})["key"]["id"];
  const std::string path = "/admin/api/v1/keys/" + id;

  AdminResponse r = a.Call("PATCH", path, R"({"name":"renamed"})");
  CHECK(r.status == 428);
  r = a.Call("PATCH", path, R"({"name":"renamed","scopes":["admin"],"expires":null})",
             {{"If-Match", "\"1\""}});
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(Body(r)["name"] == "renamed");
  CHECK(Body(r)["scopes"] == json({"admin"}));
  CHECK(HeaderOf(r, "ETag") == "\"2\"");
  // The version it was read at is gone: 412 with the current ETag.
  r = a.Call("PATCH", path, R"({"name":"stale"})", {{"If-Match", "\"1\""}});
  CHECK(r.status == 412);
  CHECK(HeaderOf(r, "ETag") == "\"2\"");
  CHECK(MustOk(a.manager->Get(id)).name == "renamed");
  // "*" and lists; weak tags never match.
  CHECK(a.Call("PATCH", path, R"({"description":"d"})", {{"If-Match", "*"}}).status == 200);
  CHECK(a.Call("PATCH", path, R"({"description":"e"})", {{"If-Match", "\"9\", \"3\""}}).status ==
        200);
  CHECK(a.Call("PATCH", path, R"({"description":"f"})", {{"If-Match", "W/\"4\""}}).status == 412);
  CHECK(a.Call("PATCH", path, R"({"description":"f"})", {{"If-Match", "4"}}).status == 400);
  // merge-patch+json is JSON too; rate_limit null clears it.
  r = a.Call("PATCH", path, R"({"rate_limit":{"rate":5,"period_ms":60000}})",
             {{"If-Match", "\"4\""}, {"Content-Type", "application/merge-patch+json"}});
  REQUIRE(r.status == 200);
  CHECK(Body(r)["rate_limit"] == json({{"rate", 5}, {"period_ms", 60000}, {"burst", 1}}));
  r = a.Call("PATCH", path, R"({"rate_limit":null})", {{"If-Match", "\"5\""}});
  REQUIRE(r.status == 200);
  CHECK(Body(r)["rate_limit"].is_null());

  // What cannot change, and what is not a field, is refused by name.
  r = a.Call("PATCH", path, R"({"environment":"production"})", {{"If-Match", "*"}});
  CHECK(r.status == 400);
  CHECK(Body(r)["field"] == "environment");
  r = a.Call("PATCH", path, R"({"version":7})", {{"If-Match", "*"}});
  CHECK(r.status == 400);
  CHECK(Body(r)["detail"] == "body: unknown member 'version'");
  r = a.Call("PATCH", path, R"({"scopes":["nope"]})", {{"If-Match", "*"}});
  CHECK(r.status == 400);
  CHECK(Body(r)["field"] == "scopes");
  r = a.Call("PATCH", path, R"({"rate_limit":{"rate":5,"period_ms":0}})", {{"If-Match", "*"}});
  CHECK(r.status == 400);
  CHECK(Body(r)["field"] == "rate_limit.period_ms");

  // The audit log holds one "modified" entry per change, by alice.
  const json events = Body(a.Call("GET", "/admin/api/v1/audit?key_id=" + id))["events"];
  REQUIRE(events.size() == 6);
  for (std::size_t i = 1; i < events.size(); ++i) {
    CHECK(events[i]["type"] == "modified");
    CHECK(events[i]["actor"] == "alice");
  }
}

TEST_CASE("AdminApi revokes, restores, rolls and deletes a key", "[admin]") {
  Admin a;
  const json created = a.CreateKey({{"name", "svc"}, {"environment", "production"}});
  const std::string id = created["key"]["id"];
  const std::string token = created["token"];
  const std::string path = "/admin/api/v1/keys/" + id;
  auto verifier = MustOk(ReferenceVerifier::Create(
      {.deployment = a.deployment, .store = a.store, .environment = "production"}));
  const auto outcome = [&](const std::string& t) {
    return verifier->Verify("Bearer " + t, Requirement::AnyValidKey(), absl::Now()).outcome;
  };
  REQUIRE(outcome(token) == Outcome::kOk);

  AdminResponse r = a.Call("POST", path + "/revoke");
  REQUIRE(r.status == 200);
  CHECK(Body(r)["state"] == "revoked");
  CHECK(outcome(token) == Outcome::kRevoked);
  r = a.Call("POST", path + "/restore");
  REQUIRE(r.status == 200);
  CHECK(Body(r)["state"] == "active");
  CHECK(outcome(token) == Outcome::kOk);

  r = a.Call("POST", path + "/roll", R"({"grace_seconds":3600})");
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(HeaderOf(r, "Cache-Control") == "no-store");
  const std::string rolled = Body(r)["token"];
  CHECK(rolled != token);
  CHECK(!Body(r)["key"]["previous"].is_null());
  CHECK(outcome(rolled) == Outcome::kOk);
  CHECK(outcome(token) == Outcome::kOk);  // within the grace period
  r = a.Call("POST", path + "/roll", R"({"grace_seconds":2592001})");
  CHECK(r.status == 400);
  CHECK(Body(r)["field"] == "grace_seconds");
  r = a.Call("POST", path + "/roll");  // no body: no grace
  REQUIRE(r.status == 200);
  CHECK(outcome(rolled) == Outcome::kUnknown);

  // Delete: a stale If-Match is refused, then the key is gone.
  r = a.Call("DELETE", path, "", {{"If-Match", "\"1\""}});
  CHECK(r.status == 412);
  r = a.Call("DELETE", path);
  CHECK(r.status == 204);
  CHECK(r.body.empty());
  CHECK(a.Call("GET", path).status == 404);
  CHECK(a.Call("DELETE", path).status == 404);
  CHECK(a.Call("POST", path + "/revoke").status == 404);

  std::vector<std::string> types;
  const json events = Body(a.Call("GET", "/admin/api/v1/audit?key_id=" + id))["events"];
  for (const json& e : events) {
    types.push_back(e["type"]);
    CHECK(e["actor"] == "alice");
  }
  CHECK(types ==
        std::vector<std::string>{"created", "revoked", "restored", "rolled", "rolled", "deleted"});
}

TEST_CASE("AdminApi shows a key's own webhook secret once and rolls it", "[admin][webhooks]") {
  // Off: keys have none; rolling one is refused with the reason.
  Admin off({}, true, TestEnvelope());
  const json plain = off.CreateKey({{"name", "svc"},
                                    {"environment", "production"},
                                    {"webhook_url", "https://hooks.example.com/k"}});
  CHECK(!plain.contains("webhook_secret"));
  CHECK(plain["key"]["own_webhook_secret"] == false);
  CHECK(Body(off.Call("GET", "/admin/api/v1/me"))["webhook_secret_per_key"] == false);
  AdminResponse r = off.Call(
      "POST", "/admin/api/v1/keys/" + plain["key"]["id"].get<std::string>() + "/webhook-secret");
  CHECK(r.status == 409);
  CHECK_THAT(Body(r)["detail"].get<std::string>(),
             Catch::Contains("per-key webhook secrets are off"));

  Admin a({}, true, TestEnvelope(), /*webhook_secret_per_key=*/true);
  CHECK(Body(a.Call("GET", "/admin/api/v1/me"))["webhook_secret_per_key"] == true);
  const json created = a.CreateKey({{"name", "svc"},
                                    {"environment", "production"},
                                    {"webhook_url", "https://hooks.example.com/k"}});
  const std::string first = created["webhook_secret"];
  CHECK(first.rfind("whsec_", 0) == 0);
  CHECK(created["key"]["own_webhook_secret"] == true);
  const std::string id = created["key"]["id"];
  const std::string path = "/admin/api/v1/keys/" + id;
  // Never again: not in the key, the list or the audit log.
  for (const std::string& read :
       {path, std::string("/admin/api/v1/keys"), "/admin/api/v1/audit?key_id=" + id}) {
    AdminResponse got = a.Call("GET", read);
    CHECK(got.status == 200);
    CHECK(got.body.find(first.substr(6)) == std::string::npos);
    CHECK(got.body.find("kge1.") == std::string::npos);
  }
  r = a.Call("POST", path + "/webhook-secret", R"({"overlap_seconds":3600})");
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(HeaderOf(r, "Cache-Control") == "no-store");
  CHECK(HeaderOf(r, "ETag") == "\"2\"");
  const std::string second = Body(r)["webhook_secret"];
  CHECK(second.rfind("whsec_", 0) == 0);
  CHECK(second != first);
  CHECK(!Body(r).contains("token"));
  CHECK(a.Call("POST", path + "/webhook-secret", R"({"overlap_seconds":-1})").status == 400);
  CHECK(a.Call("POST", path + "/webhook-secret", R"({"grace_seconds":1})").status == 400);
  CHECK(a.Call("POST", path + "/webhook-secret", "", {}, a.reader_token).status == 403);
  CHECK(a.Call("POST", "/admin/api/v1/keys/key_000000000000000000000000/webhook-secret").status ==
        404);
  const json no_url = a.CreateKey({{"name", "no-url"}, {"environment", "production"}});
  CHECK(!no_url.contains("webhook_secret"));
  r = a.Call("POST",
             "/admin/api/v1/keys/" + no_url["key"]["id"].get<std::string>() + "/webhook-secret");
  CHECK(r.status == 409);
  CHECK_THAT(Body(r)["detail"].get<std::string>(), Catch::Contains("has no webhook URL"));
  const json events = Body(a.Call("GET", "/admin/api/v1/audit?key_id=" + id))["events"];
  REQUIRE(events.size() == 2);
  CHECK(events[1]["type"] == "modified");
  CHECK(events[1]["changed_fields"] == json::array({"webhook_secret"}));
}

TEST_CASE("AdminApi reveals a recoverable key's token, recorded, and only then", "[admin]") {
  // Off: every key is hash-only; the problem says why and what to do.
  Admin off;
  const json plain = off.CreateKey({{"name", "svc"}, {"environment", "production"}});
  CHECK(plain["key"]["recoverable"] == false);
  CHECK(Body(off.Call("GET", "/admin/api/v1/me"))["recoverable_keys"] == false);
  AdminResponse r =
      off.Call("POST", "/admin/api/v1/keys/" + plain["key"]["id"].get<std::string>() + "/reveal");
  CHECK(r.status == 409);
  CHECK(Body(r)["detail"].get<std::string>().find("recoverable keys are off") != std::string::npos);

  Admin a({}, true, TestEnvelope());
  CHECK(Body(a.Call("GET", "/admin/api/v1/me"))["recoverable_keys"] == true);
  const json created = a.CreateKey({{"name", "svc"}, {"environment", "production"}});
  CHECK(created["key"]["recoverable"] == true);
  CHECK(created.dump().find("kge1.") == std::string::npos);  // the sealed copy never leaves
  const std::string id = created["key"]["id"];
  const std::string path = "/admin/api/v1/keys/" + id;
  r = a.Call("POST", path + "/reveal");
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(HeaderOf(r, "Cache-Control") == "no-store");
  CHECK(Body(r)["token"] == created["token"]);
  CHECK(Body(r)["key"]["version"] == 2);  // the reveal is a recorded write
  CHECK(HeaderOf(r, "ETag") == "\"2\"");
  CHECK(a.Call("POST", path + "/reveal", R"({"grace_seconds":1})").status == 400);  // no fields

  // After a roll, the new token; the old one is never revealed again.
  r = a.Call("POST", path + "/roll", R"({"grace_seconds":60})");
  REQUIRE(r.status == 200);
  const std::string rolled = Body(r)["token"];
  r = a.Call("POST", path + "/reveal");
  REQUIRE(r.status == 200);
  CHECK(Body(r)["token"] == rolled);

  // A key created without the envelope (before recoverable keys were on) is hash-only.
  KeyManager::Options mo;
  mo.deployment = a.deployment;
  mo.store = a.store;
  std::unique_ptr<KeyManager> plain_manager = MustOk(KeyManager::Create(std::move(mo)));
  CreateKeyRequest req;
  req.name = "old";
  req.owner = "dave";
  req.environment = "production";
  const CreatedKey old = MustOk(plain_manager->Create(req, "setup"));
  r = a.Call("POST", "/admin/api/v1/keys/" + old.record.id + "/reveal");
  CHECK(r.status == 409);
  CHECK(Body(r)["detail"].get<std::string>().find("not recoverable") != std::string::npos);
  CHECK(a.Call("POST", "/admin/api/v1/keys/key_000000000000000000000000/reveal").status == 404);
  // Not for a non-admin key, which cannot tell whether the key exists.
  CHECK(a.Call("POST", path + "/reveal", "", {}, a.reader_token).status == 403);

  std::vector<std::string> types;
  const json events = Body(a.Call("GET", "/admin/api/v1/audit?key_id=" + id))["events"];
  for (const json& e : events) {
    types.push_back(e["type"]);
    CHECK(e["actor"] == "alice");
  }
  CHECK(types == std::vector<std::string>{"created", "revealed", "rolled", "revealed"});
}

// A delivery log as a WebhookDispatcher keeps it: for `key_id`, a delivered message (a 500, then
// a 204) and a pending one (no response yet, retried later); for any other key, nothing. Records
// what it was asked.
struct FakeDeliveryLog {
  std::string key_id;
  mutable std::vector<std::pair<std::string, std::size_t>> asked;

  WebhookDeliveryLog Source() const {
    return [this](std::string_view key,
                  std::size_t limit) -> absl::StatusOr<std::vector<WebhookDelivery>> {
      asked.emplace_back(std::string(key), limit);
      if (!key.empty() && key != key_id) return std::vector<WebhookDelivery>{};
      const absl::Time t = absl::FromUnixSeconds(1'800'000'000);
      WebhookDelivery pending;
      pending.sequence = 7;
      pending.key_id = key_id;
      pending.id = "msg_pending";
      pending.type = "key.revoked";
      pending.url = "https://hooks.example.com/keygate";
      pending.state = WebhookDelivery::State::kPending;
      pending.next_attempt = t + absl::Seconds(5);
      pending.attempts.push_back(
          {t, 0, absl::Microseconds(5'000'250), "", "connect: Connection refused"});
      WebhookDelivery delivered;
      delivered.sequence = 3;
      delivered.key_id = key_id;
      delivered.id = "msg_delivered";
      delivered.type = "key.created";
      delivered.url = "https://hooks.example.com/keygate";
      delivered.state = WebhookDelivery::State::kDelivered;
      delivered.next_attempt = t;
      delivered.attempts.push_back(
          {t - absl::Seconds(9), 500, absl::Microseconds(12'345), "203.0.113.7", "HTTP 500"});
      delivered.attempts.push_back(
          {t - absl::Seconds(4), 204, absl::Microseconds(8'000), "203.0.113.7", ""});
      return std::vector<WebhookDelivery>{pending, delivered};
    };
  }
};

TEST_CASE("AdminApi shows a key's webhook deliveries with their attempts", "[admin][webhooks]") {
  FakeDeliveryLog log;
  Admin a({.webhook_deliveries = log.Source()});
  const std::string id = a.CreateKey({{"name", "svc"}, {"environment", "production"}})["key"]["id"];
  log.key_id = id;
  const std::string path = "/admin/api/v1/keys/" + id + "/webhook-deliveries";

  AdminResponse r = a.Call("GET", path + "?limit=20");
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(HeaderOf(r, "Content-Type") == "application/json");
  REQUIRE(log.asked.size() == 1);
  CHECK(log.asked[0] == std::pair<std::string, std::size_t>{id, 20});
  const json body = Body(r);
  REQUIRE(body["deliveries"].size() == 2);
  const json& pending = body["deliveries"][0];
  CHECK(pending == json::parse(R"({"id":"msg_pending","key_id":")" + id + R"(",
      "type":"key.revoked","url":"https://hooks.example.com/keygate","state":"pending",
      "sequence":7,"next_attempt":"2027-01-15T08:00:05Z",
      "attempts":[{"at":"2027-01-15T08:00:00Z","status":null,"latency_ms":5000.25,
                   "address":null,"error":"connect: Connection refused"}]})"));
  const json& delivered = body["deliveries"][1];
  CHECK(delivered["state"] == "delivered");
  CHECK(delivered["next_attempt"].is_null());  // only a pending message has one
  REQUIRE(delivered["attempts"].size() == 2);
  CHECK(delivered["attempts"][0]["status"] == 500);
  CHECK(delivered["attempts"][0]["latency_ms"] == 12.345);
  CHECK(delivered["attempts"][0]["address"] == "203.0.113.7");
  CHECK(delivered["attempts"][1]["status"] == 204);
  CHECK(delivered["attempts"][1]["error"].is_null());
  CHECK(r.body.find("whsec_") == std::string::npos);

  // The default limit; an admin reads every key's log.
  CHECK(a.Call("GET", path).status == 200);
  CHECK(log.asked.back().second == 50);
  r = a.Call("GET", "/admin/api/v1/webhook-deliveries?limit=1000");
  REQUIRE(r.status == 200);
  CHECK(log.asked.back() == std::pair<std::string, std::size_t>{"", 1000});
  CHECK(Body(r)["deliveries"].size() == 2);

  // A key of another owner, asked by a key without the admin scope: 403 before any lookup.
  const std::size_t asked = log.asked.size();
  CHECK(a.Call("GET", path, "", {}, a.reader_token).status == 403);
  CHECK(a.Call("GET", "/admin/api/v1/webhook-deliveries", "", {}, a.reader_token).status == 403);
  CHECK(log.asked.size() == asked);

  // A key that never existed: 404, as on GET /keys/{id}. A deleted one keeps its log.
  r = a.Call("GET", "/admin/api/v1/keys/key_000000000000000000000000/webhook-deliveries");
  CHECK(r.status == 404);
  CHECK(Body(r)["code"] == "not_found");
  REQUIRE(a.Call("DELETE", "/admin/api/v1/keys/" + id).status == 204);
  r = a.Call("GET", path);
  CHECK(r.status == 200);
  CHECK(Body(r)["deliveries"].size() == 2);

  // Bad parameters name the parameter.
  for (const std::string& query :
       std::vector<std::string>{"?limit=0", "?limit=1001", "?limit=x", "?key_id=" + id}) {
    INFO(query);
    r = a.Call("GET", path + query);
    CHECK(r.status == 400);
    CHECK(Body(r)["code"] == "invalid_argument");
  }
  CHECK(a.Call("POST", path, "").status == 405);
}

TEST_CASE("AdminApi without a delivery log answers its webhook routes 404 webhooks_off",
          "[admin][webhooks]") {
  Admin a;
  const std::string id = a.CreateKey({{"name", "svc"}, {"environment", "production"}})["key"]["id"];
  for (const std::string& path :
       std::vector<std::string>{"/admin/api/v1/keys/" + id + "/webhook-deliveries",
                                "/admin/api/v1/webhook-deliveries"}) {
    INFO(path);
    AdminResponse r = a.Call("GET", path);
    CHECK(r.status == 404);
    CHECK(HeaderOf(r, "Content-Type") == "application/problem+json");
    const json body = Body(r);
    CHECK(body["code"] == "webhooks_off");
    CHECK(body["detail"].get<std::string>().find("no webhook dispatcher") != std::string::npos);
    // Still only for admins.
    CHECK(a.Call("GET", path, "", {}, a.reader_token).status == 403);
  }
  // The log's errors are the store's: a log that is down is a 503.
  Admin down(
      {.webhook_deliveries = [](std::string_view,
                                std::size_t) -> absl::StatusOr<std::vector<WebhookDelivery>> {
        return absl::UnavailableError("webhook state: database is locked");
      }});
  AdminResponse r = down.Call("GET", "/admin/api/v1/webhook-deliveries");
  CHECK(r.status == 503);
  CHECK(HeaderOf(r, "Retry-After") == "1");
}

TEST_CASE("AdminApi provisions a user's personal key once", "[admin]") {
  Admin a;
  const std::string body = R"({"owner":"carol","environment":"preview","scopes":["read:all"]})";
  AdminResponse first = a.Call("POST", "/admin/api/v1/personal-keys", body);
  INFO(first.body);
  REQUIRE(first.status == 201);
  CHECK(Body(first)["key"]["kind"] == "personal");
  CHECK(Body(first)["token"].is_string());
  AdminResponse again = a.Call("POST", "/admin/api/v1/personal-keys", body);
  REQUIRE(again.status == 200);
  const json again_body = Body(again);
  CHECK(!again_body.contains("token"));
  CHECK(again_body["key"]["id"] == Body(first)["key"]["id"]);
  const json listed = Body(a.Call("GET", "/admin/api/v1/keys?owner=carol&kind=personal"))["keys"];
  REQUIRE(listed.size() == 1);
  AdminResponse bad = a.Call("POST", "/admin/api/v1/personal-keys", R"({"owner":"carol"})");
  CHECK(bad.status == 400);
  CHECK(Body(bad)["field"] == "environment");
}

TEST_CASE("AdminApi describes the deployment and the caller", "[admin]") {
  Admin a;
  const json scopes = Body(a.Call("GET", "/admin/api/v1/scopes"))["scopes"];
  bool admin_implies_both = false;
  for (const json& s : scopes) {
    if (s["name"] == "admin") admin_implies_both = s["implies"] == json({"read:all", "write:all"});
  }
  CHECK(admin_implies_both);
  const json envs = Body(a.Call("GET", "/admin/api/v1/environments"))["environments"];
  REQUIRE(envs.size() == 2);
  CHECK(envs[0]["name"] == "preview");
  CHECK(envs[1]["tag"] == "live");
  const json me = Body(a.Call("GET", "/admin/api/v1/me"));
  CHECK(me["owner"] == "alice");
  CHECK(me["scopes"] == json({"admin"}));
  CHECK(me.dump().find(a.admin_token) == std::string::npos);
}

TEST_CASE("AdminApi answers bad input with a problem naming the field, never a 500",
          "[admin][input]") {
  Admin a;
  struct Case {
    std::string body;
    int status;
    std::string detail;
  };
  const std::string token_like = a.admin_token;
  const std::vector<Case> cases = {
      {R"({"name":"x","environment":"preview","name":"y"})", 400, "body: duplicate member 'name'"},
      {std::string(R"({"name":"x)") + "\xC3\x28" + R"(","environment":"preview"})", 400,
       "body: not valid UTF-8 (byte 10)"},
      {std::string(20, '[') + std::string(20, ']'), 400, "body: nested deeper than 16 levels"},
      {R"({"name":"x","environment":"preview",)", 400, "body: not valid JSON (byte 37)"},
      {R"(["name"])", 400, "body: must be a JSON object"},
      {R"({"name":7,"environment":"preview"})", 400, "name: must be a string"},
      {R"({"name":"x","environment":"preview","scopes":"admin"})", 400,
       "scopes: must be an array of strings"},
      {R"({"name":"x","environment":"preview","scopes":["admin",3]})", 400,
       "scopes[1]: must be a string"},
      {R"({"name":"x","environment":"preview","scopes":["nope"]})", 400,
       "scopes: unknown scope 'nope'"},
      {R"({"name":"x","environment":"preview","expires":"tomorrow"})", 400,
       "expires: must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\""},
      {R"({"name":"x","environment":"preview","rate_limit":{"rate":-1,"period_ms":1}})", 400,
       "rate_limit.rate: must be between 0 and 1000000000"},
      {R"({"name":"x","environment":"preview","rate_limit":{"period_ms":1}})", 400,
       "rate_limit.rate: required"},
      {R"({"name":"x","environment":"preview","rate_limit":{"rate":1,"period_ms":1,"x":1}})", 400,
       "rate_limit: unknown member 'x'"},
      {R"({"name":"x","environment":"preview","metadata":{"a":1}})", 400,
       "metadata: the value of 'a' must be a string"},
      {R"({"name":"x","environment":"preview","kind":"robot"})", 400,
       "kind: must be \"general\" or \"personal\""},
      {R"({"name":"x"})", 400, "environment: required"},
      {R"({"name":"x","environment":"preview","Colour":1})", 400,
       "body: unknown member (a member name of another form)"},
      {R"({"name":"x","environment":"preview","webhook_url":"http://example.com"})", 400, ""},
      // A token pasted into a field or a member name is refused without being quoted.
      {R"({"name":")" + token_like + R"(","environment":"preview"})", 400, ""},
      {R"({")" + token_like + R"(":1,"name":"x","environment":"preview"})", 400,
       "body: unknown member (a member name of another form)"},
  };
  for (const Case& c : cases) {
    INFO(c.body);
    AdminResponse r = a.Call("POST", "/admin/api/v1/keys", c.body);
    INFO(r.body);
    CHECK(r.status == c.status);
    CHECK(HeaderOf(r, "Content-Type") == "application/problem+json");
    const json p = Body(r);
    CHECK(p["type"] == "about:blank");
    CHECK(p["status"] == c.status);
    if (!c.detail.empty()) CHECK(p["detail"] == c.detail);
    CHECK(r.body.find(token_like) == std::string::npos);
  }
  CHECK(MustOk(a.manager->List({})).keys.size() == 2);  // nothing was created

  // Not JSON, no body, too large, unknown routes and methods.
  AdminResponse r =
      a.Call("POST", "/admin/api/v1/keys", "name=x", {{"Content-Type", "text/plain"}});
  CHECK(r.status == 415);
  r = a.Call("POST", "/admin/api/v1/keys", "");
  CHECK(r.status == 415);
  r = a.Call("POST", "/admin/api/v1/keys", " ", {{"Content-Type", "application/json"}});
  CHECK(r.status == 400);
  CHECK(Body(r)["field"] == "body");
  Admin small({.max_body_bytes = 64});
  r = small.Call("POST", "/admin/api/v1/keys", std::string(65, ' '));
  CHECK(r.status == 413);
  r = a.Call("GET", "/admin/api/v1/nothing");
  CHECK(r.status == 404);
  r = a.Call("GET", "/elsewhere");
  CHECK(r.status == 404);
  r = a.Call("PUT", "/admin/api/v1/keys");
  CHECK(r.status == 405);
  CHECK(HeaderOf(r, "Allow") == "GET, HEAD, POST");
  r = a.Call("POST", "/admin/api/v1/scopes");
  CHECK(r.status == 405);
  r = a.Call("POST", "/admin/api/v1/keys/key_00000000000000000000000000/revoke", R"({"x":1})");
  CHECK(r.status == 400);
  r = a.Call("GET", "/admin/api/v1/keys/%zz");
  CHECK(r.status == 404);
  r = a.Call("GET", "/admin/api/v1/keys/" + token_like);
  CHECK(r.status == 404);
  CHECK(r.body.find(token_like) == std::string::npos);
  r = a.Call("GET", "/admin/api/v1/audit?since=yesterday");
  CHECK(r.status == 400);
  CHECK(Body(r)["field"] == "since");
  r = a.Call("GET", "/admin/api/v1/me?x=1");
  CHECK(r.status == 400);
  // A credential in the query is refused before anything else (the authenticator's rule).
  r = a.Call("GET", "/admin/api/v1/keys?access_token=abc");
  CHECK(r.status == 400);
}

TEST_CASE("AdminApi answers with security headers and CORS only for listed origins",
          "[admin][headers]") {
  Admin a;
  for (const AdminResponse& r :
       {a.Call("GET", "/admin/api/v1/me"), a.Call("GET", "/admin/api/v1/nothing"),
        a.Call("GET", "/admin/api/v1/me", "", {}, std::string())}) {
    CHECK(HeaderOf(r, "Content-Security-Policy").find("frame-ancestors 'none'") !=
          std::string::npos);
    CHECK(HeaderOf(r, "X-Content-Type-Options") == "nosniff");
    CHECK(HeaderOf(r, "Referrer-Policy") == "no-referrer");
    CHECK(HeaderOf(r, "X-Frame-Options") == "DENY");
    CHECK(HeaderOf(r, "Cache-Control") == "no-store");
    CHECK(CountHeader(r, "Access-Control-Allow-Origin") == 0);
  }
  // CORS off: a preflight is just a method the route does not take.
  AdminResponse pre =
      a.Call("OPTIONS", "/admin/api/v1/keys", "",
             {{"Origin", "https://console.example.com"}, {"Access-Control-Request-Method", "POST"}},
             std::string());
  CHECK(pre.status == 405);
  CHECK(CountHeader(pre, "Access-Control-Allow-Origin") == 0);

  Admin cors({.cors_allowed_origins = {"https://console.example.com"}});
  pre = cors.Call(
      "OPTIONS", "/admin/api/v1/keys", "",
      {{"Origin", "https://console.example.com"}, {"Access-Control-Request-Method", "POST"}},
      std::string());
  CHECK(pre.status == 204);
  CHECK(HeaderOf(pre, "Access-Control-Allow-Origin") == "https://console.example.com");
  CHECK(HeaderOf(pre, "Access-Control-Allow-Methods") == "GET, HEAD, POST");
  AdminResponse r =
      cors.Call("GET", "/admin/api/v1/me", "", {{"Origin", "https://console.example.com"}});
  CHECK(r.status == 200);
  CHECK(HeaderOf(r, "Access-Control-Allow-Origin") == "https://console.example.com");
  CHECK(HeaderOf(r, "Vary") == "Origin");
  r = cors.Call("GET", "/admin/api/v1/me", "", {{"Origin", "https://evil.example.com"}});
  CHECK(CountHeader(r, "Access-Control-Allow-Origin") == 0);
  pre = cors.Call("OPTIONS", "/admin/api/v1/keys", "", {{"Origin", "https://evil.example.com"}},
                  std::string());
  CHECK(pre.status == 405);
}

TEST_CASE("AdminApi::Create refuses options that would not work", "[admin]") {
  Admin a;
  const auto with = [&](AdminApi::Options o) {
    o.manager = o.manager ? o.manager : a.manager;
    o.authenticator = a.api->options().authenticator;
    return AdminApi::Create(std::move(o)).status();
  };
  CHECK(AdminApi::Create({}).status().message() == "manager: must be set");
  CHECK(AdminApi::Create({.manager = a.manager}).status().message() ==
        "authenticator: must be set");
  for (const char* bad : {"admin", "/admin/", "/a//b", "/a/../b", "/a b"}) {
    INFO(bad);
    CHECK(with({.base_path = bad}).message().rfind("base_path:", 0) == 0);
  }
  CHECK(with({.base_path = ""}).ok());
  CHECK(with({.base_path = "/ops/keys"}).ok());
  CHECK(with({.max_body_bytes = 0}).message().rfind("max_body_bytes:", 0) == 0);
  for (const char* bad : {"https://Console.example.com", "https://a.example.com/", "ftp://a",
                          "https://", "https://a:", "*"}) {
    INFO(bad);
    CHECK(with({.cors_allowed_origins = {"https://ok.example.com", bad}})
              .message()
              .rfind("cors_allowed_origins[1]:", 0) == 0);
  }
  CHECK(with({.cors_allowed_origins = {"http://localhost:8443", "https://[::1]:9"}}).ok());
}

TEST_CASE("AdminApi serves its OpenAPI document without a key, at any base path", "[admin]") {
  Admin a({.base_path = "/ops"});
  CHECK(a.api->Serves("/ops/api/v1/keys?x=1"));
  CHECK(a.api->Serves("/ops"));
  CHECK(!a.api->Serves("/opsx/api"));
  CHECK(!a.api->Serves("/admin/api/v1/keys"));
  AdminResponse r = a.Call("GET", "/ops/api/v1/openapi.json", "", {}, std::string());
  REQUIRE(r.status == 200);
  const json doc = Body(r);
  CHECK(doc["openapi"].get<std::string>().rfind("3.1", 0) == 0);
  CHECK(a.Call("HEAD", "/ops/api/v1/openapi.json", "", {}, std::string()).body.empty());
  // HEAD gets no body, errors included.
  AdminResponse head = a.Call("HEAD", "/ops/api/v2/keys");
  CHECK(head.status == 404);
  CHECK(head.body.empty());
  head = a.Call("HEAD", "/ops/api/v1/keys", "", {}, std::string());
  CHECK(head.status == 401);
  CHECK(head.body.empty());
  CHECK(a.Call("GET", "/ops/api/v1/keys").status == 200);
  CHECK(a.Call("GET", "/admin/api/v1/keys").status == 404);
}

TEST_CASE("AdminApi serves the console's files without a key, under a strict CSP", "[admin]") {
  Admin a({.base_path = "/ops"});
  AdminResponse r = a.Call("GET", "/ops", "", {}, std::string());
  CHECK(r.status == 308);
  CHECK(HeaderOf(r, "Location") == "/ops/");
  r = a.Call("GET", "/ops/", "", {}, std::string());
  REQUIRE(r.status == 200);
  CHECK(HeaderOf(r, "Content-Type") == "text/html; charset=utf-8");
  CHECK(r.body.find("<script src=\"console.js\" defer></script>") != std::string::npos);
  const std::string csp = HeaderOf(r, "Content-Security-Policy");
  CHECK(CountHeader(r, "Content-Security-Policy") == 1);
  CHECK(csp.find("script-src 'self'") != std::string::npos);
  CHECK(csp.find("require-trusted-types-for 'script'") != std::string::npos);
  CHECK(csp.find("unsafe") == std::string::npos);
  CHECK(HeaderOf(r, "X-Content-Type-Options") == "nosniff");
  CHECK(HeaderOf(r, "Cache-Control") == "no-store");
  CHECK(a.Call("GET", "/ops/index.html", "", {}, std::string()).body == r.body);
  for (const auto& [file, type] : std::vector<std::pair<std::string, std::string>>{
           {"console.js", "text/javascript; charset=utf-8"},
           {"console.css", "text/css; charset=utf-8"},
           {"favicon.svg", "image/svg+xml"}}) {
    INFO(file);
    AdminResponse f = a.Call("GET", "/ops/" + file, "", {}, std::string());
    CHECK(f.status == 200);
    CHECK(HeaderOf(f, "Content-Type") == type);
    CHECK(!f.body.empty());
    AdminResponse head = a.Call("HEAD", "/ops/" + file, "", {}, std::string());
    CHECK(head.status == 200);
    CHECK(head.body.empty());
  }
  // The page keeps the admin key in memory: nothing in the script stores it.
  const std::string js = a.Call("GET", "/ops/console.js", "", {}, std::string()).body;
  for (const std::string_view sink : {"localStorage", "sessionStorage", "document.cookie",
                                      "innerHTML", "outerHTML", "insertAdjacentHTML", "eval("}) {
    INFO(sink);
    CHECK(js.find(sink) == std::string::npos);
  }
  r = a.Call("POST", "/ops/console.js", "{}", {}, std::string());
  CHECK(r.status == 405);
  CHECK(HeaderOf(r, "Allow") == "GET, HEAD");
  CHECK(a.Call("GET", "/ops/nothing.js", "", {}, std::string()).status == 404);
  CHECK(a.Call("GET", "/ops/../ops/console.js", "", {}, std::string()).status == 404);
  // The API keeps its own policy.
  CHECK(HeaderOf(a.Call("GET", "/ops/api/v1/keys"), "Content-Security-Policy") ==
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");

  Admin off({.base_path = "/ops", .serve_console = false});
  CHECK(off.Call("GET", "/ops/", "", {}, std::string()).status == 404);
  CHECK(off.Call("GET", "/ops", "", {}, std::string()).status == 404);
  CHECK(off.Call("GET", "/ops/console.js", "", {}, std::string()).status == 404);
  CHECK(off.Call("GET", "/ops/api/v1/keys").status == 200);
}

// Calls every operation of the OpenAPI document, with answers of most documented statuses, and
// writes each exchange to $KEYGATE_ADMIN_TRANSCRIPT (one JSON object a line) when it is set:
// tests/admin/check_openapi.py validates each response against the document's schemas.
TEST_CASE("AdminApi answers every operation of its OpenAPI document", "[admin][openapi]") {
  FakeDeliveryLog log;
  Admin a({.webhook_deliveries = log.Source()}, true, TestEnvelope(),
          /*webhook_secret_per_key=*/true);
  const json doc = Body(a.Call("GET", "/admin/api/v1/openapi.json", "", {}, std::string()));
  std::vector<json> transcript;
  std::set<std::string> answered;  // "METHOD /template"
  const auto call = [&](std::string_view method, const std::string& path_template,
                        const std::string& path, std::string_view body = "", Fields extra = {},
                        std::optional<std::string> token = std::nullopt) {
    AdminResponse r = a.Call(method, "/admin/api/v1" + path, body, std::move(extra), token);
    INFO(method << " " << path << " -> " << r.status << " " << r.body);
    CHECK(r.status < 500);
    std::string lower(method);
    for (char& c : lower) c = static_cast<char>(c - 'A' + 'a');
    CHECK(doc["paths"].contains(path_template));
    if (doc["paths"].contains(path_template)) {
      CHECK(doc["paths"][path_template].contains(lower));
    }
    answered.insert(absl::StrCat(lower, " ", path_template));
    transcript.push_back({{"method", lower},
                          {"path", path_template},
                          {"status", r.status},
                          {"content_type", HeaderOf(r, "Content-Type")},
                          {"body", r.body}});
    return r;
  };
  const json created = Body(call("POST", "/keys", "/keys",
                                 R"({"name":"svc","environment":"production","scopes":["read:all"],
                                     "expires":"2099-01-01T00:00:00Z",
                                     "rate_limit":{"rate":5,"period_ms":1000}})"));
  const std::string id = created["key"]["id"];
  const std::string k = "/keys/" + id;
  log.key_id = id;
  call("GET", "/keys", "/keys?limit=2");
  call("GET", "/keys", "/keys?state=nope");
  call("GET", "/keys", "/keys", "", {}, std::string());
  call("GET", "/keys", "/keys", "", {}, a.reader_token);
  call("POST", "/keys", "/keys", R"({"name":""})");
  call("POST", "/keys", "/keys", "x", {{"Content-Type", "text/plain"}});
  call("GET", "/keys/{id}", k);
  call("GET", "/keys/{id}", "/keys/key_000000000000000000000000");
  call("PATCH", "/keys/{id}", k, R"({"description":"d"})");
  call("PATCH", "/keys/{id}", k, R"({"description":"d"})", {{"If-Match", "\"1\""}});
  call("PATCH", "/keys/{id}", k, R"({"description":"e"})", {{"If-Match", "\"1\""}});
  call("POST", "/keys/{id}/revoke", k + "/revoke");
  call("POST", "/keys/{id}/roll", k + "/roll");
  call("POST", "/keys/{id}/restore", k + "/restore");
  call("POST", "/keys/{id}/roll", k + "/roll", R"({"grace_seconds":60})");
  call("POST", "/keys/{id}/reveal", k + "/reveal");
  call("POST", "/keys/{id}/reveal", "/keys/key_000000000000000000000000/reveal");
  {
    // A hash-only key (created without the envelope): 409.
    KeyManager::Options mo;
    mo.deployment = a.deployment;
    mo.store = a.store;
    std::unique_ptr<KeyManager> plain = MustOk(KeyManager::Create(std::move(mo)));
    CreateKeyRequest req;
    req.name = "hash-only";
    req.owner = "dave";
    req.environment = "production";
    call("POST", "/keys/{id}/reveal",
         "/keys/" + MustOk(plain->Create(req, "setup")).record.id + "/reveal");
  }
  call("POST", "/personal-keys", "/personal-keys", R"({"owner":"carol","environment":"preview"})");
  call("POST", "/personal-keys", "/personal-keys", R"({"owner":"carol","environment":"preview"})");
  {
    // A key with a webhook URL: created with its own secret, which can be rolled; 409 for a key
    // without a URL.
    const json hooked = Body(call("POST", "/keys", "/keys",
                                  R"({"name":"hooked","environment":"production",
                                      "webhook_url":"https://hooks.example.com/k"})"));
    const std::string h = "/keys/" + hooked["key"]["id"].get<std::string>();
    call("POST", "/keys/{id}/webhook-secret", h + "/webhook-secret", R"({"overlap_seconds":60})");
    call("POST", "/keys/{id}/webhook-secret", h + "/webhook-secret", R"({"overlap":60})");
    call("POST", "/keys/{id}/webhook-secret", k + "/webhook-secret");
    call("POST", "/keys/{id}/webhook-secret", "/keys/key_000000000000000000000000/webhook-secret");
  }
  call("GET", "/audit", "/audit?limit=3");
  call("GET", "/audit", "/audit?key_id=" + id);
  call("GET", "/scopes", "/scopes");
  call("GET", "/environments", "/environments");
  call("GET", "/me", "/me");
  call("GET", "/keys/{id}/webhook-deliveries", k + "/webhook-deliveries?limit=5");
  call("GET", "/keys/{id}/webhook-deliveries",
       "/keys/key_000000000000000000000000/webhook-deliveries");
  call("GET", "/keys/{id}/webhook-deliveries", k + "/webhook-deliveries?limit=0");
  call("GET", "/webhook-deliveries", "/webhook-deliveries");
  call("GET", "/webhook-deliveries", "/webhook-deliveries", "", {}, a.reader_token);
  call("GET", "/openapi.json", "/openapi.json", "", {}, std::string());
  call("DELETE", "/keys/{id}", k, "", {{"If-Match", "\"1\""}});
  call("DELETE", "/keys/{id}", k);
  call("DELETE", "/keys/{id}", k);

  // Every operation of the document was answered.
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, operation] : item.items()) {
      if (method == "parameters") continue;
      INFO(method << " " << path);
      CHECK(answered.count(absl::StrCat(method, " ", path)) == 1);
    }
  }
  if (const char* out = std::getenv("KEYGATE_ADMIN_TRANSCRIPT")) {
    std::ofstream f(out);
    for (const json& line : transcript) f << line.dump() << "\n";
    REQUIRE(f.good());
  }
}

}  // namespace
}  // namespace keygate
