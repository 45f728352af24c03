// A second process for the SQLite tests (not a test itself).
//
//   sqlite_test_helper churn <db> <seed>
//       Runs every kind of write on the store's keys (those already in the
//       file and its own) in a loop until killed, writing one line before
//       each operation (it is in flight: it may or may not land) and one
//       after it was ACKNOWLEDGED, each a single write(2), so a line is
//       either complete or absent:
//         c <name>                 / C <id> <version> <token> create
//         m <id> <name>            / M <id> <version> <name> modify (rename)
//         r <id>                   / R <id> <version>        revoke
//         s <id>                   / S <id> <version>        restore
//         l <id>                   / L <id> <version> <token> roll (zero grace)
//         d <id>                   / D <id>                  delete
//         b <id>...                / B                       InsertBatch (no tokens)
//         t <last used us> <id>... / T                       TouchLastUsed
//       and after each acknowledged operation "Q <LastSequence>".
//       Tokens are printed ONLY because this is a throwaway test database; the
//       crash test checks that every printed token still verifies.
//       Meanwhile an AuditRelay (consumer "crash-sink") appends each audit
//       entry's sequence to <db>.sink ("E <seq>", tests/audit_file_sink.h).
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
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "audit_file_sink.h"
#include "keygate/audit_relay.h"
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

struct Opened {
  std::shared_ptr<keygate::SqliteKeyStore> store;
  std::shared_ptr<keygate::KeyManager> manager;
};

absl::StatusOr<Opened> OpenManager(const std::string& db) {
  keygate::SqliteOptions so;
  so.path = db;
  so.busy_timeout = absl::Seconds(30);
  absl::StatusOr<std::shared_ptr<keygate::SqliteKeyStore>> store =
      keygate::SqliteKeyStore::Create(so);
  if (!store.ok()) return store.status();
  absl::StatusOr<std::shared_ptr<const keygate::Deployment>> d = keygate::Deployment::Create({});
  if (!d.ok()) return d.status();
  keygate::KeyManager::Options mo;
  mo.deployment = *d;
  mo.store = *store;
  absl::StatusOr<std::unique_ptr<keygate::KeyManager>> m =
      keygate::KeyManager::Create(std::move(mo));
  if (!m.ok()) return m.status();
  return Opened{*store, *std::move(m)};
}

std::string Reveal(const keygate::Secret& token) {
  return std::string(token.Reveal(keygate::InsecureSecretAccess::Get()));
}

int Churn(const std::string& db, std::uint64_t seed) {
  absl::StatusOr<Opened> opened = OpenManager(db);
  if (!opened.ok()) return Fail(opened.status());
  keygate::SqliteKeyStore& store = *opened->store;
  keygate::KeyManager& m = *opened->manager;
  keygate::AuditRelay::Options ro;
  ro.store = opened->store;
  ro.sink = std::make_shared<keygate::testing::AuditFileSink>(db + ".sink");
  ro.consumer = "crash-sink";
  ro.retry = absl::Milliseconds(5);
  absl::StatusOr<std::unique_ptr<keygate::AuditRelay>> relay =
      keygate::AuditRelay::Create(std::move(ro));
  if (!relay.ok()) return Fail(relay.status());
  if (absl::Status s = (*relay)->Start(); !s.ok()) return Fail(s);
  std::mt19937_64 rng(seed);
  // Every key in the file: earlier runs' and this one's.
  std::map<std::string, keygate::KeyRecord> keys;
  keygate::ListOptions lo;
  lo.limit = keygate::kMaxListLimit;
  for (;;) {
    absl::StatusOr<keygate::ListPage> page = store.List(lo);
    if (!page.ok()) return Fail(page.status());
    for (keygate::KeyRecord& r : page->keys) keys.emplace(r.id, std::move(r));
    if (page->next_cursor.empty()) break;
    lo.cursor = page->next_cursor;
  }
  auto pick = [&](bool want_active, bool want_revoked) -> const keygate::KeyRecord* {
    std::vector<const keygate::KeyRecord*> from;
    for (const auto& [id, r] : keys) {
      const bool active = r.state == keygate::KeyState::kActive;
      if ((active && want_active) || (!active && want_revoked)) from.push_back(&r);
    }
    return from.empty() ? nullptr : from[rng() % from.size()];
  };
  const std::int64_t touch_base = absl::ToUnixMicros(absl::Now());
  for (std::uint64_t i = 0;; ++i) {
    const std::uint64_t kind = rng() % 10;
    const keygate::KeyRecord* target = nullptr;
    if (kind == 3 || kind == 7 || kind == 9) target = pick(true, true);
    if (kind == 4 || kind == 6) target = pick(true, false);
    if (kind == 5) target = pick(false, true);
    const std::string id = target != nullptr ? target->id : "";
    if (kind >= 3 && kind != 8 && target == nullptr) continue;
    if (kind <= 2) {
      keygate::CreateKeyRequest req;
      req.name = absl::StrCat("churn ", seed, " #", i);
      req.owner = absl::StrCat("owner", rng() % 8);
      req.environment = (rng() % 2) != 0 ? "production" : "preview";
      req.scopes = {"read:all"};
      WriteLine(absl::StrCat("c ", req.name));
      absl::StatusOr<keygate::CreatedKey> k = m.Create(req, "crash-test");
      if (!k.ok()) return Fail(k.status());
      WriteLine(absl::StrCat("C ", k->record.id, " ", k->record.version, " ", Reveal(k->token)));
      keys[k->record.id] = k->record;
    } else if (kind == 3) {
      keygate::KeyUpdate u;
      u.name = absl::StrCat("renamed ", seed, " #", i);
      WriteLine(absl::StrCat("m ", id, " ", *u.name));
      absl::StatusOr<keygate::KeyRecord> r = m.Modify(id, u, target->version, "crash-test");
      if (!r.ok()) return Fail(r.status());
      WriteLine(absl::StrCat("M ", id, " ", r->version, " ", r->name));
      keys[id] = *r;
    } else if (kind == 4 || kind == 5) {
      const bool revoke = kind == 4;
      WriteLine(absl::StrCat(revoke ? "r " : "s ", id));
      absl::StatusOr<keygate::KeyRecord> r =
          revoke ? m.Revoke(id, "crash-test") : m.Restore(id, "crash-test");
      if (!r.ok()) return Fail(r.status());
      WriteLine(absl::StrCat(revoke ? "R " : "S ", id, " ", r->version));
      keys[id] = *r;
    } else if (kind == 6) {
      WriteLine(absl::StrCat("l ", id));
      absl::StatusOr<keygate::CreatedKey> k = m.Roll(id, absl::ZeroDuration(), "crash-test");
      if (!k.ok()) return Fail(k.status());
      WriteLine(absl::StrCat("L ", id, " ", k->record.version, " ", Reveal(k->token)));
      keys[id] = k->record;
    } else if (kind == 7) {
      WriteLine(absl::StrCat("d ", id));
      if (absl::Status s = m.Delete(id, "crash-test"); !s.ok()) return Fail(s);
      WriteLine(absl::StrCat("D ", id));
      keys.erase(id);
    } else if (kind == 8) {
      std::vector<keygate::KeyRecord> batch(1 + rng() % 8);
      std::string line = "b";
      const absl::Time now = keygate::TruncateToMicros(absl::Now());
      for (std::size_t k = 0; k < batch.size(); ++k) {
        keygate::KeyRecord& r = batch[k];
        r.id = absl::StrFormat("key_b%010u%011u", seed % 10'000'000'000, i * 100 + k);
        r.name = absl::StrCat("batch ", seed, " #", i, ".", k);
        r.owner = "importer";
        r.kind = keygate::KeyKind::kGeneral;
        r.environment = "production";
        r.state = keygate::KeyState::kActive;
        r.scopes = {"read:all"};
        r.created = r.updated = now;
        for (auto& b : r.digest) b = static_cast<std::uint8_t>(rng());
        r.hint = "kg_live_...bbbb";
        r.version = 1;
        absl::StrAppend(&line, " ", r.id);
      }
      WriteLine(line);
      if (absl::Status s = store.InsertBatch(
              batch, {keygate::EventType::kCreated, "crash-test", absl::Now(), {}});
          !s.ok())
        return Fail(s);
      WriteLine("B");
      for (keygate::KeyRecord& r : batch) keys[r.id] = std::move(r);
    } else {
      const std::int64_t at = touch_base + static_cast<std::int64_t>(i);
      std::vector<keygate::LastUsedUpdate> updates{{id, absl::FromUnixMicros(at)}};
      WriteLine(absl::StrCat("t ", at, " ", id));
      if (absl::Status s = store.TouchLastUsed(updates, absl::ZeroDuration()); !s.ok()) {
        return Fail(s);
      }
      WriteLine("T");
      keys[id].last_used = absl::FromUnixMicros(at);
    }
    absl::StatusOr<std::uint64_t> seq = store.LastSequence();
    if (!seq.ok()) return Fail(seq.status());
    WriteLine(absl::StrCat("Q ", *seq));
  }
}

int Revoke(const std::string& db, const std::string& id) {
  absl::StatusOr<Opened> m = OpenManager(db);
  if (!m.ok()) return Fail(m.status());
  absl::StatusOr<keygate::KeyRecord> r = m->manager->Revoke(id, "feed-test");
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
