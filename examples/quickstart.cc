// The README's usage example: issue a key, then authenticate a request with it.
#include <iostream>
#include <memory>
#include <string>

#include "keygate/keygate.h"

int main() {
  auto deployment = keygate::Deployment::Create({});  // prefix "kg"; preview + production
  if (!deployment.ok()) return 1;
  auto store = std::make_shared<keygate::MemoryKeyStore>();
  auto manager = keygate::KeyManager::Create({*deployment, store, /*clock=*/nullptr});
  if (!manager.ok()) return 1;

  keygate::CreateKeyRequest request;
  request.name = "ci-pipeline";
  request.owner = "alice";
  request.environment = "production";
  request.scopes = {"read:all"};
  auto key = (*manager)->Create(request, /*actor=*/"alice");  // key->token is shown only now
  if (!key.ok()) {
    std::cerr << key.status() << "\n";  // names the field and the reason, never a secret
    return 1;
  }

  auto verifier = keygate::ReferenceVerifier::Create(
      {.deployment = *deployment, .store = store, .environment = "production"});
  if (!verifier.ok()) return 1;
  // What the route needs; a misspelled scope is an error here, never an open route.
  auto read_all = (*deployment)->scopes().Require({"read:all"});
  if (!read_all.ok()) return 1;
  const std::string header =
      "Bearer " + std::string(key->token.Reveal(keygate::InsecureSecretAccess::Get()));
  keygate::Verdict verdict = (*verifier)->Verify(header, *read_all, absl::Now());
  std::cout << verdict << "\n";  // Verdict(ok, key_...)
  return verdict.ok() ? 0 : 1;
}
