// tests/key_store_conformance.h: the KeyStore conformance suite that every
// backend runs, so that all of them honour the contract in key_store.h.
//
// Usage, in a backend's test file (one line per backend):
//
//   #include "key_store_conformance.h"
//
//   KEYGATE_KEY_STORE_CONFORMANCE(Memory, "[memory]",
//                                 std::make_shared<keygate::MemoryKeyStore>())
//
//   KEYGATE_KEY_STORE_CONFORMANCE(SQLite, "[sqlite]", [] {
//     return std::shared_ptr<keygate::KeyStore>(OpenTempSqliteStore());
//   }())
//
// The macro expands to one Catch2 TEST_CASE per behaviour, named
// "<Backend> conformance: <behaviour>" and tagged `<tags>[store][conformance]`
// (the tags argument must be a string literal; cases that run threads also
// carry [concurrent], which CI runs under ThreadSanitizer). The factory
// expression is evaluated once per test case and must yield a fresh, EMPTY store as
// something convertible to std::shared_ptr<keygate::KeyStore>; it may contain
// commas. Run one backend's suite with e.g. `memory_key_store_test
// "[memory][conformance]"`.
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
//   * A failed write (duplicate, stale version, not found) leaves no change
//     entry: LastSequence() does not move.
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
  KEYGATE_REQUIRE_OK(store->Insert(r));
  absl::StatusOr<KeyRecord> got = store->Get("key_insert1");
  KEYGATE_REQUIRE_OK(got);
  KeyRecord expected = r;
  expected.version = 1;
  CHECK(*got == expected);

  absl::StatusOr<KeyRecord> missing = store->Get("key_missing");
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);

  KeyRecord empty = MakeRecord("");
  empty.digest = DigestFor("empty id");
  CHECK(store->Insert(empty).code() == absl::StatusCode::kInvalidArgument);

  // A verdict carries at most kKeyIdLength bytes of id: an id one byte
  // longer is refused (cut off, it could be another key's id);
  // one of exactly that length, of any shape, is stored.
  const std::string longest(kKeyIdLength, 'x');
  KeyRecord too_long = MakeRecord(longest + "1");
  too_long.digest = DigestFor("long id");
  const absl::Status refused = store->Insert(too_long);
  CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(refused.message(), "id: longer than 26 bytes"));
  CHECK(store->Get(too_long.id).status().code() == absl::StatusCode::kNotFound);
  CHECK(store->FindByDigest(too_long.digest).status().code() == absl::StatusCode::kNotFound);
  KeyRecord fits = MakeRecord(longest);
  fits.digest = DigestFor("long id");
  KEYGATE_REQUIRE_OK(store->Insert(fits));
  KEYGATE_REQUIRE_OK(store->Get(longest));
}

inline void DuplicateId(const std::shared_ptr<KeyStore>& store) {
  KeyRecord a = MakeRecord("key_dup");
  KEYGATE_REQUIRE_OK(store->Insert(a));
  const std::uint64_t seq = LastSeq(*store);

  KeyRecord b = MakeRecord("key_dup", "bob");
  b.digest = DigestFor("another digest");
  CHECK(store->Insert(b).code() == absl::StatusCode::kAlreadyExists);
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
    const absl::Status del = store->Delete(id, std::nullopt);
    CHECK(del.code() == absl::StatusCode::kNotFound);
    KeyRecord r = MakeRecord(id);
    r.version = 1;
    const absl::Status upd = store->Update(r).status();
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
  KEYGATE_REQUIRE_OK(store->Insert(a));
  const std::uint64_t seq = LastSeq(*store);

  KeyRecord same_current = MakeRecord("key_b");
  same_current.digest = a.digest;
  CHECK(store->Insert(same_current).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord current_is_rolled = MakeRecord("key_c");
  current_is_rolled.digest = DigestFor("a-old");
  CHECK(store->Insert(current_is_rolled).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord rolled_is_current = MakeRecord("key_d");
  rolled_is_current.previous = RolledSecret{a.digest, "x", BaseTime() + absl::Hours(1)};
  CHECK(store->Insert(rolled_is_current).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord rolled_is_rolled = MakeRecord("key_e");
  rolled_is_rolled.previous = RolledSecret{DigestFor("a-old"), "x", BaseTime() + absl::Hours(1)};
  CHECK(store->Insert(rolled_is_rolled).code() == absl::StatusCode::kAlreadyExists);

  CHECK(LastSeq(*store) == seq);
  for (const char* id : {"key_b", "key_c", "key_d", "key_e"}) {
    CHECK(store->Get(id).status().code() == absl::StatusCode::kNotFound);
  }
  // Digests of rejected records were not indexed either.
  CHECK(store->FindByDigest(DigestFor("key_b")).status().code() == absl::StatusCode::kNotFound);

  // An update may not take another key's digest (current or rolled).
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_f")));
  absl::StatusOr<KeyRecord> f = store->Get("key_f");
  KEYGATE_REQUIRE_OK(f);
  KeyRecord steal = *f;
  steal.digest = a.digest;
  CHECK(store->Update(steal).status().code() == absl::StatusCode::kAlreadyExists);
  steal = *f;
  steal.previous = RolledSecret{DigestFor("a-old"), "x", BaseTime()};
  CHECK(store->Update(steal).status().code() == absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> f2 = store->Get("key_f");
  KEYGATE_REQUIRE_OK(f2);
  CHECK(*f2 == *f);
  // Keeping its own digests is fine.
  KEYGATE_REQUIRE_OK(store->Update(*f));
}

inline void PersonalUniqueness(const std::shared_ptr<KeyStore>& store) {
  using K = KeyKind;
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_p1", "alice", "production", K::kPersonal)));
  CHECK(store->Insert(MakeRecord("key_p2", "alice", "production", K::kPersonal)).code() ==
        absl::StatusCode::kAlreadyExists);
  // Other environment, other owner, general keys, revoked personal keys: fine.
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_p3", "alice", "preview", K::kPersonal)));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_p4", "bob", "production", K::kPersonal)));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_g1", "alice", "production", K::kGeneral)));
  KeyRecord revoked = MakeRecord("key_p5", "alice", "production", K::kPersonal);
  revoked.state = KeyState::kRevoked;
  KEYGATE_REQUIRE_OK(store->Insert(revoked));

  // Revoking p1 frees the slot for a new personal key...
  absl::StatusOr<KeyRecord> p1 = store->Get("key_p1");
  KEYGATE_REQUIRE_OK(p1);
  KeyRecord p1_revoked = *p1;
  p1_revoked.state = KeyState::kRevoked;
  absl::StatusOr<KeyRecord> p1_after = store->Update(p1_revoked);
  KEYGATE_REQUIRE_OK(p1_after);
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_p6", "alice", "production", K::kPersonal)));

  // ...and then restoring p1 (or p5) would make two active: refused.
  KeyRecord p1_restore = *p1_after;
  p1_restore.state = KeyState::kActive;
  CHECK(store->Update(p1_restore).status().code() == absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> p5 = store->Get("key_p5");
  KEYGATE_REQUIRE_OK(p5);
  KeyRecord p5_restore = *p5;
  p5_restore.state = KeyState::kActive;
  CHECK(store->Update(p5_restore).status().code() == absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> p1_now = store->Get("key_p1");
  KEYGATE_REQUIRE_OK(p1_now);
  CHECK(p1_now->state == KeyState::kRevoked);

  // Turning a general key into an active personal one is checked too.
  absl::StatusOr<KeyRecord> g1 = store->Get("key_g1");
  KEYGATE_REQUIRE_OK(g1);
  KeyRecord g1_personal = *g1;
  g1_personal.kind = K::kPersonal;
  CHECK(store->Update(g1_personal).status().code() == absl::StatusCode::kAlreadyExists);

  // Deleting the active one frees the slot again.
  KEYGATE_REQUIRE_OK(store->Delete("key_p6", std::nullopt));
  KEYGATE_REQUIRE_OK(store->Update(p1_restore));
}

inline void FindByDigest(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_f1")));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_f2")));
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
  absl::StatusOr<KeyRecord> stored = store->Update(rolled);
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
  KEYGATE_REQUIRE_OK(store->Update(rolled2));
  CHECK(store->FindByDigest(DigestFor("key_f1")).status().code() == absl::StatusCode::kNotFound);
  KEYGATE_REQUIRE_OK(store->FindByDigest(DigestFor("key_f1 v2")));
  KEYGATE_REQUIRE_OK(store->FindByDigest(DigestFor("key_f1 v3")));
  // Dropping the rolled secret unindexes it.
  absl::StatusOr<KeyRecord> cur = store->Get("key_f1");
  KEYGATE_REQUIRE_OK(cur);
  KeyRecord dropped = *cur;
  dropped.previous.reset();
  KEYGATE_REQUIRE_OK(store->Update(dropped));
  CHECK(store->FindByDigest(DigestFor("key_f1 v2")).status().code() == absl::StatusCode::kNotFound);
  // The freed digest can be used by another key.
  KeyRecord reuse = MakeRecord("key_f3");
  reuse.digest = DigestFor("key_f1 v2");
  KEYGATE_REQUIRE_OK(store->Insert(reuse));
}

inline void ConditionalUpdate(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_u")));
  absl::StatusOr<KeyRecord> v1 = store->Get("key_u");
  KEYGATE_REQUIRE_OK(v1);
  REQUIRE(v1->version == 1);

  KeyRecord edit = *v1;
  edit.name = "renamed";
  absl::StatusOr<KeyRecord> v2 = store->Update(edit);
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
  absl::StatusOr<KeyRecord> conflict = store->Update(stale);
  CHECK(conflict.status().code() == absl::StatusCode::kAborted);
  KeyRecord future = *v2;
  future.version = 7;
  CHECK(store->Update(future).status().code() == absl::StatusCode::kAborted);
  CHECK(LastSeq(*store) == seq);
  got = store->Get("key_u");
  KEYGATE_REQUIRE_OK(got);
  CHECK(got->name == "renamed");
  CHECK(got->version == 2);

  absl::StatusOr<KeyRecord> v3 = store->Update(*v2);
  KEYGATE_REQUIRE_OK(v3);
  CHECK(v3->version == 3);

  KeyRecord ghost = MakeRecord("key_ghost");
  ghost.version = 1;
  CHECK(store->Update(ghost).status().code() == absl::StatusCode::kNotFound);
  CHECK(LastSeq(*store) > seq);
}

inline void DeleteKey(const std::shared_ptr<KeyStore>& store) {
  KeyRecord r = MakeRecord("key_del");
  r.previous = RolledSecret{DigestFor("key_del old"), "x", BaseTime() + absl::Hours(1)};
  KEYGATE_REQUIRE_OK(store->Insert(r));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_keep")));

  const std::uint64_t seq = LastSeq(*store);
  CHECK(store->Delete("key_del", 2).code() == absl::StatusCode::kAborted);
  CHECK(LastSeq(*store) == seq);
  KEYGATE_REQUIRE_OK(store->Get("key_del"));

  KEYGATE_REQUIRE_OK(store->Delete("key_del", 1));
  CHECK(LastSeq(*store) > seq);
  CHECK(store->Get("key_del").status().code() == absl::StatusCode::kNotFound);
  CHECK(store->FindByDigest(r.digest).status().code() == absl::StatusCode::kNotFound);
  CHECK(store->FindByDigest(r.previous->digest).status().code() == absl::StatusCode::kNotFound);
  CHECK(store->Delete("key_del", std::nullopt).code() == absl::StatusCode::kNotFound);
  CHECK(store->Delete("key_del", 1).code() == absl::StatusCode::kNotFound);
  CHECK(ListAllIds(*store, ListFilter{}) == std::vector<std::string>{"key_keep"});

  // Without an expected version.
  KEYGATE_REQUIRE_OK(store->Delete("key_keep", std::nullopt));
  CHECK(ListAllIds(*store, ListFilter{}).empty());

  // The id and digests are free again; sequences keep growing.
  const std::uint64_t before = LastSeq(*store);
  KEYGATE_REQUIRE_OK(store->Insert(r));
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
    KEYGATE_REQUIRE_OK(store.Insert(r));
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
    KEYGATE_REQUIRE_OK(store->Insert(MakeRecord(id, n % 2 ? "odd" : "even")));
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
    KEYGATE_REQUIRE_OK(store->Insert(MakeRecord(absl::StrCat("key_s", i))));
  }
  ListOptions o;
  o.limit = 6;
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_REQUIRE_OK(page);
  std::vector<std::string> seen = Ids(page->keys);
  REQUIRE(seen.back() == "key_s15");

  // Between pages: insert before and after the cursor, delete a record
  // already returned and one not yet returned, and update one ahead.
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_s05")));  // before: not seen
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_s35")));  // after: seen
  KEYGATE_REQUIRE_OK(store->Delete("key_s12", std::nullopt));
  KEYGATE_REQUIRE_OK(store->Delete("key_s20", std::nullopt));
  absl::StatusOr<KeyRecord> s25 = store->Get("key_s25");
  KEYGATE_REQUIRE_OK(s25);
  KeyRecord edit = *s25;
  edit.name = "edited";
  KEYGATE_REQUIRE_OK(store->Update(edit));

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
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_x1")));
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
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_c1")));
  CHECK(advanced());
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_c2")));
  CHECK(advanced());
  const std::uint64_t after_two = last;
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_c3")));
  CHECK(advanced());
  absl::StatusOr<KeyRecord> c1 = store->Get("key_c1");
  KEYGATE_REQUIRE_OK(c1);
  KeyRecord edit = *c1;
  edit.name = "c1 v2";
  KEYGATE_REQUIRE_OK(store->Update(edit));
  CHECK(advanced());
  KEYGATE_REQUIRE_OK(store->Delete("key_c2", std::nullopt));
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
      KEYGATE_REQUIRE_OK(store->Insert(MakeRecord(absl::StrCat("key_r", round, "_", i))));
    }
    if (round > 0) {
      const std::string prev = absl::StrCat("key_r", round - 1, "_");
      KEYGATE_REQUIRE_OK(store->Delete(prev + "0", std::nullopt));
      for (int rep = 0; rep < 3; ++rep) {
        absl::StatusOr<KeyRecord> r = store->Get(prev + "1");
        KEYGATE_REQUIRE_OK(r);
        KeyRecord e = *r;
        e.name = absl::StrCat("edit ", rep);
        KEYGATE_REQUIRE_OK(store->Update(e));
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
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_sub1")));
  CHECK(WaitFor([&] { return calls.load() > 0; }));
  CHECK(calls_before_commit.load() == 0);

  // Another write, another call (possibly coalesced, never lost).
  const int before = calls.load();
  absl::StatusOr<KeyRecord> r = store->Get("key_sub1");
  KEYGATE_REQUIRE_OK(r);
  KeyRecord e = *r;
  e.name = "changed";
  KEYGATE_REQUIRE_OK(store->Update(e));
  CHECK(WaitFor([&] { return calls.load() > before; }));

  // Two subscribers are both told.
  std::atomic<int> other{0};
  auto sub2 = store->Subscribe([&] { other.fetch_add(1); });
  KEYGATE_REQUIRE_OK(sub2);
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_sub2")));
  CHECK(WaitFor([&] { return other.load() > 0; }));

  // Destroyed: never called again.
  sub->reset();
  const int frozen = calls.load();
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_sub3")));
  const int other_before = other.load();
  KEYGATE_REQUIRE_OK(store->Delete("key_sub3", std::nullopt));
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
  std::thread writer([&] { insert_ok.store(store->Insert(MakeRecord("key_wait")).ok()); });
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
  std::thread first([&] { first_ok.store(store->Insert(MakeRecord("key_first")).ok()); });
  bool entered = false;
  {
    std::unique_lock<std::mutex> lock(mu);
    entered = cv.wait_for(lock, std::chrono::seconds(60), [&] { return rounds > 0; });
  }
  std::atomic<bool> second_returned{false};
  bool second_ok = false;
  bool seen_at_return = false;
  std::thread second([&] {
    second_ok = store->Insert(MakeRecord("key_second")).ok();
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
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_other")));
  const std::uint64_t start = LastSeq(*store);
  for (int i = 0; i < 3; ++i) {
    KeyRecord r = MakeRecord("key_reused");
    r.digest = DigestFor(absl::StrCat("key_reused #", i));
    KEYGATE_REQUIRE_OK(store->Insert(r));
    KEYGATE_REQUIRE_OK(store->Delete("key_reused", std::nullopt));
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
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_reused")));
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
  KEYGATE_REQUIRE_OK(store->Insert(full));
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
  absl::StatusOr<KeyRecord> updated = store->Update(bare);
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
  KEYGATE_REQUIRE_OK(store->Insert(fine));
  absl::StatusOr<KeyRecord> fine_got = store->Get("key_nanos");
  KEYGATE_REQUIRE_OK(fine_got);
  KeyRecord fine_expected = fine;
  fine_expected.version = 1;
  CHECK(AtMicros(*fine_got) == AtMicros(fine_expected));
  CHECK(fine_got->created >= BaseTime());
  CHECK(fine_got->created <= fine.created);
}

inline void TouchLastUsed(const std::shared_ptr<KeyStore>& store) {
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_touch_a")));
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_touch_b")));
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
  KEYGATE_REQUIRE_OK(store->Insert(MakeRecord("key_touch")));
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
  CHECK(store->Update(renamed).ok());
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
        if (!store->Insert(MakeRecord(id, absl::StrCat("owner", t))).ok()) failures++;
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
        if (!store->Update(e).ok()) failures++;
        if (i % 5 == 0 && !store->Delete(id, 2).ok()) failures++;
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
  KEYGATE_REQUIRE_OK(store->Insert(r));
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
          absl::StatusOr<KeyRecord> stored = store->Update(next);
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

}  // namespace keygate::conformance

// One TEST_CASE running `Fn` on a fresh store from the factory.
#define KEYGATE_KSC_CASE_(Backend, Tags, Title, Fn, ...) \
  KEYGATE_KSC_TAGGED_CASE_(Backend, Tags "[store][conformance]", Title, Fn, __VA_ARGS__)

#define KEYGATE_KSC_TAGGED_CASE_(Backend, Tags, Title, Fn, ...)                      \
  TEST_CASE(#Backend " conformance: " Title, Tags) {                                 \
    std::shared_ptr<::keygate::KeyStore> keygate_conformance_store_ = (__VA_ARGS__); \
    REQUIRE(keygate_conformance_store_ != nullptr);                                  \
    ::keygate::conformance::Fn(keygate_conformance_store_);                          \
  }

// The whole suite; see the top of this file.
#define KEYGATE_KEY_STORE_CONFORMANCE(Backend, Tags, ...)                                          \
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
