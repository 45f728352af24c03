// Power-loss safety of the SQLite store: a seeded random workload of every
// mutation kind runs through KeyManager and the store on top of a VFS that
// keeps unsynced writes apart (powerloss_vfs.h); the power is cut after a
// random number of mutating file calls, the unsynced sectors are kept,
// dropped or torn, and the store is reopened through the normal VFS. Then:
//   * it opens, and CheckIntegrity (PRAGMA integrity_check and more) passes;
//   * every acknowledged operation holds: the keys are exactly the model's
//     (each record equal to what the last acknowledged operation returned),
//     and the operation in flight at the cut landed whole or not at all;
//   * the change feed lists every live key with its record and every deleted
//     one as a tombstone, each at a sequence no lower than one seen before
//     the cut; LastSequence is no lower than any sequence seen before, and
//     later writes get higher ones.
// Workload: create, modify, revoke, restore, roll and delete (KeyManager),
// InsertBatch and TouchLastUsed (the store), a close and reopen (a
// checkpoint), a checkpoint by another connection (the WAL then starts
// over), and the open itself: a new file's creation, or the migration
// of a schema-version-1 file. Trials run in chains of kChainLength on one
// file, so later cuts hit a database that recovered from earlier ones.
//
// With synchronous=FULL nothing may be lost (4,000 cuts over four seeds lost
// nothing). The same harness with synchronous=OFF must detect lost writes:
// that is the proof that it can fail (at the default seed about 2 trials in
// 3 lose acknowledged writes and 1 in 3 leaves a file that does not open or
// fails its integrity check). synchronous=NORMAL is documented to be able to
// lose the last commits at a power loss; it does (about 2 trials in 5 lost
// acknowledged commits, since the WAL is synced only at checkpoints), and
// the test checks that it never corrupts the file (it did not).
//
// Seeds are fixed (printed); KEYGATE_POWERLOSS_SEED=<n> runs another one,
// KEYGATE_POWERLOSS_TRIALS=<n> sets the number of cuts of the FULL test
// (default 1000). Replaying a seed replays the workload and the cut points;
// key ids and tokens are random, so the bytes written (and so the exact file
// call a cut lands on) may differ slightly between runs.

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/key.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "powerloss_vfs.h"
#include "sqlite/schema.h"
#include "sqlite_test_util.h"
#include "test_util.h"

namespace keygate {
namespace {

using testing::PowerLossVfs;
using testing::TempDir;

constexpr int kChainLength = 5;
// Cut points are drawn from [1, kMaxCut]: a little more than the mutating
// file calls of a trial's open and workload, so that most cuts land inside
// it and some after its end (the test checks that most land inside).
constexpr std::uint64_t kMaxCut = 160;

std::uint64_t EnvNumber(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// The VFS models the disk, so the files need no real durability: in
// /dev/shm when it is a writable directory, the syncs of the checks (through
// the normal VFS) cost nothing. $TMPDIR otherwise.
std::string FastTempBase() { return ::access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : ""; }

std::uint64_t Mix(std::uint64_t a, std::uint64_t b) {
  std::seed_seq seq{static_cast<std::uint32_t>(a), static_cast<std::uint32_t>(a >> 32),
                    static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(b >> 32)};
  std::mt19937_64 g(seq);
  return g();
}

// synchronous=OFF, which SqliteOptions does not offer: an auto-extension
// sets it on every new connection and an authorizer turns the store's own
// "PRAGMA synchronous=..." into a no-op. Only while g_force_sync_off is set.
std::atomic<bool> g_force_sync_off{false};

int IgnoreSynchronousPragma(void* /*unused*/, int action, const char* name, const char* value,
                            const char* /*unused*/, const char* /*unused*/) {
  if (action == SQLITE_PRAGMA && name != nullptr && value != nullptr &&
      sqlite3_stricmp(name, "synchronous") == 0) {
    return SQLITE_IGNORE;
  }
  return SQLITE_OK;
}

int ForceSyncOff(sqlite3* db, char** /*unused*/, const sqlite3_api_routines* /*unused*/) {
  if (!g_force_sync_off.load()) return SQLITE_OK;
  if (sqlite3_exec(db, "PRAGMA synchronous=OFF", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return SQLITE_ERROR;
  }
  sqlite3_set_authorizer(db, IgnoreSynchronousPragma, nullptr);
  return SQLITE_OK;
}

// The fields a lost write changes, for messages (no digests, no tokens).
std::string Describe(const KeyRecord& r) {
  return absl::StrCat("version ", r.version, ", state ", static_cast<int>(r.state), ", name '",
                      r.name, "', last used ",
                      r.last_used.has_value() ? absl::FormatTime(*r.last_used) : "never");
}

// What the store must hold: the result of the acknowledged operations.
struct Model {
  std::map<std::string, KeyRecord> keys;
  std::set<std::string> deleted;                // ids whose tombstone the feed must list
  std::uint64_t max_seq = 0;                    // highest sequence seen
  std::map<std::string, std::uint64_t> seq_of;  // per id: highest sequence seen in the feed
};

enum class Op {
  kOpen,
  kCreate,
  kModify,
  kRevoke,
  kRestore,
  kRoll,
  kDelete,
  kInsertBatch,
  kTouch,
  kReopen,
  kCheckpoint,
};
constexpr int kOpKinds = 11;

const char* OpName(Op op) {
  switch (op) {
    case Op::kOpen:
      return "open";
    case Op::kCreate:
      return "create";
    case Op::kModify:
      return "modify";
    case Op::kRevoke:
      return "revoke";
    case Op::kRestore:
      return "restore";
    case Op::kRoll:
      return "roll";
    case Op::kDelete:
      return "delete";
    case Op::kInsertBatch:
      return "insert-batch";
    case Op::kTouch:
      return "touch";
    case Op::kReopen:
      return "reopen";
    case Op::kCheckpoint:
      return "checkpoint";
  }
  return "?";
}

// The operation in flight when the power went: it may have landed or not.
struct InFlight {
  Op op = Op::kOpen;
  std::string id;                  // the key of modify/revoke/restore/roll/delete
  std::string name;                // create: the new key's name; modify: the new name
  std::vector<KeyRecord> records;  // insert-batch: the batch; touch: the touched keys, updated
};

struct Totals {
  int trials = 0;
  int cut_inside = 0;        // the cut landed before the workload's end
  int in_flight = 0;         // a mutation was in flight
  int landed = 0;            // ... and it turned out to have landed
  int lossy = 0;             // trials that found an acknowledged write lost (or a broken file)
  int unopenable = 0;        // ... of which the store did not open or failed its checks
  int cut_in_creation = 0;   // cuts while Open created a new file
  int cut_in_migration = 0;  // cuts while Open migrated a version-1 file
  std::uint64_t acked_ops = 0;
  std::uint64_t syncs = 0;
  std::map<Op, int> acked_by_kind;
  PowerLossVfs::CutReport cuts;
};

class Harness {
 public:
  Harness(PowerLossVfs* vfs, SqliteSynchronous sync, std::uint64_t seed)
      : vfs_(vfs), sync_(sync), seed_(seed), deployment_(*Deployment::Create({})) {}

  // Runs `trials` cuts. Each problem found is returned (empty: none).
  std::vector<std::string> Run(int trials, Totals* totals) {
    std::vector<std::string> problems;
    for (int chain = 0; totals->trials < trials; ++chain) {
      dir_ = std::make_unique<TempDir>(FastTempBase());
      path_ = dir_->File("keygate.db");
      model_ = Model{};
      if (chain % 4 == 1) {
        StartFromVersion1();
        migrating_ = true;
      }
      for (int t = 0; t < kChainLength && totals->trials < trials; ++t) {
        const std::uint64_t trial_seed = Mix(seed_, static_cast<std::uint64_t>(chain) * 64 + t);
        std::vector<std::string> found = Trial(trial_seed, totals);
        ++totals->trials;
        if (!found.empty()) {
          ++totals->lossy;
          for (std::string& f : found) {
            problems.push_back(
                absl::StrCat("chain ", chain, " trial ", t, " (seed ", trial_seed, "): ", f));
          }
          break;  // the model no longer describes the file: start a new chain
        }
      }
    }
    return problems;
  }

 private:
  // A version-1 file whose contents the model learns from a migrated copy.
  void StartFromVersion1() {
    testing::WriteSchemaV1File(path_);
    const std::string copy = dir_->File("copy.db");
    std::filesystem::copy_file(path_, copy);
    SqliteOptions o;
    o.path = copy;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> s = SqliteKeyStore::Create(o);
    REQUIRE(s.ok());
    std::vector<std::string> ignored;
    std::optional<Observed> seen = Observe(**s, &ignored);
    REQUIRE(seen.has_value());
    REQUIRE(seen->keys.size() == 3);
    model_.keys = seen->keys;
    for (const auto& [id, entry] : seen->feed) {
      if (!entry.second) model_.deleted.insert(id);
      model_.seq_of[id] = entry.first;
    }
    REQUIRE(model_.deleted.size() == 1);
    model_.max_seq = seen->last_sequence;
    s->reset();
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::filesystem::remove(copy + suffix);
    }
  }

  // The store's contents, read through the normal VFS.
  struct Observed {
    std::map<std::string, KeyRecord> keys;
    std::map<std::string, std::pair<std::uint64_t, bool>> feed;  // id -> (sequence, live)
    std::uint64_t last_sequence = 0;
  };

  static std::optional<Observed> Observe(SqliteKeyStore& s, std::vector<std::string>* problems) {
    Observed o;
    ListOptions lo;
    lo.limit = kMaxListLimit;
    for (;;) {
      absl::StatusOr<ListPage> page = s.List(lo);
      if (!page.ok()) {
        problems->push_back(absl::StrCat("List: ", page.status().ToString()));
        return std::nullopt;
      }
      for (KeyRecord& r : page->keys) o.keys.emplace(r.id, std::move(r));
      if (page->next_cursor.empty()) break;
      lo.cursor = page->next_cursor;
    }
    std::uint64_t after = 0;
    for (;;) {
      absl::StatusOr<ChangeBatch> b = s.ChangesSince(after, 1000);
      if (!b.ok()) {
        problems->push_back(absl::StrCat("ChangesSince: ", b.status().ToString()));
        return std::nullopt;
      }
      for (const Change& c : b->changes) {
        if (c.sequence <= after) {
          problems->push_back(absl::StrCat("feed: sequence ", c.sequence, " after ", after));
        }
        if (!o.feed.emplace(c.key_id, std::make_pair(c.sequence, c.record.has_value())).second) {
          problems->push_back(absl::StrCat("feed: ", c.key_id, " listed twice"));
        }
        if (c.record.has_value() &&
            !(o.keys.count(c.key_id) == 1 && o.keys.at(c.key_id) == *c.record)) {
          problems->push_back(absl::StrCat("feed: ", c.key_id, "'s record is not the stored one"));
        }
      }
      after = b->next_sequence;
      if (!b->more) break;
    }
    absl::StatusOr<std::uint64_t> last = s.LastSequence();
    if (!last.ok()) {
      problems->push_back(absl::StrCat("LastSequence: ", last.status().ToString()));
      return std::nullopt;
    }
    o.last_sequence = *last;
    if (after > *last) {
      problems->push_back(absl::StrCat("feed sequence ", after, " > LastSequence ", *last));
    }
    return o;
  }

  // Records what the store reports after an acknowledged operation: the
  // sequences must only grow.
  bool See(SqliteKeyStore& s) {
    absl::StatusOr<ChangeBatch> b = s.ChangesSince(model_.max_seq, 1000);
    if (!b.ok()) return false;
    for (const Change& c : b->changes) {
      REQUIRE(c.sequence > model_.max_seq);
      model_.seq_of[c.key_id] = c.sequence;
    }
    absl::StatusOr<std::uint64_t> last = s.LastSequence();
    if (!last.ok()) return false;
    REQUIRE(*last >= model_.max_seq);
    REQUIRE(*last >= b->next_sequence);
    model_.max_seq = *last;
    return true;
  }

  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> OpenStore() {
    SqliteOptions o;
    o.path = path_;
    o.synchronous = sync_;
    o.busy_timeout = absl::Seconds(5);
    return SqliteKeyStore::Create(o);
  }

  std::vector<const KeyRecord*> Keys(bool (*pred)(const KeyRecord&)) const {
    std::vector<const KeyRecord*> out;
    for (const auto& [id, r] : model_.keys) {
      if (pred(r)) out.push_back(&r);
    }
    return out;
  }

  // One trial: open under the power-loss VFS, run operations until the cut
  // (or the end), cut, reopen normally and check.
  std::vector<std::string> Trial(std::uint64_t trial_seed, Totals* totals) {
    std::mt19937_64 rng(trial_seed);
    const std::uint64_t cut_at = 1 + rng() % kMaxCut;
    const int n_ops = 4 + static_cast<int>(rng() % 12);
    std::optional<InFlight> in_flight;
    int acked = 0;
    INFO("trial seed " << trial_seed << ", cut at mutating call " << cut_at);

    vfs_->Install();
    vfs_->Arm(cut_at);
    {
      std::shared_ptr<SqliteKeyStore> store;
      std::unique_ptr<KeyManager> manager;
      auto open = [&]() -> bool {
        manager.reset();
        store.reset();
        absl::StatusOr<std::shared_ptr<SqliteKeyStore>> s = OpenStore();
        if (!s.ok()) {
          INFO(s.status().ToString());
          REQUIRE(vfs_->cut());
          return false;
        }
        store = *s;
        KeyManager::Options mo;
        mo.deployment = deployment_;
        mo.store = store;
        manager = keygate::testing::MustOk(KeyManager::Create(std::move(mo)));
        return true;
      };
      in_flight = InFlight{};  // the open (kOpen)
      const bool creating = !std::filesystem::exists(path_);
      const bool opened = open();
      if (!opened && creating) ++totals->cut_in_creation;
      if (!opened && migrating_) ++totals->cut_in_migration;
      if (opened) migrating_ = false;
      if (opened && See(*store)) {
        in_flight.reset();
        for (int i = 0; i < n_ops; ++i) {
          InFlight f;
          const absl::Status s = Step(rng, *manager, *store, &f, open);
          if (!s.ok()) {
            INFO(OpName(f.op) << ": " << s.ToString());
            REQUIRE(vfs_->cut());
            in_flight = std::move(f);
            break;
          }
          ++acked;
          ++totals->acked_by_kind[f.op];
          if (f.op == Op::kReopen && store == nullptr) break;  // cut during the reopen
          if (!See(*store)) break;                             // cut after the ack
        }
      }
      if (vfs_->cut()) ++totals->cut_inside;
      totals->syncs += vfs_->syncs();
      manager.reset();
      store.reset();
    }
    totals->acked_ops += static_cast<std::uint64_t>(acked);
    PowerLossVfs::CutReport report;
    REQUIRE(vfs_->PowerCut(Mix(trial_seed, 1), &report));
    vfs_->Uninstall();
    totals->cuts.files += report.files;
    totals->cuts.kept += report.kept;
    totals->cuts.dropped += report.dropped;
    totals->cuts.torn += report.torn;
    totals->cuts.sizes_reverted += report.sizes_reverted;
    if (in_flight.has_value() && in_flight->op != Op::kOpen && in_flight->op != Op::kReopen &&
        in_flight->op != Op::kCheckpoint) {
      ++totals->in_flight;
    }
    return Check(in_flight, totals);
  }

  // One random operation; `f` describes it (for the model, and for the check
  // should it be in flight at the cut). Model updated when it succeeds.
  template <typename Reopen>
  absl::Status Step(std::mt19937_64& rng, KeyManager& m, SqliteKeyStore& store, InFlight* f,
                    Reopen& reopen) {
    auto live = Keys([](const KeyRecord&) { return true; });
    auto active = Keys([](const KeyRecord& r) { return r.state == KeyState::kActive; });
    auto revoked = Keys([](const KeyRecord& r) { return r.state == KeyState::kRevoked; });
    Op op = Op::kCreate;
    for (;;) {
      op = static_cast<Op>(1 + rng() % (kOpKinds - 1));
      if ((op == Op::kModify || op == Op::kDelete || op == Op::kTouch) && live.empty()) continue;
      if ((op == Op::kRevoke || op == Op::kRoll) && active.empty()) continue;
      if (op == Op::kRestore && revoked.empty()) continue;
      break;
    }
    f->op = op;
    auto pick = [&](const std::vector<const KeyRecord*>& from) {
      return *from[rng() % from.size()];
    };
    const std::string tag = absl::StrCat(counter_++);
    switch (op) {
      case Op::kOpen:
        break;
      case Op::kCreate: {
        CreateKeyRequest req;
        req.name = f->name = absl::StrCat("created ", tag);
        req.owner = absl::StrCat("owner", rng() % 4);
        req.environment = rng() % 2 == 0 ? "production" : "preview";
        req.scopes = {"read:all"};
        if (rng() % 3 == 0) req.metadata["n"] = tag;
        absl::StatusOr<CreatedKey> k = m.Create(req, "powerloss");
        if (!k.ok()) return k.status();
        model_.keys[k->record.id] = k->record;
        return absl::OkStatus();
      }
      case Op::kModify: {
        const KeyRecord r = pick(live);
        f->id = r.id;
        KeyUpdate u;
        u.name = f->name = absl::StrCat("modified ", tag);
        u.description = std::string(rng() % 200, 'd');
        absl::StatusOr<KeyRecord> out = m.Modify(r.id, u, r.version, "powerloss");
        if (!out.ok()) return out.status();
        model_.keys[r.id] = *out;
        return absl::OkStatus();
      }
      case Op::kRevoke:
      case Op::kRestore: {
        const KeyRecord r = pick(op == Op::kRevoke ? active : revoked);
        f->id = r.id;
        absl::StatusOr<KeyRecord> out =
            op == Op::kRevoke ? m.Revoke(r.id, "powerloss") : m.Restore(r.id, "powerloss");
        if (!out.ok()) return out.status();
        model_.keys[r.id] = *out;
        return absl::OkStatus();
      }
      case Op::kRoll: {
        const KeyRecord r = pick(active);
        f->id = r.id;
        absl::StatusOr<CreatedKey> out =
            m.Roll(r.id, rng() % 2 == 0 ? absl::ZeroDuration() : absl::Hours(1), "powerloss");
        if (!out.ok()) return out.status();
        model_.keys[r.id] = out->record;
        return absl::OkStatus();
      }
      case Op::kDelete: {
        const KeyRecord r = pick(live);
        f->id = r.id;
        if (absl::Status s = m.Delete(r.id, "powerloss"); !s.ok()) return s;
        model_.keys.erase(r.id);
        model_.deleted.insert(r.id);
        return absl::OkStatus();
      }
      case Op::kInsertBatch: {
        const int n = 1 + static_cast<int>(rng() % 24);
        const absl::Time now = TruncateToMicros(absl::Now());
        for (int k = 0; k < n; ++k) {
          KeyRecord r;
          r.id = absl::StrFormat("key_batch%017d", batch_ids_++);
          r.name = absl::StrCat("batch ", tag, " #", k);
          r.owner = "importer";
          r.kind = KeyKind::kGeneral;
          r.environment = "production";
          r.scopes = {"read:all"};
          r.state = KeyState::kActive;
          r.created = r.updated = now;
          for (auto& b : r.digest) b = static_cast<std::uint8_t>(rng());
          r.hint = "kg_live_...batch";
          r.version = 1;
          f->records.push_back(std::move(r));
        }
        if (absl::Status s = store.InsertBatch(f->records, keygate::testing::CreatedNote());
            !s.ok())
          return s;
        for (const KeyRecord& r : f->records) model_.keys[r.id] = r;
        return absl::OkStatus();
      }
      case Op::kTouch: {
        std::vector<LastUsedUpdate> updates;
        const int n = 1 + static_cast<int>(rng() % 3);
        for (int k = 0; k < n; ++k) {
          KeyRecord r = pick(live);
          bool dup = false;
          for (const KeyRecord& seen : f->records) dup = dup || seen.id == r.id;
          if (dup) continue;
          r.last_used = absl::FromUnixMicros(1'700'000'000'000'000 + touch_us_++);
          updates.push_back(LastUsedUpdate{r.id, *r.last_used});
          f->records.push_back(std::move(r));
        }
        if (absl::Status s = store.TouchLastUsed(updates, absl::ZeroDuration()); !s.ok()) {
          return s;
        }
        for (const KeyRecord& r : f->records) model_.keys[r.id] = r;
        return absl::OkStatus();
      }
      case Op::kReopen:
        // A clean close (the WAL is checkpointed into the file) and an open.
        reopen();
        return absl::OkStatus();
      case Op::kCheckpoint: {
        // Another connection (say the CLI's) checkpoints while the store
        // stays open: the store's next write starts the WAL over (TRUNCATE
        // also cuts it to nothing).
        static constexpr const char* kModes[] = {"PASSIVE", "FULL", "RESTART", "TRUNCATE"};
        sqlite3* db = nullptr;
        int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
        if (rc == SQLITE_OK) {
          sqlite3_busy_timeout(db, 5000);
          const std::string sql = absl::StrCat("PRAGMA wal_checkpoint(", kModes[rng() % 4], ")");
          rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
        }
        sqlite3_close(db);
        if (rc != SQLITE_OK) return absl::UnavailableError(absl::StrCat("checkpoint: rc ", rc));
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  // After the cut: the file opens, is intact, and holds the model, give or
  // take the operation in flight.
  std::vector<std::string> Check(const std::optional<InFlight>& in_flight, Totals* totals) {
    std::vector<std::string> problems;
    if (!std::filesystem::exists(path_)) {
      // Cut while the new file was being created: it never got its name.
      if (model_.keys.empty() && model_.deleted.empty()) return problems;
      problems.emplace_back("the database file is gone");
      return problems;
    }
    SqliteOptions o;
    o.path = path_;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> s = SqliteKeyStore::Create(o);
    if (!s.ok()) {
      ++totals->unopenable;
      problems.push_back(absl::StrCat("open: ", s.status().ToString()));
      return problems;
    }
    if (absl::Status integrity = (*s)->CheckIntegrity(); !integrity.ok()) {
      ++totals->unopenable;
      problems.push_back(absl::StrCat("integrity: ", integrity.ToString()));
      return problems;
    }
    std::optional<Observed> seen = Observe(**s, &problems);
    if (!seen.has_value()) return problems;

    // The operation in flight landed whole or not at all.
    Model& m = model_;
    bool landed = false;
    if (in_flight.has_value()) {
      const InFlight& f = *in_flight;
      auto stored = [&](const std::string& id) -> const KeyRecord* {
        auto it = seen->keys.find(id);
        return it == seen->keys.end() ? nullptr : &it->second;
      };
      switch (f.op) {
        case Op::kOpen:
        case Op::kReopen:
        case Op::kCheckpoint:
          break;
        case Op::kCreate:
          for (const auto& [id, r] : seen->keys) {
            if (m.keys.count(id) == 0 && r.name == f.name) {
              m.keys[id] = r;
              landed = true;
              break;
            }
          }
          break;
        case Op::kModify:
        case Op::kRevoke:
        case Op::kRestore:
        case Op::kRoll: {
          const KeyRecord& before = m.keys.at(f.id);
          const KeyRecord* now = stored(f.id);
          if (now != nullptr && !(*now == before) && now->version == before.version + 1) {
            const bool right = (f.op == Op::kModify && now->name == f.name) ||
                               (f.op == Op::kRevoke && now->state == KeyState::kRevoked) ||
                               (f.op == Op::kRestore && now->state == KeyState::kActive) ||
                               (f.op == Op::kRoll && now->digest != before.digest);
            if (right) {
              m.keys[f.id] = *now;
              landed = true;
            }
          }
          break;
        }
        case Op::kDelete:
          if (stored(f.id) == nullptr) {
            m.keys.erase(f.id);
            m.deleted.insert(f.id);
            landed = true;
          }
          break;
        case Op::kInsertBatch:
        case Op::kTouch: {
          // One transaction: all or nothing.
          std::size_t present = 0;
          for (const KeyRecord& r : f.records) {
            const KeyRecord* now = stored(r.id);
            if (now != nullptr && *now == r) ++present;
          }
          if (present == f.records.size()) {
            for (const KeyRecord& r : f.records) m.keys[r.id] = r;
            landed = true;
          } else if (present != 0) {
            problems.push_back(absl::StrCat(OpName(f.op), " in flight landed in part: ", present,
                                            " of ", f.records.size()));
          }
          break;
        }
      }
      if (landed) ++totals->landed;
    }

    // Every acknowledged operation holds.
    for (const auto& [id, r] : m.keys) {
      auto it = seen->keys.find(id);
      if (it == seen->keys.end()) {
        problems.push_back(absl::StrCat(id, ": acknowledged key missing"));
      } else if (!(it->second == r)) {
        problems.push_back(absl::StrCat(id, ": stored record differs from the acknowledged one: ",
                                        Describe(it->second), "; expected ", Describe(r)));
      }
    }
    for (const auto& [id, r] : seen->keys) {
      if (m.keys.count(id) == 0) {
        problems.push_back(absl::StrCat(id, ": a key nobody acknowledged"));
      }
    }
    // The feed: every live key and every tombstone, at a sequence no lower
    // than one seen before; LastSequence never went back.
    for (const auto& [id, entry] : seen->feed) {
      const bool expected_live = m.keys.count(id) == 1;
      if (!expected_live && m.deleted.count(id) == 0) {
        problems.push_back(absl::StrCat("feed: unexpected entry ", id));
      } else if (entry.second != expected_live) {
        problems.push_back(
            absl::StrCat("feed: ", id, expected_live ? " listed as deleted" : " listed as live"));
      }
    }
    for (const auto& [id, seq] : m.seq_of) {
      auto it = seen->feed.find(id);
      if (it == seen->feed.end()) {
        problems.push_back(absl::StrCat("feed: ", id, " (seen at sequence ", seq, ") missing"));
      } else if (it->second.first < seq) {
        problems.push_back(absl::StrCat("feed: ", id, " at sequence ", it->second.first,
                                        ", seen at ", seq, " before the cut"));
      }
    }
    for (const std::string& id : m.deleted) {
      if (seen->feed.count(id) == 0) problems.push_back(absl::StrCat("feed: tombstone of ", id));
    }
    if (seen->last_sequence < m.max_seq) {
      problems.push_back(
          absl::StrCat("LastSequence went back from ", m.max_seq, " to ", seen->last_sequence));
    }
    if (!problems.empty()) return problems;
    // Continue from what the store holds (the in-flight operation resolved).
    for (const auto& [id, entry] : seen->feed) m.seq_of[id] = entry.first;
    m.max_seq = seen->last_sequence;
    return problems;
  }

  PowerLossVfs* vfs_;
  SqliteSynchronous sync_;
  std::uint64_t seed_;
  std::shared_ptr<const Deployment> deployment_;
  std::unique_ptr<TempDir> dir_;
  std::string path_;
  Model model_;
  bool migrating_ = false;  // the file is still at schema version 1
  std::uint64_t counter_ = 0;
  std::uint64_t batch_ids_ = 0;
  std::uint64_t touch_us_ = 0;
};

void Print(const char* what, std::uint64_t seed, const Totals& t) {
  std::cout << "sqlite power-loss test (" << what << "): seed " << seed << " (replay: "
            << "KEYGATE_POWERLOSS_SEED=" << seed << "), " << t.trials << " cuts, " << t.cut_inside
            << " inside the workload, " << t.acked_ops << " acknowledged operations (";
  for (const auto& [op, n] : t.acked_by_kind) std::cout << OpName(op) << " " << n << ", ";
  std::cout << "), " << t.in_flight << " mutations in flight at the cut (" << t.landed
            << " landed), " << t.syncs << " syncs; sectors kept " << t.cuts.kept << ", dropped "
            << t.cuts.dropped << ", torn " << t.cuts.torn << ", sizes reverted "
            << t.cuts.sizes_reverted << "; cuts in the creation of a new file " << t.cut_in_creation
            << ", in a migration " << t.cut_in_migration
            << "; trials that lost acknowledged writes " << t.lossy << " (unopenable or corrupt "
            << t.unopenable << ")\n";
}

constexpr std::uint64_t kDefaultSeed = 20261205;

TEST_CASE("SQLite store at synchronous=FULL keeps every acknowledged write through power cuts",
          "[sqlite][powerloss]") {
  const std::uint64_t seed = EnvNumber("KEYGATE_POWERLOSS_SEED", kDefaultSeed);
  const int trials = static_cast<int>(EnvNumber("KEYGATE_POWERLOSS_TRIALS", 1000));
  PowerLossVfs vfs;
  Harness h(&vfs, SqliteSynchronous::kFull, seed);
  Totals totals;
  const std::vector<std::string> problems = h.Run(trials, &totals);
  Print("FULL", seed, totals);
  for (const std::string& p : problems) std::cout << "  " << p << "\n";
  CHECK(problems.empty());
  // The workload reached every mutation kind, and most cuts landed inside it.
  for (int k = 1; k < kOpKinds; ++k) {
    INFO(OpName(static_cast<Op>(k)));
    CHECK(totals.acked_by_kind[static_cast<Op>(k)] > 0);
  }
  CHECK(totals.cut_inside * 2 > totals.trials);
  CHECK(totals.cut_in_creation > 0);
  CHECK(totals.cut_in_migration > 0);
  // Some operations in flight were lost (most are: a commit lands only when
  // the cut comes at its WAL sync and the page cache had written it all).
  CHECK(totals.landed < totals.in_flight);
  CHECK(totals.cuts.dropped > 0);
  CHECK(totals.cuts.torn > 0);
}

TEST_CASE("The power-loss test detects lost writes at synchronous=OFF", "[sqlite][powerloss]") {
  const std::uint64_t seed = EnvNumber("KEYGATE_POWERLOSS_SEED", kDefaultSeed) + 1;
  PowerLossVfs vfs;
  sqlite3_auto_extension(reinterpret_cast<void (*)()>(ForceSyncOff));
  g_force_sync_off = true;
  Harness h(&vfs, SqliteSynchronous::kFull, seed);
  Totals totals;
  const std::vector<std::string> problems = h.Run(50, &totals);
  g_force_sync_off = false;
  sqlite3_cancel_auto_extension(reinterpret_cast<void (*)()>(ForceSyncOff));
  Print("OFF", seed, totals);
  for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 5); ++i) {
    std::cout << "  e.g. " << problems[i] << "\n";
  }
  CHECK(totals.syncs == 0);  // OFF was in force: nothing was ever synced
  CHECK(totals.lossy > 0);
}

TEST_CASE("SQLite store at synchronous=NORMAL may lose the last commits but never corrupts",
          "[sqlite][powerloss]") {
  const std::uint64_t seed = EnvNumber("KEYGATE_POWERLOSS_SEED", kDefaultSeed) + 2;
  PowerLossVfs vfs;
  Harness h(&vfs, SqliteSynchronous::kNormal, seed);
  Totals totals;
  const std::vector<std::string> problems = h.Run(50, &totals);
  Print("NORMAL", seed, totals);
  for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 5); ++i) {
    std::cout << "  e.g. " << problems[i] << "\n";
  }
  CHECK(totals.unopenable == 0);
}

}  // namespace
}  // namespace keygate
