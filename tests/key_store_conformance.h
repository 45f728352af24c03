// tests/key_store_conformance.h: the KeyStore conformance suite that every
// backend runs, so that all of them honour the contract in key_store.h.
//
// Usage, in a backend's test file (one line per backend):
//
//   #include "key_store_conformance.h"
//
//   KEYGATE_KEY_STORE_CONFORMANCE(Memory, "[memory]", MemoryHooks(),
//                                 std::make_shared<keygate::MemoryKeyStore>())
//
//   KEYGATE_KEY_STORE_CONFORMANCE(SQLite, "[sqlite]", SqliteHooks(), [] {
//     return std::shared_ptr<keygate::KeyStore>(OpenTempSqliteStore());
//   }())
//
// The macro expands to one Catch2 TEST_CASE per behaviour, named
// "<Backend> conformance: <behaviour>" and tagged `<tags>[store][conformance]`
// (the tags argument must be a string literal; cases that run threads also
// carry [concurrent], which CI runs under ThreadSanitizer). The factory
// expression is evaluated once per test case and must yield a fresh, EMPTY store as
// something convertible to std::shared_ptr<keygate::KeyStore>; it may contain
// commas. The hooks expression yields a conformance::BackendHooks: what the
// suite must know of the backend to build cursors by hand and to corrupt a
// stored record; a hook left unset skips its checks, with a warning in the
// output. Run one backend's suite with e.g. `memory_key_store_test
// "[memory][conformance]"`.
//
// Two kinds of case: the older ones assert with Catch2 directly; the
// Check* functions return Findings (the violations found), so that
// tests/broken_store_test.cc can require each of them to FAIL on a store
// written to break the contract the check is about.
//
// What the suite requires beyond the header comments of key_store.h:
//   * Times round-trip at microsecond precision: a backend may drop the
//     sub-microsecond part (truncating toward the past) but must return
//     microsecond values exactly. KeyManager only ever writes whole
//     microseconds.
//   * ListPage::next_cursor is empty exactly when no further record matches
//     (a backend fetches limit + 1 rows to know); a cursor the store did not
//     produce (e.g. "%%not a cursor%%") is kInvalidArgument.
//   * `name_contains` matches literally: '%' and '_' are not wildcards.
//   * A failed write (invalid id, duplicate id or digest, personal key
//     taken, stale version, not found) changes nothing a client can see: no
//     record, no digest, no change entry, LastSequence() does not move.
//   * A subscription callback never runs before the change it reports is
//     visible to readers (e.g. SQLite's update hook fires too early), never
//     after its Subscription is destroyed, and the destructor waits for a
//     callback in flight on another thread.
// Every case is small enough for a database-backed store (a few hundred
// writes); set KEYGATE_STRESS=1 for the larger concurrent runs.

#ifndef KEYGATE_TESTS_KEY_STORE_CONFORMANCE_H_
#define KEYGATE_TESTS_KEY_STORE_CONFORMANCE_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/digest.h"
#include "keygate/key.h"
#include "keygate/key_store.h"

// REQUIREs that a Status / StatusOr is OK, printing the status otherwise.
#ifndef KEYGATE_REQUIRE_OK
#define KEYGATE_REQUIRE_OK(expr)                                                            \
  do {                                                                                      \
    const absl::Status keygate_require_ok_status_ = ::keygate::conformance::StatusOf(expr); \
    INFO(keygate_require_ok_status_.ToString());                                            \
    REQUIRE(keygate_require_ok_status_.ok());                                               \
  } while (false)
#endif

namespace keygate::conformance {

// Audit notes for the suite's writes (actor "conformance", a fixed time).
inline AuditNote SuiteNote(EventType type) {
  return AuditNote{type, "conformance", absl::FromUnixSeconds(1'700'000'000), {}};
}
inline AuditNote CreatedNote() { return SuiteNote(EventType::kCreated); }
inline AuditNote ModifiedNote() { return SuiteNote(EventType::kModified); }
inline AuditNote DeletedNote() { return SuiteNote(EventType::kDeleted); }

inline absl::Status StatusOf(const absl::Status& s) { return s; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

inline bool StressEnabled() {
  const char* v = std::getenv("KEYGATE_STRESS");
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

// A whole-microsecond time, so that every backend round-trips it exactly.
inline absl::Time BaseTime() { return absl::FromUnixMicros(1'700'000'000'123'456); }

// A distinct, deterministic digest per seed (SplitMix64 over an FNV-1a hash).
inline Digest DigestFor(std::string_view seed) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : seed) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  Digest d{};
  for (std::size_t i = 0; i < d.size(); i += 8) {
    h += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = h;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    for (std::size_t j = 0; j < 8; ++j) d[i + j] = static_cast<std::uint8_t>(z >> (8 * j));
  }
  return d;
}

// A minimal valid record; the digest is derived from the id.
inline KeyRecord MakeRecord(std::string id, std::string owner = "alice",
                            std::string environment = "production",
                            KeyKind kind = KeyKind::kGeneral, std::string name = "") {
  KeyRecord r;
  r.name = name.empty() ? absl::StrCat("name of ", id) : std::move(name);
  r.owner = std::move(owner);
  r.environment = std::move(environment);
  r.kind = kind;
  r.state = KeyState::kActive;
  r.created = BaseTime();
  r.updated = BaseTime();
  r.digest = DigestFor(id);
  r.hint = "kg_live_...abcd";
  r.id = std::move(id);
  return r;
}

// The record as any conforming store returns it: times at microseconds.
inline KeyRecord AtMicros(KeyRecord r) {
  r.created = TruncateToMicros(r.created);
  r.updated = TruncateToMicros(r.updated);
  if (r.expires) r.expires = TruncateToMicros(*r.expires);
  if (r.last_used) r.last_used = TruncateToMicros(*r.last_used);
  if (r.previous) r.previous->valid_until = TruncateToMicros(r.previous->valid_until);
  return r;
}

// Polls `pred` (backends may notify asynchronously). The deadline only
// guards against a hang (sanitizers, a loaded machine): no timing claim.
inline bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(60)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

inline std::uint64_t LastSeq(KeyStore& store) {
  absl::StatusOr<std::uint64_t> s = store.LastSequence();
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return *s;
}

inline std::vector<std::string> Ids(const std::vector<KeyRecord>& records) {
  std::vector<std::string> ids;
  for (const KeyRecord& r : records) ids.push_back(r.id);
  return ids;
}

// Follows cursors to the end, checking each page's size and order.
inline std::vector<std::string> ListAllIds(KeyStore& store, ListOptions options,
                                           std::size_t* pages = nullptr) {
  std::vector<std::string> ids;
  std::size_t n = 0;
  for (;;) {
    absl::StatusOr<ListPage> page = store.List(options);
    KEYGATE_REQUIRE_OK(page);
    REQUIRE(page->keys.size() <= options.limit);
    for (const KeyRecord& r : page->keys) {
      if (!ids.empty()) REQUIRE(ids.back() < r.id);  // ascending, no duplicates
      ids.push_back(r.id);
    }
    ++n;
    REQUIRE(n < 10'000);
    if (page->next_cursor.empty()) break;
    REQUIRE(page->keys.size() == options.limit);  // only full pages have a next page
    options.cursor = page->next_cursor;
  }
  if (pages != nullptr) *pages = n;
  return ids;
}

inline std::vector<std::string> ListAllIds(KeyStore& store, const ListFilter& filter) {
  ListOptions o;
  o.filter = filter;
  o.limit = kMaxListLimit;
  return ListAllIds(store, o);
}

// ---------------------------------------------------------------------------
// The cases. Each takes a fresh, empty store.

inline void InsertAndGet(const std::shared_ptr<KeyStore>& store) {
  KeyRecord r = MakeRecord("key_insert1");
  r.version = 42;  // ignored: the store assigns 1
  KEYGATE_REQUIRE_OK(store->Insert(r, CreatedNote()));
  absl::StatusOr<KeyRecord> got = store->Get("key_insert1");
  KEYGATE_REQUIRE_OK(got);
  KeyRecord expected = r;
  expected.version = 1;
  CHECK(*got == expected);

  absl::StatusOr<KeyRecord> missing = store->Get("key_missing");
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);

  KeyRecord empty = MakeRecord("");
  empty.digest = DigestFor("empty id");
  CHECK(store->Insert(empty, CreatedNote()).code() == absl::StatusCode::kInvalidArgument);

  // A verdict carries at most kKeyIdLength bytes of id: an id one byte
  // longer is refused (cut off, it could be another key's id);
  // one of exactly that length, of any shape, is stored.
  const std::string longest(kKeyIdLength, 'x');
  KeyRecord too_long = MakeRecord(longest + "1");
  too_long.digest = DigestFor("long id");
  const absl::Status refused = store->Insert(too_long, CreatedNote());
  CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(refused.message(), "id: longer than 26 bytes"));
  CHECK(store->Get(too_long.id).status().code() == absl::StatusCode::kNotFound);
  CHECK(store->FindByDigest(too_long.digest).status().code() == absl::StatusCode::kNotFound);
  KeyRecord fits = MakeRecord(longest);
  fits.digest = DigestFor("long id");
  KEYGATE_REQUIRE_OK(store->Insert(fits, CreatedNote()));
  KEYGATE_REQUIRE_OK(store->Get(longest));
}

inline void DuplicateId(const std::shared_ptr<KeyStore>& store) {
  KeyRecord a = MakeRecord("key_dup");
  KEYGATE_REQUIRE_OK(store->Insert(a, CreatedNote()));
  const std::uint64_t seq = LastSeq(*store);

  KeyRecord b = MakeRecord("key_dup", "bob");
  b.digest = DigestFor("another digest");
  CHECK(store->Insert(b, CreatedNote()).code() == absl::StatusCode::kAlreadyExists);
  CHECK(LastSeq(*store) == seq);  // a failed write is no change
  absl::StatusOr<KeyRecord> got = store->Get("key_dup");
  KEYGATE_REQUIRE_OK(got);
  CHECK(got->owner == "alice");
  // The rejected record's digest was not indexed.
  CHECK(store->FindByDigest(b.digest).status().code() == absl::StatusCode::kNotFound);
}

// Errors name a key only by an id of the generated shape: anything else may
// be a token pasted where an id belongs, and must not reach a log.
inline void ErrorsQuoteOnlyKeyIds(const std::shared_ptr<KeyStore>& store) {
  const std::string token = "kg_live_xM5fcVtn3DmIL5Z2lH9SsrhQ5ED8YKAehvJrxD5l47u4DL5CW";
  const std::string forged = "key_x\r\nFORGED: log line";
  for (const std::string& id : {token, forged}) {
    const absl::Status get = store->Get(id).status();
    CHECK(get.code() == absl::StatusCode::kNotFound);
    const absl::Status del = store->Delete(id, std::nullopt, DeletedNote());
    CHECK(del.code() == absl::StatusCode::kNotFound);
    KeyRecord r = MakeRecord(id);
    r.version = 1;
    const absl::Status upd = store->Update(r, ModifiedNote()).status();
    CHECK(upd.code() == absl::StatusCode::kNotFound);
    for (const absl::Status& s : {get, del, upd}) {
      const std::string m(s.message());
      CHECK(m.find(id) == std::string::npos);
      CHECK(m.find("kg_live_") == std::string::npos);
      CHECK(m.find('\n') == std::string::npos);
      CHECK_THAT(m, Catch::Contains("not a key id"));
    }
  }
  const std::string generated = "key_0Q3RtZ8aXb123456789012";
  REQUIRE(IsGeneratedKeyId(generated));
  CHECK_THAT(std::string(store->Get(generated).status().message()), Catch::Contains(generated));
}

inline void DuplicateDigest(const std::shared_ptr<KeyStore>& store) {
  KeyRecord a = MakeRecord("key_a");
  a.previous = RolledSecret{DigestFor("a-old"), "kg_live_...old1", BaseTime() + absl::Hours(1)};
  KEYGATE_REQUIRE_OK(store->Insert(a, CreatedNote()));
  const std::uint64_t seq = LastSeq(*store);

  KeyRecord same_current = MakeRecord("key_b");
  same_current.digest = a.digest;
  CHECK(store->Insert(same_current, CreatedNote()).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord current_is_rolled = MakeRecord("key_c");
  current_is_rolled.digest = DigestFor("a-old");
  CHECK(store->Insert(current_is_rolled, CreatedNote()).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord rolled_is_current = MakeRecord("key_d");
  rolled_is_current.previous = RolledSecret{a.digest, "x", BaseTime() + absl::Hours(1)};
  CHECK(store->Insert(rolled_is_current, CreatedNote()).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord rolled_is_rolled = MakeRecord("key_e");
  rolled_is_rolled.previous = RolledSecret{DigestFor("a-old"), "x", BaseTime() + absl::Hours(1)};
  CHECK(store->Insert(rolled_is_rolled, CreatedNote()).code() == absl::StatusCode::kAlreadyExists);

  CHECK(LastSeq(*store) == seq);
  for (const char* id : {"key_b", "key_c", "key_d", "key_e"}) {
    CHECK(store->Get(id).status().code() == absl::StatusCode::kNotFound);
  }
  // Digests of rejected records were not indexed either.
  CHECK(store->FindByDigest(DigestFor("key_b")).status().code() == absl::StatusCode::kNotFound);

  // An update may not take another key's digest (current or rolled).
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_f"), CreatedNote()));
  absl::StatusOr<KeyRecord> f = store->Get("key_f");
  KEYGATE_REQUIRE_OK(f);
  KeyRecord steal = *f;
  steal.digest = a.digest;
  CHECK(store->Update(steal, ModifiedNote()).status().code() == absl::StatusCode::kAlreadyExists);
  steal = *f;
  steal.previous = RolledSecret{DigestFor("a-old"), "x", BaseTime()};
  CHECK(store->Update(steal, ModifiedNote()).status().code() == absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> f2 = store->Get("key_f");
  KEYGATE_REQUIRE_OK(f2);
  CHECK(*f2 == *f);
  // Keeping its own digests is fine.
  KEYGATE_REQUIRE_OK(store->Update(*f, ModifiedNote()));
}

inline void PersonalUniqueness(const std::shared_ptr<KeyStore>& store) {
  using K = KeyKind;
  KEYGATE_REQUIRE_OK(
      store->Insert(MakeRecord("key_p1", "alice", "production", K::kPersonal), CreatedNote()));
  CHECK(store->Insert(MakeRecord("key_p2", "alice", "production", K::kPersonal), CreatedNote())
            .code() == absl::StatusCode::kAlreadyExists);
  // Other environment, other owner, general keys, revoked personal keys: fine.
  KEYGATE_REQUIRE_OK(
      store->Insert(MakeRecord("key_p3", "alice", "preview", K::kPersonal), CreatedNote()));
  KEYGATE_REQUIRE_OK(
      store->Insert(MakeRecord("key_p4", "bob", "production", K::kPersonal), CreatedNote()));
  KEYGATE_REQUIRE_OK(
      store->Insert(MakeRecord("key_g1", "alice", "production", K::kGeneral), CreatedNote()));
  KeyRecord revoked = MakeRecord("key_p5", "alice", "production", K::kPersonal);
  revoked.state = KeyState::kRevoked;
  KEYGATE_REQUIRE_OK(store->Insert(revoked, CreatedNote()));

  // Revoking p1 frees the slot for a new personal key...
  absl::StatusOr<KeyRecord> p1 = store->Get("key_p1");
  KEYGATE_REQUIRE_OK(p1);
  KeyRecord p1_revoked = *p1;
  p1_revoked.state = KeyState::kRevoked;
  absl::StatusOr<KeyRecord> p1_after = store->Update(p1_revoked, ModifiedNote());
  KEYGATE_REQUIRE_OK(p1_after);
  KEYGATE_REQUIRE_OK(
      store->Insert(MakeRecord("key_p6", "alice", "production", K::kPersonal), CreatedNote()));

  // ...and then restoring p1 (or p5) would make two active: refused.
  KeyRecord p1_restore = *p1_after;
  p1_restore.state = KeyState::kActive;
  CHECK(store->Update(p1_restore, ModifiedNote()).status().code() ==
        absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> p5 = store->Get("key_p5");
  KEYGATE_REQUIRE_OK(p5);
  KeyRecord p5_restore = *p5;
  p5_restore.state = KeyState::kActive;
  CHECK(store->Update(p5_restore, ModifiedNote()).status().code() ==
        absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> p1_now = store->Get("key_p1");
  KEYGATE_REQUIRE_OK(p1_now);
  CHECK(p1_now->state == KeyState::kRevoked);

  // Turning a general key into an active personal one is checked too.
  absl::StatusOr<KeyRecord> g1 = store->Get("key_g1");
  KEYGATE_REQUIRE_OK(g1);
  KeyRecord g1_personal = *g1;
  g1_personal.kind = K::kPersonal;
  CHECK(store->Update(g1_personal, ModifiedNote()).status().code() ==
        absl::StatusCode::kAlreadyExists);

  // Deleting the active one frees the slot again.
  KEYGATE_REQUIRE_OK(store->Delete("key_p6", std::nullopt, DeletedNote()));
  KEYGATE_REQUIRE_OK(store->Update(p1_restore, ModifiedNote()));
}

inline void FindByDigest(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_f1"), CreatedNote()));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_f2"), CreatedNote()));
  absl::StatusOr<KeyRecord> f1 = store->FindByDigest(DigestFor("key_f1"));
  KEYGATE_REQUIRE_OK(f1);
  CHECK(f1->id == "key_f1");
  absl::StatusOr<KeyRecord> f2 = store->FindByDigest(DigestFor("key_f2"));
  KEYGATE_REQUIRE_OK(f2);
  CHECK(f2->id == "key_f2");
  CHECK(store->FindByDigest(DigestFor("nobody")).status().code() == absl::StatusCode::kNotFound);

  // Roll f1: the new digest and the rolled one both find it; after a second
  // roll the first digest is gone.
  KeyRecord rolled = *f1;
  rolled.previous = RolledSecret{rolled.digest, rolled.hint, BaseTime() + absl::Minutes(5)};
  rolled.digest = DigestFor("key_f1 v2");
  absl::StatusOr<KeyRecord> stored = store->Update(rolled, ModifiedNote());
  KEYGATE_REQUIRE_OK(stored);
  for (const char* seed : {"key_f1", "key_f1 v2"}) {
    absl::StatusOr<KeyRecord> hit = store->FindByDigest(DigestFor(seed));
    KEYGATE_REQUIRE_OK(hit);
    CHECK(hit->id == "key_f1");
    CHECK(hit->version == 2);
    REQUIRE(hit->previous.has_value());
    CHECK(hit->previous->digest == DigestFor("key_f1"));
  }
  KeyRecord rolled2 = *stored;
  rolled2.previous = RolledSecret{rolled2.digest, rolled2.hint, BaseTime() + absl::Minutes(9)};
  rolled2.digest = DigestFor("key_f1 v3");
  KEYGATE_REQUIRE_OK(store->Update(rolled2, ModifiedNote()));
  CHECK(store->FindByDigest(DigestFor("key_f1")).status().code() == absl::StatusCode::kNotFound);
  KEYGATE_REQUIRE_OK(store->FindByDigest(DigestFor("key_f1 v2")));
  KEYGATE_REQUIRE_OK(store->FindByDigest(DigestFor("key_f1 v3")));
  // Dropping the rolled secret unindexes it.
  absl::StatusOr<KeyRecord> cur = store->Get("key_f1");
  KEYGATE_REQUIRE_OK(cur);
  KeyRecord dropped = *cur;
  dropped.previous.reset();
  KEYGATE_REQUIRE_OK(store->Update(dropped, ModifiedNote()));
  CHECK(store->FindByDigest(DigestFor("key_f1 v2")).status().code() == absl::StatusCode::kNotFound);
  // The freed digest can be used by another key.
  KeyRecord reuse = MakeRecord("key_f3");
  reuse.digest = DigestFor("key_f1 v2");
  KEYGATE_REQUIRE_OK(store->Insert(reuse, CreatedNote()));
}

inline void ConditionalUpdate(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_u"), CreatedNote()));
  absl::StatusOr<KeyRecord> v1 = store->Get("key_u");
  KEYGATE_REQUIRE_OK(v1);
  REQUIRE(v1->version == 1);

  KeyRecord edit = *v1;
  edit.name = "renamed";
  absl::StatusOr<KeyRecord> v2 = store->Update(edit, ModifiedNote());
  KEYGATE_REQUIRE_OK(v2);
  CHECK(v2->version == 2);
  CHECK(v2->name == "renamed");
  absl::StatusOr<KeyRecord> got = store->Get("key_u");
  KEYGATE_REQUIRE_OK(got);
  CHECK(*got == *v2);

  // A writer still holding version 1 loses.
  const std::uint64_t seq = LastSeq(*store);
  KeyRecord stale = *v1;
  stale.name = "stale";
  absl::StatusOr<KeyRecord> conflict = store->Update(stale, ModifiedNote());
  CHECK(conflict.status().code() == absl::StatusCode::kAborted);
  KeyRecord future = *v2;
  future.version = 7;
  CHECK(store->Update(future, ModifiedNote()).status().code() == absl::StatusCode::kAborted);
  CHECK(LastSeq(*store) == seq);
  got = store->Get("key_u");
  KEYGATE_REQUIRE_OK(got);
  CHECK(got->name == "renamed");
  CHECK(got->version == 2);

  absl::StatusOr<KeyRecord> v3 = store->Update(*v2, ModifiedNote());
  KEYGATE_REQUIRE_OK(v3);
  CHECK(v3->version == 3);

  const std::uint64_t before_ghost = LastSeq(*store);
  KeyRecord ghost = MakeRecord("key_ghost");
  ghost.version = 1;
  CHECK(store->Update(ghost, ModifiedNote()).status().code() == absl::StatusCode::kNotFound);
  CHECK(LastSeq(*store) == before_ghost);
  CHECK(store->Get("key_ghost").status().code() == absl::StatusCode::kNotFound);
}

inline void DeleteKey(const std::shared_ptr<KeyStore>& store) {
  KeyRecord r = MakeRecord("key_del");
  r.previous = RolledSecret{DigestFor("key_del old"), "x", BaseTime() + absl::Hours(1)};
  KEYGATE_REQUIRE_OK(store->Insert(r, CreatedNote()));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_keep"), CreatedNote()));

  const std::uint64_t seq = LastSeq(*store);
  CHECK(store->Delete("key_del", 2, DeletedNote()).code() == absl::StatusCode::kAborted);
  CHECK(LastSeq(*store) == seq);
  KEYGATE_REQUIRE_OK(store->Get("key_del"));

  KEYGATE_REQUIRE_OK(store->Delete("key_del", 1, DeletedNote()));
  CHECK(LastSeq(*store) > seq);
  CHECK(store->Get("key_del").status().code() == absl::StatusCode::kNotFound);
  CHECK(store->FindByDigest(r.digest).status().code() == absl::StatusCode::kNotFound);
  CHECK(store->FindByDigest(r.previous->digest).status().code() == absl::StatusCode::kNotFound);
  CHECK(store->Delete("key_del", std::nullopt, DeletedNote()).code() ==
        absl::StatusCode::kNotFound);
  CHECK(store->Delete("key_del", 1, DeletedNote()).code() == absl::StatusCode::kNotFound);
  CHECK(ListAllIds(*store, ListFilter{}) == std::vector<std::string>{"key_keep"});

  // Without an expected version.
  KEYGATE_REQUIRE_OK(store->Delete("key_keep", std::nullopt, DeletedNote()));
  CHECK(ListAllIds(*store, ListFilter{}).empty());

  // The id and digests are free again; sequences keep growing.
  const std::uint64_t before = LastSeq(*store);
  KEYGATE_REQUIRE_OK(store->Insert(r, CreatedNote()));
  CHECK(LastSeq(*store) > before);
  absl::StatusOr<KeyRecord> again = store->Get("key_del");
  KEYGATE_REQUIRE_OK(again);
  CHECK(again->version == 1);
  KEYGATE_REQUIRE_OK(store->FindByDigest(r.previous->digest));
}

// Ten records spread over the filter dimensions.
inline void InsertListFixture(KeyStore& store) {
  struct Row {
    const char* id;
    const char* owner;
    const char* env;
    KeyKind kind;
    KeyState state;
    const char* name;
  };
  using K = KeyKind;
  using S = KeyState;
  const Row rows[] = {
      {"key_l00", "alice", "production", K::kGeneral, S::kActive, "CI Pipeline"},
      {"key_l01", "alice", "production", K::kGeneral, S::kRevoked, "ci backup"},
      {"key_l02", "alice", "preview", K::kGeneral, S::kActive, "Deploy bot"},
      {"key_l03", "alice", "production", K::kPersonal, S::kActive, "personal"},
      {"key_l04", "bob", "production", K::kPersonal, S::kActive, "personal"},
      {"key_l05", "bob", "preview", K::kGeneral, S::kRevoked, "nightly-ci"},
      {"key_l06", "bob", "production", K::kGeneral, S::kActive, "metrics 100%"},
      {"key_l07", "carol", "preview", K::kPersonal, S::kRevoked, "personal"},
      {"key_l08", "carol", "production", K::kGeneral, S::kActive, "a_b reporter"},
      {"key_l09", "carol", "production", K::kGeneral, S::kActive, "aXb reporter"},
  };
  for (const Row& row : rows) {
    KeyRecord r = MakeRecord(row.id, row.owner, row.env, row.kind, row.name);
    r.state = row.state;
    KEYGATE_REQUIRE_OK(store.Insert(r, CreatedNote()));
  }
}

inline void ListFilters(const std::shared_ptr<KeyStore>& store) {
  InsertListFixture(*store);
  using V = std::vector<std::string>;
  ListFilter f;
  CHECK(ListAllIds(*store, f).size() == 10);

  f = {};
  f.owner = "bob";
  CHECK(ListAllIds(*store, f) == V{"key_l04", "key_l05", "key_l06"});
  f = {};
  f.owner = "Bob";  // owners match exactly
  CHECK(ListAllIds(*store, f).empty());

  f = {};
  f.environment = "preview";
  CHECK(ListAllIds(*store, f) == V{"key_l02", "key_l05", "key_l07"});

  f = {};
  f.state = KeyState::kRevoked;
  CHECK(ListAllIds(*store, f) == V{"key_l01", "key_l05", "key_l07"});
  f.state = KeyState::kActive;
  CHECK(ListAllIds(*store, f).size() == 7);

  f = {};
  f.kind = KeyKind::kPersonal;
  CHECK(ListAllIds(*store, f) == V{"key_l03", "key_l04", "key_l07"});

  f = {};
  f.name_contains = "ci";  // "CI Pipeline", "ci backup", "nightly-ci"
  CHECK(ListAllIds(*store, f) == V{"key_l00", "key_l01", "key_l05"});
  f.name_contains = "PIPE";
  CHECK(ListAllIds(*store, f) == V{"key_l00"});
  f.name_contains = "a_b";  // '_' is literal, not a wildcard
  CHECK(ListAllIds(*store, f) == V{"key_l08"});
  f.name_contains = "100%";  // so is '%'
  CHECK(ListAllIds(*store, f) == V{"key_l06"});
  f.name_contains = "%";
  CHECK(ListAllIds(*store, f) == V{"key_l06"});
  f.name_contains = "no such name";
  CHECK(ListAllIds(*store, f).empty());

  // All filters together (AND).
  f = {};
  f.owner = "alice";
  f.environment = "production";
  f.state = KeyState::kActive;
  f.kind = KeyKind::kGeneral;
  CHECK(ListAllIds(*store, f) == V{"key_l00"});
  f.name_contains = "ci";
  CHECK(ListAllIds(*store, f) == V{"key_l00"});
  f.state = KeyState::kRevoked;
  CHECK(ListAllIds(*store, f) == V{"key_l01"});
  f.kind = KeyKind::kPersonal;
  CHECK(ListAllIds(*store, f).empty());

  // Listed records are complete.
  ListOptions o;
  o.filter.owner = "carol";
  o.filter.environment = "preview";
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_REQUIRE_OK(page);
  REQUIRE(page->keys.size() == 1);
  absl::StatusOr<KeyRecord> got = store->Get("key_l07");
  KEYGATE_REQUIRE_OK(got);
  CHECK(page->keys[0] == *got);
  CHECK(page->next_cursor.empty());
}

inline void ListPagination(const std::shared_ptr<KeyStore>& store) {
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) {
    // Insert in a scrambled order: pages follow ids, not insertion order.
    const int n = (i * 7) % 25;
    std::string id = absl::StrCat("key_p", n < 10 ? "0" : "", n);
    KEYGATE_REQUIRE_OK(store->Insert(MakeRecord(id, n % 2 ? "odd" : "even"), CreatedNote()));
    all.push_back(id);
  }
  std::sort(all.begin(), all.end());

  ListOptions o;
  o.limit = 7;
  std::size_t pages = 0;
  CHECK(ListAllIds(*store, o, &pages) == all);
  CHECK(pages == 4);  // 7 + 7 + 7 + 4

  // An exact multiple: the last full page has no cursor.
  o.limit = 5;
  CHECK(ListAllIds(*store, o, &pages) == all);
  CHECK(pages == 5);
  o.limit = 25;
  CHECK(ListAllIds(*store, o, &pages) == all);
  CHECK(pages == 1);
  o.limit = 1;
  CHECK(ListAllIds(*store, o, &pages) == all);
  CHECK(pages == 25);

  // Pagination with a filter: cursors skip non-matching records.
  o.limit = 4;
  o.filter.owner = "odd";
  std::vector<std::string> odd;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (std::stoi(all[i].substr(5)) % 2) odd.push_back(all[i]);
  }
  CHECK(ListAllIds(*store, o, &pages) == odd);
  CHECK(pages == 3);  // 12 odd: 4 + 4 + 4

  // The same cursor gives the same page (cursors are stateless).
  ListOptions first;
  first.limit = 10;
  absl::StatusOr<ListPage> p1 = store->List(first);
  KEYGATE_REQUIRE_OK(p1);
  REQUIRE_FALSE(p1->next_cursor.empty());
  ListOptions second = first;
  second.cursor = p1->next_cursor;
  absl::StatusOr<ListPage> a = store->List(second);
  absl::StatusOr<ListPage> b = store->List(second);
  KEYGATE_REQUIRE_OK(a);
  KEYGATE_REQUIRE_OK(b);
  CHECK(Ids(a->keys) == Ids(b->keys));
  CHECK(a->next_cursor == b->next_cursor);
}

inline void ListPaginationStableUnderWrites(const std::shared_ptr<KeyStore>& store) {
  for (int i = 10; i < 30; ++i) {
    KEYGATE_REQUIRE_OK(store->Insert(MakeRecord(absl::StrCat("key_s", i)), CreatedNote()));
  }
  ListOptions o;
  o.limit = 6;
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_REQUIRE_OK(page);
  std::vector<std::string> seen = Ids(page->keys);
  REQUIRE(seen.back() == "key_s15");

  // Between pages: insert before and after the cursor, delete a record
  // already returned and one not yet returned, and update one ahead.
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_s05"), CreatedNote()));  // before: not seen
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_s35"), CreatedNote()));  // after: seen
  KEYGATE_REQUIRE_OK(store->Delete("key_s12", std::nullopt, DeletedNote()));
  KEYGATE_REQUIRE_OK(store->Delete("key_s20", std::nullopt, DeletedNote()));
  absl::StatusOr<KeyRecord> s25 = store->Get("key_s25");
  KEYGATE_REQUIRE_OK(s25);
  KeyRecord edit = *s25;
  edit.name = "edited";
  KEYGATE_REQUIRE_OK(store->Update(edit, ModifiedNote()));

  o.cursor = page->next_cursor;
  std::vector<std::string> rest = ListAllIds(*store, o);
  seen.insert(seen.end(), rest.begin(), rest.end());
  std::vector<std::string> expected;
  for (int i = 10; i < 30; ++i) {
    if (i != 20) expected.push_back(absl::StrCat("key_s", i));
  }
  expected.push_back("key_s35");
  CHECK(seen == expected);
}

inline void ListRejectsBadArguments(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_x1"), CreatedNote()));
  ListOptions o;
  o.limit = 0;
  CHECK(store->List(o).status().code() == absl::StatusCode::kInvalidArgument);
  o.limit = kMaxListLimit + 1;
  CHECK(store->List(o).status().code() == absl::StatusCode::kInvalidArgument);
  o.limit = 1;
  KEYGATE_REQUIRE_OK(store->List(o));
  o.limit = kMaxListLimit;
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_REQUIRE_OK(page);
  CHECK(page->keys.size() == 1);

  for (const char* bad : {"%%not a cursor%%", "\x01\x02\x03"}) {
    o.cursor = bad;
    CHECK(store->List(o).status().code() == absl::StatusCode::kInvalidArgument);
  }
}

inline void ChangeFeed(const std::shared_ptr<KeyStore>& store) {
  absl::StatusOr<ChangeBatch> empty = store->ChangesSince(0, 100);
  KEYGATE_REQUIRE_OK(empty);
  CHECK(empty->changes.empty());
  CHECK_FALSE(empty->more);
  CHECK(empty->next_sequence == 0);
  CHECK(LastSeq(*store) == 0);

  // Every successful write moves the sequence strictly forward.
  std::uint64_t last = 0;
  auto advanced = [&] {
    const std::uint64_t now = LastSeq(*store);
    const bool ok = now > last;
    last = now;
    return ok;
  };
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_c1"), CreatedNote()));
  CHECK(advanced());
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_c2"), CreatedNote()));
  CHECK(advanced());
  const std::uint64_t after_two = last;
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_c3"), CreatedNote()));
  CHECK(advanced());
  absl::StatusOr<KeyRecord> c1 = store->Get("key_c1");
  KEYGATE_REQUIRE_OK(c1);
  KeyRecord edit = *c1;
  edit.name = "c1 v2";
  KEYGATE_REQUIRE_OK(store->Update(edit, ModifiedNote()));
  CHECK(advanced());
  KEYGATE_REQUIRE_OK(store->Delete("key_c2", std::nullopt, DeletedNote()));
  CHECK(advanced());

  // Since the start: every key, current state, deletes as nullopt.
  absl::StatusOr<ChangeBatch> all = store->ChangesSince(0, 100);
  KEYGATE_REQUIRE_OK(all);
  CHECK_FALSE(all->more);
  CHECK(all->next_sequence == last);
  std::map<std::string, std::optional<KeyRecord>> latest;
  std::uint64_t prev = 0;
  for (const Change& c : all->changes) {
    CHECK(c.sequence > prev);
    CHECK(c.sequence <= last);
    prev = c.sequence;
    if (c.record.has_value()) CHECK(c.record->id == c.key_id);
    latest[c.key_id] = c.record;
  }
  REQUIRE(latest.size() == 3);
  REQUIRE(latest["key_c1"].has_value());
  CHECK(latest["key_c1"]->name == "c1 v2");
  CHECK(latest["key_c1"]->version == 2);
  CHECK_FALSE(latest["key_c2"].has_value());
  REQUIRE(latest["key_c3"].has_value());
  // Each entry carries the CURRENT state, even for an early sequence.
  for (const Change& c : all->changes) {
    if (c.key_id == "key_c1") {
      REQUIRE(c.record.has_value());
      CHECK(c.record->name == "c1 v2");
    }
  }

  // Since a midpoint: only keys changed after it.
  absl::StatusOr<ChangeBatch> since = store->ChangesSince(after_two, 100);
  KEYGATE_REQUIRE_OK(since);
  std::set<std::string> changed;
  for (const Change& c : since->changes) {
    CHECK(c.sequence > after_two);
    changed.insert(c.key_id);
  }
  CHECK(changed == std::set<std::string>{"key_c1", "key_c2", "key_c3"});

  // Up to date: nothing, and next_sequence stays where it was.
  absl::StatusOr<ChangeBatch> none = store->ChangesSince(last, 100);
  KEYGATE_REQUIRE_OK(none);
  CHECK(none->changes.empty());
  CHECK_FALSE(none->more);
  CHECK(none->next_sequence == last);

  // Limits: one entry per batch, `more` until the end.
  std::uint64_t cursor = 0;
  std::size_t batches = 0;
  std::map<std::string, std::optional<KeyRecord>> replayed;
  for (;;) {
    absl::StatusOr<ChangeBatch> b = store->ChangesSince(cursor, 1);
    KEYGATE_REQUIRE_OK(b);
    REQUIRE(b->changes.size() <= 1);
    REQUIRE(b->next_sequence >= cursor);
    for (const Change& c : b->changes) replayed[c.key_id] = c.record;
    ++batches;
    REQUIRE(batches < 100);
    if (!b->more) {
      CHECK(b->next_sequence == last);
      break;
    }
    REQUIRE(b->changes.size() == 1);
    REQUIRE(b->next_sequence > cursor);
    cursor = b->next_sequence;
  }
  CHECK(replayed == latest);
}

// A replica that follows the feed in small batches converges on the store.
inline void ChangeFeedConverges(const std::shared_ptr<KeyStore>& store) {
  std::map<std::string, KeyRecord> replica;
  std::uint64_t cursor = 0;
  auto sync = [&] {
    for (int guard = 0; guard < 1000; ++guard) {
      absl::StatusOr<ChangeBatch> b = store->ChangesSince(cursor, 3);
      KEYGATE_REQUIRE_OK(b);
      for (const Change& c : b->changes) {
        if (c.record.has_value()) {
          replica[c.key_id] = *c.record;
        } else {
          replica.erase(c.key_id);
        }
      }
      cursor = b->next_sequence;
      if (!b->more) return;
    }
    FAIL("change feed did not end");
  };
  auto check = [&] {
    ListOptions o;
    o.limit = kMaxListLimit;
    absl::StatusOr<ListPage> page = store->List(o);
    KEYGATE_REQUIRE_OK(page);
    std::map<std::string, KeyRecord> truth;
    for (KeyRecord& r : page->keys) truth[r.id] = r;
    CHECK(replica == truth);
  };
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 5; ++i) {
      KEYGATE_REQUIRE_OK(
          store->Insert(MakeRecord(absl::StrCat("key_r", round, "_", i)), CreatedNote()));
    }
    if (round > 0) {
      const std::string prev = absl::StrCat("key_r", round - 1, "_");
      KEYGATE_REQUIRE_OK(store->Delete(prev + "0", std::nullopt, DeletedNote()));
      for (int rep = 0; rep < 3; ++rep) {
        absl::StatusOr<KeyRecord> r = store->Get(prev + "1");
        KEYGATE_REQUIRE_OK(r);
        KeyRecord e = *r;
        e.name = absl::StrCat("edit ", rep);
        KEYGATE_REQUIRE_OK(store->Update(e, ModifiedNote()));
      }
    }
    sync();
    check();
  }
}

inline void Subscriptions(const std::shared_ptr<KeyStore>& store) {
  KeyStore* raw = store.get();
  std::atomic<int> calls{0};
  std::atomic<int> calls_before_commit{0};
  auto sub = store->Subscribe([&] {
    // Called without store locks held: reading the store must work, and
    // must already show the change being reported.
    if (raw->Get("key_sub1").status().code() == absl::StatusCode::kNotFound) {
      calls_before_commit.fetch_add(1);
    }
    calls.fetch_add(1);
  });
  KEYGATE_REQUIRE_OK(sub);
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_sub1"), CreatedNote()));
  CHECK(WaitFor([&] { return calls.load() > 0; }));
  CHECK(calls_before_commit.load() == 0);

  // Another write, another call (possibly coalesced, never lost).
  const int before = calls.load();
  absl::StatusOr<KeyRecord> r = store->Get("key_sub1");
  KEYGATE_REQUIRE_OK(r);
  KeyRecord e = *r;
  e.name = "changed";
  KEYGATE_REQUIRE_OK(store->Update(e, ModifiedNote()));
  CHECK(WaitFor([&] { return calls.load() > before; }));

  // Two subscribers are both told.
  std::atomic<int> other{0};
  auto sub2 = store->Subscribe([&] { other.fetch_add(1); });
  KEYGATE_REQUIRE_OK(sub2);
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_sub2"), CreatedNote()));
  CHECK(WaitFor([&] { return other.load() > 0; }));

  // Destroyed: never called again.
  sub->reset();
  const int frozen = calls.load();
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_sub3"), CreatedNote()));
  const int other_before = other.load();
  KEYGATE_REQUIRE_OK(store->Delete("key_sub3", std::nullopt, DeletedNote()));
  CHECK(WaitFor([&] { return other.load() > other_before; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(calls.load() == frozen);
}

inline void SubscriptionDestructorWaitsForCallback(const std::shared_ptr<KeyStore>& store) {
  std::atomic<bool> in_callback{false};
  std::atomic<int> entered{0};
  auto sub = store->Subscribe([&] {
    in_callback.store(true);
    entered.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    in_callback.store(false);
  });
  KEYGATE_REQUIRE_OK(sub);
  std::atomic<bool> insert_ok{false};
  // Catch2 assertions are not thread-safe: the writer only records.
  std::thread writer(
      [&] { insert_ok.store(store->Insert(MakeRecord("key_wait"), CreatedNote()).ok()); });
  const bool entered_in_time = WaitFor([&] { return entered.load() > 0; });
  sub->reset();  // must block until the running callback has returned
  const bool still_running = in_callback.load();
  writer.join();
  REQUIRE(insert_ok.load());
  REQUIRE(entered_in_time);
  CHECK_FALSE(still_running);
}

// A write returns only after its subscribers have seen it, even when a
// callback round (started by an earlier write) is still running on another
// thread: the writer waits for a round that starts after its commit. Not part
// of key_store.h's contract (a remote store could not promise it), so not in
// KEYGATE_KEY_STORE_CONFORMANCE: backends that promise it (both bundled ones)
// register it with KEYGATE_KSC_CASE_ and the [concurrent] tag.
inline void WriteWaitsForRunningCallback(const std::shared_ptr<KeyStore>& store) {
  KeyStore* raw = store.get();
  std::mutex mu;
  std::condition_variable cv;
  int rounds = 0;
  bool release = false;
  bool saw_second = false;  // the latest round found key_second
  auto sub = store->Subscribe([&] {
    const bool found = raw->Get("key_second").ok();
    std::unique_lock<std::mutex> lock(mu);
    saw_second = found;
    if (++rounds == 1) {  // hold the first round until the second write is under way
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
    }
  });
  KEYGATE_REQUIRE_OK(sub);
  std::atomic<bool> first_ok{false};
  std::thread first(
      [&] { first_ok.store(store->Insert(MakeRecord("key_first"), CreatedNote()).ok()); });
  bool entered = false;
  {
    std::unique_lock<std::mutex> lock(mu);
    entered = cv.wait_for(lock, std::chrono::seconds(60), [&] { return rounds > 0; });
  }
  std::atomic<bool> second_returned{false};
  bool second_ok = false;
  bool seen_at_return = false;
  std::thread second([&] {
    second_ok = store->Insert(MakeRecord("key_second"), CreatedNote()).ok();
    std::lock_guard<std::mutex> lock(mu);
    seen_at_return = saw_second;
    second_returned.store(true);
  });
  // The first round is held, so no round has seen key_second yet: the
  // second write must still be waiting.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const bool returned_early = second_returned.load();
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  first.join();
  second.join();
  REQUIRE(entered);
  REQUIRE(first_ok.load());
  REQUIRE(second_ok);
  CHECK_FALSE(returned_early);
  CHECK(seen_at_return);
}

// An id deleted and inserted again (an import re-run) is still one key in
// the feed: one entry, its latest state, however often it came and went.
inline void ChangeFeedOneEntryForReusedId(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_other"), CreatedNote()));
  const std::uint64_t start = LastSeq(*store);
  for (int i = 0; i < 3; ++i) {
    KeyRecord r = MakeRecord("key_reused");
    r.digest = DigestFor(absl::StrCat("key_reused #", i));
    KEYGATE_REQUIRE_OK(store->Insert(r, CreatedNote()));
    KEYGATE_REQUIRE_OK(store->Delete("key_reused", std::nullopt, DeletedNote()));
  }
  for (const std::uint64_t from : {std::uint64_t{0}, start}) {
    absl::StatusOr<ChangeBatch> b = store->ChangesSince(from, 100);
    KEYGATE_REQUIRE_OK(b);
    std::vector<std::string> ids;
    for (const Change& c : b->changes) {
      ids.push_back(c.key_id);
      if (c.key_id == "key_reused") CHECK_FALSE(c.record.has_value());
    }
    INFO("ChangesSince(" << from << ")");
    if (from == 0) {
      CHECK(ids == std::vector<std::string>{"key_other", "key_reused"});
    } else {
      CHECK(ids == std::vector<std::string>{"key_reused"});
    }
    CHECK(b->next_sequence == LastSeq(*store));
  }
  // Back again: one entry, live.
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_reused"), CreatedNote()));
  absl::StatusOr<ChangeBatch> b = store->ChangesSince(start, 100);
  KEYGATE_REQUIRE_OK(b);
  REQUIRE(b->changes.size() == 1);
  CHECK(b->changes[0].key_id == "key_reused");
  CHECK(b->changes[0].record.has_value());
}

inline void FieldRoundTrip(const std::shared_ptr<KeyStore>& store) {
  KeyRecord full = MakeRecord("key_full", "user-\xc3\xa9", "preview", KeyKind::kPersonal,
                              "Name with \xe2\x9c\x93 and 'quotes' \"too\"");
  full.description = "line one\nline two\ttab; DROP TABLE keys; --";
  full.scopes = {"read:all", "write:all", "admin"};
  full.state = KeyState::kRevoked;
  full.created = BaseTime();
  full.updated = BaseTime() + absl::Microseconds(1);
  full.expires = BaseTime() + absl::Hours(24 * 365);
  full.last_used = BaseTime() + absl::Seconds(3) + absl::Microseconds(7);
  full.rate_limit = RateLimitPolicy{250, absl::Milliseconds(1500), 40};
  full.webhook_url = "https://hooks.example.com/keygate?x=1&y=2";
  full.accounts = {"acct_1", "acct \xe2\x82\xac", "zz"};
  full.metadata = {{"team", "payments"}, {"empty", ""}, {"unicode", "\xf0\x9f\x94\x91"}};
  full.hint = "kg_test_...Zz9A";
  full.previous =
      RolledSecret{DigestFor("key_full old"), "kg_test_...Qw3e", BaseTime() + absl::Minutes(30)};
  KEYGATE_REQUIRE_OK(store->Insert(full, CreatedNote()));
  KeyRecord expected = full;
  expected.version = 1;
  absl::StatusOr<KeyRecord> got = store->Get("key_full");
  KEYGATE_REQUIRE_OK(got);
  CHECK(*got == expected);
  CHECK(got->rate_limit == full.rate_limit);
  CHECK(got->previous == full.previous);
  CHECK(got->metadata == full.metadata);
  CHECK(got->accounts == full.accounts);
  // The same through every read path.
  absl::StatusOr<KeyRecord> by_digest = store->FindByDigest(full.digest);
  KEYGATE_REQUIRE_OK(by_digest);
  CHECK(*by_digest == expected);
  ListOptions o;
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_REQUIRE_OK(page);
  REQUIRE(page->keys.size() == 1);
  CHECK(page->keys[0] == expected);
  absl::StatusOr<ChangeBatch> changes = store->ChangesSince(0, 10);
  KEYGATE_REQUIRE_OK(changes);
  REQUIRE(changes->changes.size() == 1);
  REQUIRE(changes->changes[0].record.has_value());
  CHECK(*changes->changes[0].record == expected);

  // Unset optionals stay unset; updates round-trip too.
  KeyRecord bare = *got;
  bare.expires.reset();
  bare.last_used.reset();
  bare.rate_limit.reset();
  bare.previous.reset();
  bare.accounts.clear();
  bare.metadata.clear();
  bare.scopes.clear();
  bare.webhook_url.clear();
  bare.description.clear();
  absl::StatusOr<KeyRecord> updated = store->Update(bare, ModifiedNote());
  KEYGATE_REQUIRE_OK(updated);
  KeyRecord expected_bare = bare;
  expected_bare.version = 2;
  CHECK(*updated == expected_bare);
  got = store->Get("key_full");
  KEYGATE_REQUIRE_OK(got);
  CHECK(*got == expected_bare);

  // Sub-microsecond parts may be dropped (toward the past), nothing more.
  KeyRecord fine = MakeRecord("key_nanos");
  fine.created = BaseTime() + absl::Nanoseconds(999);
  fine.updated = BaseTime() + absl::Nanoseconds(1);
  fine.expires = BaseTime() + absl::Hours(1) + absl::Nanoseconds(500);
  fine.last_used = BaseTime() + absl::Nanoseconds(1001);
  fine.previous = RolledSecret{DigestFor("nanos old"), "x",
                               BaseTime() + absl::Seconds(1) + absl::Nanoseconds(999)};
  KEYGATE_REQUIRE_OK(store->Insert(fine, CreatedNote()));
  absl::StatusOr<KeyRecord> fine_got = store->Get("key_nanos");
  KEYGATE_REQUIRE_OK(fine_got);
  KeyRecord fine_expected = fine;
  fine_expected.version = 1;
  CHECK(AtMicros(*fine_got) == AtMicros(fine_expected));
  CHECK(fine_got->created >= BaseTime());
  CHECK(fine_got->created <= fine.created);
}

inline void TouchLastUsed(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_touch_a"), CreatedNote()));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_touch_b"), CreatedNote()));
  auto last = [&](const std::string& id) -> std::optional<absl::Time> {
    absl::StatusOr<KeyRecord> r = store->Get(id);
    REQUIRE(r.ok());
    return r->last_used;
  };
  const absl::Time t0 = BaseTime() + absl::Hours(1);
  // Sets a missing last_used; a key that does not exist is skipped.
  std::vector<LastUsedUpdate> first = {{"key_touch_a", t0}, {"key_missing", t0}};
  KEYGATE_REQUIRE_OK(store->TouchLastUsed(first, absl::Minutes(1)));
  CHECK(last("key_touch_a") == TruncateToMicros(t0));
  CHECK_FALSE(last("key_touch_b").has_value());
  // Less than min_advance later: unchanged; earlier: never moves back.
  std::vector<LastUsedUpdate> small = {{"key_touch_a", t0 + absl::Seconds(59)}};
  KEYGATE_REQUIRE_OK(store->TouchLastUsed(small, absl::Minutes(1)));
  CHECK(last("key_touch_a") == TruncateToMicros(t0));
  std::vector<LastUsedUpdate> back = {{"key_touch_a", t0 - absl::Hours(1)}};
  KEYGATE_REQUIRE_OK(store->TouchLastUsed(back, absl::ZeroDuration()));
  CHECK(last("key_touch_a") == TruncateToMicros(t0));
  // At least min_advance later: moves; both keys in one call.
  std::vector<LastUsedUpdate> both = {{"key_touch_a", t0 + absl::Minutes(1)},
                                      {"key_touch_b", t0 + absl::Seconds(5)}};
  KEYGATE_REQUIRE_OK(store->TouchLastUsed(both, absl::Minutes(1)));
  CHECK(last("key_touch_a") == TruncateToMicros(t0 + absl::Minutes(1)));
  CHECK(last("key_touch_b") == TruncateToMicros(t0 + absl::Seconds(5)));
  KEYGATE_REQUIRE_OK(store->TouchLastUsed({}, absl::ZeroDuration()));
}

// For stores that override TouchLastUsed, as both bundled stores do (the
// default implementation is a Update per key): no version bump, no change,
// so a management change prepared before the touch still applies.
inline void TouchLastUsedIsNotAChange(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_touch"), CreatedNote()));
  absl::StatusOr<KeyRecord> before = store->Get("key_touch");
  KEYGATE_REQUIRE_OK(before);
  absl::StatusOr<std::uint64_t> seq = store->LastSequence();
  KEYGATE_REQUIRE_OK(seq);
  std::vector<LastUsedUpdate> u = {{"key_touch", BaseTime() + absl::Hours(2)}};
  KEYGATE_REQUIRE_OK(store->TouchLastUsed(u, absl::ZeroDuration()));
  absl::StatusOr<KeyRecord> after = store->Get("key_touch");
  KEYGATE_REQUIRE_OK(after);
  CHECK(after->version == before->version);
  CHECK(after->last_used == TruncateToMicros(BaseTime() + absl::Hours(2)));
  absl::StatusOr<std::uint64_t> seq_after = store->LastSequence();
  KEYGATE_REQUIRE_OK(seq_after);
  CHECK(*seq_after == *seq);
  absl::StatusOr<ChangeBatch> changes = store->ChangesSince(*seq, 10);
  KEYGATE_REQUIRE_OK(changes);
  CHECK(changes->changes.empty());
  KeyRecord renamed = *before;
  renamed.name = "renamed";
  CHECK(store->Update(renamed, ModifiedNote()).ok());
}

inline void ConcurrentWriters(const std::shared_ptr<KeyStore>& store) {
  const int threads = 4;
  const int per_thread = StressEnabled() ? 500 : 40;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const std::string id = absl::StrCat("key_t", t, "_", 1000 + i);
        if (!store->Insert(MakeRecord(id, absl::StrCat("owner", t)), CreatedNote()).ok())
          failures++;
      }
      for (int i = 0; i < per_thread; ++i) {
        const std::string id = absl::StrCat("key_t", t, "_", 1000 + i);
        absl::StatusOr<KeyRecord> r = store->Get(id);
        if (!r.ok()) {
          failures++;
          continue;
        }
        KeyRecord e = *r;
        e.name = absl::StrCat("updated ", i);
        if (!store->Update(e, ModifiedNote()).ok()) failures++;
        if (i % 5 == 0 && !store->Delete(id, 2, DeletedNote()).ok()) failures++;
      }
    });
  }
  for (std::thread& th : pool) th.join();
  REQUIRE(failures.load() == 0);

  const int deleted_per_thread = (per_thread + 4) / 5;
  const int survivors = threads * (per_thread - deleted_per_thread);
  const int writes = threads * (2 * per_thread + deleted_per_thread);
  std::vector<std::string> ids = ListAllIds(*store, ListFilter{});
  CHECK(ids.size() == static_cast<std::size_t>(survivors));
  CHECK(LastSeq(*store) >= static_cast<std::uint64_t>(writes));
  ListOptions o;
  o.limit = kMaxListLimit;
  for (;;) {
    absl::StatusOr<ListPage> page = store->List(o);
    KEYGATE_REQUIRE_OK(page);
    for (const KeyRecord& r : page->keys) {
      CHECK(r.version == 2);
      CHECK(r.name.rfind("updated ", 0) == 0);
    }
    if (page->next_cursor.empty()) break;
    o.cursor = page->next_cursor;
  }
  // The change feed accounts for every key ever written.
  std::set<std::string> fed;
  std::uint64_t cursor = 0;
  std::uint64_t prev = 0;
  for (;;) {
    absl::StatusOr<ChangeBatch> b = store->ChangesSince(cursor, 97);
    KEYGATE_REQUIRE_OK(b);
    for (const Change& c : b->changes) {
      REQUIRE(c.sequence > prev);
      prev = c.sequence;
      fed.insert(c.key_id);
    }
    cursor = b->next_sequence;
    if (!b->more) break;
  }
  CHECK(fed.size() == static_cast<std::size_t>(threads * per_thread));
}

inline void ConcurrentCompareAndSet(const std::shared_ptr<KeyStore>& store) {
  KeyRecord r = MakeRecord("key_counter");
  r.metadata["n"] = "0";
  KEYGATE_REQUIRE_OK(store->Insert(r, CreatedNote()));
  const int threads = 4;
  const int increments = StressEnabled() ? 250 : 25;
  std::atomic<int> errors{0};
  std::atomic<int> conflicts{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < increments; ++i) {
        for (;;) {
          absl::StatusOr<KeyRecord> cur = store->Get("key_counter");
          if (!cur.ok()) {
            errors++;
            break;
          }
          KeyRecord next = *cur;
          next.metadata["n"] = std::to_string(std::stoi(cur->metadata.at("n")) + 1);
          absl::StatusOr<KeyRecord> stored = store->Update(next, ModifiedNote());
          if (stored.ok()) break;
          if (stored.status().code() != absl::StatusCode::kAborted) {
            errors++;
            break;
          }
          conflicts++;
        }
      }
    });
  }
  for (std::thread& th : pool) th.join();
  REQUIRE(errors.load() == 0);
  absl::StatusOr<KeyRecord> final_state = store->Get("key_counter");
  KEYGATE_REQUIRE_OK(final_state);
  // No lost update: every successful CAS saw the previous one.
  CHECK(final_state->metadata.at("n") == std::to_string(threads * increments));
  CHECK(final_state->version == static_cast<std::uint64_t>(threads * increments + 1));
}

// ---------------------------------------------------------------------------
// Checks that report findings instead of asserting.
//
// Each check below returns the contract violations it found (none: the store
// conforms), so that the same check can be required to pass on a real
// backend and to FAIL on a store written to get the contract wrong
// (tests/broken_store_test.cc keeps such stores, one per mistake). They use
// no Catch2 macros: KEYGATE_KEY_STORE_CONFORMANCE turns their findings into
// test results with RequireNoFindings.

// What a backend's test tells the checks that need to know the backend.
struct BackendHooks {
  // The cursor, in this store's own form, that names `id`: List resumes
  // after `id`, whether or not a key has that id. Unset: the hand-built
  // cursor checks are skipped.
  std::function<std::string(std::string_view id)> cursor_for;
  // Strings close to this store's cursor form that name no id (List must
  // answer kInvalidArgument), checked on top of a few the suite makes up.
  std::vector<std::string> malformed_cursors;
  // Makes the stored state of key `id` undecodable, as a bad disk or a hand
  // edit would. Unset: the corrupt-record check is skipped (a backend that
  // cannot hold a corrupt record, such as MemoryKeyStore).
  std::function<absl::Status(KeyStore& store, std::string_view id)> corrupt_record;
};

struct Findings {
  std::vector<std::string> violations;  // empty: the store conforms
  std::vector<std::string> skipped;     // parts that did not run, and why
};

// Collects a check's findings. Thread-safe: the threads of a concurrent
// check report through one Checker.
class Checker {
 public:
  // Records `what` as a violation unless `ok`; returns `ok`.
  bool Expect(bool ok, const std::string& what) {
    if (!ok) Violation(what);
    return ok;
  }
  bool ExpectOk(const absl::Status& s, const std::string& what) {
    if (!s.ok()) Violation(absl::StrCat(what, ": ", s.ToString()));
    return s.ok();
  }
  template <typename T>
  bool ExpectOk(const absl::StatusOr<T>& s, const std::string& what) {
    return ExpectOk(s.status(), what);
  }
  // `s` must have one of `codes`.
  bool ExpectCode(const absl::Status& s, const std::vector<absl::StatusCode>& codes,
                  const std::string& what) {
    for (absl::StatusCode code : codes) {
      if (s.code() == code) return true;
    }
    std::string wanted;
    for (absl::StatusCode code : codes) {
      absl::StrAppend(&wanted, wanted.empty() ? "" : " or ", absl::StatusCodeToString(code));
    }
    Violation(absl::StrCat(what, ": expected ", wanted, ", got ", s.ToString()));
    return false;
  }
  void Violation(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    // A broken store can fail the same way thousands of times; the first
    // few say enough.
    if (findings_.violations.size() < kMaxViolations) findings_.violations.emplace_back(what);
  }
  void Skip(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    findings_.skipped.emplace_back(why);
  }
  Findings Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(findings_);
  }

 private:
  static constexpr std::size_t kMaxViolations = 50;
  std::mutex mu_;
  Findings findings_;
};

// Every record, by List with the largest pages, or nullopt after reporting.
inline std::optional<std::vector<KeyRecord>> ReadAllRecords(KeyStore& store, Checker& c,
                                                            const std::string& what) {
  std::vector<KeyRecord> all;
  ListOptions o;
  o.limit = kMaxListLimit;
  for (int pages = 0; pages < 1000; ++pages) {
    absl::StatusOr<ListPage> page = store.List(o);
    if (!c.ExpectOk(page, absl::StrCat(what, ": List"))) return std::nullopt;
    for (KeyRecord& r : page->keys) all.push_back(std::move(r));
    if (page->next_cursor.empty()) return all;
    o.cursor = page->next_cursor;
  }
  c.Violation(absl::StrCat(what, ": List did not reach its last page"));
  return std::nullopt;
}

// The whole change feed from the start, or nullopt after reporting.
inline std::optional<std::vector<Change>> ReadAllChanges(KeyStore& store, Checker& c,
                                                         const std::string& what) {
  std::vector<Change> all;
  std::uint64_t cursor = 0;
  for (int batches = 0; batches < 1000; ++batches) {
    absl::StatusOr<ChangeBatch> b = store.ChangesSince(cursor, kMaxListLimit);
    if (!c.ExpectOk(b, absl::StrCat(what, ": ChangesSince"))) return std::nullopt;
    for (Change& ch : b->changes) all.push_back(std::move(ch));
    cursor = b->next_sequence;
    if (!b->more) return all;
  }
  c.Violation(absl::StrCat(what, ": the change feed did not end"));
  return std::nullopt;
}

// What a client can observe of a store: its records, its change feed, its
// last sequence, and which key each of some digests finds.
struct Observation {
  std::vector<KeyRecord> records;
  std::vector<Change> changes;
  std::uint64_t last_sequence = 0;
  std::vector<std::string> digest_hits;  // per probe: "<id> v<version>" or the error code
};

inline std::optional<Observation> Observe(KeyStore& store, const std::vector<Digest>& probes,
                                          Checker& c, const std::string& what) {
  Observation o;
  std::optional<std::vector<KeyRecord>> records = ReadAllRecords(store, c, what);
  std::optional<std::vector<Change>> changes = ReadAllChanges(store, c, what);
  absl::StatusOr<std::uint64_t> seq = store.LastSequence();
  if (!records || !changes || !c.ExpectOk(seq, absl::StrCat(what, ": LastSequence"))) {
    return std::nullopt;
  }
  o.records = *std::move(records);
  o.changes = *std::move(changes);
  o.last_sequence = *seq;
  for (const Digest& d : probes) {
    absl::StatusOr<KeyRecord> hit = store.FindByDigest(d);
    o.digest_hits.push_back(hit.ok() ? absl::StrCat(hit->id, " v", hit->version)
                                     : absl::StatusCodeToString(hit.status().code()));
  }
  return o;
}

inline bool SameChange(const Change& a, const Change& b) {
  return a.sequence == b.sequence && a.key_id == b.key_id && a.record == b.record;
}

// How `after` differs from `before`, one phrase per difference; empty when
// nothing a client can see changed.
inline std::vector<std::string> Differences(const Observation& before, const Observation& after) {
  std::vector<std::string> out;
  if (after.last_sequence != before.last_sequence) {
    out.push_back(absl::StrCat("LastSequence moved from ", before.last_sequence, " to ",
                               after.last_sequence));
  }
  std::map<std::string, const KeyRecord*> was;
  std::map<std::string, const KeyRecord*> is;
  for (const KeyRecord& r : before.records) was[r.id] = &r;
  for (const KeyRecord& r : after.records) is[r.id] = &r;
  for (const auto& [id, r] : is) {
    auto it = was.find(id);
    if (it == was.end()) {
      out.push_back(absl::StrCat("key ", id, " appeared"));
    } else if (!(*it->second == *r)) {
      out.push_back(absl::StrCat("key ", id, " changed (version ", it->second->version, " -> ",
                                 r->version, ", name '", it->second->name, "' -> '", r->name,
                                 "')"));
    }
  }
  for (const auto& [id, r] : was) {
    if (is.find(id) == is.end()) out.push_back(absl::StrCat("key ", id, " disappeared"));
  }
  const bool same_feed =
      before.changes.size() == after.changes.size() &&
      std::equal(before.changes.begin(), before.changes.end(), after.changes.begin(), SameChange);
  if (!same_feed) {
    out.push_back(absl::StrCat("the change feed changed (", before.changes.size(), " -> ",
                               after.changes.size(), " entries, last sequence ",
                               before.changes.empty() ? 0 : before.changes.back().sequence, " -> ",
                               after.changes.empty() ? 0 : after.changes.back().sequence, ")"));
  }
  for (std::size_t i = 0; i < before.digest_hits.size() && i < after.digest_hits.size(); ++i) {
    if (before.digest_hits[i] != after.digest_hits[i]) {
      out.push_back(absl::StrCat("digest probe ", i, " found ", before.digest_hits[i], " before, ",
                                 after.digest_hits[i], " after"));
    }
  }
  return out;
}

// A failed write (an invalid id, a duplicate, a taken digest or personal
// slot, a stale version, a missing key) changes nothing: no record, no
// digest, no change-log entry, LastSequence unchanged. Each failing write
// also changes other fields, so a store that applies part of it is caught.
inline Findings CheckFailedWritesChangeNothing(const std::shared_ptr<KeyStore>& store,
                                               const BackendHooks& /*hooks*/) {
  Checker c;
  KeyStore& s = *store;
  using K = KeyKind;
  using Code = absl::StatusCode;
  KeyRecord a = MakeRecord("key_fw_a");
  a.previous = RolledSecret{DigestFor("key_fw_a old"), "kg_live_...old1", BaseTime()};
  const KeyRecord b = MakeRecord("key_fw_b");
  const KeyRecord p = MakeRecord("key_fw_p", "alice", "production", K::kPersonal);
  KeyRecord q = MakeRecord("key_fw_q", "alice", "production", K::kPersonal);
  q.state = KeyState::kRevoked;
  const KeyRecord g = MakeRecord("key_fw_g", "alice", "production", K::kGeneral);
  for (const KeyRecord& r : {a, b, p, q, g}) {
    if (!c.ExpectOk(s.Insert(r, CreatedNote()), absl::StrCat("setup: Insert ", r.id)))
      return c.Take();
  }
  absl::StatusOr<KeyRecord> b1 = s.Get(b.id);
  if (!c.ExpectOk(b1, "setup: Get key_fw_b")) return c.Take();
  absl::StatusOr<KeyRecord> b2 =
      s.Update(*b1, ModifiedNote());  // b at version 2: version 1 is stale
  absl::StatusOr<KeyRecord> g1 = s.Get(g.id);
  absl::StatusOr<KeyRecord> q1 = s.Get(q.id);
  if (!c.ExpectOk(b2, "setup: Update key_fw_b") || !c.ExpectOk(g1, "setup: Get key_fw_g") ||
      !c.ExpectOk(q1, "setup: Get key_fw_q")) {
    return c.Take();
  }

  // An edit that a partial write would show: fields no check looks at.
  auto edited = [](KeyRecord r) {
    r.name = "edited by a failed write";
    r.description = "must not be stored";
    r.scopes = {"admin"};
    r.metadata["failed"] = "write";
    return r;
  };
  auto fresh = [](std::string id, std::string seed) {
    KeyRecord r = MakeRecord(std::move(id));
    r.digest = DigestFor(seed);
    return r;
  };
  const std::string too_long(kKeyIdLength + 1, 'k');
  struct FailedWrite {
    std::string what;
    std::vector<Code> codes;
    std::function<absl::Status()> write;
  };
  auto insert = [&](KeyRecord r) { return [&s, r] { return s.Insert(r, CreatedNote()); }; };
  auto update = [&](KeyRecord r) {
    return [&s, r] { return s.Update(r, ModifiedNote()).status(); };
  };
  auto del = [&](std::string id, std::optional<std::uint64_t> v) {
    return [&s, id, v] { return s.Delete(id, v, DeletedNote()); };
  };
  KeyRecord dup_id = edited(fresh(b.id, "fw dup id"));
  dup_id.owner = "bob";
  KeyRecord takes_current = fresh("key_fw_n1", "unused");
  takes_current.digest = a.digest;
  KeyRecord takes_rolled = fresh("key_fw_n2", "unused");
  takes_rolled.digest = a.previous->digest;
  KeyRecord rolls_onto_current = fresh("key_fw_n3", "fw n3");
  rolls_onto_current.previous = RolledSecret{b.digest, "x", BaseTime()};
  KeyRecord second_personal = MakeRecord("key_fw_p2", "alice", "production", K::kPersonal);
  KeyRecord missing = edited(fresh("key_fw_missing", "fw missing"));
  missing.version = 1;
  KeyRecord empty_id = edited(fresh("", "fw empty"));
  empty_id.version = 1;
  KeyRecord long_id = edited(fresh(too_long, "fw long"));
  long_id.version = 1;
  KeyRecord stale = edited(*b1);
  KeyRecord future = edited(*b2);
  future.version = b2->version + 5;
  KeyRecord steal_current = edited(*g1);
  steal_current.digest = a.digest;
  KeyRecord steal_rolled = edited(*g1);
  steal_rolled.digest = a.previous->digest;
  KeyRecord roll_onto_other = edited(*g1);
  roll_onto_other.previous = RolledSecret{b.digest, "x", BaseTime()};
  KeyRecord restore_second = edited(*q1);
  restore_second.state = KeyState::kActive;
  KeyRecord general_to_personal = edited(*g1);
  general_to_personal.kind = K::kPersonal;

  const std::vector<FailedWrite> writes = {
      {"Insert with an empty id", {Code::kInvalidArgument}, insert(empty_id)},
      {"Insert with an id longer than kKeyIdLength", {Code::kInvalidArgument}, insert(long_id)},
      {"Insert with an existing id", {Code::kAlreadyExists}, insert(dup_id)},
      {"Insert with another key's current digest", {Code::kAlreadyExists}, insert(takes_current)},
      {"Insert with another key's rolled digest", {Code::kAlreadyExists}, insert(takes_rolled)},
      {"Insert rolling from another key's current digest",
       {Code::kAlreadyExists},
       insert(rolls_onto_current)},
      {"Insert of a second active personal key", {Code::kAlreadyExists}, insert(second_personal)},
      {"Update of a missing key", {Code::kNotFound}, update(missing)},
      {"Update with an empty id", {Code::kNotFound, Code::kInvalidArgument}, update(empty_id)},
      {"Update with an id longer than kKeyIdLength",
       {Code::kNotFound, Code::kInvalidArgument},
       update(long_id)},
      {"Update with a stale version", {Code::kAborted}, update(stale)},
      {"Update with a future version", {Code::kAborted}, update(future)},
      {"Update taking another key's current digest", {Code::kAlreadyExists}, update(steal_current)},
      {"Update taking another key's rolled digest", {Code::kAlreadyExists}, update(steal_rolled)},
      {"Update rolling from another key's current digest",
       {Code::kAlreadyExists},
       update(roll_onto_other)},
      {"Update restoring a second active personal key",
       {Code::kAlreadyExists},
       update(restore_second)},
      {"Update making a general key a second active personal key",
       {Code::kAlreadyExists},
       update(general_to_personal)},
      {"Delete of a missing key", {Code::kNotFound}, del("key_fw_missing", std::nullopt)},
      {"Delete with an empty id", {Code::kNotFound, Code::kInvalidArgument}, del("", std::nullopt)},
      {"Delete with a stale version", {Code::kAborted}, del(b.id, b1->version)},
      {"Delete with a future version", {Code::kAborted}, del(b.id, b2->version + 5)},
  };
  // Every digest involved, so that a digest indexed (or unindexed) by a
  // failed write shows.
  const std::vector<Digest> probes = {a.digest,
                                      a.previous->digest,
                                      b.digest,
                                      p.digest,
                                      q.digest,
                                      g.digest,
                                      dup_id.digest,
                                      rolls_onto_current.digest,
                                      second_personal.digest,
                                      missing.digest,
                                      empty_id.digest,
                                      long_id.digest,
                                      DigestFor("unused")};
  std::optional<Observation> before = Observe(s, probes, c, "before the failed writes");
  if (!before) return c.Take();
  for (const FailedWrite& w : writes) {
    c.ExpectCode(w.write(), w.codes, w.what);
    std::optional<Observation> after = Observe(s, probes, c, absl::StrCat("after ", w.what));
    if (!after) return c.Take();
    for (const std::string& d : Differences(*before, *after)) {
      c.Violation(absl::StrCat(w.what, " failed but changed the store: ", d));
    }
    before = std::move(after);  // report each write's own changes only
  }
  return c.Take();
}

// Ids of every page from `options` on, checking each page's size and order;
// reports and returns what it has on an error.
inline std::vector<std::string> PageThrough(KeyStore& store, ListOptions options, Checker& c,
                                            const std::string& what) {
  std::vector<std::string> ids;
  for (int pages = 0; pages < 1000; ++pages) {
    absl::StatusOr<ListPage> page = store.List(options);
    if (!c.ExpectOk(page, absl::StrCat(what, ": List"))) return ids;
    c.Expect(page->keys.size() <= options.limit,
             absl::StrCat(what, ": a page holds more than the limit"));
    for (const KeyRecord& r : page->keys) {
      c.Expect(ids.empty() || ids.back() < r.id,
               absl::StrCat(what, ": ", r.id, " out of order or twice, after ",
                            ids.empty() ? "" : ids.back()));
      ids.push_back(r.id);
    }
    if (page->next_cursor.empty()) return ids;
    c.Expect(page->keys.size() == options.limit,
             absl::StrCat(what, ": a page short of the limit has a next cursor"));
    options.cursor = page->next_cursor;
  }
  c.Violation(absl::StrCat(what, ": List did not reach its last page"));
  return ids;
}

inline std::string Joined(const std::vector<std::string>& ids) {
  std::string out = "[";
  for (const std::string& id : ids) absl::StrAppend(&out, out.size() > 1 ? " " : "", id);
  return out + "]";
}

// List cursors name an id: a well-formed one, made by the store or by hand,
// resumes after the id it names whatever the filter, whether or not a key
// has that id; anything else is kInvalidArgument.
inline Findings CheckHandBuiltCursors(const std::shared_ptr<KeyStore>& store,
                                      const BackendHooks& hooks) {
  Checker c;
  KeyStore& s = *store;
  std::vector<std::string> all;
  for (int i = 10; i < 30; ++i) {
    const std::string id = absl::StrCat("key_hc", i);
    if (!c.ExpectOk(s.Insert(MakeRecord(id, i % 2 ? "odd" : "even"), CreatedNote()),
                    absl::StrCat("setup: Insert ", id))) {
      return c.Take();
    }
    all.push_back(id);
  }
  // The ids after key_hc<from>; only the odd-owned ones if `odd_only`.
  auto expected_after = [&](int from, bool odd_only) {
    std::vector<std::string> out;
    for (int i = from + 1; i < 30; ++i) {
      if (i >= 10 && (!odd_only || i % 2 == 1)) out.push_back(absl::StrCat("key_hc", i));
    }
    return out;
  };

  std::vector<std::string> malformed = {"%%not a cursor%%", std::string("\x01\x02\x03"),
                                        std::string(1, '\0'), " "};
  malformed.insert(malformed.end(), hooks.malformed_cursors.begin(), hooks.malformed_cursors.end());
  for (const std::string& bad : malformed) {
    ListOptions o;
    o.cursor = bad;
    c.ExpectCode(s.List(o).status(), {absl::StatusCode::kInvalidArgument},
                 absl::StrCat("List with the malformed cursor \"", absl::CHexEscape(bad), "\""));
  }

  // A cursor the store made names the last id of its page, not a filter or
  // a position: another filter resumes after the same id, and so does the
  // cursor once that key is gone.
  ListOptions first;
  first.limit = 5;
  absl::StatusOr<ListPage> page = s.List(first);
  if (!c.ExpectOk(page, "List of the first page")) return c.Take();
  if (!c.Expect(Ids(page->keys) == std::vector<std::string>(all.begin(), all.begin() + 5) &&
                    !page->next_cursor.empty(),
                "the first page of 5 is key_hc10..key_hc14 with a next cursor")) {
    return c.Take();
  }
  const std::string made = page->next_cursor;
  ListOptions odd;
  odd.cursor = made;
  odd.filter.owner = "odd";
  std::vector<std::string> got = PageThrough(s, odd, c, "store-made cursor, other filter");
  c.Expect(
      got == expected_after(14, true),
      absl::StrCat("the store's cursor after key_hc14 with another filter gave ", Joined(got)));

  if (!hooks.cursor_for) {
    c.Skip("hand-built cursors: the backend's test gives no BackendHooks::cursor_for");
  } else {
    struct Case {
      std::string names;  // the id the cursor names
      bool odd_only;
      std::size_t limit;
      std::vector<std::string> expected;
    };
    const std::vector<Case> cases = {
        {"key_hc14", false, 100, expected_after(14, false)},
        {"key_hc14", true, 100, expected_after(14, true)},
        {"key_hc14", false, 4, expected_after(14, false)},     // followed page by page
        {"key_hc14~", false, 100, expected_after(14, false)},  // no such key
        {"key_hc1", false, 100, all},                          // before every key
        {"key_a", false, 3, all},
        {"key_hc29", false, 100, {}},  // the last key
        {"key_zz", false, 100, {}},    // after every key
    };
    for (const Case& k : cases) {
      ListOptions o;
      o.cursor = hooks.cursor_for(k.names);
      o.limit = k.limit;
      if (k.odd_only) o.filter.owner = "odd";
      const std::string what = absl::StrCat("a hand-built cursor naming ", k.names,
                                            k.odd_only ? " (owner odd)" : "", " limit ", k.limit);
      got = PageThrough(s, o, c, what);
      c.Expect(got == k.expected,
               absl::StrCat(what, " gave ", Joined(got), ", expected ", Joined(k.expected)));
    }
    // The store's own cursor and the hand-built one resume alike.
    ListOptions by_hand;
    by_hand.limit = 5;
    by_hand.cursor = hooks.cursor_for("key_hc14");
    ListOptions by_store = by_hand;
    by_store.cursor = made;
    absl::StatusOr<ListPage> h = s.List(by_hand);
    absl::StatusOr<ListPage> m = s.List(by_store);
    if (c.ExpectOk(h, "List from a hand-built cursor") &&
        c.ExpectOk(m, "List from the store's cursor")) {
      c.Expect(Ids(h->keys) == Ids(m->keys),
               "a hand-built cursor and the store's cursor for one id resume differently");
    }
  }

  // The key the cursor names is deleted: the cursor still resumes after it.
  if (c.ExpectOk(s.Delete("key_hc14", std::nullopt, DeletedNote()), "Delete key_hc14")) {
    ListOptions o;
    o.cursor = made;
    got = PageThrough(s, o, c, "store-made cursor after its key was deleted");
    c.Expect(got == expected_after(14, false),
             absl::StrCat("the store's cursor after the deleted key_hc14 gave ", Joined(got)));
  }
  return c.Take();
}

// A corrupt record (stored state the backend cannot decode): Get,
// FindByDigest (current and rolled digest) and a List whose page holds it
// answer kDataLoss; the change feed delivers the key as deleted (failing
// closed) and keeps going past it; other keys read as before.
inline Findings CheckCorruptRecord(const std::shared_ptr<KeyStore>& store,
                                   const BackendHooks& hooks) {
  Checker c;
  if (!hooks.corrupt_record) {
    c.Skip("corrupt records: the backend's test gives no BackendHooks::corrupt_record");
    return c.Take();
  }
  KeyStore& s = *store;
  KeyRecord bad = MakeRecord("key_cr_b", "alice", "production", KeyKind::kGeneral, "bravo");
  bad.previous = RolledSecret{DigestFor("key_cr_b old"), "x", BaseTime() + absl::Hours(1)};
  for (const KeyRecord& r : {MakeRecord("key_cr_a"), bad, MakeRecord("key_cr_c")}) {
    if (!c.ExpectOk(s.Insert(r, CreatedNote()), absl::StrCat("setup: Insert ", r.id)))
      return c.Take();
  }
  absl::StatusOr<std::uint64_t> applied = s.LastSequence();
  absl::StatusOr<KeyRecord> b1 = s.Get(bad.id);
  if (!c.ExpectOk(applied, "setup: LastSequence") || !c.ExpectOk(b1, "setup: Get key_cr_b")) {
    return c.Take();
  }
  KeyRecord renamed = *b1;
  renamed.name = "bravo renamed";
  if (!c.ExpectOk(s.Update(renamed, ModifiedNote()), "setup: Update key_cr_b") ||
      !c.ExpectOk(hooks.corrupt_record(s, bad.id), "BackendHooks::corrupt_record(key_cr_b)")) {
    return c.Take();
  }
  // A change after the corrupt one: the feed must reach it.
  absl::StatusOr<KeyRecord> c1 = s.Get("key_cr_c");
  if (!c.ExpectOk(c1, "Get key_cr_c")) return c.Take();
  KeyRecord revoked = *c1;
  revoked.state = KeyState::kRevoked;
  if (!c.ExpectOk(s.Update(revoked, ModifiedNote()), "Update key_cr_c after the corruption"))
    return c.Take();

  const std::vector<absl::StatusCode> kDataLoss = {absl::StatusCode::kDataLoss};
  c.ExpectCode(s.Get(bad.id).status(), kDataLoss, "Get of the corrupt key");
  c.ExpectCode(s.FindByDigest(bad.digest).status(), kDataLoss,
               "FindByDigest of the corrupt key's digest");
  c.ExpectCode(s.FindByDigest(bad.previous->digest).status(), kDataLoss,
               "FindByDigest of the corrupt key's rolled digest");
  ListOptions o;
  c.ExpectCode(s.List(o).status(), kDataLoss, "List of a page holding the corrupt key");
  o.filter.name_contains = "bravo";
  c.ExpectCode(s.List(o).status(), kDataLoss, "List by the corrupt key's name");
  c.ExpectOk(s.Get("key_cr_a"), "Get of a sound key next to the corrupt one");
  c.ExpectOk(s.FindByDigest(DigestFor("key_cr_a")), "FindByDigest of a sound key");

  absl::StatusOr<ChangeBatch> since = s.ChangesSince(*applied, 100);
  if (c.ExpectOk(since, "ChangesSince over the corrupt key")) {
    std::vector<std::string> ids;
    for (const Change& ch : since->changes) {
      ids.push_back(ch.key_id);
      if (ch.key_id == bad.id) {
        c.Expect(!ch.record.has_value(), "the feed delivers the corrupt key with a record");
      } else if (ch.key_id == "key_cr_c") {
        c.Expect(ch.record.has_value() && ch.record->state == KeyState::kRevoked,
                 "the feed lost the change after the corrupt key");
      }
    }
    c.Expect(ids == std::vector<std::string>{bad.id, "key_cr_c"},
             absl::StrCat("the feed after the corruption holds ", Joined(ids),
                          ", expected [key_cr_b key_cr_c]"));
  }
  // One entry per batch from the start: every key, the corrupt one deleted.
  std::map<std::string, bool> live;
  std::uint64_t cursor = 0;
  for (int batches = 0;; ++batches) {
    absl::StatusOr<ChangeBatch> b = s.ChangesSince(cursor, 1);
    if (!c.ExpectOk(b, "ChangesSince one by one over the corrupt key")) break;
    for (const Change& ch : b->changes) live[ch.key_id] = ch.record.has_value();
    cursor = b->next_sequence;
    if (!b->more) break;
    if (batches > 100) {
      c.Violation("the feed read one by one did not end");
      break;
    }
  }
  c.Expect(
      live ==
          std::map<std::string, bool>{{"key_cr_a", true}, {"key_cr_b", false}, {"key_cr_c", true}},
      "the feed from the start does not deliver key_cr_a and key_cr_c live, key_cr_b "
      "deleted");
  return c.Take();
}

// Readers while writers write: List pages (no key twice or out of order, no
// key that stayed throughout missing), a change-feed follower (sequences
// strictly increasing across batches, converging on the store), subscribers
// coming and going (no callback after its Subscription was destroyed), and
// TouchLastUsed on keys under compare-and-set (no update lost to a touch).
inline Findings CheckConcurrentReadersAndWriters(const std::shared_ptr<KeyStore>& store,
                                                 const BackendHooks& /*hooks*/) {
  Checker c;
  KeyStore& s = *store;
  const int stable_keys = 12;
  const int min_writes = StressEnabled() ? 300 : 24;  // per writer
  const int min_passes = 2;  // writers keep writing until each reader did this much
  // Between a reader's passes, so that readers do not starve the writers.
  constexpr std::chrono::milliseconds kPause(1);
  std::vector<std::string> stable;
  for (int i = 0; i < stable_keys; ++i) {
    stable.push_back(absl::StrCat("key_m", i < 10 ? "0" : "", i, "s"));
    if (!c.ExpectOk(s.Insert(MakeRecord(stable.back()), CreatedNote()), "setup: Insert"))
      return c.Take();
  }
  KeyRecord counter = MakeRecord("key_counter");
  counter.metadata["n"] = "0";
  if (!c.ExpectOk(s.Insert(counter, CreatedNote()), "setup: Insert key_counter")) return c.Take();

  std::atomic<int> writers_left{2};
  std::atomic<bool> incrementer_done{false};
  std::atomic<int> list_passes{0};
  std::atomic<int> feed_passes{0};
  std::atomic<int> churns{0};
  std::atomic<int> touches{0};
  std::atomic<int> increments{0};
  auto readers_done = [&] {
    return list_passes.load() >= min_passes && feed_passes.load() >= min_passes &&
           churns.load() >= min_passes && touches.load() >= min_passes;
  };

  // Compare-and-set a change of `id` until it applies; false on an error
  // other than a conflict.
  auto cas = [&](const std::string& id, const std::function<void(KeyRecord&)>& edit,
                 const std::string& what) {
    for (int tries = 0; tries < 10'000; ++tries) {
      absl::StatusOr<KeyRecord> cur = s.Get(id);
      if (!c.ExpectOk(cur, absl::StrCat(what, ": Get ", id))) return false;
      KeyRecord next = *cur;
      edit(next);
      absl::StatusOr<KeyRecord> stored = s.Update(next, ModifiedNote());
      if (stored.ok()) return true;
      if (stored.status().code() != absl::StatusCode::kAborted) {
        c.ExpectOk(stored, absl::StrCat(what, ": Update ", id));
        return false;
      }
    }
    c.Violation(absl::StrCat(what, ": Update ", id, " kept conflicting"));
    return false;
  };

  std::vector<std::thread> pool;
  for (int t = 0; t < 2; ++t) {
    pool.emplace_back([&, t] {
      std::vector<std::string> mine;
      for (int i = 0; i < min_writes || !readers_done(); ++i) {
        // Ids between the stable ones, so pages shift under the readers.
        const int slot = i % stable_keys;
        mine.push_back(absl::StrCat("key_m", slot < 10 ? "0" : "", slot, "w", t, "_", i));
        if (!c.ExpectOk(s.Insert(MakeRecord(mine.back(), absl::StrCat("writer", t)), CreatedNote()),
                        "writer: Insert")) {
          break;
        }
        cas(
            mine.back(), [](KeyRecord& r) { r.description = "updated"; }, "writer");
        cas(
            stable[(i + t) % stable_keys],
            [i](KeyRecord& r) { r.name = absl::StrCat("renamed ", i); }, "writer");
        if (mine.size() > 3) {
          c.ExpectOk(s.Delete(mine[mine.size() - 4], std::nullopt, DeletedNote()),
                     "writer: Delete");
        }
        if (i > 2'000) break;  // readers starved of CPU: enough
      }
      writers_left.fetch_sub(1);
    });
  }
  // Increments key_counter's "n" while touches land on it.
  pool.emplace_back([&] {
    for (int i = 0; i < min_writes || touches.load() < min_passes; ++i) {
      const bool ok = cas(
          "key_counter",
          [](KeyRecord& r) { r.metadata["n"] = std::to_string(std::stoi(r.metadata["n"]) + 1); },
          "incrementer");
      if (!ok) break;
      increments.fetch_add(1);
      // Enough, once the toucher has touched at least once: a starved
      // toucher must still meet the increments it could overwrite.
      if (i > 20'000 && touches.load() > 0) break;
    }
    incrementer_done.store(true);
  });
  pool.emplace_back([&] {
    absl::Time t = BaseTime() + absl::Hours(1);
    while (!incrementer_done.load() || writers_left.load() > 0 || touches.load() < min_passes) {
      t += absl::Seconds(1);
      std::vector<LastUsedUpdate> u = {{"key_counter", t}, {stable[0], t}, {"key_gone", t}};
      c.ExpectOk(s.TouchLastUsed(u, absl::ZeroDuration()), "toucher: TouchLastUsed");
      touches.fetch_add(1);
      std::this_thread::sleep_for(kPause);
    }
  });
  pool.emplace_back([&] {
    while (writers_left.load() > 0 || list_passes.load() < min_passes) {
      ListOptions o;
      o.limit = 4;
      const std::vector<std::string> ids = PageThrough(s, o, c, "lister");
      for (const std::string& id : stable) {
        c.Expect(
            std::binary_search(ids.begin(), ids.end(), id),
            absl::StrCat("lister: a pass through List missed ", id, ", which existed throughout"));
      }
      list_passes.fetch_add(1);
      std::this_thread::sleep_for(kPause);
    }
  });
  std::map<std::string, std::optional<KeyRecord>> replica;
  std::uint64_t fed_to = 0;
  std::uint64_t prev_seq = 0;
  // One pass: follow the feed to its current end.
  auto follow = [&](const std::string& who) {
    for (int batches = 0; batches < 100'000; ++batches) {
      absl::StatusOr<ChangeBatch> b = s.ChangesSince(fed_to, 3);
      if (!c.ExpectOk(b, absl::StrCat(who, ": ChangesSince"))) return;
      c.Expect(b->next_sequence >= fed_to, absl::StrCat(who, ": next_sequence went back"));
      for (const Change& ch : b->changes) {
        c.Expect(ch.sequence > prev_seq, absl::StrCat(who, ": sequence ", ch.sequence, " after ",
                                                      prev_seq, " (not strictly increasing)"));
        c.Expect(!ch.record.has_value() || ch.record->id == ch.key_id,
                 absl::StrCat(who, ": a change of ", ch.key_id, " carries another key"));
        prev_seq = std::max(prev_seq, ch.sequence);
        replica[ch.key_id] = ch.record;
      }
      fed_to = b->next_sequence;
      if (!b->more) return;
    }
    c.Violation(absl::StrCat(who, ": the feed did not end"));
  };
  pool.emplace_back([&] {
    while (writers_left.load() > 0 || feed_passes.load() < min_passes) {
      follow("follower");
      feed_passes.fetch_add(1);
      std::this_thread::sleep_for(kPause);
    }
  });
  // Subscriptions made and destroyed while writes notify. A callback checks
  // that its Subscription is still alive; the flag lives in a shared state,
  // so a store that breaks the promise is reported, not a crash.
  struct Alive {
    std::atomic<bool> destroyed{false};
    std::atomic<int> late_calls{0};
  };
  std::vector<std::shared_ptr<Alive>> subscriptions;
  pool.emplace_back([&] {
    // At most a few hundred: a store that leaks them calls them all on every write.
    while ((writers_left.load() > 0 && churns.load() < 200) || churns.load() < min_passes) {
      auto alive = std::make_shared<Alive>();
      absl::StatusOr<std::unique_ptr<Subscription>> sub = s.Subscribe([alive] {
        if (alive->destroyed.load()) alive->late_calls.fetch_add(1);
      });
      if (!c.ExpectOk(sub, "churner: Subscribe")) {
        churns.store(min_passes);  // the writers need not wait for this reader
        break;
      }
      std::this_thread::yield();
      sub->reset();
      alive->destroyed.store(true);
      subscriptions.push_back(alive);
      churns.fetch_add(1);
    }
  });
  for (std::thread& th : pool) th.join();

  // Quiet now: a last write would reach any callback still registered.
  c.ExpectOk(s.Insert(MakeRecord("key_m_last"), CreatedNote()), "Insert after the threads ended");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // asynchronous notifiers
  int late = 0;
  for (const std::shared_ptr<Alive>& a : subscriptions) late += a->late_calls.load();
  c.Expect(late == 0, absl::StrCat(late,
                                   " subscription callback(s) ran after the Subscription"
                                   " was destroyed"));

  absl::StatusOr<KeyRecord> final_counter = s.Get("key_counter");
  if (c.ExpectOk(final_counter, "Get key_counter")) {
    c.Expect(final_counter->metadata["n"] == std::to_string(increments.load()),
             absl::StrCat("key_counter holds n=", final_counter->metadata["n"], " after ",
                          increments.load(), " increments: an update was lost to a touch"));
  }
  // The follower, caught up, holds what List holds.
  follow("follower at the end");
  std::optional<std::vector<KeyRecord>> truth = ReadAllRecords(s, c, "at the end");
  if (truth) {
    std::map<std::string, KeyRecord> live;
    for (const auto& [id, r] : replica) {
      if (r.has_value()) live.emplace(id, *r);
    }
    std::map<std::string, KeyRecord> listed;
    for (const KeyRecord& r : *truth) listed.emplace(r.id, r);
    // last_used may differ: touches need not be changes (key_store.h).
    for (auto* m : {&live, &listed}) {
      for (auto& [id, r] : *m) r.last_used.reset();
    }
    c.Expect(live == listed, absl::StrCat("the follower holds ", live.size(),
                                          " keys that differ from the ", listed.size(), " listed"));
  }
  return c.Take();
}

// Turns a check's findings into Catch2 results: each violation fails the
// test case, each skipped part is a warning in the output.
inline void RequireNoFindings(const Findings& f) {
  for (const std::string& why : f.skipped) WARN("skipped: " << why);
  for (const std::string& v : f.violations) FAIL_CHECK(v);
  CHECK(f.violations.empty());
}

}  // namespace keygate::conformance

#include "key_store_conformance_audit.h"  // NOLINT(build/include_order): needs the above

// One TEST_CASE running `Fn` on a fresh store from the factory.
#define KEYGATE_KSC_CASE_(Backend, Tags, Title, Fn, ...) \
  KEYGATE_KSC_TAGGED_CASE_(Backend, Tags "[store][conformance]", Title, Fn, __VA_ARGS__)

#define KEYGATE_KSC_TAGGED_CASE_(Backend, Tags, Title, Fn, ...)                      \
  TEST_CASE(#Backend " conformance: " Title, Tags) {                                 \
    std::shared_ptr<::keygate::KeyStore> keygate_conformance_store_ = (__VA_ARGS__); \
    REQUIRE(keygate_conformance_store_ != nullptr);                                  \
    ::keygate::conformance::Fn(keygate_conformance_store_);                          \
  }

// One TEST_CASE running the findings check `Fn` on a fresh store from the
// factory, with the backend's hooks; it fails on any violation.
#define KEYGATE_KSC_CHECK_(Backend, Tags, Title, Fn, Hooks, ...)                     \
  TEST_CASE(#Backend " conformance: " Title, Tags "[store][conformance]") {          \
    std::shared_ptr<::keygate::KeyStore> keygate_conformance_store_ = (__VA_ARGS__); \
    REQUIRE(keygate_conformance_store_ != nullptr);                                  \
    ::keygate::conformance::RequireNoFindings(                                       \
        ::keygate::conformance::Fn(keygate_conformance_store_, Hooks));              \
  }

// The whole suite; see the top of this file.
#define KEYGATE_KEY_STORE_CONFORMANCE(Backend, Tags, Hooks, ...)                                   \
  KEYGATE_KSC_CHECK_(Backend, Tags, "each write appends its audit entry", CheckAuditEntries,       \
                     Hooks, __VA_ARGS__)                                                           \
  KEYGATE_KSC_CHECK_(Backend, Tags, "a failed write appends no audit entry",                       \
                     CheckAuditFailedWrites, Hooks, __VA_ARGS__)                                   \
  KEYGATE_KSC_CHECK_(Backend, Tags, "the audit log filters and pages", CheckAuditQueries, Hooks,   \
                     __VA_ARGS__)                                                                  \
  KEYGATE_KSC_CHECK_(Backend, Tags, "audit cursors move forward only", CheckAuditCursors, Hooks,   \
                     __VA_ARGS__)                                                                  \
  KEYGATE_KSC_CHECK_(Backend, Tags, "a failed write changes nothing",                              \
                     CheckFailedWritesChangeNothing, Hooks, __VA_ARGS__)                           \
  KEYGATE_KSC_CHECK_(Backend, Tags, "a cursor resumes after the id it names",                      \
                     CheckHandBuiltCursors, Hooks, __VA_ARGS__)                                    \
  KEYGATE_KSC_CHECK_(Backend, Tags,                                                                \
                     "a corrupt record reads as data loss and as deleted in the feed",             \
                     CheckCorruptRecord, Hooks, __VA_ARGS__)                                       \
  KEYGATE_KSC_CHECK_(Backend, Tags "[concurrent]",                                                 \
                     "readers and subscribers and touches stay consistent under writes",           \
                     CheckConcurrentReadersAndWriters, Hooks, __VA_ARGS__)                         \
  KEYGATE_KSC_CASE_(Backend, Tags, "insert then get returns the record at version 1",              \
                    InsertAndGet, __VA_ARGS__)                                                     \
  KEYGATE_KSC_CASE_(Backend, Tags, "insert rejects a duplicate id", DuplicateId, __VA_ARGS__)      \
  KEYGATE_KSC_CASE_(Backend, Tags, "errors quote only generated key ids", ErrorsQuoteOnlyKeyIds,   \
                    __VA_ARGS__)                                                                   \
  KEYGATE_KSC_CASE_(Backend, Tags, "current and rolled digests are unique across keys",            \
                    DuplicateDigest, __VA_ARGS__)                                                  \
  KEYGATE_KSC_CASE_(Backend, Tags, "one active personal key per owner and environment",            \
                    PersonalUniqueness, __VA_ARGS__)                                               \
  KEYGATE_KSC_CASE_(Backend, Tags, "find by current and by rolled digest", FindByDigest,           \
                    __VA_ARGS__)                                                                   \
  KEYGATE_KSC_CASE_(Backend, Tags, "update is a compare-and-set on the version",                   \
                    ConditionalUpdate, __VA_ARGS__)                                                \
  KEYGATE_KSC_CASE_(Backend, Tags, "delete removes the record and its digests", DeleteKey,         \
                    __VA_ARGS__)                                                                   \
  KEYGATE_KSC_CASE_(Backend, Tags, "list filters by owner, environment, state, kind and name",     \
                    ListFilters, __VA_ARGS__)                                                      \
  KEYGATE_KSC_CASE_(Backend, Tags, "list pages by cursor without duplicates or gaps",              \
                    ListPagination, __VA_ARGS__)                                                   \
  KEYGATE_KSC_CASE_(Backend, Tags, "list cursors stay valid across writes",                        \
                    ListPaginationStableUnderWrites, __VA_ARGS__)                                  \
  KEYGATE_KSC_CASE_(Backend, Tags, "list rejects bad limits and cursors", ListRejectsBadArguments, \
                    __VA_ARGS__)                                                                   \
  KEYGATE_KSC_CASE_(Backend, Tags, "change feed reports current state in sequence order",          \
                    ChangeFeed, __VA_ARGS__)                                                       \
  KEYGATE_KSC_CASE_(Backend, Tags, "a replica following the change feed converges",                \
                    ChangeFeedConverges, __VA_ARGS__)                                              \
  KEYGATE_KSC_CASE_(Backend, Tags, "the change feed lists a deleted and reinserted id once",       \
                    ChangeFeedOneEntryForReusedId, __VA_ARGS__)                                    \
  KEYGATE_KSC_CASE_(Backend, Tags, "subscriptions fire after commit and stop when destroyed",      \
                    Subscriptions, __VA_ARGS__)                                                    \
  KEYGATE_KSC_CASE_(Backend, Tags "[concurrent]",                                                  \
                    "destroying a subscription waits for its running callback",                    \
                    SubscriptionDestructorWaitsForCallback, __VA_ARGS__)                           \
  KEYGATE_KSC_CASE_(Backend, Tags, "every record field round-trips", FieldRoundTrip, __VA_ARGS__)  \
  KEYGATE_KSC_CASE_(Backend, Tags, "touching last_used moves it forward only", TouchLastUsed,      \
                    __VA_ARGS__)                                                                   \
  KEYGATE_KSC_CASE_(Backend, Tags "[concurrent]", "concurrent writers are all accounted for",      \
                    ConcurrentWriters, __VA_ARGS__)                                                \
  KEYGATE_KSC_CASE_(Backend, Tags "[concurrent]", "concurrent compare-and-set loses no update",    \
                    ConcurrentCompareAndSet, __VA_ARGS__)

#endif  // KEYGATE_TESTS_KEY_STORE_CONFORMANCE_H_
