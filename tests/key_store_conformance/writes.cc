// The conformance suite, Writes: insert, update, delete, uniqueness, failed writes, field round
// trips, touches. See suite.h.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
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

#include "key_store_conformance/suite.h"
#include "keygate/digest.h"
#include "keygate/key.h"
#include "keygate/key_store.h"

namespace keygate::conformance {
namespace {

void InsertAndGet(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KeyRecord r = MakeRecord("key_insert1");
  r.version = 42;  // ignored: the store assigns 1
  KEYGATE_ASSERT_OK(SuiteInsert(*store, r));
  absl::StatusOr<KeyRecord> got = store->Get("key_insert1");
  KEYGATE_ASSERT_OK(got);
  KeyRecord expected = r;
  expected.version = 1;
  KEYGATE_EXPECT(*got == expected);

  absl::StatusOr<KeyRecord> missing = store->Get("key_missing");
  KEYGATE_EXPECT(missing.status().code() == absl::StatusCode::kNotFound);

  KeyRecord empty = MakeRecord("");
  empty.digest = DigestFor("empty id");
  KEYGATE_EXPECT(SuiteInsert(*store, empty).code() == absl::StatusCode::kInvalidArgument);

  // A verdict carries at most kKeyIdLength bytes of id: an id one byte
  // longer is refused (cut off, it could be another key's id);
  // one of exactly that length, of any shape, is stored.
  const std::string longest(kKeyIdLength, 'x');
  KeyRecord too_long = MakeRecord(longest + "1");
  too_long.digest = DigestFor("long id");
  const absl::Status refused = SuiteInsert(*store, too_long);
  KEYGATE_EXPECT(refused.code() == absl::StatusCode::kInvalidArgument);
  KEYGATE_EXPECT(absl::StrContains(refused.message(), "id: longer than 26 bytes"));
  KEYGATE_EXPECT(store->Get(too_long.id).status().code() == absl::StatusCode::kNotFound);
  KEYGATE_EXPECT(store->FindByDigest(too_long.digest).status().code() ==
                 absl::StatusCode::kNotFound);
  KeyRecord fits = MakeRecord(longest);
  fits.digest = DigestFor("long id");
  KEYGATE_ASSERT_OK(SuiteInsert(*store, fits));
  KEYGATE_ASSERT_OK(store->Get(longest));
}

void DuplicateId(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KeyRecord a = MakeRecord("key_dup");
  KEYGATE_ASSERT_OK(SuiteInsert(*store, a));
  const std::uint64_t seq = LastSeq(*store, c);

  KeyRecord b = MakeRecord("key_dup", "bob");
  b.digest = DigestFor("another digest");
  KEYGATE_EXPECT(SuiteInsert(*store, b).code() == absl::StatusCode::kAlreadyExists);
  KEYGATE_EXPECT(LastSeq(*store, c) == seq);  // a failed write is no change
  absl::StatusOr<KeyRecord> got = store->Get("key_dup");
  KEYGATE_ASSERT_OK(got);
  KEYGATE_EXPECT(got->owner == "alice");
  // The rejected record's digest was not indexed.
  KEYGATE_EXPECT(store->FindByDigest(b.digest).status().code() == absl::StatusCode::kNotFound);
}

// Errors name a key only by an id of the generated shape: anything else may
// be a token pasted where an id belongs, and must not reach a log.
void ErrorsQuoteOnlyKeyIds(const std::shared_ptr<KeyStore>& store, Checker& c) {
  const std::string token = "kg_live_xM5fcVtn3DmIL5Z2lH9SsrhQ5ED8YKAehvJrxD5l47u4DL5CW";
  const std::string forged = "key_x\r\nFORGED: log line";
  for (const std::string& id : {token, forged}) {
    const absl::Status get = store->Get(id).status();
    KEYGATE_EXPECT(get.code() == absl::StatusCode::kNotFound);
    const absl::Status del = SuiteDelete(*store, id, std::nullopt);
    KEYGATE_EXPECT(del.code() == absl::StatusCode::kNotFound);
    KeyRecord r = MakeRecord(id);
    r.version = 1;
    const absl::Status upd = SuiteUpdate(*store, r).status();
    KEYGATE_EXPECT(upd.code() == absl::StatusCode::kNotFound);
    for (const absl::Status& s : {get, del, upd}) {
      const std::string m(s.message());
      KEYGATE_EXPECT(m.find(id) == std::string::npos);
      KEYGATE_EXPECT(m.find("kg_live_") == std::string::npos);
      KEYGATE_EXPECT(m.find('\n') == std::string::npos);
      KEYGATE_EXPECT(absl::StrContains(m, "not a key id"));
    }
  }
  const std::string generated = "key_0Q3RtZ8aXb123456789012";
  KEYGATE_ASSERT(IsGeneratedKeyId(generated));
  KEYGATE_EXPECT(absl::StrContains(store->Get(generated).status().message(), generated));
}

void DuplicateDigest(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KeyRecord a = MakeRecord("key_a");
  a.previous = RolledSecret{DigestFor("a-old"), "kg_live_...old1", BaseTime() + absl::Hours(1)};
  KEYGATE_ASSERT_OK(SuiteInsert(*store, a));
  const std::uint64_t seq = LastSeq(*store, c);

  KeyRecord same_current = MakeRecord("key_b");
  same_current.digest = a.digest;
  KEYGATE_EXPECT(SuiteInsert(*store, same_current).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord current_is_rolled = MakeRecord("key_c");
  current_is_rolled.digest = DigestFor("a-old");
  KEYGATE_EXPECT(SuiteInsert(*store, current_is_rolled).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord rolled_is_current = MakeRecord("key_d");
  rolled_is_current.previous = RolledSecret{a.digest, "x", BaseTime() + absl::Hours(1)};
  KEYGATE_EXPECT(SuiteInsert(*store, rolled_is_current).code() == absl::StatusCode::kAlreadyExists);

  KeyRecord rolled_is_rolled = MakeRecord("key_e");
  rolled_is_rolled.previous = RolledSecret{DigestFor("a-old"), "x", BaseTime() + absl::Hours(1)};
  KEYGATE_EXPECT(SuiteInsert(*store, rolled_is_rolled).code() == absl::StatusCode::kAlreadyExists);

  KEYGATE_EXPECT(LastSeq(*store, c) == seq);
  for (const char* id : {"key_b", "key_c", "key_d", "key_e"}) {
    KEYGATE_EXPECT(store->Get(id).status().code() == absl::StatusCode::kNotFound);
  }
  // Digests of rejected records were not indexed either.
  KEYGATE_EXPECT(store->FindByDigest(DigestFor("key_b")).status().code() ==
                 absl::StatusCode::kNotFound);

  // An update may not take another key's digest (current or rolled).
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_f")));
  absl::StatusOr<KeyRecord> f = store->Get("key_f");
  KEYGATE_ASSERT_OK(f);
  KeyRecord steal = *f;
  steal.digest = a.digest;
  KEYGATE_EXPECT(SuiteUpdate(*store, steal).status().code() == absl::StatusCode::kAlreadyExists);
  steal = *f;
  steal.previous = RolledSecret{DigestFor("a-old"), "x", BaseTime()};
  KEYGATE_EXPECT(SuiteUpdate(*store, steal).status().code() == absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> f2 = store->Get("key_f");
  KEYGATE_ASSERT_OK(f2);
  KEYGATE_EXPECT(*f2 == *f);
  // Keeping its own digests is fine.
  KEYGATE_ASSERT_OK(SuiteUpdate(*store, *f));
}

void PersonalUniqueness(const std::shared_ptr<KeyStore>& store, Checker& c) {
  using K = KeyKind;
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_p1", "alice", "production", K::kPersonal)));
  KEYGATE_EXPECT(
      SuiteInsert(*store, MakeRecord("key_p2", "alice", "production", K::kPersonal)).code() ==
      absl::StatusCode::kAlreadyExists);
  // Other environment, other owner, general keys, revoked personal keys: fine.
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_p3", "alice", "preview", K::kPersonal)));
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_p4", "bob", "production", K::kPersonal)));
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_g1", "alice", "production", K::kGeneral)));
  KeyRecord revoked = MakeRecord("key_p5", "alice", "production", K::kPersonal);
  revoked.state = KeyState::kRevoked;
  KEYGATE_ASSERT_OK(SuiteInsert(*store, revoked));

  // Revoking p1 frees the slot for a new personal key...
  absl::StatusOr<KeyRecord> p1 = store->Get("key_p1");
  KEYGATE_ASSERT_OK(p1);
  KeyRecord p1_revoked = *p1;
  p1_revoked.state = KeyState::kRevoked;
  absl::StatusOr<KeyRecord> p1_after = SuiteUpdate(*store, p1_revoked);
  KEYGATE_ASSERT_OK(p1_after);
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_p6", "alice", "production", K::kPersonal)));

  // ...and then restoring p1 (or p5) would make two active: refused.
  KeyRecord p1_restore = *p1_after;
  p1_restore.state = KeyState::kActive;
  KEYGATE_EXPECT(SuiteUpdate(*store, p1_restore).status().code() ==
                 absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> p5 = store->Get("key_p5");
  KEYGATE_ASSERT_OK(p5);
  KeyRecord p5_restore = *p5;
  p5_restore.state = KeyState::kActive;
  KEYGATE_EXPECT(SuiteUpdate(*store, p5_restore).status().code() ==
                 absl::StatusCode::kAlreadyExists);
  absl::StatusOr<KeyRecord> p1_now = store->Get("key_p1");
  KEYGATE_ASSERT_OK(p1_now);
  KEYGATE_EXPECT(p1_now->state == KeyState::kRevoked);

  // Turning a general key into an active personal one is checked too.
  absl::StatusOr<KeyRecord> g1 = store->Get("key_g1");
  KEYGATE_ASSERT_OK(g1);
  KeyRecord g1_personal = *g1;
  g1_personal.kind = K::kPersonal;
  KEYGATE_EXPECT(SuiteUpdate(*store, g1_personal).status().code() ==
                 absl::StatusCode::kAlreadyExists);

  // Deleting the active one frees the slot again.
  KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_p6", std::nullopt));
  KEYGATE_ASSERT_OK(SuiteUpdate(*store, p1_restore));
}

void FindByDigest(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_f1")));
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_f2")));
  absl::StatusOr<KeyRecord> f1 = store->FindByDigest(DigestFor("key_f1"));
  KEYGATE_ASSERT_OK(f1);
  KEYGATE_EXPECT(f1->id == "key_f1");
  absl::StatusOr<KeyRecord> f2 = store->FindByDigest(DigestFor("key_f2"));
  KEYGATE_ASSERT_OK(f2);
  KEYGATE_EXPECT(f2->id == "key_f2");
  KEYGATE_EXPECT(store->FindByDigest(DigestFor("nobody")).status().code() ==
                 absl::StatusCode::kNotFound);

  // Roll f1: the new digest and the rolled one both find it; after a second
  // roll the first digest is gone.
  KeyRecord rolled = *f1;
  rolled.previous = RolledSecret{rolled.digest, rolled.hint, BaseTime() + absl::Minutes(5)};
  rolled.digest = DigestFor("key_f1 v2");
  absl::StatusOr<KeyRecord> stored = SuiteUpdate(*store, rolled);
  KEYGATE_ASSERT_OK(stored);
  for (const char* seed : {"key_f1", "key_f1 v2"}) {
    absl::StatusOr<KeyRecord> hit = store->FindByDigest(DigestFor(seed));
    KEYGATE_ASSERT_OK(hit);
    KEYGATE_EXPECT(hit->id == "key_f1");
    KEYGATE_EXPECT(hit->version == 2);
    KEYGATE_ASSERT(hit->previous.has_value());
    KEYGATE_EXPECT(hit->previous->digest == DigestFor("key_f1"));
  }
  KeyRecord rolled2 = *stored;
  rolled2.previous = RolledSecret{rolled2.digest, rolled2.hint, BaseTime() + absl::Minutes(9)};
  rolled2.digest = DigestFor("key_f1 v3");
  KEYGATE_ASSERT_OK(SuiteUpdate(*store, rolled2));
  KEYGATE_EXPECT(store->FindByDigest(DigestFor("key_f1")).status().code() ==
                 absl::StatusCode::kNotFound);
  KEYGATE_ASSERT_OK(store->FindByDigest(DigestFor("key_f1 v2")));
  KEYGATE_ASSERT_OK(store->FindByDigest(DigestFor("key_f1 v3")));
  // Dropping the rolled secret unindexes it.
  absl::StatusOr<KeyRecord> cur = store->Get("key_f1");
  KEYGATE_ASSERT_OK(cur);
  KeyRecord dropped = *cur;
  dropped.previous.reset();
  KEYGATE_ASSERT_OK(SuiteUpdate(*store, dropped));
  KEYGATE_EXPECT(store->FindByDigest(DigestFor("key_f1 v2")).status().code() ==
                 absl::StatusCode::kNotFound);
  // The freed digest can be used by another key.
  KeyRecord reuse = MakeRecord("key_f3");
  reuse.digest = DigestFor("key_f1 v2");
  KEYGATE_ASSERT_OK(SuiteInsert(*store, reuse));
}

void ConditionalUpdate(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_u")));
  absl::StatusOr<KeyRecord> v1 = store->Get("key_u");
  KEYGATE_ASSERT_OK(v1);
  KEYGATE_ASSERT(v1->version == 1);

  KeyRecord edit = *v1;
  edit.name = "renamed";
  absl::StatusOr<KeyRecord> v2 = SuiteUpdate(*store, edit);
  KEYGATE_ASSERT_OK(v2);
  KEYGATE_EXPECT(v2->version == 2);
  KEYGATE_EXPECT(v2->name == "renamed");
  absl::StatusOr<KeyRecord> got = store->Get("key_u");
  KEYGATE_ASSERT_OK(got);
  KEYGATE_EXPECT(*got == *v2);

  // A writer still holding version 1 loses.
  const std::uint64_t seq = LastSeq(*store, c);
  KeyRecord stale = *v1;
  stale.name = "stale";
  absl::StatusOr<KeyRecord> conflict = SuiteUpdate(*store, stale);
  KEYGATE_EXPECT(conflict.status().code() == absl::StatusCode::kAborted);
  KeyRecord future = *v2;
  future.version = 7;
  KEYGATE_EXPECT(SuiteUpdate(*store, future).status().code() == absl::StatusCode::kAborted);
  KEYGATE_EXPECT(LastSeq(*store, c) == seq);
  got = store->Get("key_u");
  KEYGATE_ASSERT_OK(got);
  KEYGATE_EXPECT(got->name == "renamed");
  KEYGATE_EXPECT(got->version == 2);

  absl::StatusOr<KeyRecord> v3 = SuiteUpdate(*store, *v2);
  KEYGATE_ASSERT_OK(v3);
  KEYGATE_EXPECT(v3->version == 3);

  const std::uint64_t before_ghost = LastSeq(*store, c);
  KeyRecord ghost = MakeRecord("key_ghost");
  ghost.version = 1;
  KEYGATE_EXPECT(SuiteUpdate(*store, ghost).status().code() == absl::StatusCode::kNotFound);
  KEYGATE_EXPECT(LastSeq(*store, c) == before_ghost);
  KEYGATE_EXPECT(store->Get("key_ghost").status().code() == absl::StatusCode::kNotFound);
}

void DeleteKey(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KeyRecord r = MakeRecord("key_del");
  r.previous = RolledSecret{DigestFor("key_del old"), "x", BaseTime() + absl::Hours(1)};
  KEYGATE_ASSERT_OK(SuiteInsert(*store, r));
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_keep")));

  const std::uint64_t seq = LastSeq(*store, c);
  KEYGATE_EXPECT(SuiteDelete(*store, "key_del", 2).code() == absl::StatusCode::kAborted);
  KEYGATE_EXPECT(LastSeq(*store, c) == seq);
  KEYGATE_ASSERT_OK(store->Get("key_del"));

  KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_del", 1));
  KEYGATE_EXPECT(LastSeq(*store, c) > seq);
  KEYGATE_EXPECT(store->Get("key_del").status().code() == absl::StatusCode::kNotFound);
  KEYGATE_EXPECT(store->FindByDigest(r.digest).status().code() == absl::StatusCode::kNotFound);
  KEYGATE_EXPECT(store->FindByDigest(r.previous->digest).status().code() ==
                 absl::StatusCode::kNotFound);
  KEYGATE_EXPECT(SuiteDelete(*store, "key_del", std::nullopt).code() ==
                 absl::StatusCode::kNotFound);
  KEYGATE_EXPECT(SuiteDelete(*store, "key_del", 1).code() == absl::StatusCode::kNotFound);
  KEYGATE_EXPECT(ListAllIds(*store, ListFilter{}, c) == std::vector<std::string>{"key_keep"});

  // Without an expected version.
  KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_keep", std::nullopt));
  KEYGATE_EXPECT(ListAllIds(*store, ListFilter{}, c).empty());

  // The id and digests are free again; sequences keep growing.
  const std::uint64_t before = LastSeq(*store, c);
  KEYGATE_ASSERT_OK(SuiteInsert(*store, r));
  KEYGATE_EXPECT(LastSeq(*store, c) > before);
  absl::StatusOr<KeyRecord> again = store->Get("key_del");
  KEYGATE_ASSERT_OK(again);
  KEYGATE_EXPECT(again->version == 1);
  KEYGATE_ASSERT_OK(store->FindByDigest(r.previous->digest));
}

void FieldRoundTrip(const std::shared_ptr<KeyStore>& store, Checker& c) {
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
  full.sealed_token = "kge1." + std::string(300, 'A') + "-_9z";  // opaque text to a store
  full.sealed_webhook_secret = "kge1." + std::string(200, 'B') + "-_8y";
  KEYGATE_ASSERT_OK(SuiteInsert(*store, full));
  KeyRecord expected = full;
  expected.version = 1;
  absl::StatusOr<KeyRecord> got = store->Get("key_full");
  KEYGATE_ASSERT_OK(got);
  KEYGATE_EXPECT(*got == expected);
  KEYGATE_EXPECT(got->rate_limit == full.rate_limit);
  KEYGATE_EXPECT(got->previous == full.previous);
  KEYGATE_EXPECT(got->metadata == full.metadata);
  KEYGATE_EXPECT(got->accounts == full.accounts);
  // The same through every read path.
  absl::StatusOr<KeyRecord> by_digest = store->FindByDigest(full.digest);
  KEYGATE_ASSERT_OK(by_digest);
  KEYGATE_EXPECT(*by_digest == expected);
  ListOptions o;
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_ASSERT_OK(page);
  KEYGATE_ASSERT(page->keys.size() == 1);
  KEYGATE_EXPECT(page->keys[0] == expected);
  absl::StatusOr<ChangeBatch> changes = store->ChangesSince(0, 10);
  KEYGATE_ASSERT_OK(changes);
  KEYGATE_ASSERT(changes->changes.size() == 1);
  KEYGATE_ASSERT(changes->changes[0].record.has_value());
  KEYGATE_EXPECT(*changes->changes[0].record == expected);

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
  bare.sealed_token.clear();
  bare.sealed_webhook_secret.clear();
  absl::StatusOr<KeyRecord> updated = SuiteUpdate(*store, bare);
  KEYGATE_ASSERT_OK(updated);
  KeyRecord expected_bare = bare;
  expected_bare.version = 2;
  KEYGATE_EXPECT(*updated == expected_bare);
  got = store->Get("key_full");
  KEYGATE_ASSERT_OK(got);
  KEYGATE_EXPECT(*got == expected_bare);
  // A sealed token set by an update.
  KeyRecord sealed = *got;
  sealed.sealed_token = "kge1.second";
  sealed.sealed_webhook_secret = "kge1.secret";
  updated = SuiteUpdate(*store, sealed);
  KEYGATE_ASSERT_OK(updated);
  KEYGATE_EXPECT(updated->sealed_token == "kge1.second");
  KEYGATE_EXPECT(updated->sealed_webhook_secret == "kge1.secret");
  got = store->Get("key_full");
  KEYGATE_ASSERT_OK(got);
  KEYGATE_EXPECT(got->sealed_token == "kge1.second");
  KEYGATE_EXPECT(got->sealed_webhook_secret == "kge1.secret");

  // Sub-microsecond parts may be dropped (toward the past), nothing more.
  KeyRecord fine = MakeRecord("key_nanos");
  fine.created = BaseTime() + absl::Nanoseconds(999);
  fine.updated = BaseTime() + absl::Nanoseconds(1);
  fine.expires = BaseTime() + absl::Hours(1) + absl::Nanoseconds(500);
  fine.last_used = BaseTime() + absl::Nanoseconds(1001);
  fine.previous = RolledSecret{DigestFor("nanos old"), "x",
                               BaseTime() + absl::Seconds(1) + absl::Nanoseconds(999)};
  KEYGATE_ASSERT_OK(SuiteInsert(*store, fine));
  absl::StatusOr<KeyRecord> fine_got = store->Get("key_nanos");
  KEYGATE_ASSERT_OK(fine_got);
  KeyRecord fine_expected = fine;
  fine_expected.version = 1;
  KEYGATE_EXPECT(AtMicros(*fine_got) == AtMicros(fine_expected));
  KEYGATE_EXPECT(fine_got->created >= BaseTime());
  KEYGATE_EXPECT(fine_got->created <= fine.created);
}

void TouchLastUsed(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_touch_a")));
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_touch_b")));
  auto last = [&](const std::string& id) -> std::optional<absl::Time> {
    absl::StatusOr<KeyRecord> r = store->Get(id);
    if (!c.ExpectOk(r, absl::StrCat("Get ", id))) return std::optional<absl::Time>();
    return r->last_used;
  };
  const absl::Time t0 = BaseTime() + absl::Hours(1);
  // Sets a missing last_used; a key that does not exist is skipped.
  std::vector<LastUsedUpdate> first = {{"key_touch_a", t0}, {"key_missing", t0}};
  KEYGATE_ASSERT_OK(store->TouchLastUsed(first, absl::Minutes(1)));
  KEYGATE_EXPECT(last("key_touch_a") == TruncateToMicros(t0));
  KEYGATE_EXPECT_FALSE(last("key_touch_b").has_value());
  // Less than min_advance later: unchanged; earlier: never moves back.
  std::vector<LastUsedUpdate> small = {{"key_touch_a", t0 + absl::Seconds(59)}};
  KEYGATE_ASSERT_OK(store->TouchLastUsed(small, absl::Minutes(1)));
  KEYGATE_EXPECT(last("key_touch_a") == TruncateToMicros(t0));
  std::vector<LastUsedUpdate> back = {{"key_touch_a", t0 - absl::Hours(1)}};
  KEYGATE_ASSERT_OK(store->TouchLastUsed(back, absl::ZeroDuration()));
  KEYGATE_EXPECT(last("key_touch_a") == TruncateToMicros(t0));
  // At least min_advance later: moves; both keys in one call.
  std::vector<LastUsedUpdate> both = {{"key_touch_a", t0 + absl::Minutes(1)},
                                      {"key_touch_b", t0 + absl::Seconds(5)}};
  KEYGATE_ASSERT_OK(store->TouchLastUsed(both, absl::Minutes(1)));
  KEYGATE_EXPECT(last("key_touch_a") == TruncateToMicros(t0 + absl::Minutes(1)));
  KEYGATE_EXPECT(last("key_touch_b") == TruncateToMicros(t0 + absl::Seconds(5)));
  KEYGATE_ASSERT_OK(store->TouchLastUsed({}, absl::ZeroDuration()));
}

// For stores that override TouchLastUsed, as both bundled stores do (the
// default implementation is a Update per key): no version bump, no change,
// so a management change prepared before the touch still applies.
void TouchLastUsedIsNotAChange(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_touch")));
  absl::StatusOr<KeyRecord> before = store->Get("key_touch");
  KEYGATE_ASSERT_OK(before);
  absl::StatusOr<std::uint64_t> seq = store->LastSequence();
  KEYGATE_ASSERT_OK(seq);
  std::vector<LastUsedUpdate> u = {{"key_touch", BaseTime() + absl::Hours(2)}};
  KEYGATE_ASSERT_OK(store->TouchLastUsed(u, absl::ZeroDuration()));
  absl::StatusOr<KeyRecord> after = store->Get("key_touch");
  KEYGATE_ASSERT_OK(after);
  KEYGATE_EXPECT(after->version == before->version);
  KEYGATE_EXPECT(after->last_used == TruncateToMicros(BaseTime() + absl::Hours(2)));
  absl::StatusOr<std::uint64_t> seq_after = store->LastSequence();
  KEYGATE_ASSERT_OK(seq_after);
  KEYGATE_EXPECT(*seq_after == *seq);
  absl::StatusOr<ChangeBatch> changes = store->ChangesSince(*seq, 10);
  KEYGATE_ASSERT_OK(changes);
  KEYGATE_EXPECT(changes->changes.empty());
  KeyRecord renamed = *before;
  renamed.name = "renamed";
  KEYGATE_EXPECT(SuiteUpdate(*store, renamed).ok());
}

// What a client can observe of a store: its records, its change feed, its
// last sequence, and which key each of some digests finds.
struct Observation {
  std::vector<KeyRecord> records;
  std::vector<Change> changes;
  std::uint64_t last_sequence = 0;
  std::vector<std::string> digest_hits;  // per probe: "<id> v<version>" or the error code
};

std::optional<Observation> Observe(KeyStore& store, const std::vector<Digest>& probes, Checker& c,
                                   const std::string& what) {
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

bool SameChange(const Change& a, const Change& b) {
  return a.sequence == b.sequence && a.key_id == b.key_id && a.record == b.record;
}

// How `after` differs from `before`, one phrase per difference; empty when
// nothing a client can see changed.
std::vector<std::string> Differences(const Observation& before, const Observation& after) {
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

}  // namespace

// A failed write (an invalid id, a duplicate, a taken digest or personal
// slot, a stale version, a missing key) changes nothing: no record, no
// digest, no change-log entry, LastSequence unchanged. Each failing write
// also changes other fields, so a store that applies part of it is caught.
Findings CheckFailedWritesChangeNothing(const std::shared_ptr<KeyStore>& store,
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
    if (!c.ExpectOk(SuiteInsert(s, r), absl::StrCat("setup: Insert ", r.id))) return c.Take();
  }
  absl::StatusOr<KeyRecord> b1 = s.Get(b.id);
  if (!c.ExpectOk(b1, "setup: Get key_fw_b")) return c.Take();
  absl::StatusOr<KeyRecord> b2 = SuiteUpdate(s, *b1);  // b at version 2: version 1 is stale
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
  auto insert = [&](KeyRecord r) { return [&s, r] { return SuiteInsert(s, r); }; };
  auto update = [&](KeyRecord r) { return [&s, r] { return SuiteUpdate(s, r).status(); }; };
  auto del = [&](std::string id, std::optional<std::uint64_t> v) {
    return [&s, id, v] { return SuiteDelete(s, id, v); };
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

std::vector<Check> WriteChecks() {
  return {
      {"writes", "insert then get returns the record at version 1", false, Simple(InsertAndGet)},
      {"writes", "insert rejects a duplicate id", false, Simple(DuplicateId)},
      {"writes", "errors quote only generated key ids", false, Simple(ErrorsQuoteOnlyKeyIds)},
      {"writes", "current and rolled digests are unique across keys", false,
       Simple(DuplicateDigest)},
      {"writes", "one active personal key per owner and environment", false,
       Simple(PersonalUniqueness)},
      {"writes", "find by current and by rolled digest", false, Simple(FindByDigest)},
      {"writes", "update is a compare-and-set on the version", false, Simple(ConditionalUpdate)},
      {"writes", "delete removes the record and its digests", false, Simple(DeleteKey)},
      {"writes", "a failed write changes nothing", false, CheckFailedWritesChangeNothing},
      {"writes", "every record field round-trips", false, Simple(FieldRoundTrip)},
      {"writes", "touching last_used moves it forward only", false, Simple(TouchLastUsed)},
      {"writes", "touching last_used is not a change", false,
       IfPromised(&BackendHooks::touch_is_not_a_change, "BackendHooks::touch_is_not_a_change",
                  TouchLastUsedIsNotAChange)},
  };
}

}  // namespace keygate::conformance
