// libFuzzer target: AdminApi::Handle (keygate/admin/admin_api.h), the whole request path of the
// admin API: routing, authentication, query and JSON body parsing, every route's handler.
// Input: "METHOD\nTARGET\nName: value\n...\n\nBODY"; "$ADMIN" in a header value becomes the
// token of an admin key, so the fuzzer reaches the routes behind authentication. Each input runs
// against a fresh in-memory store holding that admin key and one other key.
// Invariants:
//   - never a 5xx (bad input is always a 4xx; the memory store never fails);
//   - a JSON or problem+json response body is valid JSON (HEAD: no body); a problem names its
//     status;
//   - the admin key's token never appears in a response.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keygate/admin/admin_api.h"
#include "keygate/deployment.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"

namespace {

using keygate::AdminApi;
using keygate::AdminRequest;
using keygate::AdminResponse;

struct Fixture {
  std::unique_ptr<AdminApi> api;
  std::string admin_token;
};

Fixture Build() {
  auto deployment = *keygate::Deployment::Create({});
  auto store = std::make_shared<keygate::MemoryKeyStore>();
  keygate::KeyManager::Options m;
  m.deployment = deployment;
  m.store = store;
  std::shared_ptr<keygate::KeyManager> manager = *keygate::KeyManager::Create(std::move(m));
  keygate::CreateKeyRequest r;
  r.name = "admin";
  r.owner = "alice";
  r.environment = "production";
  r.scopes = {"admin"};
  Fixture f;
  f.admin_token =
      std::string((*manager->Create(r, "fuzz")).token.Reveal(keygate::InsecureSecretAccess::Get()));
  r.name = "other";
  r.scopes = {"read:all"};
  (void)manager->Create(r, "fuzz");
  keygate::HttpAuthOptions auth;
  auth.verifier = keygate::AdaptVerifier(*keygate::ReferenceVerifier::Create(
      {.deployment = deployment, .store = store, .environment = "production"}));
  AdminApi::Options o;
  o.manager = std::move(manager);
  o.authenticator = *keygate::HttpAuthenticator::Create(std::move(auth));
  o.max_body_bytes = 4096;
  o.cors_allowed_origins = {"https://console.example.com"};
  f.api = *AdminApi::Create(std::move(o));
  return f;
}

std::string_view Line(std::string_view* in) {
  const std::size_t nl = in->find('\n');
  const std::string_view line = in->substr(0, nl);
  in->remove_prefix(nl == std::string_view::npos ? in->size() : nl + 1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const Fixture f = Build();
  const std::string_view method = Line(&in);
  const std::string_view target = Line(&in);
  std::vector<std::string> values;  // header values with $ADMIN replaced
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  values.reserve(64);
  while (!in.empty() && headers.size() < 64) {
    const std::string_view line = Line(&in);
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    std::string value(line.substr(colon == std::string_view::npos ? line.size() : colon + 1));
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    for (std::size_t at; (at = value.find("$ADMIN")) != std::string::npos;) {
      value.replace(at, 6, f.admin_token);
    }
    values.push_back(std::move(value));
    headers.emplace_back(line.substr(0, colon), values.back());
  }
  AdminRequest req;
  req.method = method;
  req.target = target;
  req.headers = headers;
  req.body = in;
  req.tls = true;
  req.client_address = "127.0.0.1";
  const AdminResponse r = f.api->Handle(req);

  if (r.status < 200 || r.status >= 500) std::abort();
  if (r.body.find(f.admin_token) != std::string::npos) std::abort();
  if (method == "HEAD" && !r.body.empty()) std::abort();
  for (const auto& [name, value] : r.headers) {
    if (name != "Content-Type" || method == "HEAD") continue;
    if (value.find("json") == std::string::npos) continue;
    const nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
    if (body.is_discarded()) std::abort();
    if (value == "application/problem+json" && body.value("status", 0) != r.status) std::abort();
  }
  return 0;
}
