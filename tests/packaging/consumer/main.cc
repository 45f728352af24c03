// Creates a key on the in-memory store and verifies it: proves the headers,
// the library and its dependencies resolve for a consumer.
#include <iostream>

#include "keygate/keygate.h"

int main() {
  auto deployment = keygate::Deployment::Create({});
  if (!deployment.ok()) return 1;
  auto store = std::make_shared<keygate::MemoryKeyStore>();
  keygate::KeyManager manager({*deployment, store, nullptr, nullptr});
  keygate::CreateKeyRequest req;
  req.name = "consumer";
  req.owner = "alice";
  req.environment = "production";
  req.scopes = {"read:all"};
  auto key = manager.Create(req, "alice");
  if (!key.ok()) return 2;
  auto verifier = keygate::ReferenceVerifier::Create(*deployment, store, "production");
  if (!verifier.ok()) return 3;
  const std::string header =
      "Bearer " + std::string(key->token.Reveal(keygate::InsecureSecretAccess::Get()));
  const keygate::Verdict v = (*verifier)->Verify(header, {}, absl::Now());
  std::cout << "keygate " << KEYGATE_VERSION_STRING << ": " << v << "\n";
  return v.ok() ? 0 : 4;
}
