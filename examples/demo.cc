// The keygate demo (the README's main job): keys in the embedded SQLite
// store, checked by the hot-path Verifier, answered as HTTP.
//
//   keygate_demo [DATABASE]
//
// DATABASE must not exist yet; without it the demo creates keygate.db in a
// new temporary directory and prints its path, so you can look at it with
// the CLI afterwards (`keygate --db <path> list`). The demo narrates each
// step and exits non-zero if any verdict differs from the expected one, so it
// doubles as a smoke test.

#include <stdlib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keygate/keygate.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/verifier.h"

namespace {

std::string TokenText(const keygate::Secret& token) {
  return std::string(token.Reveal(keygate::InsecureSecretAccess::Get()));
}

template <typename T>
T Must(absl::StatusOr<T> v, std::string_view what) {
  if (!v.ok()) {
    std::cerr << "demo: " << what << ": " << v.status() << "\n";
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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The database path: argv[1], or keygate.db in a fresh temporary directory.
std::string DatabasePath(int argc, char** argv) {
  if (argc > 2) {
    std::cerr << "usage: keygate_demo [DATABASE]\n";
    std::exit(2);
  }
  if (argc == 2) {
    struct stat st;
    if (::stat(argv[1], &st) == 0) {
      std::cerr << "demo: " << argv[1]
                << " already exists; give the path of a new file (the demo creates keys)\n";
      std::exit(2);
    }
    return argv[1];
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string dir =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/keygate-demo-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) {
    std::cerr << "demo: cannot create a temporary directory\n";
    std::exit(1);
  }
  return dir + "/keygate.db";
}

// Prints each audit event, indented under the step that caused it.
class NarratedEvents final : public keygate::EventSink {
 public:
  absl::Status Emit(const keygate::Event& event) override {
    std::cout << "    audit: " << event << "\n";
    return absl::OkStatus();
  }
};

}  // namespace

int main(int argc, char** argv) {
  const std::string db_path = DatabasePath(argc, argv);

  std::cout << "== 1. The key store: a SQLite file\n";
  keygate::SqliteOptions so;
  so.path = db_path;
  std::shared_ptr<keygate::SqliteKeyStore> store =
      Must(keygate::SqliteKeyStore::Create(so), "open the SQLite store");
  struct stat st {};
  ::stat(db_path.c_str(), &st);
  std::cout << "  " << db_path << "\n"
            << "  (WAL journal, synchronous=FULL, mode 0" << std::oct << (st.st_mode & 0777)
            << std::dec << "; schema version " << keygate::SqliteKeyStore::kSchemaVersion << ")\n";

  auto deployment = Must(keygate::Deployment::Create({}), "deployment");
  keygate::KeyManager::Options mo;
  mo.deployment = deployment;
  mo.store = store;
  std::unique_ptr<keygate::KeyManager> manager_owner =
      Must(keygate::KeyManager::Create(std::move(mo)), "key manager");
  keygate::KeyManager& manager = *manager_owner;
  // The audit log is written with each change, in the same transaction; a relay
  // hands it to a sink (here: this output) and remembers in the file how far it got.
  keygate::AuditRelay::Options ro;
  ro.store = store;
  ro.sink = std::make_shared<NarratedEvents>();
  ro.consumer = "demo";
  std::unique_ptr<keygate::AuditRelay> relay =
      Must(keygate::AuditRelay::Create(std::move(ro)), "audit relay");

  std::cout << "\n== 2. Issuing keys with the KeyManager\n";
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
      Must(manager.ProvisionPersonalKey("bob", "production", {"admin"}, "system"),
           "provision bob's personal key");
  std::cout << "  provisioned " << personal.record << "\n";

  keygate::CreateKeyRequest old = ci;
  old.name = "retired-integration";
  keygate::CreatedKey retired = Must(manager.Create(old, "alice"), "create retired");
  Must(manager.Revoke(retired.record.id, "alice"), "revoke");
  std::cout << "  revoked " << retired.record.id << " (blocked; `restore` would unblock it)\n";

  keygate::CreateKeyRequest staging = ci;
  staging.name = "preview-tests";
  staging.environment = "preview";
  keygate::CreatedKey preview = Must(manager.Create(staging, "alice"), "create preview key");
  std::cout << "  created " << preview.record.id << " for the preview environment\n";
  std::cout << "  the audit log, as the relay delivers it:\n";
  Must(relay->DeliverPending(), "deliver the audit log");

  std::cout << "\n== 3. A server's Verifier loads the keys from the file and follows its change "
               "feed\n";
  keygate::VerifierOptions vo;
  vo.deployment = deployment;
  vo.store = store;
  vo.environment = "production";
  vo.record_usage = false;  // keep the demo's output about verdicts
  const absl::Time load_start = absl::Now();
  auto verifier = Must(keygate::Verifier::Create(std::move(vo)), "verifier");
  std::cout << "  loaded " << verifier->Stats().keys << " keys in "
            << absl::FormatDuration(absl::Now() - load_start) << "\n";

  const keygate::ScopeRegistry& scopes = deployment->scopes();
  const keygate::Requirement read = Must(scopes.Require({"read:all"}), "requirement");
  const keygate::Requirement write = Must(scopes.Require({"write:all"}), "requirement");

  struct Case {
    const char* what;
    std::string authorization;
    const keygate::Requirement* requirement;
    keygate::Outcome expected;
  };
  std::vector<Case> cases = {
      {"good token, GET (needs read:all)", "Bearer " + TokenText(reader.token), &read,
       keygate::Outcome::kOk},
      {"admin personal key, POST (write:all)", "Bearer " + TokenText(*personal.token), &write,
       keygate::Outcome::kOk},
      {"read-only token, POST (wrong scope)", "Bearer " + TokenText(reader.token), &write,
       keygate::Outcome::kInsufficientScope},
      {"revoked token", "Bearer " + TokenText(retired.token), &read, keygate::Outcome::kRevoked},
      {"preview key sent to production", "Bearer " + TokenText(preview.token), &read,
       keygate::Outcome::kWrongEnvironment},
      {"garbage token", "Bearer not-a-real-token", &read, keygate::Outcome::kMalformed},
      {"no Authorization header", "", &read, keygate::Outcome::kMissing},
  };

  bool all_as_expected = true;
  auto run = [&](const Case& c) {
    const keygate::Verdict v = verifier->Verify(c.authorization, *c.requirement);
    const keygate::HttpDecision http = keygate::DecideHttp(v, *c.requirement);
    const bool as_expected = v.outcome == c.expected;
    all_as_expected = all_as_expected && as_expected;
    std::cout << "  " << std::left << std::setw(40) << c.what << " -> " << std::setw(18)
              << keygate::OutcomeName(v.outcome) << " HTTP ";
    if (http.allowed) {
      std::cout << "200 (allowed; the application answers)";
    } else {
      std::cout << http.status;
      const std::string challenge = HeaderValue(http, "WWW-Authenticate");
      if (!challenge.empty()) std::cout << "  WWW-Authenticate: " << challenge;
    }
    if (!v.key().empty()) std::cout << "  [" << v.key() << "]";
    if (!as_expected) {
      std::cout << "  UNEXPECTED (wanted " << keygate::OutcomeName(c.expected) << ")";
    }
    std::cout << "\n";
  };

  std::cout << "\n== 4. Verifying requests to the production API\n";
  for (const Case& c : cases) run(c);

  std::cout << "\n== 5. Revoking ci-pipeline while the server runs\n";
  Must(manager.Revoke(reader.record.id, "alice"), "revoke ci-pipeline");
  // The store told the verifier before Revoke() returned (same process), so
  // the very next request is refused. A revoke by another process, such as
  // `keygate revoke`, arrives within the store's poll interval (250 ms).
  run({"the same good token, right after", "Bearer " + TokenText(reader.token), &read,
       keygate::Outcome::kRevoked});
  Must(relay->DeliverPending(), "deliver the audit log");

  std::cout << "\n== 6. What is on disk\n";
  const std::string bytes = ReadFile(db_path) + ReadFile(db_path + "-wal");
  int found = 0;
  const std::vector<const keygate::Secret*> tokens = {&reader.token, &*personal.token,
                                                      &retired.token, &preview.token};
  for (const keygate::Secret* t : tokens) {
    if (bytes.find(TokenText(*t)) != std::string::npos) ++found;
  }
  std::cout << "  " << found << " of " << tokens.size()
            << " tokens appear in the database file (only digests and hints such as "
            << reader.record.hint << " are stored)\n";
  all_as_expected = all_as_expected && found == 0;

  std::cout << "\n  Inspect it with the CLI:  keygate --db " << db_path << " list\n";
  if (argc < 2) {
    std::cout << "  (remove the directory when done: rm -r "
              << db_path.substr(0, db_path.rfind('/')) << ")\n";
  }
  std::cout << (all_as_expected ? "\nAll verdicts as expected.\n" : "\nSome verdicts differ!\n");
  return all_as_expected ? 0 : 1;
}
