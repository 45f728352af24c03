// Crash safety of the SQLite store: a child process runs every kind of write
// (create, modify, revoke, restore, roll, delete through KeyManager;
// InsertBatch and TouchLastUsed on the store) in a loop, printing each
// operation before it starts and again once acknowledged; we SIGKILL it at
// a random moment (also during open and, on the first trial, the migration
// of a schema-version-1 file), then check that the file is intact and that
// nothing acknowledged was lost:
//   * PRAGMA integrity_check (and the name index's own check) pass;
//   * every key the run touched (all of them every 25 trials and at the end)
//     is in the state its last acknowledged operation left: existence,
//     state, version, name and last use; the operation in flight at the kill
//     landed whole (a batch: every key) or not at all, and its outcome
//     sticks;
//   * every known token verifies: ok while its key is active, revoked once
//     revoked;
//   * sequences never go back: LastSequence after recovery is no lower than
//     any the child printed, every later one is no lower still, and the
//     change feed is increasing, lists every live key and every deleted
//     one's tombstone (full checks).
// The same file accumulates all trials, so recovery is exercised on a
// database that has already survived earlier kills. SIGKILL keeps the OS
// page cache: this is process death, not power loss (sqlite_powerloss_test.cc).
//
// Trials: 50 by default (about 10-20 s), KEYGATE_CRASH_TRIALS=N for more,
// KEYGATE_STRESS=1 for 1000. The seed is fixed (printed);
// KEYGATE_CRASH_SEED=<n> runs another one (the kill times still vary with
// the machine's speed).

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "audit_file_sink.h"
#include "catch.h"
#include "keygate/audit_relay.h"
#include "keygate/deployment.h"
#include "keygate/reference_verifier.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "sqlite_test_util.h"

#ifndef KEYGATE_SQLITE_TEST_HELPER
#error "KEYGATE_SQLITE_TEST_HELPER must name the helper binary"
#endif

namespace keygate {
namespace {

// What a key must look like (exists == false: it must be absent).
struct Expect {
  bool exists = false;
  KeyState state = KeyState::kActive;
  std::uint64_t version = 0;
  std::string name;  // empty: not checked (batch keys)
  std::optional<std::int64_t> last_used_us;
  std::string token;  // empty: unknown (batch keys, a roll in flight)
};

struct Tracked {
  Expect acked;
  std::optional<Expect> pending;  // the outcome of the operation in flight
  bool ever = false;              // it existed (a deleted key leaves a tombstone)
};

bool Matches(const Expect& e, const absl::StatusOr<KeyRecord>& r) {
  if (!e.exists) return r.status().code() == absl::StatusCode::kNotFound;
  if (!r.ok()) return false;
  const std::optional<std::int64_t> used =
      r->last_used.has_value() ? std::optional<std::int64_t>(absl::ToUnixMicros(*r->last_used))
                               : std::nullopt;
  return r->state == e.state && r->version == e.version && (e.name.empty() || r->name == e.name) &&
         used == e.last_used_us;
}

std::string Describe(const Expect& e) {
  if (!e.exists) return "absent";
  return absl::StrCat("state ", static_cast<int>(e.state), " version ", e.version, " name '",
                      e.name, "' last used ", e.last_used_us.value_or(-1));
}

std::string Describe(const absl::StatusOr<KeyRecord>& r) {
  if (!r.ok()) return r.status().ToString();
  return absl::StrCat("state ", static_cast<int>(r->state), " version ", r->version, " name '",
                      r->name, "' last used ",
                      r->last_used.has_value() ? absl::ToUnixMicros(*r->last_used) : -1);
}

int Trials() {
  if (const char* n = std::getenv("KEYGATE_CRASH_TRIALS"); n != nullptr && *n != '\0') {
    return std::max(1, std::atoi(n));
  }
  if (const char* s = std::getenv("KEYGATE_STRESS");
      s != nullptr && *s != '\0' && std::string_view(s) != "0") {
    return 1000;
  }
  return 50;
}

constexpr std::uint64_t kDefaultSeed = 20261205;

// The audit log after a kill: one entry per write, in sequence order; each
// live key's last entry is at its version, a deleted key's last entry is its
// delete. Then a relay delivers what the killed writer's relay had not: the
// sink file (written by both) must hold every entry, in order, at least once.
void CheckAuditLog(const std::shared_ptr<SqliteKeyStore>& store, const std::string& db,
                   std::uint64_t last_sequence) {
  std::vector<Event> log;
  AuditQuery q;
  q.limit = kMaxAuditLimit;
  for (;;) {
    absl::StatusOr<AuditPage> page = store->ReadAudit(q);
    REQUIRE(page.ok());
    log.insert(log.end(), page->events.begin(), page->events.end());
    if (!page->more) break;
    q.after = page->next_after;
  }
  std::map<std::uint64_t, std::size_t> position;
  std::map<std::string, const Event*> last_entry;
  for (std::size_t i = 0; i < log.size(); ++i) {
    if (i > 0) REQUIRE(log[i - 1].sequence < log[i].sequence);
    REQUIRE(log[i].sequence <= last_sequence);
    position[log[i].sequence] = i;
    last_entry[log[i].key_id] = &log[i];
  }
  ListOptions lo;
  lo.limit = kMaxListLimit;
  std::size_t without_entries = 0;
  for (;;) {
    absl::StatusOr<ListPage> page = store->List(lo);
    REQUIRE(page.ok());
    for (const KeyRecord& r : page->keys) {
      auto it = last_entry.find(r.id);
      if (it == last_entry.end()) {
        ++without_entries;  // written before the audit log existed (the v1 file's keys)
        continue;
      }
      INFO("key " << r.id << " at version " << r.version << ", last entry " << *it->second);
      CHECK(it->second->version == r.version);
      CHECK(it->second->type != EventType::kDeleted);
    }
    if (page->next_cursor.empty()) break;
    lo.cursor = page->next_cursor;
  }
  CHECK(without_entries <= 3);
  for (const auto& [id, e] : last_entry) {
    if (e->type != EventType::kDeleted) continue;
    INFO("deleted key " << id);
    CHECK(store->Get(id).status().code() == absl::StatusCode::kNotFound);
  }

  AuditRelay::Options ro;
  ro.store = store;
  ro.sink = std::make_shared<testing::AuditFileSink>(db + ".sink");
  ro.consumer = "crash-sink";
  absl::StatusOr<std::unique_ptr<AuditRelay>> relay = AuditRelay::Create(std::move(ro));
  REQUIRE(relay.ok());
  absl::StatusOr<std::size_t> delivered = (*relay)->DeliverPending();
  INFO(delivered.status().ToString());
  REQUIRE(delivered.ok());
  std::ifstream sink(db + ".sink");
  std::ptrdiff_t prev = -1;
  std::ptrdiff_t furthest = -1;
  for (std::string line; std::getline(sink, line);) {
    INFO("sink line: " << line);
    REQUIRE(line.size() > 2);
    REQUIRE(line.substr(0, 2) == "E ");
    auto it = position.find(std::stoull(line.substr(2)));
    REQUIRE(it != position.end());  // only entries of the log
    const auto idx = static_cast<std::ptrdiff_t>(it->second);
    // In order: the next entry, or back to an earlier one (a re-delivery
    // after a kill), never skipping one.
    REQUIRE(idx <= prev + 1);
    prev = idx;
    furthest = std::max(furthest, idx);
  }
  CHECK(furthest + 1 == static_cast<std::ptrdiff_t>(log.size()));
}

TEST_CASE("SQLite store loses no acknowledged write when the writer is SIGKILLed",
          "[sqlite][crash]") {
  testing::TempDir dir;
  const std::string db = dir.File("crash.db");
  const std::string err_file = dir.File("child.err");
  const int trials = Trials();
  std::uint64_t run_seed = kDefaultSeed;
  if (const char* env = std::getenv("KEYGATE_CRASH_SEED"); env != nullptr && *env != '\0') {
    run_seed = std::strtoull(env, nullptr, 10);
  }
  std::cout << "sqlite crash test: seed " << run_seed << " (replay: KEYGATE_CRASH_SEED=" << run_seed
            << ")\n";
  std::mt19937_64 rng(run_seed);
  INFO("run seed " << run_seed << " (replay: KEYGATE_CRASH_SEED=" << run_seed << ")");

  std::shared_ptr<const Deployment> deployment = *Deployment::Create({});
  std::map<std::string, Tracked> model;
  std::uint64_t max_seq = 0;

  // The first child migrates a version-1 file; its keys as the migration
  // leaves them come from a migrated copy.
  testing::WriteSchemaV1File(db);
  {
    const std::string copy = dir.File("copy.db");
    std::filesystem::copy_file(db, copy);
    SqliteOptions o;
    o.path = copy;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> s = SqliteKeyStore::Create(o);
    REQUIRE(s.ok());
    ListOptions lo;
    lo.limit = kMaxListLimit;
    absl::StatusOr<ListPage> page = (*s)->List(lo);
    REQUIRE(page.ok());
    REQUIRE(page->keys.size() == 3);
    for (const KeyRecord& r : page->keys) {
      model[r.id].ever = true;
      Expect& e = model[r.id].acked;
      e.exists = true;
      e.state = r.state;
      e.version = r.version;
      e.name = r.name;
      if (r.last_used.has_value()) e.last_used_us = absl::ToUnixMicros(*r.last_used);
    }
    max_seq = *(*s)->LastSequence();
    REQUIRE(max_seq == 6);
    model["key_00000000goneaaaaaaaaaa"].ever = true;  // its tombstone
    s->reset();
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(copy + suffix);
  }

  int kills_before_first_ack = 0;
  std::size_t total_ops = 0;
  std::size_t checks = 0;
  std::size_t in_flight_landed = 0;
  std::size_t in_flight_total = 0;
  std::map<char, std::size_t> acked_by_kind;
  for (int trial = 0; trial < trials; ++trial) {
    INFO("trial " << trial);
    // A quarter of the kills come 0-150 ms after the start: in process start,
    // open and (until one gets through) the schema migration. The others come
    // 0-10 ms after the child printed its k-th line (k = 1..60): mid-write
    // and between writes, whatever the machine's speed.
    const bool early = rng() % 4 == 0;
    const int kill_after_ms = static_cast<int>(early ? rng() % 151 : rng() % 11);
    const std::size_t lines_first = early ? 0 : 1 + rng() % 60;
    std::string out;
    {
      testing::Child child({KEYGATE_SQLITE_TEST_HELPER, "churn", db,
                            std::to_string(run_seed + static_cast<std::uint64_t>(trial))},
                           {}, err_file);
      bool alive = true;
      const absl::Time give_up = absl::Now() + absl::Seconds(20);
      while (alive &&
             static_cast<std::size_t>(std::count(out.begin(), out.end(), '\n')) < lines_first &&
             absl::Now() < give_up) {
        alive = child.ReadSome(&out, 100);
      }
      const absl::Time deadline = absl::Now() + absl::Milliseconds(kill_after_ms);
      while (alive && absl::Now() < deadline) {
        const int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
        alive = child.ReadSome(&out, std::max(1, left));
      }
      ::kill(child.pid(), SIGKILL);
      out += child.ReadAll();
      const int status = child.Wait();
      // It must have died by our hand, not by an error of its own.
      INFO("child stderr: " << [&] {
        std::ifstream f(err_file);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
      }());
      REQUIRE(WIFSIGNALED(status));
      REQUIRE(WTERMSIG(status) == SIGKILL);
    }

    // Only complete lines count.
    const std::size_t last_nl = out.rfind('\n');
    const std::string complete = last_nl == std::string::npos ? "" : out.substr(0, last_nl);
    std::set<std::string> touched;
    std::vector<std::string> pending_ids;  // the operation in flight (a batch: several)
    std::string pending_create;            // the name of a create in flight
    bool acked_any = false;
    std::istringstream lines(complete);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty()) continue;
      INFO("line: " << line);
      const char kind = line[0];
      std::istringstream fields(line.substr(1));
      std::vector<std::string> f;
      for (std::string w; fields >> w;) f.push_back(w);
      auto id_field = [&](std::size_t i) -> Tracked& {
        REQUIRE(f.size() > i);
        touched.insert(f[i]);
        return model[f[i]];
      };
      if (kind >= 'a' && kind <= 'z') {
        // Begun: what it would leave, should it land.
        pending_ids.clear();
        pending_create.clear();
        if (kind == 'c') {
          pending_create = line.substr(2);
          continue;
        }
        if (kind == 'b') {
          for (std::size_t i = 0; i < f.size(); ++i) {
            Tracked& t = id_field(i);
            t.pending = Expect{true, KeyState::kActive, 1, "", std::nullopt, ""};
            pending_ids.push_back(f[i]);
          }
          continue;
        }
        const std::size_t at = kind == 't' ? 1 : 0;
        Tracked& t = id_field(at);
        REQUIRE(t.acked.exists);
        Expect e = t.acked;
        if (kind == 'm') {
          e.version++;
          e.name = line.substr(line.find(' ', 2) + 1);
        } else if (kind == 'r' || kind == 's') {
          e.version++;
          e.state = kind == 'r' ? KeyState::kRevoked : KeyState::kActive;
        } else if (kind == 'l') {
          e.version++;
          e.token.clear();  // not known until acknowledged
        } else if (kind == 'd') {
          e = Expect{};
        } else if (kind == 't') {
          e.last_used_us = std::stoll(f[0]);
        } else {
          FAIL("unexpected line");
        }
        t.pending = e;
        pending_ids.push_back(f[at]);
        continue;
      }
      // Acknowledged.
      ++total_ops;
      acked_any = true;
      ++acked_by_kind[kind];
      if (kind == 'Q') {
        REQUIRE(f.size() == 1);
        const std::uint64_t seq = std::stoull(f[0]);
        REQUIRE(seq >= max_seq);  // never back, within a run and across kills
        max_seq = seq;
        --total_ops;
        continue;
      }
      if (kind == 'C') {
        REQUIRE(f.size() == 3);
        Tracked& t = id_field(0);
        REQUIRE_FALSE(t.acked.exists);
        t.acked =
            Expect{true, KeyState::kActive, std::stoull(f[1]), pending_create, std::nullopt, f[2]};
        t.ever = true;
        pending_create.clear();
        continue;
      }
      REQUIRE(!pending_ids.empty());
      for (const std::string& id : pending_ids) {
        Tracked& t = model.at(id);
        REQUIRE(t.pending.has_value());
        t.acked = *t.pending;
        t.ever = t.ever || t.acked.exists;
        t.pending.reset();
      }
      if (kind == 'M' || kind == 'R' || kind == 'S' || kind == 'L') {
        REQUIRE(f.size() >= 2);
        Tracked& t = model.at(f[0]);
        REQUIRE(t.acked.version == std::stoull(f[1]));
        if (kind == 'L') t.acked.token = f.at(2);
      }
      pending_ids.clear();
    }
    if (!acked_any) ++kills_before_first_ack;

    SqliteOptions o;
    o.path = db;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
    INFO(store.status().ToString());
    REQUIRE(store.ok());
    absl::Status integrity = (*store)->CheckIntegrity();
    INFO(integrity.ToString());
    REQUIRE(integrity.ok());

    // Sequences never go back.
    absl::StatusOr<std::uint64_t> last = (*store)->LastSequence();
    REQUIRE(last.ok());
    REQUIRE(*last >= max_seq);
    max_seq = *last;

    CheckAuditLog(*store, db, *last);

    // A create in flight: its key (found by its unique name) may exist.
    if (!pending_create.empty()) {
      ++in_flight_total;
      ListOptions lo;
      lo.filter.name_contains = pending_create;
      absl::StatusOr<ListPage> page = (*store)->List(lo);
      REQUIRE(page.ok());
      std::vector<const KeyRecord*> found;  // "#1" is also in "#10": exact names only
      for (const KeyRecord& r : page->keys) {
        if (r.name == pending_create) found.push_back(&r);
      }
      REQUIRE(found.size() <= 1);
      if (!found.empty()) {
        const KeyRecord& r = *found[0];
        model[r.id].acked = Expect{true, r.state, r.version, r.name, std::nullopt, ""};
        model[r.id].ever = true;
        touched.insert(r.id);
        ++in_flight_landed;
      }
    }

    absl::StatusOr<std::unique_ptr<ReferenceVerifier>> verifier = ReferenceVerifier::Create(
        {.deployment = deployment, .store = *store, .environment = "production"});
    REQUIRE(verifier.ok());
    absl::StatusOr<std::unique_ptr<ReferenceVerifier>> preview = ReferenceVerifier::Create(
        {.deployment = deployment, .store = *store, .environment = "preview"});
    REQUIRE(preview.ok());
    const absl::Time now = absl::Now();
    // The in-flight operation: all of its keys landed or none.
    std::size_t landed = 0;
    for (const std::string& id : pending_ids) {
      Tracked& t = model.at(id);
      absl::StatusOr<KeyRecord> r = (*store)->Get(id);
      INFO("in flight: key " << id << ": expected " << Describe(t.acked) << " or "
                             << Describe(*t.pending) << ", found " << Describe(r));
      if (Matches(*t.pending, r) && !Matches(t.acked, r)) {
        ++landed;
        t.acked = *t.pending;
        t.ever = t.ever || t.acked.exists;
      } else {
        REQUIRE(Matches(t.acked, r));
      }
      t.pending.reset();
      if (!t.ever) {  // a batch key that never was
        model.erase(id);
        touched.erase(id);
      }
    }
    REQUIRE((landed == 0 || landed == pending_ids.size()));
    if (!pending_ids.empty()) {
      ++in_flight_total;
      if (landed != 0) ++in_flight_landed;
    }
    // The keys the last run touched (the in-flight one included), a sample
    // of older ones, and all of them every 25th trial and at the end (old
    // keys are not necessarily written again, so a loss there would be the
    // store's doing; the full checks catch it).
    const bool full = trial % 25 == 24 || trial + 1 == trials;
    std::vector<std::string> to_check(touched.begin(), touched.end());
    for (const auto& entry : model) {
      if (full || rng() % std::max<std::size_t>(1, model.size() / 32) == 0) {
        to_check.push_back(entry.first);
      }
    }
    for (const std::string& id : to_check) {
      const Tracked& t = model.at(id);
      INFO("key " << id);
      absl::StatusOr<KeyRecord> r = (*store)->Get(id);
      INFO("expected " << Describe(t.acked) << ", found " << Describe(r));
      REQUIRE(Matches(t.acked, r));
      ++checks;
      if (!t.acked.exists || t.acked.token.empty()) continue;
      const ReferenceVerifier& v = r->environment == "production" ? **verifier : **preview;
      const Verdict verdict = v.VerifyToken(t.acked.token, Requirement::AnyValidKey(), now);
      REQUIRE(verdict.key() == id);
      if (r->state == KeyState::kActive) {
        REQUIRE(verdict.outcome == Outcome::kOk);
      } else {
        REQUIRE(verdict.outcome == Outcome::kRevoked);
      }
    }
    if (full) {
      // The feed: increasing, within LastSequence, every live key once with
      // its record and every deleted one as a tombstone.
      std::map<std::string, bool> feed;
      std::uint64_t after = 0;
      for (;;) {
        absl::StatusOr<ChangeBatch> b = (*store)->ChangesSince(after, 1000);
        REQUIRE(b.ok());
        for (const Change& c : b->changes) {
          REQUIRE(c.sequence > after);
          REQUIRE(c.sequence <= max_seq);
          after = c.sequence;
          REQUIRE(feed.emplace(c.key_id, c.record.has_value()).second);
        }
        after = b->next_sequence;
        if (!b->more) break;
      }
      std::size_t live = 0;
      for (const auto& [id, t] : model) {
        INFO("feed: key " << id);
        REQUIRE(t.ever);
        REQUIRE(feed.count(id) == 1);
        REQUIRE(feed.at(id) == t.acked.exists);
        if (t.acked.exists) ++live;
      }
      REQUIRE(feed.size() == model.size());
      REQUIRE(*(*store)->Count() == live);
    }
  }
  std::cout << "sqlite crash test: " << trials << " SIGKILL trials, " << total_ops
            << " acknowledged operations (";
  for (const auto& [kind, n] : acked_by_kind) std::cout << kind << " " << n << ", ";
  std::cout << "), " << model.size() << " keys, " << checks << " key checks, " << in_flight_total
            << " operations in flight at a kill (" << in_flight_landed << " landed), "
            << kills_before_first_ack << " kills before the first acknowledgement, last sequence "
            << max_seq << "\n";
  CHECK(model.size() > static_cast<std::size_t>(trials));  // the child did real work
  for (const char kind : std::string("CMRSLDBTQ")) {
    INFO("acknowledged operations of kind " << kind);
    CHECK(acked_by_kind[kind] > 0);
  }
}

}  // namespace
}  // namespace keygate
