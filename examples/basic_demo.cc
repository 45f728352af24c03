// keygate basic demo: issues keys on an in-memory store, then authenticates
// a series of requests and prints each verdict with the HTTP answer a server
// would send. Exits non-zero if any verdict differs from the expected one, so
// it doubles as a smoke test.

#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "keygate/keygate.h"

namespace {

std::string TokenText(const keygate::Secret& token) {
  return std::string(token.Reveal(keygate::InsecureSecretAccess::Get()));
}

template <typename T>
T Must(absl::StatusOr<T> v, std::string_view what) {
  if (!v.ok()) {
    std::cerr << what << ": " << v.status() << "\n";
    std::exit(1);
  }
  return *std::move(v);
}

std::string HeaderValue(const keygate::HttpDecision& d, std::string_view name) {
  for (const auto& [k, v] : d.headers) {
    if (k == name) return v;
  }
  return "";
}

}  // namespace

int main() {
  auto deployment = Must(keygate::Deployment::Create({}), "deployment");
  auto store = std::make_shared<keygate::MemoryKeyStore>();
  auto events = std::make_shared<keygate::OstreamEventSink>(std::cout);
  keygate::KeyManager::Options options;
  options.deployment = deployment;
  options.store = store;
  options.events = events;
  keygate::KeyManager manager(std::move(options));

  std::cout << "== Issuing keys (the audit events follow each change)\n";
  keygate::CreateKeyRequest ci;
  ci.name = "ci-pipeline";
  ci.description = "read-only key for the nightly build";
  ci.owner = "alice";
  ci.environment = "production";
  ci.scopes = {"read:all"};
  keygate::CreatedKey reader = Must(manager.Create(ci, "alice"), "create ci-pipeline");
  std::cout << "  created " << reader.record << "\n"
            << "  its token, shown this once: " << TokenText(reader.token) << "\n";

  keygate::ProvisionedKey personal =
      Must(manager.ProvisionPersonalKey("bob", "production", {"admin"}, "system"), "provision");
  std::cout << "  provisioned " << personal.record << "\n";

  keygate::CreateKeyRequest old = ci;
  old.name = "retired-integration";
  keygate::CreatedKey retired = Must(manager.Create(old, "alice"), "create retired");
  Must(manager.Revoke(retired.record.id, "alice"), "revoke");
  std::cout << "  revoked " << retired.record.id << "\n";

  keygate::CreateKeyRequest staging = ci;
  staging.name = "preview-tests";
  staging.environment = "preview";
  keygate::CreatedKey preview = Must(manager.Create(staging, "alice"), "create preview key");

  auto verifier =
      Must(keygate::ReferenceVerifier::Create(deployment, store, "production"), "verifier");
  const keygate::ScopeRegistry& scopes = deployment->scopes();
  keygate::Requirement read;
  read.scopes = scopes.MaskOf("read:all");
  read.scope_name = "read:all";
  keygate::Requirement write;
  write.scopes = scopes.MaskOf("write:all");
  write.scope_name = "write:all";

  struct Case {
    const char* what;
    std::string authorization;
    const keygate::Requirement* requirement;
    keygate::Outcome expected;
  };
  const Case cases[] = {
      {"good token, GET (read:all)", "Bearer " + TokenText(reader.token), &read,
       keygate::Outcome::kOk},
      {"admin personal key, POST (write:all)", "Bearer " + TokenText(*personal.token), &write,
       keygate::Outcome::kOk},
      {"read-only token, POST (write:all)", "Bearer " + TokenText(reader.token), &write,
       keygate::Outcome::kInsufficientScope},
      {"revoked token", "Bearer " + TokenText(retired.token), &read, keygate::Outcome::kRevoked},
      {"preview key sent to production", "Bearer " + TokenText(preview.token), &read,
       keygate::Outcome::kWrongEnvironment},
      {"garbage token", "Bearer not-a-real-token", &read, keygate::Outcome::kMalformed},
      {"no Authorization header", "", &read, keygate::Outcome::kMissing},
      {"Basic credentials", "Basic YWxpY2U6c2VjcmV0", &read, keygate::Outcome::kInvalidRequest},
  };

  std::cout << "\n== Verifying requests against environment 'production'\n";
  bool all_as_expected = true;
  for (const Case& c : cases) {
    const keygate::Verdict v = verifier->Verify(c.authorization, *c.requirement, absl::Now());
    const keygate::HttpDecision http = keygate::DecideHttp(v, *c.requirement);
    const bool as_expected = v.outcome == c.expected;
    all_as_expected = all_as_expected && as_expected;
    std::cout << "  " << std::left << std::setw(38) << c.what << " -> " << std::setw(18)
              << keygate::OutcomeName(v.outcome) << " HTTP ";
    if (http.allowed) {
      std::cout << "200 (allowed; the application answers)";
    } else {
      std::cout << http.status;
      const std::string challenge = HeaderValue(http, "WWW-Authenticate");
      if (!challenge.empty()) std::cout << "  WWW-Authenticate: " << challenge;
    }
    if (!v.key().empty()) std::cout << "  [" << v.key() << "]";
    if (!as_expected)
      std::cout << "  UNEXPECTED (wanted " << keygate::OutcomeName(c.expected) << ")";
    std::cout << "\n";
  }
  std::cout << (all_as_expected ? "\nAll verdicts as expected.\n" : "\nSome verdicts differ!\n");
  return all_as_expected ? 0 : 1;
}
