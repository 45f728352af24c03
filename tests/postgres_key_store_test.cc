// PostgresKeyStore beyond the conformance suite: a change feed without gaps while writers commit
// out of order, NOTIFY between two stores, migrations (from version 1, concurrent, newer
// refused), option checks, errors that never show a password, and COPY bulk inserts. Against a
// real PostgreSQL server started for this process (tests/postgres_server.h).

#include "keygate/postgres/postgres_key_store.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/testing/key_store_conformance.h"
#include "keygate/verifier.h"
#include "postgres/test_peer.h"
#include "postgres_test_util.h"
#include "test_util.h"

namespace {

using keygate::KeyRecord;
using keygate::PostgresKeyStore;
using keygate::PostgresOptions;
using keygate::conformance::MakeRecord;
using keygate::testing::CreatedNote;
using keygate::testing::SharedPostgres;
using keygate::testing::TestPostgresOptions;

std::unique_ptr<PostgresKeyStore> Open(const PostgresOptions& o) {
  absl::StatusOr<std::unique_ptr<PostgresKeyStore>> s = PostgresKeyStore::Create(o);
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return *std::move(s);
}

// Generated-shape ids ("key_" and 22 alphanumerics), which errors quote.
std::string KeyId(int i) { return absl::StrCat("key_TestTestTestTest", 100000 + i); }

// Follows a store's feed as a Verifier does, recording each key's latest state.
struct Follower {
  std::uint64_t cursor = 0;
  std::map<std::string, std::uint64_t> versions;  // key id -> version (deleted keys erased)
  absl::Status Poll(keygate::KeyStore& store) {
    for (;;) {
      absl::StatusOr<keygate::ChangeBatch> b = store.ChangesSince(cursor, 64);
      if (!b.ok()) return b.status();
      for (const keygate::Change& c : b->changes) {
        if (c.record.has_value()) {
          versions[c.key_id] = c.record->version;
        } else {
          versions.erase(c.key_id);
        }
      }
      cursor = b->next_sequence;
      if (!b->more) return absl::OkStatus();
    }
  }
};

}  // namespace

TEST_CASE("PostgresKeyStore: the feed skips no change while writers commit out of order",
          "[postgres][feed]") {
  if (SharedPostgres() == nullptr) return;
  const PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  std::unique_ptr<PostgresKeyStore> store = Open(o);
  // Each write waits 0-3 ms between taking its sequence and COMMIT. With sequence numbers that
  // commit in any order (a plain SEQUENCE), a follower reading meanwhile would pass a number
  // whose transaction commits later and never see that key.
  std::atomic<std::uint64_t> seed{1};
  keygate::internal::PostgresTestPeer::SetBeforeCommit(*store, [&seed] {
    thread_local std::mt19937 rng(static_cast<unsigned>(seed.fetch_add(1)));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
  });
  constexpr int kWriters = 6;
  constexpr int kPerWriter = 40;
  std::atomic<int> done{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kPerWriter; ++i) {
        if (!store->Insert(MakeRecord(KeyId(w * kPerWriter + i)), CreatedNote()).ok()) ++failures;
      }
      ++done;
    });
  }
  // A follower on a second store object (another server), polling all along.
  std::unique_ptr<PostgresKeyStore> reader = Open(o);
  Follower follower;
  absl::Status poll;
  int polls = 0;
  while (done.load() < kWriters && poll.ok()) {
    poll = follower.Poll(*reader);
    ++polls;
  }
  for (std::thread& t : writers) t.join();
  REQUIRE(poll.ok());
  REQUIRE(failures.load() == 0);
  REQUIRE(polls > 10);  // the follower read while writes were in flight
  // Continuing from where it was, never from zero: a skipped sequence would stay missing.
  REQUIRE(follower.Poll(*reader).ok());
  CHECK(follower.versions.size() == static_cast<std::size_t>(kWriters * kPerWriter));
  CHECK(follower.cursor == static_cast<std::uint64_t>(kWriters * kPerWriter));
}

TEST_CASE("PostgresKeyStore: another store's subscribers wake on NOTIFY", "[postgres][notify]") {
  if (SharedPostgres() == nullptr) return;
  PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  o.poll_interval = absl::Hours(1);  // only a notification can wake them
  std::unique_ptr<PostgresKeyStore> writer = Open(o);
  std::unique_ptr<PostgresKeyStore> reader = Open(o);
  std::mutex mu;
  int wakes = 0;
  absl::StatusOr<std::unique_ptr<keygate::Subscription>> sub = reader->Subscribe([&] {
    std::lock_guard<std::mutex> lock(mu);
    ++wakes;
  });
  REQUIRE(sub.ok());
  // The listener's first wake-up (after LISTEN) comes once it is connected.
  const absl::Time start = absl::Now();
  while (reader->Stats().listener_connects == 0 && absl::Now() - start < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  REQUIRE(reader->Stats().listener_connects == 1);
  const std::uint64_t before = reader->Stats().notifications;
  REQUIRE(writer->Insert(MakeRecord(KeyId(1)), CreatedNote()).ok());
  while (reader->Stats().notifications == before && absl::Now() - start < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  CHECK(reader->Stats().notifications > before);
  CHECK(reader->Stats().polls == 0);
  sub->reset();
}

TEST_CASE("PostgresKeyStore: a version 1 schema migrates to the latest, keys and feed intact",
          "[postgres][migration]") {
  if (SharedPostgres() == nullptr) return;
  // The history to migrate, written by this keygate in a schema of its own: three keys, one
  // deleted, one modified (sequences 1-5), then copied into a version 1 schema in version 1's
  // layout (a change row per key id, deleted or not).
  const PostgresOptions src = TestPostgresOptions(*SharedPostgres());
  std::unique_ptr<PostgresKeyStore> source = Open(src);
  KeyRecord a =
      MakeRecord(KeyId(1), "alice", "production", keygate::KeyKind::kGeneral, "Billing Export");
  REQUIRE(source->Insert(a, CreatedNote()).ok());
  REQUIRE(source->Insert(MakeRecord(KeyId(2)), CreatedNote()).ok());
  REQUIRE(source->Insert(MakeRecord(KeyId(4)), CreatedNote()).ok());
  REQUIRE(source->Delete(KeyId(4), std::nullopt, keygate::testing::DeletedNote()).ok());
  absl::StatusOr<KeyRecord> two = source->Get(KeyId(2));
  REQUIRE(two.ok());
  two->description = "modified";
  REQUIRE(source->Update(*two, keygate::testing::ModifiedNote()).ok());
  absl::StatusOr<keygate::ChangeBatch> history = source->ChangesSince(0, 10);
  REQUIRE(history.ok());
  REQUIRE(history->changes.size() == 3);

  const PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  {
    absl::StatusOr<std::unique_ptr<PostgresKeyStore>> v1 =
        keygate::internal::PostgresTestPeer::Create(o, 1);
    REQUIRE(v1.ok());
  }
  const std::string kV1Columns =
      "id, name, name_lower, description, owner, kind, environment, scopes, state, created_us, "
      "updated_us, expires_us, last_used_us, rate_limit_rate, rate_limit_period_us, "
      "rate_limit_burst, webhook_url, accounts, metadata, digest, hint, previous_digest, "
      "previous_hint, previous_valid_until_us, version";
  const std::string kV1AuditColumns =
      "sequence, at_us, type, actor, key_id, owner, fields, version";
  const std::string from = absl::StrCat("\"", src.schema, "\".");
  const std::string to = absl::StrCat("\"", o.schema, "\".");
  absl::StatusOr<std::string> copied = SharedPostgres()->Psql(
      absl::StrCat("INSERT INTO ", to, "keys (", kV1Columns, ") SELECT ", kV1Columns, " FROM ",
                   from, "keys; ", "INSERT INTO ", to, "digests SELECT * FROM ", from, "digests; ",
                   "INSERT INTO ", to, "changes (key_id, sequence) SELECT id, sequence FROM ", from,
                   "keys UNION ALL SELECT key_id, sequence FROM ", from, "changes; ",
                   "INSERT INTO ", to, "audit SELECT ", kV1AuditColumns, " FROM ", from, "audit; ",
                   "UPDATE ", to, "sequence_counter SET last = (SELECT last FROM ", from,
                   "sequence_counter); ", "SELECT count(*) FROM ", to, "changes"));
  INFO(copied.status().ToString());
  REQUIRE(copied.ok());
  REQUIRE(*copied == "3");

  std::unique_ptr<PostgresKeyStore> latest = Open(o);
  absl::StatusOr<std::string> version =
      SharedPostgres()->Psql(absl::StrCat("SELECT version FROM ", to, "schema_version"));
  REQUIRE(version.ok());
  CHECK(*version == std::to_string(PostgresKeyStore::kSchemaVersion));
  absl::StatusOr<std::string> indexes =
      SharedPostgres()->Psql(absl::StrCat("SELECT string_agg(indexname, ',' ORDER BY indexname) "
                                          "FROM pg_indexes WHERE schemaname = '",
                                          o.schema, "' AND tablename = 'keys'"));
  REQUIRE(indexes.ok());
  CHECK(
      *indexes ==
      "keys_name_trgm,keys_one_active_personal,keys_owner,keys_pkey,keys_sequence,keys_short_name");
  // Version 3 keeps tombstones only.
  absl::StatusOr<std::string> tombstones =
      SharedPostgres()->Psql(absl::StrCat("SELECT string_agg(key_id, ',') FROM ", to, "changes"));
  REQUIRE(tombstones.ok());
  CHECK(*tombstones == KeyId(4));
  CHECK(latest->Get(KeyId(1)).ok());
  keygate::ListOptions search;
  search.filter.name_contains = "LING exp";
  absl::StatusOr<keygate::ListPage> page = latest->List(search);
  REQUIRE(page.ok());
  REQUIRE(page->keys.size() == 1);
  CHECK(page->keys[0].id == KeyId(1));
  // Version 4 recorded the stored names' characters: searches of one or two characters, which
  // are answered through them, still find the key.
  for (const char* needle : {"G ", "x"}) {
    search.filter.name_contains = needle;
    page = latest->List(search);
    REQUIRE(page.ok());
    REQUIRE(page->keys.size() == 1);
    CHECK(page->keys[0].id == KeyId(1));
  }
  // The feed reads as it did before the migration: the same sequences and records.
  absl::StatusOr<keygate::ChangeBatch> feed = latest->ChangesSince(0, 10);
  REQUIRE(feed.ok());
  REQUIRE(feed->changes.size() == history->changes.size());
  for (std::size_t i = 0; i < feed->changes.size(); ++i) {
    const keygate::Change& got = feed->changes[i];
    const keygate::Change& want = history->changes[i];
    INFO("change " << i << ": " << got.key_id << " at " << got.sequence);
    CHECK(got.sequence == want.sequence);
    CHECK(got.key_id == want.key_id);
    CHECK(got.record == want.record);
  }
  CHECK(feed->changes[1].key_id == KeyId(4));
  CHECK(!feed->changes[1].record.has_value());
  CHECK(feed->next_sequence == 5);
  REQUIRE(latest->Insert(MakeRecord(KeyId(3)), CreatedNote()).ok());
  absl::StatusOr<std::uint64_t> last = latest->LastSequence();
  REQUIRE(last.ok());
  CHECK(*last == 6);
  absl::StatusOr<keygate::ChangeBatch> more = latest->ChangesSince(5, 10);
  REQUIRE(more.ok());
  REQUIRE(more->changes.size() == 1);
  CHECK(more->changes[0].sequence == 6);
  CHECK(more->changes[0].key_id == KeyId(3));
}

TEST_CASE("PostgresKeyStore: a feed page read ahead is served only while it is not the last",
          "[postgres][feed]") {
  // After a full page, the store sends the next page's query at once (the server reads it while
  // the caller applies). That page was read before the call that takes it: used only if it is
  // full (the caller reads on), never as the last page, which a revoke must not miss.
  if (SharedPostgres() == nullptr) return;
  std::unique_ptr<PostgresKeyStore> store = Open(TestPostgresOptions(*SharedPostgres()));
  for (int i = 1; i <= 4; ++i) REQUIRE(store->Insert(MakeRecord(KeyId(i)), CreatedNote()).ok());
  // Full pages one after another: the pages read ahead are used, and read as fresh ones would.
  std::vector<std::string> ids;
  std::uint64_t cursor = 0;
  for (;;) {
    absl::StatusOr<keygate::ChangeBatch> b = store->ChangesSince(cursor, 1);
    REQUIRE(b.ok());
    for (const keygate::Change& c : b->changes) ids.push_back(c.key_id);
    cursor = b->next_sequence;
    if (!b->more) break;
  }
  CHECK(ids == std::vector<std::string>{KeyId(1), KeyId(2), KeyId(3), KeyId(4)});
  CHECK(cursor == 4);

  // The page after key 3 was read ahead (holding key 4 alone: the last page); key 4 then changes.
  absl::StatusOr<keygate::ChangeBatch> first = store->ChangesSince(2, 1);
  REQUIRE(first.ok());
  REQUIRE(first->more);
  absl::StatusOr<KeyRecord> four = store->Get(KeyId(4));
  REQUIRE(four.ok());
  four->state = keygate::KeyState::kRevoked;
  REQUIRE(store->Update(*four, keygate::testing::ModifiedNote()).ok());
  absl::StatusOr<keygate::ChangeBatch> last = store->ChangesSince(first->next_sequence, 1);
  REQUIRE(last.ok());
  REQUIRE(last->changes.size() == 1);
  CHECK(last->changes[0].sequence == 5);
  REQUIRE(last->changes[0].record.has_value());
  CHECK(last->changes[0].record->state == keygate::KeyState::kRevoked);
  CHECK(!last->more);

  // A page read ahead for another cursor is dropped; the call reads its own.
  REQUIRE(store->ChangesSince(0, 1).ok());  // sends the page after key 1
  absl::StatusOr<keygate::ChangeBatch> all = store->ChangesSince(0, 10);
  REQUIRE(all.ok());
  CHECK(all->changes.size() == 4);
  CHECK(all->next_sequence == 5);
  // And the connection it ran on is usable again, as is every other.
  for (int i = 0; i < 8; ++i) CHECK(store->Get(KeyId(1)).ok());
}

TEST_CASE("PostgresKeyStore: a name search of one or two characters finds sparse matches",
          "[postgres][search]") {
  // pg_trgm has no trigram for such a needle: the store scans the first keys for a page, then
  // asks the index for the runs of three characters that hold the needle (name_trigrams) and
  // for the names shorter than three. Names written through every path (Insert, Update,
  // InsertBatch) lie past that scan, each the only one holding some run, so a path that did not
  // record its runs loses matches.
  if (SharedPostgres() == nullptr) return;
  std::unique_ptr<PostgresKeyStore> store = Open(TestPostgresOptions(*SharedPostgres()));
  std::map<std::string, std::string> names;  // id -> name
  const auto general = [](int i, const std::string& name) {
    return MakeRecord(KeyId(i), "alice", "production", keygate::KeyKind::kGeneral, name);
  };
  std::vector<KeyRecord> batch;
  for (int i = 0; i < 12'000; ++i) batch.push_back(general(i, absl::StrCat("filler ", i)));
  // Past the scan: 676 names "y" + two letters, more runs holding "y" than the store asks the
  // index for (it scans instead).
  for (int i = 0; i < 26 * 26; ++i) {
    batch.push_back(general(
        30'000 + i, absl::StrCat("y", std::string(1, 'a' + i / 26), std::string(1, 'a' + i % 26))));
  }
  REQUIRE(store->InsertBatch(batch, CreatedNote()).ok());
  for (const KeyRecord& r : batch) names[r.id] = r.name;
  const auto insert = [&](int i, const std::string& name) {
    REQUIRE(store->Insert(general(i, name), CreatedNote()).ok());
    names[KeyId(i)] = name;
  };
  insert(20'000, "Zq at the start");
  insert(20'001, "plain");
  absl::StatusOr<KeyRecord> renamed = store->Get(KeyId(20'001));
  REQUIRE(renamed.ok());
  renamed->name = "\xc3\xa9zq\xc3\xbc";  // "ézqü": the update alone holds these runs
  REQUIRE(store->Update(*renamed, keygate::testing::ModifiedNote()).ok());
  names[KeyId(20'001)] = renamed->name;
  batch = {general(20'002, "50%_off!"), general(20'003, "batch \xcf\x89q"),  // "ωq"
           general(20'004, "\xcf\x89")};                                     // "ω"
  REQUIRE(store->InsertBatch(batch, CreatedNote()).ok());
  for (const KeyRecord& r : batch) names[r.id] = r.name;
  insert(20'005, "a second zq");
  insert(20'006, "Q!");

  const auto lower = [](std::string s) {
    for (char& c : s) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return s;
  };
  for (const std::string needle :
       {"zq", "ZQ", "z", "\xc3\xa9", "\xc3\xbc", "\xc3\xa9z", "%_", "_", "!", "q!", "\xcf\x89",
        "\xcf\x89q", "q", "zz", "\xe2\x82\xac", "y", "yb", "bz"}) {
    INFO("needle " << needle);
    std::vector<std::string> want;
    for (const auto& [id, name] : names) {
      if (lower(name).find(lower(needle)) != std::string::npos) want.push_back(id);
    }
    std::vector<std::string> got;
    keygate::ListOptions o;
    o.filter.name_contains = needle;
    o.limit = want.size() > 10 ? 100 : 2;
    for (int pages = 0; pages < 10; ++pages) {
      absl::StatusOr<keygate::ListPage> page = store->List(o);
      REQUIRE(page.ok());
      for (const KeyRecord& k : page->keys) got.push_back(k.id);
      if (page->next_cursor.empty()) break;
      o.cursor = page->next_cursor;
    }
    CHECK(got == want);
  }
  // A needle most names hold: the first page comes from the scan, with a cursor to the next.
  keygate::ListOptions dense;
  dense.filter.name_contains = "r ";
  dense.limit = 50;
  absl::StatusOr<keygate::ListPage> page = store->List(dense);
  REQUIRE(page.ok());
  REQUIRE(page->keys.size() == 50);
  CHECK(page->keys.front().id == KeyId(0));
  CHECK(page->keys.back().id == KeyId(49));
  CHECK(!page->next_cursor.empty());
}

TEST_CASE("PostgresKeyStore: servers starting at once migrate once; newer schemas are refused",
          "[postgres][migration]") {
  if (SharedPostgres() == nullptr) return;
  const PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  std::vector<std::thread> starters;
  std::atomic<int> ok{0};
  std::mutex mu;
  std::vector<std::string> errors;
  for (int i = 0; i < 4; ++i) {
    starters.emplace_back([&] {
      absl::StatusOr<std::unique_ptr<PostgresKeyStore>> s = PostgresKeyStore::Create(o);
      if (s.ok()) {
        ++ok;
      } else {
        std::lock_guard<std::mutex> lock(mu);
        errors.push_back(s.status().ToString());
      }
    });
  }
  for (std::thread& t : starters) t.join();
  INFO((errors.empty() ? std::string() : errors[0]));
  CHECK(ok.load() == 4);
  REQUIRE(SharedPostgres()
              ->Psql(absl::StrCat("UPDATE \"", o.schema, "\".schema_version SET version = 99"))
              .ok());
  absl::StatusOr<std::unique_ptr<PostgresKeyStore>> newer = PostgresKeyStore::Create(o);
  REQUIRE(newer.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(newer.status().message()), Catch::Contains("version 99 is newer"));
}

TEST_CASE("PostgresKeyStore: options are checked; errors never show the password",
          "[postgres][options]") {
  PostgresOptions o;
  CHECK(PostgresKeyStore::Create(o).status().code() == absl::StatusCode::kInvalidArgument);
  o.url = "postgresql://u:hunter2secret@127.0.0.1:1/db?connect_timeout=2";
  for (const char* bad : {"", "Keygate", "1abc", "a-b", "a\"b"}) {
    PostgresOptions b = o;
    b.schema = bad;
    const absl::Status s = PostgresKeyStore::Create(b).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::StartsWith("schema:"));
  }
  PostgresOptions p = o;
  p.pool_size = 0;
  CHECK(PostgresKeyStore::Create(p).status().code() == absl::StatusCode::kInvalidArgument);
  p = o;
  p.call_timeout = absl::Milliseconds(1);
  CHECK(PostgresKeyStore::Create(p).status().code() == absl::StatusCode::kInvalidArgument);
  p = o;
  p.url = "postgresql://u:hunter2secret@[broken";
  const absl::Status unparsable = PostgresKeyStore::Create(p).status();
  CHECK(unparsable.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(unparsable.message()), !Catch::Contains("hunter2secret"));
  // Nothing listens on port 1: unavailable, within the deadline, and the password stays out.
  o.call_timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  const absl::Status down = PostgresKeyStore::Create(o).status();
  CHECK(absl::Now() - start < absl::Seconds(5));
  CHECK(down.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(down.message()), !Catch::Contains("hunter2secret"));
  CHECK_THAT(std::string(down.message()), Catch::Contains("host=127.0.0.1"));
}

TEST_CASE("PostgresKeyStore: InsertBatch copies all or nothing and names a conflict",
          "[postgres][batch]") {
  if (SharedPostgres() == nullptr) return;
  std::unique_ptr<PostgresKeyStore> store = Open(TestPostgresOptions(*SharedPostgres()));
  std::vector<KeyRecord> batch;
  for (int i = 0; i < 2000; ++i) {
    KeyRecord r = MakeRecord(KeyId(i), "owner" + std::to_string(i % 7), "production",
                             keygate::KeyKind::kGeneral, absl::StrCat("name\t", i, "\\ \n x"));
    r.metadata["tab"] = "a\tb";
    if (i % 2 == 0) r.sealed_token = absl::StrCat("kge1.sealed\t", i);  // COPY escapes it
    if (i % 3 == 0) r.sealed_webhook_secret = absl::StrCat("kge1.whsec\\", i);
    batch.push_back(std::move(r));
  }
  REQUIRE(store->InsertBatch(batch, CreatedNote()).ok());
  absl::StatusOr<std::uint64_t> n = store->Count();
  REQUIRE(n.ok());
  CHECK(*n == 2000);
  absl::StatusOr<KeyRecord> got = store->Get(KeyId(17));
  REQUIRE(got.ok());
  batch[17].version = 1;
  CHECK(*got == batch[17]);
  got = store->Get(KeyId(18));
  REQUIRE(got.ok());
  CHECK(got->sealed_token == "kge1.sealed\t18");
  CHECK(got->sealed_webhook_secret == "kge1.whsec\\18");
  got = store->Get(KeyId(17));
  REQUIRE(got.ok());
  CHECK(got->sealed_webhook_secret.empty());
  absl::StatusOr<KeyRecord> by_digest = store->FindByDigest(batch[1999].digest);
  REQUIRE(by_digest.ok());
  CHECK(by_digest->id == KeyId(1999));
  // The feed numbers the batch in id order.
  absl::StatusOr<keygate::ChangeBatch> feed = store->ChangesSince(0, 5000);
  REQUIRE(feed.ok());
  REQUIRE(feed->changes.size() == 2000);
  CHECK(feed->changes.front().key_id == KeyId(0));
  CHECK(feed->changes.back().sequence == 2000);
  // A second batch with one id already stored: refused, naming it, nothing written.
  std::vector<KeyRecord> second = {MakeRecord(KeyId(5000)), MakeRecord(KeyId(42))};
  const absl::Status dup = store->InsertBatch(second, CreatedNote());
  CHECK(dup.code() == absl::StatusCode::kAlreadyExists);
  CHECK_THAT(std::string(dup.message()), Catch::Contains(KeyId(42)));
  CHECK(store->Get(KeyId(5000)).status().code() == absl::StatusCode::kNotFound);
  absl::StatusOr<std::uint64_t> last = store->LastSequence();
  REQUIRE(last.ok());
  CHECK(*last == 2000);
}

TEST_CASE("PostgresKeyStore: without LISTEN, subscribers wake by polling", "[postgres][notify]") {
  if (SharedPostgres() == nullptr) return;
  PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  std::unique_ptr<PostgresKeyStore> writer = Open(o);
  o.listen = false;
  o.poll_interval = absl::Milliseconds(20);
  std::unique_ptr<PostgresKeyStore> reader = Open(o);
  std::atomic<int> wakes{0};
  absl::StatusOr<std::unique_ptr<keygate::Subscription>> sub =
      reader->Subscribe([&] { wakes.fetch_add(1); });
  REQUIRE(sub.ok());
  REQUIRE(writer->Insert(MakeRecord(KeyId(1)), CreatedNote()).ok());
  const absl::Time start = absl::Now();
  while (wakes.load() < 3 && absl::Now() - start < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  CHECK(wakes.load() >= 3);
  CHECK(reader->Stats().polls >= 3);
  CHECK(reader->Stats().listener_connects == 0);
  CHECK(reader->Stats().notifications == 0);
  sub->reset();
}

TEST_CASE("PostgresKeyStore: a NUL byte never truncates an id or a value", "[postgres]") {
  if (SharedPostgres() == nullptr) return;
  std::unique_ptr<PostgresKeyStore> store = Open(TestPostgresOptions(*SharedPostgres()));
  REQUIRE(store->Insert(MakeRecord(KeyId(1)), CreatedNote()).ok());
  // libpq would send "key_...\0x" as "key_..." and find the other key.
  const std::string with_nul = KeyId(1) + std::string(1, '\0') + "x";
  CHECK(store->Get(with_nul).status().code() == absl::StatusCode::kNotFound);
  CHECK(store->Delete(with_nul, std::nullopt, keygate::testing::DeletedNote()).code() ==
        absl::StatusCode::kNotFound);
  CHECK(store->Get(KeyId(1)).ok());
  KeyRecord r = MakeRecord(KeyId(2));
  r.name = std::string("a\0b", 3);
  CHECK(store->Insert(r, CreatedNote()).code() == absl::StatusCode::kInvalidArgument);
  CHECK(store->Get(KeyId(2)).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("PostgresKeyStore: a verifier reloads when the database's history went back",
          "[postgres][verifier]") {
  if (SharedPostgres() == nullptr) return;
  const PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  std::shared_ptr<PostgresKeyStore> store = Open(o);
  std::shared_ptr<const keygate::Deployment> deployment = *keygate::Deployment::Create({});
  keygate::KeyManager::Options mo;
  mo.deployment = deployment;
  mo.store = store;
  std::unique_ptr<keygate::KeyManager> manager =
      keygate::testing::MustOk(keygate::KeyManager::Create(std::move(mo)));
  keygate::CreateKeyRequest req;
  req.name = "old";
  req.owner = "alice";
  req.environment = "production";
  const keygate::CreatedKey old_key = keygate::testing::MustOk(manager->Create(req, "test"));
  req.name = "second";
  (void)keygate::testing::MustOk(manager->Create(req, "test"));
  const std::string token(old_key.token.Reveal(keygate::InsecureSecretAccess::Get()));
  keygate::VerifierOptions vo;
  vo.deployment = deployment;
  vo.store = store;
  vo.environment = "production";
  vo.record_usage = false;
  vo.poll_interval = absl::Milliseconds(20);
  vo.full_resync_interval = absl::ZeroDuration();  // never on a timer: only the reset helps
  std::unique_ptr<keygate::Verifier> verifier =
      keygate::testing::MustOk(keygate::Verifier::Create(std::move(vo)));
  const auto ok = [&] {
    return verifier->VerifyToken(token, keygate::Requirement::AnyValidKey()).outcome ==
           keygate::Outcome::kOk;
  };
  REQUIRE(ok());
  // The database is recreated (as from an older backup): one other key, sequence 1.
  REQUIRE(SharedPostgres()->Psql(absl::StrCat("DROP SCHEMA \"", o.schema, "\" CASCADE")).ok());
  std::unique_ptr<PostgresKeyStore> fresh = Open(o);
  REQUIRE(fresh->Insert(MakeRecord(KeyId(1)), CreatedNote()).ok());
  const absl::Time start = absl::Now();
  while ((ok() || verifier->Stats().applied_sequence != 1) &&
         absl::Now() - start < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK_FALSE(ok());
  CHECK(verifier->Stats().applied_sequence == 1);
  CHECK(verifier->Stats().keys == 1);
}

TEST_CASE("PostgresKeyStore: servers flushing usage of the same keys at once never deadlock",
          "[postgres][usage]") {
  if (SharedPostgres() == nullptr) return;
  // At a million keys the planner walks the updates' array and looks each key up, locking rows
  // in the caller's order; a database that plans so at 200 keys shows the same here.
  REQUIRE(SharedPostgres()->CreateDatabase("usage_plan").ok());
  REQUIRE(SharedPostgres()
              ->Psql("ALTER DATABASE usage_plan SET enable_seqscan = off; "
                     "ALTER DATABASE usage_plan SET enable_hashjoin = off; "
                     "ALTER DATABASE usage_plan SET enable_mergejoin = off")
              .ok());
  PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  o.url = SharedPostgres()->url("usage_plan");
  std::unique_ptr<PostgresKeyStore> a = Open(o);
  std::unique_ptr<PostgresKeyStore> b = Open(o);
  constexpr int kKeys = 200;
  std::vector<KeyRecord> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(MakeRecord(KeyId(i)));
  REQUIRE(a->InsertBatch(keys, CreatedNote()).ok());
  // Two "servers" flush the same keys in opposite orders, many times.
  std::atomic<int> failures{0};
  std::vector<std::thread> flushers;
  for (int t = 0; t < 4; ++t) {
    flushers.emplace_back([&, t] {
      PostgresKeyStore& s = t % 2 == 0 ? *a : *b;
      for (int round = 0; round < 15; ++round) {
        std::vector<keygate::LastUsedUpdate> u;
        for (int i = 0; i < kKeys; ++i) {
          const int k = t % 2 == 0 ? i : kKeys - 1 - i;
          u.push_back(
              {KeyId(k), keygate::conformance::BaseTime() + absl::Seconds(round * 4 + t + 1)});
        }
        if (!s.TouchLastUsed(u, absl::ZeroDuration()).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : flushers) t.join();
  CHECK(failures.load() == 0);
  absl::StatusOr<KeyRecord> k = a->Get(KeyId(7));
  REQUIRE(k.ok());
  REQUIRE(k->last_used.has_value());
  CHECK(*k->last_used == keygate::conformance::BaseTime() + absl::Seconds(14 * 4 + 3 + 1));
}

TEST_CASE("PostgresKeyStore: a subscriber may drop the last reference to the store",
          "[postgres][notify]") {
  if (SharedPostgres() == nullptr) return;
  const PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  std::shared_ptr<PostgresKeyStore> writer = Open(o);
  // The callback runs on the listener's thread and destroys the store that owns the thread.
  auto holder = std::make_shared<std::shared_ptr<PostgresKeyStore>>(Open(o));
  auto sub = std::make_shared<std::unique_ptr<keygate::Subscription>>();
  std::atomic<bool> dropped{false};
  absl::StatusOr<std::unique_ptr<keygate::Subscription>> s =
      (*holder)->Subscribe([holder, sub, &dropped] {
        if (dropped.exchange(true)) return;
        holder->reset();
      });
  REQUIRE(s.ok());
  *sub = *std::move(s);
  REQUIRE(writer->Insert(MakeRecord(KeyId(1)), CreatedNote()).ok());
  const absl::Time start = absl::Now();
  while (!dropped.load() && absl::Now() - start < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  CHECK(dropped.load());
  sub->reset();
}

TEST_CASE("PostgresKeyStore: pooled connections closed by the server are replaced",
          "[postgres][pool]") {
  if (SharedPostgres() == nullptr) return;
  PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  o.pool_size = 2;
  std::unique_ptr<PostgresKeyStore> store = Open(o);
  REQUIRE(store->Insert(MakeRecord(KeyId(1)), CreatedNote()).ok());
  REQUIRE(store->Get(KeyId(1)).ok());
  // As a server restart or an operator would: every keygate connection is terminated while
  // idle in the pool.
  absl::StatusOr<std::string> killed = SharedPostgres()->Psql(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
      "WHERE application_name = 'keygate' AND pid <> pg_backend_pid()");
  REQUIRE(killed.ok());
  CHECK(*killed != "0");
  absl::SleepFor(absl::Milliseconds(50));  // the terminations reach the sockets
  CHECK(store->Get(KeyId(1)).ok());
  CHECK(store->Insert(MakeRecord(KeyId(2)), CreatedNote()).ok());
}

TEST_CASE("PostgresKeyStore: writers keep the feed's order under any default isolation",
          "[postgres][feed]") {
  if (SharedPostgres() == nullptr) return;
  REQUIRE(SharedPostgres()->CreateDatabase("repeatable").ok());
  REQUIRE(SharedPostgres()
              ->Psql("ALTER DATABASE repeatable SET default_transaction_isolation = "
                     "'repeatable read'")
              .ok());
  PostgresOptions o = TestPostgresOptions(*SharedPostgres());
  o.url = SharedPostgres()->url("repeatable");
  std::unique_ptr<PostgresKeyStore> store = Open(o);
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < 25; ++i) {
        if (!store->Insert(MakeRecord(KeyId(w * 100 + i)), CreatedNote()).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : writers) t.join();
  CHECK(failures.load() == 0);
  absl::StatusOr<std::uint64_t> last = store->LastSequence();
  REQUIRE(last.ok());
  CHECK(*last == 100);
}
