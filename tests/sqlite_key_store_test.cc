// SqliteKeyStore beyond the conformance suite: file permissions, every bad
// condition's error (and that the file is left untouched), schema versioning,
// persistence, name search strategies, batch inserts and secrets at rest.

#include "keygate/sqlite/sqlite_key_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "keygate/token.h"
#include "keygate/verdict.h"
#include "keygate/verifier.h"
#include "sqlite/schema.h"
#include "sqlite/sqlite_db.h"
#include "sqlite_test_util.h"
#include "test_util.h"

namespace keygate {
namespace {

using conformance::DigestFor;
using conformance::MakeRecord;
using testing::OpenTempSqliteStore;
using testing::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

unsigned Mode(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

absl::StatusOr<std::shared_ptr<SqliteKeyStore>> OpenAt(const std::string& path,
                                                       SqliteOptions o = {}) {
  o.path = path;
  return SqliteKeyStore::Create(o);
}

// Runs SQL on the file through a raw connection (what another tool would do).
void RawExec(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  INFO((err != nullptr ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

std::int64_t RawInt(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  const std::int64_t v = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

TEST_CASE("SQLite store creates new files with mode 0600, WAL and shm included",
          "[sqlite][security]") {
  TempDir dir;
  const std::string path = dir.File("keygate.db");
  {
    auto store = OpenAt(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->Insert(MakeRecord("key_mode"), keygate::testing::CreatedNote()).ok());
    CHECK(Mode(path) == 0600);
    REQUIRE(Exists(path + "-wal"));
    CHECK(Mode(path + "-wal") == 0600);
    REQUIRE(Exists(path + "-shm"));
    CHECK(Mode(path + "-shm") == 0600);
  }
  CHECK(RawInt(path, "PRAGMA user_version") == SqliteKeyStore::kSchemaVersion);
  CHECK(RawInt(path, "PRAGMA application_id") == SqliteKeyStore::kApplicationId);
  CHECK(RawInt(path, "SELECT count(*) FROM keys") == 1);
}

TEST_CASE("SQLite store uses WAL and a delete removes the key's digests", "[sqlite]") {
  TempDir dir;
  const std::string path = dir.File("k.db");
  SqliteOptions o;
  o.synchronous = SqliteSynchronous::kNormal;
  auto store = OpenAt(path, o);
  REQUIRE(store.ok());
  CHECK(RawInt(path, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'") == 1);
  // The digests table has no index by key (schema version 2): the store
  // deletes a key's digests by value, current and previous.
  KeyRecord r = MakeRecord("key_fk");
  REQUIRE((*store)->Insert(r, keygate::testing::CreatedNote()).ok());
  KeyRecord rolled = *(*store)->Get("key_fk");
  rolled.previous = RolledSecret{rolled.digest, "kg_test_...prev", absl::Now() + absl::Hours(1)};
  rolled.digest = DigestFor("key_fk rolled");
  REQUIRE((*store)->Update(rolled, keygate::testing::ModifiedNote()).ok());
  CHECK(RawInt(path, "SELECT count(*) FROM digests") == 2);
  REQUIRE((*store)->Delete("key_fk", std::nullopt, keygate::testing::DeletedNote()).ok());
  CHECK(RawInt(path, "SELECT count(*) FROM digests") == 0);
}

TEST_CASE("SQLite store reports a missing directory by path and cause", "[sqlite][errors]") {
  TempDir dir;
  const std::string path = dir.File("no/such/dir/keygate.db");
  auto store = OpenAt(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(Message(store.status()), Catch::Contains(path));
  CHECK_THAT(Message(store.status()), Catch::Contains("does not exist"));
  CHECK_FALSE(Exists(dir.File("no")));
}

TEST_CASE("SQLite store does not create a file when create_if_missing is false",
          "[sqlite][errors]") {
  TempDir dir;
  const std::string path = dir.File("absent.db");
  SqliteOptions o;
  o.create_if_missing = false;
  auto store = OpenAt(path, o);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(Message(store.status()), Catch::Contains(path));
  CHECK_FALSE(Exists(path));
}

TEST_CASE("SQLite store refuses a read-only file and leaves it untouched", "[sqlite][errors]") {
  TempDir dir;
  const std::string path = dir.File("ro.db");
  {
    auto store = OpenAt(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->Insert(MakeRecord("key_ro"), keygate::testing::CreatedNote()).ok());
  }
  REQUIRE(::chmod(path.c_str(), 0444) == 0);
  const std::string before = ReadFile(path);
  auto store = OpenAt(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK_THAT(Message(store.status()), Catch::Contains(path));
  CHECK_THAT(Message(store.status()), Catch::Contains("read-only"));
  CHECK(ReadFile(path) == before);
  // Writable again: the data is all there.
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  auto again = OpenAt(path);
  REQUIRE(again.ok());
  CHECK((*again)->Get("key_ro").ok());
}

TEST_CASE("SQLite store names a read-only directory as the cause (root included)",
          "[sqlite][errors]") {
  TempDir dir;
  const std::string sub = dir.File("locked");
  REQUIRE(::mkdir(sub.c_str(), 0700) == 0);
  const std::string path = sub + "/k.db";
  {
    auto store = OpenAt(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->Insert(MakeRecord("key_dir"), keygate::testing::CreatedNote()).ok());
  }
  REQUIRE_FALSE(Exists(path + "-wal"));  // the last close removed the journal files
  // The file stays writable; only the directory, where WAL mode must create
  // k.db-wal and k.db-shm, is read-only (mode bits: root too is refused).
  REQUIRE(::chmod(sub.c_str(), 0555) == 0);
  const std::string before = ReadFile(path);
  auto store = OpenAt(path);
  SqliteOptions fresh;
  fresh.create_if_missing = true;
  auto created = OpenAt(sub + "/new.db", fresh);
  REQUIRE(::chmod(sub.c_str(), 0700) == 0);  // before any REQUIRE can leave it locked
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK_THAT(Message(store.status()), Catch::Contains(path));
  CHECK_THAT(Message(store.status()), Catch::Contains("directory '" + sub + "' is not writable"));
  CHECK(ReadFile(path) == before);
  REQUIRE_FALSE(created.ok());
  CHECK(created.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK_THAT(Message(created.status()), Catch::Contains("directory '" + sub + "'"));
  CHECK_FALSE(Exists(sub + "/new.db"));
  // Writable again: the data is all there.
  auto again = OpenAt(path);
  REQUIRE(again.ok());
  CHECK((*again)->Get("key_dir").ok());
}

TEST_CASE("SQLite store refuses a symbolic link and says so", "[sqlite][errors]") {
  TempDir dir;
  const std::string real = dir.File("real.db");
  {
    auto store = OpenAt(real);
    REQUIRE(store.ok());
    REQUIRE((*store)->Insert(MakeRecord("key_link"), keygate::testing::CreatedNote()).ok());
  }
  const std::string before = ReadFile(real);
  const std::string link = dir.File("link.db");
  REQUIRE(::symlink(real.c_str(), link.c_str()) == 0);
  const std::string dangling = dir.File("dangling.db");
  const std::string nowhere = dir.File("nowhere.db");
  REQUIRE(::symlink(nowhere.c_str(), dangling.c_str()) == 0);
  for (const std::string& path : {link, dangling}) {
    INFO(path);
    auto store = OpenAt(path);
    REQUIRE_FALSE(store.ok());
    CHECK(store.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(Message(store.status()), Catch::Contains(path));
    CHECK_THAT(Message(store.status()), Catch::Contains("is a symbolic link"));
    CHECK_THAT(Message(store.status()), Catch::Contains("pass the link's target"));
  }
  CHECK(ReadFile(real) == before);
  CHECK_FALSE(Exists(nowhere));  // nothing created through the dangling link
  CHECK(OpenAt(real).ok());      // the target itself opens
}

TEST_CASE("SQLite store opens a file in a symbolically linked directory", "[sqlite]") {
  // Only the file itself must not be a link: linked directories are common
  // (/var/run -> /run), and SQLite's NOFOLLOW would refuse them too.
  TempDir dir;
  const std::string real = dir.File("real");
  REQUIRE(::mkdir(real.c_str(), 0700) == 0);
  const std::string linked = dir.File("linked");
  REQUIRE(::symlink(real.c_str(), linked.c_str()) == 0);
  {
    auto created = OpenAt(linked + "/new.db");
    INFO(created.status().ToString());
    REQUIRE(created.ok());
    REQUIRE((*created)->Insert(MakeRecord("key_via_link"), keygate::testing::CreatedNote()).ok());
    CHECK(Exists(real + "/new.db-wal"));  // the journal files sit next to the real file
  }
  auto reopened = OpenAt(linked + "/new.db");
  INFO(reopened.status().ToString());
  REQUIRE(reopened.ok());
  CHECK((*reopened)->Get("key_via_link").ok());
  CHECK(RawInt(real + "/new.db", "SELECT count(*) FROM keys") == 1);
}

TEST_CASE("SQLite store refuses a file that is not a database and leaves it untouched",
          "[sqlite][errors]") {
  TempDir dir;
  const std::string path = dir.File("notes.txt");
  const std::string text(8192, 'x');
  WriteFile(path, "These are my notes, not a database.\n" + text);
  const std::string before = ReadFile(path);
  auto store = OpenAt(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(store.status()), Catch::Contains(path));
  CHECK_THAT(Message(store.status()), Catch::Contains("not a SQLite database"));
  CHECK(ReadFile(path) == before);
  CHECK_FALSE(Exists(path + "-wal"));
}

TEST_CASE("SQLite store refuses another application's database", "[sqlite][errors]") {
  TempDir dir;
  const std::string path = dir.File("other.db");
  RawExec(path,
          "CREATE TABLE invoices(id INTEGER PRIMARY KEY, amount INTEGER);"
          "INSERT INTO invoices(amount) VALUES (42);");
  const std::string before = ReadFile(path);
  auto store = OpenAt(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(store.status()), Catch::Contains("not a keygate database"));
  CHECK(ReadFile(path) == before);

  RawExec(path, "PRAGMA application_id = 1234");
  store = OpenAt(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(store.status()), Catch::Contains("another application"));
  CHECK(RawInt(path, "SELECT amount FROM invoices") == 42);
}

TEST_CASE("SQLite store refuses a database from a newer schema without touching it",
          "[sqlite][errors][schema]") {
  TempDir dir;
  const std::string path = dir.File("future.db");
  {
    auto store = OpenAt(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->Insert(MakeRecord("key_future"), keygate::testing::CreatedNote()).ok());
  }
  RawExec(path, "PRAGMA user_version = 99");
  auto store = OpenAt(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(store.status()), Catch::Contains(path));
  CHECK_THAT(Message(store.status()), Catch::Contains("schema version 99"));
  CHECK_THAT(Message(store.status()), Catch::Contains("newer"));
  CHECK(RawInt(path, "PRAGMA user_version") == 99);
  CHECK(RawInt(path, "SELECT count(*) FROM keys") == 1);
}

TEST_CASE("SQLite store write past the busy timeout is kUnavailable, then succeeds",
          "[sqlite][errors]") {
  TempDir dir;
  const std::string path = dir.File("locked.db");
  SqliteOptions o;
  o.busy_timeout = absl::Milliseconds(150);
  auto store = OpenAt(path, o);
  REQUIRE(store.ok());

  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  const absl::Time start = absl::Now();
  absl::Status s = (*store)->Insert(MakeRecord("key_locked"), keygate::testing::CreatedNote());
  const absl::Duration waited = absl::Now() - start;
  CHECK(s.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(Message(s), Catch::Contains(path));
  CHECK_THAT(Message(s), Catch::Contains("locked"));
  CHECK(waited >= absl::Milliseconds(100));
  // Reads still work while another process writes (WAL).
  CHECK((*store)->Get("key_locked").status().code() == absl::StatusCode::kNotFound);
  REQUIRE(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  CHECK((*store)->Insert(MakeRecord("key_locked"), keygate::testing::CreatedNote()).ok());
}

TEST_CASE("SQLite store open that must migrate a locked file is kUnavailable",
          "[sqlite][errors][schema]") {
  TempDir dir;
  const std::string path = dir.File("fresh.db");
  // An empty (version 0) database another connection holds exclusively.
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
  SqliteOptions o;
  o.busy_timeout = absl::Milliseconds(100);
  auto store = OpenAt(path, o);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(Message(store.status()), Catch::Contains(path));
  REQUIRE(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  store = OpenAt(path, o);
  INFO(store.status().ToString());
  CHECK(store.ok());
}

TEST_CASE("SQLite store validates its options", "[sqlite][errors]") {
  SqliteOptions o;
  o.path = "";
  CHECK(SqliteKeyStore::Create(o).status().code() == absl::StatusCode::kInvalidArgument);
  o.path = ":memory:";
  o.poll_interval = absl::ZeroDuration();
  absl::Status s = SqliteKeyStore::Create(o).status();
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(s), Catch::Contains("poll_interval"));
  o.poll_interval = absl::Milliseconds(250);
  o.busy_timeout = -absl::Seconds(1);
  CHECK(SqliteKeyStore::Create(o).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("SQLite store keeps keys and sequences across reopen", "[sqlite][schema]") {
  TempDir dir;
  const std::string path = dir.File("persist.db");
  std::uint64_t last = 0;
  {
    auto store = OpenAt(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->Insert(MakeRecord("key_p1"), keygate::testing::CreatedNote()).ok());
    REQUIRE((*store)->Insert(MakeRecord("key_p2"), keygate::testing::CreatedNote()).ok());
    REQUIRE((*store)->Delete("key_p2", std::nullopt, keygate::testing::DeletedNote()).ok());
    last = *(*store)->LastSequence();
    REQUIRE(last == 3);
  }
  auto store = OpenAt(path);
  REQUIRE(store.ok());
  CHECK((*store)->Get("key_p1").ok());
  CHECK(*(*store)->LastSequence() == last);
  // Deleting the newest change row must not let AUTOINCREMENT reuse it.
  REQUIRE((*store)->Insert(MakeRecord("key_p3"), keygate::testing::CreatedNote()).ok());
  CHECK(*(*store)->LastSequence() == last + 1);
  absl::StatusOr<ChangeBatch> b = (*store)->ChangesSince(0, 10);
  REQUIRE(b.ok());
  REQUIRE(b->changes.size() == 3);
  CHECK(b->changes[1].key_id == "key_p2");
  CHECK_FALSE(b->changes[1].record.has_value());
  CHECK((*store)->CheckIntegrity().ok());
  CHECK(*(*store)->Count() == 2);
}

TEST_CASE("SQLite store migrates an empty version-0 file it finds", "[sqlite][schema]") {
  TempDir dir;
  const std::string path = dir.File("empty.db");
  WriteFile(path, "");  // a zero-length file is an empty SQLite database
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  auto store = OpenAt(path);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  REQUIRE((*store)->Insert(MakeRecord("key_m"), keygate::testing::CreatedNote()).ok());
  CHECK(RawInt(path, "PRAGMA user_version") == SqliteKeyStore::kSchemaVersion);
}

// An empty file at schema `version`: the migrations up to it, and the header.
void StartVersionFile(const std::string& path, int version) {
  for (int v = 0; v < version; ++v) RawExec(path, internal::kMigrations[v]);
  RawExec(path, absl::StrCat("PRAGMA user_version = ", version,
                             "; PRAGMA application_id = ", SqliteKeyStore::kApplicationId)
                    .c_str());
}

// The keys table's columns in schema versions 1 and 2.
constexpr char kInsertKeysV1V2[] = R"sql(
    INSERT INTO keys(pk, id, name, name_lower, description, owner, kind, environment, scopes,
      state, created_us, updated_us, expires_us, last_used_us, rate_limit_rate,
      rate_limit_period_us, rate_limit_burst, webhook_url, accounts, metadata, digest, hint,
      previous_digest, previous_hint, previous_valid_until_us, version, change_seq)
    VALUES
)sql";

// A file as schema version 1 left it: the v1 schema, two keys (one in a
// roll's grace period, so it has two digests), a deleted key's tombstone.
void WriteVersion1File(const std::string& path) {
  StartVersionFile(path, 1);
  RawExec(path, absl::StrCat(kInsertKeysV1V2, R"sql(
      (1, 'key_old1', 'Billing CI', 'billing ci', 'first', 'alice', 2, 'production',
       '["read:all"]', 1, 1000000, 1000000, NULL, NULL, NULL, NULL, NULL, '', '[]',
       '{"team":"pay"}', zeroblob(32), 'kg_live_...aaaa', NULL, NULL, NULL, 1, 1),
      (4, 'key_old2', 'Search Nightly', 'search nightly', '', 'bob', 2, 'preview',
       '["write:all"]', 1, 2000000, 3000000, NULL, NULL, NULL, NULL, NULL, '', '[]', '{}',
       X'2222222222222222222222222222222222222222222222222222222222222222', 'kg_test_...bbbb',
       X'2323232323232323232323232323232323232323232323232323232323232323', 'kg_test_...cccc',
       9000000000000000, 2, 5);
    INSERT INTO digests(digest, key_pk, slot) VALUES
      (zeroblob(32), 1, 0),
      (X'2222222222222222222222222222222222222222222222222222222222222222', 4, 0),
      (X'2323232323232323232323232323232323232323232323232323232323232323', 4, 1);
    INSERT INTO changes(sequence, key_id, key_pk) VALUES
      (1, 'key_old1', 1), (3, 'key_gone', 2), (5, 'key_old2', 4);
    INSERT INTO key_names(rowid, name_key) VALUES
      (1, 'billing ci' || char(1)), (4, 'search nightly' || char(1));
  )sql")
                    .c_str());
}

Digest Filled(std::uint8_t byte) {
  Digest d;
  d.fill(byte);
  return d;
}

TEST_CASE("SQLite store migrates a version-1 file and keeps its data", "[sqlite][schema]") {
  TempDir dir;
  const std::string path = dir.File("v1.db");
  WriteVersion1File(path);
  REQUIRE(RawInt(path, "SELECT count(*) FROM pragma_foreign_key_list('digests')") == 1);
  auto store = OpenAt(path);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  CHECK(RawInt(path, "PRAGMA user_version") == SqliteKeyStore::kSchemaVersion);
  // Version 2: the digests table lost its foreign key and its index by key,
  // the name index keeps no positions.
  CHECK(RawInt(path, "SELECT count(*) FROM pragma_foreign_key_list('digests')") == 0);
  CHECK(RawInt(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'digests_key'") == 0);
  CHECK(RawInt(path,
               "SELECT count(*) FROM sqlite_schema WHERE name = 'key_names' AND "
               "sql LIKE '%detail=none%'") == 1);
  CHECK(RawInt(path, "SELECT count(*) FROM digests") == 3);

  SqliteKeyStore& s = **store;
  CHECK(s.CheckIntegrity().ok());
  CHECK(*s.Count() == 2);
  CHECK(*s.LastSequence() == 5);
  absl::StatusOr<KeyRecord> old1 = s.Get("key_old1");
  REQUIRE(old1.ok());
  CHECK(old1->name == "Billing CI");
  CHECK(old1->description == "first");
  CHECK(old1->metadata.at("team") == "pay");
  CHECK(old1->version == 1);
  absl::StatusOr<KeyRecord> by_digest = s.FindByDigest(Filled(0x00));
  REQUIRE(by_digest.ok());
  CHECK(by_digest->id == "key_old1");
  // Both digests of the key in its grace period still find it.
  for (const std::uint8_t b : {0x22, 0x23}) {
    absl::StatusOr<KeyRecord> r = s.FindByDigest(Filled(b));
    REQUIRE(r.ok());
    CHECK(r->id == "key_old2");
    REQUIRE(r->previous.has_value());
    CHECK(r->previous->hint == "kg_test_...cccc");
  }
  // The feed: both keys and the tombstone, in sequence order.
  absl::StatusOr<ChangeBatch> feed = s.ChangesSince(0, 10);
  REQUIRE(feed.ok());
  REQUIRE(feed->changes.size() == 3);
  CHECK(feed->changes[0].key_id == "key_old1");
  CHECK(feed->changes[1].key_id == "key_gone");
  CHECK_FALSE(feed->changes[1].record.has_value());
  CHECK(feed->changes[2].key_id == "key_old2");
  // The name index was rebuilt from the rows: 3+ and 2-character needles.
  auto search = [&](const char* needle) {
    ListFilter f;
    f.name_contains = needle;
    return conformance::ListAllIds(s, f);
  };
  CHECK(search("ling c") == std::vector<std::string>{"key_old1"});
  CHECK(search("NIGHT") == std::vector<std::string>{"key_old2"});
  CHECK(search("ci") == std::vector<std::string>{"key_old1"});
  CHECK(search("ht") == std::vector<std::string>{"key_old2"});
  CHECK(search("zz").empty());
  // Digest uniqueness still covers previous digests; writes keep working.
  KeyRecord clash = MakeRecord("key_new");
  clash.digest = Filled(0x23);
  absl::Status dup = s.Insert(clash, keygate::testing::CreatedNote());
  CHECK(dup.code() == absl::StatusCode::kAlreadyExists);
  REQUIRE(s.Insert(MakeRecord("key_new"), keygate::testing::CreatedNote()).ok());
  KeyRecord rolled = *old1;
  rolled.previous = RolledSecret{rolled.digest, rolled.hint, absl::Now() + absl::Hours(1)};
  rolled.digest = Filled(0x11);
  REQUIRE(s.Update(rolled, keygate::testing::ModifiedNote()).ok());
  CHECK(s.FindByDigest(Filled(0x11))->id == "key_old1");
  REQUIRE(s.Delete("key_old2", std::nullopt, keygate::testing::DeletedNote()).ok());
  CHECK(s.FindByDigest(Filled(0x23)).status().code() == absl::StatusCode::kNotFound);
  CHECK(RawInt(path, "SELECT count(*) FROM digests") == 3);  // old1 x2, key_new
  CHECK(s.CheckIntegrity().ok());
}

// A file as schema version 2 left it when a deleted id was inserted again:
// the id's old tombstones stayed in the change log next to its live row, and
// an id deleted twice had two tombstones.
void WriteVersion2File(const std::string& path) {
  StartVersionFile(path, 2);
  RawExec(path, absl::StrCat(kInsertKeysV1V2, R"sql(
      (1, 'key_stay', 'Stay', 'stay', '', 'alice', 2, 'production', '[]', 1, 1000000, 1000000,
       NULL, NULL, NULL, NULL, NULL, '', '[]', '{}', zeroblob(32), 'kg_live_...aaaa', NULL, NULL,
       NULL, 1, 1),
      (6, 'key_back', 'Back', 'back', '', 'bob', 2, 'production', '[]', 1, 2000000, 2000000,
       NULL, NULL, NULL, NULL, NULL, '', '[]', '{}',
       X'6666666666666666666666666666666666666666666666666666666666666666', 'kg_live_...bbbb',
       NULL, NULL, NULL, 1, 6);
    INSERT INTO digests(digest, key_pk, slot) VALUES
      (zeroblob(32), 1, 0),
      (X'6666666666666666666666666666666666666666666666666666666666666666', 6, 0);
    -- key_back: inserted (2), deleted (3), inserted (4), deleted (5), inserted (6);
    -- key_gone: inserted (7), deleted (8), inserted (9), deleted (10).
    INSERT INTO changes(sequence, key_id, key_pk) VALUES
      (1, 'key_stay', 1), (3, 'key_back', 2), (5, 'key_back', 4), (6, 'key_back', 6),
      (8, 'key_gone', 7), (10, 'key_gone', 9);
    INSERT INTO key_names(rowid, name_key) VALUES (1, 'stay' || char(1)), (6, 'back' || char(1));
  )sql")
                    .c_str());
}

TEST_CASE("SQLite store migrates a version-2 file to one change-log row per key id",
          "[sqlite][schema]") {
  TempDir dir;
  const std::string path = dir.File("v2.db");
  WriteVersion2File(path);
  auto ids_since = [](SqliteKeyStore& s, std::uint64_t after) {
    absl::StatusOr<ChangeBatch> b = s.ChangesSince(after, 100);
    REQUIRE(b.ok());
    std::vector<std::string> out;
    for (const Change& c : b->changes) {
      out.push_back(absl::StrCat(c.key_id, "@", c.sequence, c.record.has_value() ? "" : "-"));
    }
    return out;
  };
  auto store = OpenAt(path);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  SqliteKeyStore& s = **store;
  CHECK(RawInt(path, "PRAGMA user_version") == SqliteKeyStore::kSchemaVersion);
  CHECK(RawInt(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'changes_tombstones'") == 1);
  CHECK(s.CheckIntegrity().ok());
  CHECK(*s.LastSequence() == 10);
  CHECK(ids_since(s, 0) == std::vector<std::string>{"key_stay@1", "key_back@6", "key_gone@10-"});
  CHECK(ids_since(s, 6) == std::vector<std::string>{"key_gone@10-"});
  CHECK(RawInt(path, "SELECT count(*) FROM changes") == 3);
  // The migrated tombstone is one like a new delete leaves: inserting the id
  // again replaces it.
  REQUIRE(s.Insert(MakeRecord("key_gone"), keygate::testing::CreatedNote()).ok());
  CHECK(ids_since(s, 0) == std::vector<std::string>{"key_stay@1", "key_back@6", "key_gone@11"});
  REQUIRE(s.Delete("key_back", std::nullopt, keygate::testing::DeletedNote()).ok());
  REQUIRE(s.Insert(MakeRecord("key_back"), keygate::testing::CreatedNote()).ok());
  CHECK(ids_since(s, 6) == std::vector<std::string>{"key_gone@11", "key_back@13"});
  CHECK(s.Get("key_stay").ok());
}

TEST_CASE("SQLite List caches one statement per filter shape and not one per limit",
          "[sqlite][list]") {
  auto store = OpenTempSqliteStore();
  for (const char* id : {"key_l1", "key_l2", "key_l3"}) {
    REQUIRE(store->Insert(MakeRecord(id), keygate::testing::CreatedNote()).ok());
  }
  auto cached = [&] { return internal::SqliteKeyStoreTestPeer::StatementCacheSize(*store); };
  ListOptions o;
  o.limit = 1;
  REQUIRE(store->List(o).ok());
  o.filter.owner = "alice";
  REQUIRE(store->List(o).ok());
  const std::size_t shapes = cached();
  for (std::size_t limit = 1; limit <= kMaxListLimit; limit += 7) {
    for (const bool by_owner : {false, true}) {
      ListOptions l;
      l.limit = limit;
      if (by_owner) l.filter.owner = MakeRecord("key_l1").owner;
      absl::StatusOr<ListPage> page = store->List(l);
      REQUIRE(page.ok());
      // The bound limit still limits.
      CHECK(page->keys.size() == std::min<std::size_t>(limit, 3));
      CHECK(page->next_cursor.empty() == (limit >= 3));
    }
  }
  CHECK(cached() == shapes);
}

TEST_CASE("SQLite name search filters trigram candidates to true substrings", "[sqlite][list]") {
  // The index holds no positions, so a name holding every trigram of the
  // needle, but not the needle, is a candidate that must be filtered out.
  auto store = OpenTempSqliteStore();
  std::vector<KeyRecord> batch;
  for (const char* name : {"abcd", "abc-bcd", "bcdabc", "xabcdx", "ab cd"}) {
    batch.push_back(MakeRecord(absl::StrCat("key_t", batch.size()), "alice", "production",
                               KeyKind::kGeneral, name));
  }
  REQUIRE(store->InsertBatch(batch, keygate::testing::CreatedNote()).ok());
  ListFilter f;
  f.name_contains = "ABCD";
  CHECK(conformance::ListAllIds(*store, f) == std::vector<std::string>{"key_t0", "key_t3"});
  f.name_contains = "bcda";
  CHECK(conformance::ListAllIds(*store, f) == std::vector<std::string>{"key_t2"});
}

TEST_CASE("SQLite InsertBatch is all or nothing", "[sqlite][batch]") {
  auto store = OpenTempSqliteStore();
  std::vector<KeyRecord> batch;
  for (int i = 0; i < 100; ++i)
    batch.push_back(MakeRecord(absl::StrCat("key_b", std::string(17, '0'), 1000 + i)));
  batch[3].sealed_token = "kge1.sealed";
  REQUIRE(store->InsertBatch(batch, keygate::testing::CreatedNote()).ok());
  CHECK(*store->Count() == 100);
  CHECK(store->Get(batch[3].id)->sealed_token == "kge1.sealed");
  CHECK(store->Get(batch[4].id)->sealed_token.empty());
  const std::uint64_t seq = *store->LastSequence();
  CHECK(seq == 100);

  std::vector<KeyRecord> bad;
  for (int i = 0; i < 10; ++i)
    bad.push_back(MakeRecord(absl::StrCat("key_c", std::string(17, '0'), 1000 + i)));
  const std::string dup = absl::StrCat("key_b", std::string(17, '0'), 1050);
  bad.push_back(MakeRecord(dup));  // duplicate id
  absl::Status s = store->InsertBatch(bad, keygate::testing::CreatedNote());
  CHECK(s.code() == absl::StatusCode::kAlreadyExists);
  CHECK_THAT(Message(s), Catch::Contains(dup));
  CHECK(*store->Count() == 100);
  CHECK(*store->LastSequence() == seq);
  CHECK(store->Get(absl::StrCat("key_c", std::string(17, '0'), 1000)).status().code() ==
        absl::StatusCode::kNotFound);
}

// Brute force: what List must return for a name search.
std::vector<std::string> Expected(const std::vector<KeyRecord>& all, std::string_view needle) {
  std::string n(needle);
  std::transform(n.begin(), n.end(), n.begin(),
                 [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; });
  std::vector<std::string> ids;
  for (const KeyRecord& r : all) {
    std::string name = r.name;
    std::transform(name.begin(), name.end(), name.begin(),
                   [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; });
    if (name.find(n) != std::string::npos) ids.push_back(r.id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST_CASE("SQLite name search gives the same answers on its sparse and dense paths",
          "[sqlite][list]") {
  auto store = OpenTempSqliteStore();
  // 6000 names: every one contains "service" (dense: beyond the trigram
  // threshold), few contain "Zebra" or a quote (sparse), two-letter needles
  // go through the scan.
  std::vector<KeyRecord> all;
  for (int i = 0; i < 6000; ++i) {
    std::string name = absl::StrCat("Service ", i, i % 997 == 0 ? " Zebra-Crossing" : "",
                                    i % 1500 == 7 ? " say \"hi\"" : "", i % 2 ? " µ-Ünit" : "");
    KeyRecord r = MakeRecord(absl::StrCat("key_s", 100000 + (i * 7919) % 6000), "alice",
                             "production", KeyKind::kGeneral, name);
    all.push_back(r);
  }
  // Rare two-character needles: a whole 2-character name, one at the very
  // end of a name, one in the middle.
  for (const char* name : {"Qz", "deploy key xY", "a wQ7 b"}) {
    all.push_back(
        MakeRecord(absl::StrCat("key_x", all.size()), "bob", "preview", KeyKind::kGeneral, name));
  }
  REQUIRE(store->InsertBatch(all, keygate::testing::CreatedNote()).ok());
  for (const char* needle :
       {"zebra", "ZEBRA-c", "service",       "SERVICE 59", "ce 1", "\"hi\"", "y \"", "µ-ün", "Ün",
        "e",     "99",      "no such thing", "%",          "_",    "qz",     "XY",   "q7",   "w",
        "zz",    "µ-",      "i\"",           "1 "}) {
    INFO("needle: " << needle);
    ListFilter f;
    f.name_contains = needle;
    const std::vector<std::string> got = conformance::ListAllIds(*store, f);
    // Non-ASCII letters are compared byte-wise (ASCII-only case folding).
    CHECK(got == Expected(all, needle));
    ListOptions small;
    small.filter = f;
    small.limit = 7;
    CHECK(conformance::ListAllIds(*store, small) == got);
  }
}

TEST_CASE("SQLite name index follows renames and deletes", "[sqlite][list]") {
  auto store = OpenTempSqliteStore();
  for (int i = 0; i < 20; ++i) {
    REQUIRE(store
                ->Insert(MakeRecord(absl::StrCat("key_n", 100 + i), "alice", "production",
                                    KeyKind::kGeneral, absl::StrCat("Original Name ", i)),
                         keygate::testing::CreatedNote())
                .ok());
  }
  absl::StatusOr<KeyRecord> r = store->Get("key_n105");
  REQUIRE(r.ok());
  KeyRecord renamed = *r;
  renamed.name = "Brand New Title";
  REQUIRE(store->Update(renamed, keygate::testing::ModifiedNote()).ok());
  REQUIRE(store->Delete("key_n106", std::nullopt, keygate::testing::DeletedNote()).ok());
  // Same name again (no index change) and an unrelated field.
  absl::StatusOr<KeyRecord> again = store->Get("key_n105");
  REQUIRE(again.ok());
  KeyRecord same = *again;
  same.description = "only the description";
  REQUIRE(store->Update(same, keygate::testing::ModifiedNote()).ok());

  auto search = [&](const char* needle) {
    ListFilter f;
    f.name_contains = needle;
    return conformance::ListAllIds(*store, f);
  };
  CHECK(search("brand new") == std::vector<std::string>{"key_n105"});
  CHECK(search("nal name 5").empty());
  CHECK(search("nal name 6").empty());
  CHECK(search("nal name 1").size() == 11);  // 1 and 10..19
  CHECK(search("le").size() == 1);           // "Title" only (2 characters)
  CHECK(store->CheckIntegrity().ok());
}

TEST_CASE("SQLite store never holds a token in plaintext", "[sqlite][security]") {
  TempDir dir;
  const std::string path = dir.File("secrets.db");
  auto store = OpenAt(path);
  REQUIRE(store.ok());
  KeyManager::Options mo;
  mo.deployment = *Deployment::Create({});
  mo.store = *store;
  std::unique_ptr<KeyManager> manager_owner = keygate::testing::MustOk(KeyManager::Create(mo));
  KeyManager& manager = *manager_owner;
  std::vector<std::string> tokens;
  for (int i = 0; i < 20; ++i) {
    CreateKeyRequest req;
    req.name = absl::StrCat("key ", i);
    req.owner = "alice";
    req.environment = i % 2 ? "production" : "preview";
    req.scopes = {"read:all"};
    absl::StatusOr<CreatedKey> k = manager.Create(req, "test");
    REQUIRE(k.ok());
    tokens.emplace_back(k->token.Reveal(InsecureSecretAccess::Get()));
    if (i % 5 == 0) {
      absl::StatusOr<CreatedKey> rolled = manager.Roll(k->record.id, absl::Hours(1), "test");
      REQUIRE(rolled.ok());
      tokens.emplace_back(rolled->token.Reveal(InsecureSecretAccess::Get()));
    }
  }
  // Everything that reached the disk: database, WAL (not yet checkpointed).
  const std::string bytes = ReadFile(path) + ReadFile(path + "-wal");
  REQUIRE(bytes.size() > 4096);
  for (const std::string& t : tokens) {
    TokenView v;
    REQUIRE(ParseToken(t, &v) == TokenError::kNone);
    CHECK(bytes.find(t) == std::string::npos);
    CHECK(bytes.find(v.secret) == std::string::npos);
    CHECK(bytes.find(v.secret.substr(0, 16)) == std::string::npos);
  }
  // Sanity: the search would find what IS stored (the display hints).
  CHECK(bytes.find(TokenHint(tokens.front())) != std::string::npos);
}

TEST_CASE("SQLite store errors never echo what was bound", "[sqlite][security]") {
  auto store = OpenTempSqliteStore();
  KeyRecord a = MakeRecord("key_echo");
  a.name = "kg_live_ThisLooksLikeATokenButIsAName0000000000000000000";
  REQUIRE(store->Insert(a, keygate::testing::CreatedNote()).ok());
  KeyRecord b = MakeRecord("key_echo2");
  b.digest = a.digest;
  b.name = a.name;
  absl::Status s = store->Insert(b, keygate::testing::CreatedNote());
  CHECK(s.code() == absl::StatusCode::kAlreadyExists);
  CHECK_THAT(Message(s), !Catch::Contains("kg_live_"));
}

TEST_CASE("SQLite subscription sees commits from another connection", "[sqlite][feed]") {
  TempDir dir;
  const std::string path = dir.File("feed.db");
  SqliteOptions o;
  o.poll_interval = absl::Milliseconds(20);
  auto writer = OpenAt(path, o);
  REQUIRE(writer.ok());
  auto reader = OpenAt(path, o);
  REQUIRE(reader.ok());
  std::atomic<int> calls{0};
  auto sub = (*reader)->Subscribe([&] { calls.fetch_add(1); });
  REQUIRE(sub.ok());
  REQUIRE((*writer)->Insert(MakeRecord("key_x1"), keygate::testing::CreatedNote()).ok());
  CHECK(conformance::WaitFor([&] { return calls.load() > 0; }));
  absl::StatusOr<ChangeBatch> b = (*reader)->ChangesSince(0, 10);
  REQUIRE(b.ok());
  REQUIRE(b->changes.size() == 1);
  CHECK(b->changes[0].key_id == "key_x1");

  // Quiet store: the poller does not call back without a commit.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const int settled = calls.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(calls.load() == settled);
}

TEST_CASE("SQLite store can be destroyed from inside its subscription callback",
          "[sqlite][feed][concurrent]") {
  auto store = OpenTempSqliteStore();
  std::shared_ptr<SqliteKeyStore> held = store;
  std::unique_ptr<Subscription> sub;
  std::atomic<bool> done{false};
  auto s = store->Subscribe([&] {
    if (done.exchange(true)) return;
    sub.reset();   // unsubscribe from inside the callback: must not deadlock
    held.reset();  // and drop the last reference to the store
  });
  REQUIRE(s.ok());
  sub = *std::move(s);
  REQUIRE(store->Insert(MakeRecord("key_self"), keygate::testing::CreatedNote()).ok());
  store.reset();
  CHECK(conformance::WaitFor([&] { return done.load(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

}  // namespace
}  // namespace keygate

namespace keygate {
namespace {

TEST_CASE("SQLite store refuses a file: URI as a path", "[sqlite][open]") {
  testing::TempDir dir;
  for (const std::string& uri :
       {std::string("file::memory:"), "file:" + dir.path() + "/k.db?mode=memory"}) {
    SqliteOptions o;
    o.path = uri;
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
    CHECK(store.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(store.status().message()), Catch::Contains("URI"));
  }
  CHECK(std::filesystem::is_empty(dir.path()));  // nothing created
}

}  // namespace
}  // namespace keygate

namespace keygate {
namespace {

// Runs one statement with one text parameter through a raw connection: how
// an operator's manual edit (the sqlite3 shell) reaches the file.
void RawEdit(const std::string& path, const char* sql, const std::string& param) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_bind_text(stmt, 1, param.c_str(), -1, SQLITE_TRANSIENT) == SQLITE_OK);
  const int rc = sqlite3_step(stmt);
  const int changed = sqlite3_changes(db);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_DONE);
  REQUIRE(changed == 1);
}

TEST_CASE("SQLite reads a rate limit, kind or state no write could store as corrupt",
          "[sqlite][corrupt]") {
  // Such a rate limit compiled to "no limit": a damaged row failed open.
  TempDir dir;
  const std::string path = dir.File("shape.db");
  SqliteOptions so;
  so.path = path;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(so);
  REQUIRE(store.ok());
  KeyManager::Options mo;
  mo.deployment = *Deployment::Create({});
  mo.store = *store;
  std::unique_ptr<KeyManager> manager_owner = keygate::testing::MustOk(KeyManager::Create(mo));
  KeyManager& manager = *manager_owner;
  CreateKeyRequest req;
  req.name = "limited";
  req.owner = "alice";
  req.environment = "production";
  req.rate_limit = RateLimitPolicy{10, absl::Seconds(1), 5};
  absl::StatusOr<CreatedKey> k = manager.Create(req, "test");
  REQUIRE(k.ok());
  const std::string id = k->record.id;
  REQUIRE((*store)->Get(id).ok());
  const struct {
    const char* edit;
    const char* undo;
    const char* column;
  } cases[] = {
      {"UPDATE keys SET rate_limit_rate = 0 WHERE id = ?1",
       "UPDATE keys SET rate_limit_rate = 10 WHERE id = ?1", "column rate_limit"},
      {"UPDATE keys SET rate_limit_period_us = -1 WHERE id = ?1",
       "UPDATE keys SET rate_limit_period_us = 1000000 WHERE id = ?1", "column rate_limit"},
      {"UPDATE keys SET rate_limit_burst = 5000000000 WHERE id = ?1",
       "UPDATE keys SET rate_limit_burst = 5 WHERE id = ?1", "column rate_limit"},
      {"UPDATE keys SET kind = 0 WHERE id = ?1", "UPDATE keys SET kind = 2 WHERE id = ?1",
       "column kind"},
      {"UPDATE keys SET state = 7 WHERE id = ?1", "UPDATE keys SET state = 1 WHERE id = ?1",
       "column state"},
      // Longer than any write stores: read as it is, every later write of the key would fail.
      {"UPDATE keys SET sealed_token = printf('%.*c', 1025, 'x') WHERE id = ?1",
       "UPDATE keys SET sealed_token = '' WHERE id = ?1", "column sealed_token"},
      {"UPDATE keys SET sealed_webhook_secret = printf('%.*c', 1025, 'x') WHERE id = ?1",
       "UPDATE keys SET sealed_webhook_secret = '' WHERE id = ?1", "column sealed_webhook_secret"},
  };
  for (const auto& c : cases) {
    INFO(c.edit);
    RawEdit(path, c.edit, id);
    const absl::Status got = (*store)->Get(id).status();
    CHECK(got.code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(Message(got), Catch::Contains(c.column));
    RawEdit(path, c.undo, id);
    CHECK((*store)->Get(id).ok());
  }
}

TEST_CASE("Both stores refuse a record whose kind or state is unset", "[sqlite][store]") {
  TempDir dir;
  SqliteOptions so;
  so.path = dir.File("unset.db");
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> sqlite = SqliteKeyStore::Create(so);
  REQUIRE(sqlite.ok());
  const std::shared_ptr<KeyStore> stores[] = {*sqlite, std::make_shared<MemoryKeyStore>()};
  for (const std::shared_ptr<KeyStore>& store : stores) {
    KeyRecord r;
    r.id = "key_0000000000000000000001";
    r.name = "n";
    r.owner = "alice";
    r.environment = "production";
    r.digest[0] = 1;
    r.state = KeyState::kActive;  // kind left unset
    absl::Status s = store->Insert(r, keygate::testing::CreatedNote());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(Message(s) == "kind: must be personal or general");
    r.kind = KeyKind::kGeneral;
    r.state = KeyState::kUnspecifiedDoNotUse;
    s = store->Insert(r, keygate::testing::CreatedNote());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(Message(s) == "state: must be active or revoked");
    r.state = KeyState::kActive;
    REQUIRE(store->Insert(r, keygate::testing::CreatedNote()).ok());
    absl::StatusOr<KeyRecord> stored = store->Get(r.id);
    REQUIRE(stored.ok());
    KeyRecord next = *stored;
    next.state = KeyState::kUnspecifiedDoNotUse;
    CHECK(store->Update(next, keygate::testing::ModifiedNote()).status().code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(store->Get(r.id)->version == stored->version);
    CHECK(*store->LastSequence() == 1);
  }
}

TEST_CASE("SQLite change feed delivers the changes after an undecodable row, which fails closed",
          "[sqlite][feed][corrupt]") {
  TempDir dir;
  const std::string path = dir.File("corrupt.db");
  SqliteOptions so;
  so.path = path;
  std::mutex reports_mu;
  std::vector<absl::Status> reports;
  so.on_corrupt_row = [&](const absl::Status& s) {
    std::lock_guard<std::mutex> lock(reports_mu);
    reports.push_back(s);
  };
  auto reported = [&] {
    std::lock_guard<std::mutex> lock(reports_mu);
    return reports;
  };
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(so);
  REQUIRE(store.ok());
  std::shared_ptr<const Deployment> deployment = *Deployment::Create({});
  KeyManager::Options mo;
  mo.deployment = deployment;
  mo.store = *store;
  std::unique_ptr<KeyManager> manager_owner = keygate::testing::MustOk(KeyManager::Create(mo));
  KeyManager& manager = *manager_owner;
  std::vector<CreatedKey> keys;
  for (const char* name : {"alpha", "bravo", "charlie"}) {
    CreateKeyRequest req;
    req.name = name;
    req.owner = "alice";
    req.environment = "production";
    req.scopes = {"read:all"};
    absl::StatusOr<CreatedKey> k = manager.Create(req, "test");
    REQUIRE(k.ok());
    keys.push_back(*std::move(k));
  }
  const std::string bad_id = keys[1].record.id;
  auto token = [&](std::size_t i) {
    return std::string(keys[i].token.Reveal(InsecureSecretAccess::Get()));
  };

  VerifierOptions vo;
  vo.deployment = deployment;
  vo.store = *store;
  vo.environment = "production";
  vo.follow_changes = false;  // the test applies the feed with Sync()
  vo.record_usage = false;
  absl::StatusOr<std::unique_ptr<Verifier>> verifier = Verifier::Create(vo);
  REQUIRE(verifier.ok());
  for (std::size_t i = 0; i < keys.size(); ++i)
    CHECK((*verifier)->VerifyToken(token(i), Requirement::AnyValidKey()).ok());
  const std::uint64_t applied = *(*store)->LastSequence();

  // bravo changes, then charlie is revoked: both are in the feed after
  // `applied`, bravo's first. Before the verifier pulls them, an operator
  // breaks bravo's row by hand.
  KeyUpdate rename;
  rename.name = "bravo renamed";
  REQUIRE(manager.Modify(bad_id, rename, keys[1].record.version, "test").ok());
  REQUIRE(manager.Revoke(keys[2].record.id, "test").ok());
  RawEdit(path, "UPDATE keys SET scopes = 'read:all' WHERE id = ?1", bad_id);

  // The feed still delivers every change: bravo's as a delete (its stored
  // state cannot be read, so nothing may keep verifying it), charlie's revoke.
  absl::StatusOr<ChangeBatch> batch = (*store)->ChangesSince(applied, 100);
  INFO(batch.status().ToString());
  REQUIRE(batch.ok());
  REQUIRE(batch->changes.size() == 2);
  CHECK(batch->changes[0].key_id == bad_id);
  CHECK_FALSE(batch->changes[0].record.has_value());
  CHECK(batch->changes[1].key_id == keys[2].record.id);
  REQUIRE(batch->changes[1].record.has_value());
  CHECK(batch->changes[1].record->state == KeyState::kRevoked);
  CHECK_FALSE(batch->more);
  // ... and reports the row: key id and column, no value, no token.
  {
    const std::vector<absl::Status> seen = reported();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(Message(seen[0]), Catch::Contains(bad_id) && Catch::Contains("column scopes"));
    CHECK_THAT(Message(seen[0]), !Catch::Contains("read:all") && !Catch::Contains(token(1)));
    CHECK((*store)->corrupt_rows_skipped() == 1);
  }

  // Refresh, which reads the one key, fails closed the same way: it
  // answers the kDataLoss and drops the key at once.
  CHECK((*verifier)->Refresh(bad_id).code() == absl::StatusCode::kDataLoss);
  CHECK((*verifier)->VerifyToken(token(1), Requirement::AnyValidKey()).outcome ==
        Outcome::kUnknown);
  CHECK((*verifier)
            ->VerifyToken(token(2), Requirement::AnyValidKey())
            .ok());  // its revoke not pulled yet

  // A verifier following the feed applies the revoke and drops bravo.
  absl::Status synced = (*verifier)->Sync();
  INFO(synced.ToString());
  CHECK(synced.ok());
  CHECK((*verifier)->VerifyToken(token(0), Requirement::AnyValidKey()).ok());
  CHECK((*verifier)->VerifyToken(token(1), Requirement::AnyValidKey()).outcome ==
        Outcome::kUnknown);
  CHECK((*verifier)->VerifyToken(token(2), Requirement::AnyValidKey()).outcome ==
        Outcome::kRevoked);

  // A verifier loading the store from scratch (a restart) is not blocked either.
  absl::StatusOr<std::unique_ptr<Verifier>> fresh = Verifier::Create(vo);
  INFO(fresh.status().ToString());
  REQUIRE(fresh.ok());
  CHECK((*fresh)->VerifyToken(token(0), Requirement::AnyValidKey()).ok());
  CHECK((*fresh)->VerifyToken(token(1), Requirement::AnyValidKey()).outcome == Outcome::kUnknown);
  CHECK((*fresh)->VerifyToken(token(2), Requirement::AnyValidKey()).outcome == Outcome::kRevoked);

  CHECK(reported().size() >= 3);  // each read of the row reports it

  // Reading the row directly still reports it, by key id and column, and so
  // does the integrity check.
  absl::Status got = (*store)->Get(bad_id).status();
  CHECK(got.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(Message(got), Catch::Contains(bad_id) && Catch::Contains("scopes"));
  CHECK_THAT(Message(got), !Catch::Contains(token(1)));
  absl::Status integrity = (*store)->CheckIntegrity();
  CHECK(integrity.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(Message(integrity), Catch::Contains(bad_id) && Catch::Contains("column scopes"));

  // Repaired (by hand again, then any change to the key), it is back.
  RawEdit(path, "UPDATE keys SET scopes = '[\"read:all\"]' WHERE id = ?1", bad_id);
  CHECK((*store)->CheckIntegrity().ok());
  absl::StatusOr<KeyRecord> repaired = (*store)->Get(bad_id);
  REQUIRE(repaired.ok());
  KeyUpdate touch;
  touch.description = "repaired";
  REQUIRE(manager.Modify(bad_id, touch, repaired->version, "test").ok());
  REQUIRE((*verifier)->Sync().ok());
  CHECK((*verifier)->VerifyToken(token(1), Requirement::AnyValidKey()).ok());
}

}  // namespace
}  // namespace keygate
