// A second process for the SQLite tests (not a test itself).
//
//   sqlite_test_helper churn <db> <seed>
//       Creates and revokes keys in a loop until killed, writing one line per
//       ACKNOWLEDGED operation to stdout (a single write(2) each, so a line is
//       either complete or absent):
//         C <key id> <token>   created (the store committed it)
//         r <key id>           about to revoke (the revoke may or may not land)
//         R <key id>           revoked (committed)
//       Tokens are printed ONLY because this is a throwaway test database; the
//       crash test checks that every printed token still verifies.
//   sqlite_test_helper revoke <db> <key id> [poll_ms]
//       Revokes one key and prints the wall-clock time (Unix microseconds)
//       right after the store acknowledged it: the start of the
//       revoke-to-reject latency measured by the watching process.
//
// Exit status: 0 done, 1 usage (or the parent is gone), 2 store error
// (message on stderr). Killed with SIGKILL when its parent dies.

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/sqlite/sqlite_key_store.h"

namespace {

void WriteLine(const std::string& line) {
  const std::string out = line + "\n";
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(STDOUT_FILENO, out.data() + done, out.size() - done);
    if (n <= 0) std::_Exit(3);
    done += static_cast<std::size_t>(n);
  }
}

int Fail(const absl::Status& s) {
  std::cerr << "sqlite_test_helper: " << s << "\n";
  return 2;
}

absl::StatusOr<std::shared_ptr<keygate::KeyManager>> OpenManager(const std::string& db) {
  keygate::SqliteOptions so;
  so.path = db;
  so.busy_timeout = absl::Seconds(30);
  absl::StatusOr<std::shared_ptr<keygate::SqliteKeyStore>> store =
      keygate::SqliteKeyStore::Open(so);
  if (!store.ok()) return store.status();
  absl::StatusOr<std::shared_ptr<const keygate::Deployment>> d = keygate::Deployment::Create({});
  if (!d.ok()) return d.status();
  keygate::KeyManager::Options mo;
  mo.deployment = *d;
  mo.store = *store;
  return std::make_shared<keygate::KeyManager>(std::move(mo));
}

int Churn(const std::string& db, std::uint64_t seed) {
  absl::StatusOr<std::shared_ptr<keygate::KeyManager>> m = OpenManager(db);
  if (!m.ok()) return Fail(m.status());
  std::mt19937_64 rng(seed);
  std::vector<std::string> live;
  for (std::uint64_t i = 0;; ++i) {
    keygate::CreateKeyRequest req;
    req.name = absl::StrCat("churn ", seed, " #", i);
    req.owner = absl::StrCat("owner", rng() % 8);
    req.environment = (rng() % 2) != 0 ? "production" : "preview";
    req.scopes = {"read:all"};
    absl::StatusOr<keygate::CreatedKey> k = (*m)->Create(req, "crash-test");
    if (!k.ok()) return Fail(k.status());
    WriteLine(absl::StrCat("C ", k->record.id, " ",
                           std::string(k->token.Reveal(keygate::InsecureSecretAccess::Get()))));
    live.push_back(k->record.id);
    if (rng() % 3 == 0 && !live.empty()) {
      const std::size_t at = rng() % live.size();
      const std::string id = live[at];
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(at));
      WriteLine(absl::StrCat("r ", id));
      absl::StatusOr<keygate::KeyRecord> r = (*m)->Revoke(id, "crash-test");
      if (!r.ok()) return Fail(r.status());
      WriteLine(absl::StrCat("R ", id));
    }
  }
}

int Revoke(const std::string& db, const std::string& id) {
  absl::StatusOr<std::shared_ptr<keygate::KeyManager>> m = OpenManager(db);
  if (!m.ok()) return Fail(m.status());
  absl::StatusOr<keygate::KeyRecord> r = (*m)->Revoke(id, "feed-test");
  const std::int64_t acked = absl::ToUnixMicros(absl::Now());
  if (!r.ok()) return Fail(r.status());
  WriteLine(absl::StrCat(acked));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // churn runs until killed: should the test itself die (a ctest timeout),
  // go with it rather than keep writing for the rest of the run.
  const pid_t parent = ::getppid();
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) return 1;  // the parent died before prctl
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 3 && args[0] == "churn") {
    return Churn(args[1], std::strtoull(args[2].c_str(), nullptr, 10));
  }
  if (args.size() == 3 && args[0] == "revoke") return Revoke(args[1], args[2]);
  std::cerr << "usage: sqlite_test_helper churn <db> <seed> | revoke <db> <key id>\n";
  return 1;
}
