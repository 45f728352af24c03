// The admin API in a Boost.Beast server (keygate/admin/beast.h) and in a cpp-httplib server over
// TLS (keygate/admin/httplib.h): requests and answers cross each framework intact.

#include <httplib.h>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "catch.h"
#include "keygate/admin/admin_api.h"
#include "keygate/admin/beast.h"
#include "keygate/admin/httplib.h"
#include "keygate/deployment.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "temp_cert.h"
#include "test_util.h"

namespace keygate {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;
using testing::MustOk;

struct Fixture {
  Fixture() {
    auto deployment = MustOk(Deployment::Create({}));
    auto store = std::make_shared<MemoryKeyStore>();
    KeyManager::Options m;
    m.deployment = deployment;
    m.store = store;
    std::shared_ptr<KeyManager> manager = MustOk(KeyManager::Create(std::move(m)));
    CreateKeyRequest r;
    r.name = "admin";
    r.owner = "alice";
    r.environment = "production";
    r.scopes = {"admin"};
    token =
        std::string(MustOk(manager->Create(r, "setup")).token.Reveal(InsecureSecretAccess::Get()));
    HttpAuthOptions auth;
    auth.verifier = AdaptVerifier(MustOk(ReferenceVerifier::Create(
        {.deployment = deployment, .store = store, .environment = "production"})));
    AdminApi::Options o;
    o.manager = manager;
    o.authenticator = MustOk(HttpAuthenticator::Create(std::move(auth)));
    o.base_path = "/ops.v1";
    api = MustOk(AdminApi::Create(std::move(o)));
  }
  std::shared_ptr<const AdminApi> api;
  std::string token;
};

TEST_CASE("ServeAdminBeast answers a Beast request with the AdminApi's response",
          "[admin][beast]") {
  Fixture f;
  http::request<http::string_body> req{http::verb::post, "/ops.v1/api/v1/keys", 11};
  req.set(http::field::authorization, "Bearer " + f.token);
  req.set(http::field::content_type, "application/json");
  req.body() = R"({"name":"from-beast","environment":"preview"})";
  req.prepare_payload();
  BeastResponse res = ServeAdminBeast(*f.api, req, {.tls = true, .client_address = "::1"});
  INFO(res.body());
  REQUIRE(res.result_int() == 201);
  CHECK(res.version() == 11);
  CHECK(res[http::field::cache_control] == "no-store");
  CHECK(res[http::field::content_length] == std::to_string(res.body().size()));
  const json body = json::parse(res.body());
  CHECK(body["key"]["name"] == "from-beast");
  CHECK(res[http::field::location] ==
        "/ops.v1/api/v1/keys/" + body["key"]["id"].get<std::string>());

  // HEAD: no body and no (wrong) length; 204: no length.
  http::request<http::string_body> head{http::verb::head, "/ops.v1/api/v1/me", 11};
  head.set(http::field::authorization, "Bearer " + f.token);
  res = ServeAdminBeast(*f.api, head, {.tls = true, .client_address = "::1"});
  CHECK(res.result_int() == 200);
  CHECK(res.body().empty());
  CHECK(res.find(http::field::content_length) == res.end());
  http::request<http::string_body> del{
      http::verb::delete_, "/ops.v1/api/v1/keys/" + body["key"]["id"].get<std::string>(), 11};
  del.set(http::field::authorization, "Bearer " + f.token);
  res = ServeAdminBeast(*f.api, del, {.tls = true, .client_address = "::1"});
  CHECK(res.result_int() == 204);
  CHECK(res.find(http::field::content_length) == res.end());

  // Plain HTTP: the authenticator's rule.
  res = ServeAdminBeast(*f.api, head, {.tls = false, .client_address = "::1"});
  CHECK(res.result_int() == 403);
}

TEST_CASE("MountAdminApi serves the AdminApi from a cpp-httplib TLS server", "[admin][httplib]") {
  Fixture f;
  testing::TempCert cert;
  REQUIRE(cert.ok);
  httplib::SSLServer server(cert.cert.c_str(), cert.key.c_str());
  REQUIRE(server.is_valid());
  server.set_payload_max_length(f.api->options().max_body_bytes);
  MountAdminApi(server, f.api);
  server.Get("/other", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("other", "text/plain");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread thread([&] { server.listen_after_bind(); });
  while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  httplib::SSLClient client("127.0.0.1", port);
  client.enable_server_certificate_verification(false);
  const httplib::Headers auth = {{"Authorization", "Bearer " + f.token}};
  auto created =
      client.Post("/ops.v1/api/v1/keys", auth, R"({"name":"from-httplib","environment":"preview"})",
                  "application/json");
  REQUIRE(created);
  INFO(created->body);
  CHECK(created->status == 201);
  CHECK(created->get_header_value("Cache-Control") == "no-store");
  CHECK(created->get_header_value_count("Content-Type") == 1);
  const std::string id = json::parse(created->body)["key"]["id"];

  httplib::Headers if_match = auth;
  if_match.emplace("If-Match", "\"1\"");
  auto patched = client.Patch("/ops.v1/api/v1/keys/" + id, if_match, R"({"name":"renamed"})",
                              "application/merge-patch+json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
  CHECK(patched->get_header_value("ETag") == "\"2\"");
  auto listed = client.Get("/ops.v1/api/v1/keys?name=RENAMED", auth);
  REQUIRE(listed);
  CHECK(json::parse(listed->body)["keys"].size() == 1);
  auto put = client.Put("/ops.v1/api/v1/keys", auth, "{}", "application/json");
  REQUIRE(put);
  CHECK(put->status == 405);
  CHECK(put->get_header_value("Allow") == "GET, HEAD, POST");
  auto denied = client.Get("/ops.v1/api/v1/keys");
  REQUIRE(denied);
  CHECK(denied->status == 401);
  CHECK(denied->get_header_value("Content-Type") == "application/problem+json");
  auto deleted = client.Delete("/ops.v1/api/v1/keys/" + id, auth);
  REQUIRE(deleted);
  CHECK(deleted->status == 204);
  // Other routes are the server's.
  auto other = client.Get("/other");
  REQUIRE(other);
  CHECK(other->body == "other");
  auto outside = client.Get("/opsxv1/api/v1/keys", auth);  // '.' is not a wildcard
  REQUIRE(outside);
  CHECK(outside->status == 404);
  CHECK(outside->get_header_value("Content-Type").empty());  // httplib's own 404

  server.stop();
  thread.join();
}

}  // namespace
}  // namespace keygate
