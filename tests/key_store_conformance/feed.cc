// The conformance suite, The change feed: order, convergence, reused ids, corrupt records.
// See suite.h.

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

void ChangeFeed(const std::shared_ptr<KeyStore>& store, Checker& c) {
  absl::StatusOr<ChangeBatch> empty = store->ChangesSince(0, 100);
  KEYGATE_ASSERT_OK(empty);
  KEYGATE_EXPECT(empty->changes.empty());
  KEYGATE_EXPECT_FALSE(empty->more);
  KEYGATE_EXPECT(empty->next_sequence == 0);
  KEYGATE_EXPECT(LastSeq(*store, c) == 0);

  // Every successful write moves the sequence strictly forward.
  std::uint64_t last = 0;
  auto advanced = [&] {
    const std::uint64_t now = LastSeq(*store, c);
    const bool ok = now > last;
    last = now;
    return ok;
  };
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_c1")));
  KEYGATE_EXPECT(advanced());
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_c2")));
  KEYGATE_EXPECT(advanced());
  const std::uint64_t after_two = last;
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_c3")));
  KEYGATE_EXPECT(advanced());
  absl::StatusOr<KeyRecord> c1 = store->Get("key_c1");
  KEYGATE_ASSERT_OK(c1);
  KeyRecord edit = *c1;
  edit.name = "c1 v2";
  KEYGATE_ASSERT_OK(SuiteUpdate(*store, edit));
  KEYGATE_EXPECT(advanced());
  KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_c2", std::nullopt));
  KEYGATE_EXPECT(advanced());

  // Since the start: every key, current state, deletes as nullopt.
  absl::StatusOr<ChangeBatch> all = store->ChangesSince(0, 100);
  KEYGATE_ASSERT_OK(all);
  KEYGATE_EXPECT_FALSE(all->more);
  KEYGATE_EXPECT(all->next_sequence == last);
  std::map<std::string, std::optional<KeyRecord>> latest;
  std::uint64_t prev = 0;
  for (const Change& ch : all->changes) {
    KEYGATE_EXPECT(ch.sequence > prev);
    KEYGATE_EXPECT(ch.sequence <= last);
    prev = ch.sequence;
    if (ch.record.has_value()) KEYGATE_EXPECT(ch.record->id == ch.key_id);
    latest[ch.key_id] = ch.record;
  }
  KEYGATE_ASSERT(latest.size() == 3);
  KEYGATE_ASSERT(latest["key_c1"].has_value());
  KEYGATE_EXPECT(latest["key_c1"]->name == "c1 v2");
  KEYGATE_EXPECT(latest["key_c1"]->version == 2);
  KEYGATE_EXPECT_FALSE(latest["key_c2"].has_value());
  KEYGATE_ASSERT(latest["key_c3"].has_value());
  // Each entry carries the CURRENT state, even for an early sequence.
  for (const Change& ch : all->changes) {
    if (ch.key_id == "key_c1") {
      KEYGATE_ASSERT(ch.record.has_value());
      KEYGATE_EXPECT(ch.record->name == "c1 v2");
    }
  }

  // Since a midpoint: only keys changed after it.
  absl::StatusOr<ChangeBatch> since = store->ChangesSince(after_two, 100);
  KEYGATE_ASSERT_OK(since);
  std::set<std::string> changed;
  for (const Change& ch : since->changes) {
    KEYGATE_EXPECT(ch.sequence > after_two);
    changed.insert(ch.key_id);
  }
  KEYGATE_EXPECT(changed == std::set<std::string>{"key_c1", "key_c2", "key_c3"});

  // Up to date: nothing, and next_sequence stays where it was.
  absl::StatusOr<ChangeBatch> none = store->ChangesSince(last, 100);
  KEYGATE_ASSERT_OK(none);
  KEYGATE_EXPECT(none->changes.empty());
  KEYGATE_EXPECT_FALSE(none->more);
  KEYGATE_EXPECT(none->next_sequence == last);

  // Limits: one entry per batch, `more` until the end.
  std::uint64_t cursor = 0;
  std::size_t batches = 0;
  std::map<std::string, std::optional<KeyRecord>> replayed;
  for (;;) {
    absl::StatusOr<ChangeBatch> b = store->ChangesSince(cursor, 1);
    KEYGATE_ASSERT_OK(b);
    KEYGATE_ASSERT(b->changes.size() <= 1);
    KEYGATE_ASSERT(b->next_sequence >= cursor);
    for (const Change& ch : b->changes) replayed[ch.key_id] = ch.record;
    ++batches;
    KEYGATE_ASSERT(batches < 100);
    if (!b->more) {
      KEYGATE_EXPECT(b->next_sequence == last);
      break;
    }
    KEYGATE_ASSERT(b->changes.size() == 1);
    KEYGATE_ASSERT(b->next_sequence > cursor);
    cursor = b->next_sequence;
  }
  KEYGATE_EXPECT(replayed == latest);
}

// A replica that follows the feed in small batches converges on the store.
void ChangeFeedConverges(const std::shared_ptr<KeyStore>& store, Checker& c) {
  std::map<std::string, KeyRecord> replica;
  std::uint64_t cursor = 0;
  auto sync = [&] {
    for (int guard = 0; guard < 1000; ++guard) {
      absl::StatusOr<ChangeBatch> b = store->ChangesSince(cursor, 3);
      KEYGATE_ASSERT_OK(b);
      for (const Change& ch : b->changes) {
        if (ch.record.has_value()) {
          replica[ch.key_id] = *ch.record;
        } else {
          replica.erase(ch.key_id);
        }
      }
      cursor = b->next_sequence;
      if (!b->more) return;
    }
    c.Violation("the change feed did not end");
  };
  auto check = [&] {
    ListOptions o;
    o.limit = kMaxListLimit;
    absl::StatusOr<ListPage> page = store->List(o);
    KEYGATE_ASSERT_OK(page);
    std::map<std::string, KeyRecord> truth;
    for (KeyRecord& r : page->keys) truth[r.id] = r;
    KEYGATE_EXPECT(replica == truth);
  };
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 5; ++i) {
      KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord(absl::StrCat("key_r", round, "_", i))));
    }
    if (round > 0) {
      const std::string prev = absl::StrCat("key_r", round - 1, "_");
      KEYGATE_ASSERT_OK(SuiteDelete(*store, prev + "0", std::nullopt));
      for (int rep = 0; rep < 3; ++rep) {
        absl::StatusOr<KeyRecord> r = store->Get(prev + "1");
        KEYGATE_ASSERT_OK(r);
        KeyRecord e = *r;
        e.name = absl::StrCat("edit ", rep);
        KEYGATE_ASSERT_OK(SuiteUpdate(*store, e));
      }
    }
    sync();
    check();
  }
}

// An id deleted and inserted again (an import re-run) is still one key in
// the feed: one entry, its latest state, however often it came and went.
void ChangeFeedOneEntryForReusedId(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_other")));
  const std::uint64_t start = LastSeq(*store, c);
  for (int i = 0; i < 3; ++i) {
    KeyRecord r = MakeRecord("key_reused");
    r.digest = DigestFor(absl::StrCat("key_reused #", i));
    KEYGATE_ASSERT_OK(SuiteInsert(*store, r));
    KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_reused", std::nullopt));
  }
  for (const std::uint64_t from : {std::uint64_t{0}, start}) {
    absl::StatusOr<ChangeBatch> b = store->ChangesSince(from, 100);
    KEYGATE_ASSERT_OK(b);
    std::vector<std::string> ids;
    for (const Change& ch : b->changes) {
      ids.push_back(ch.key_id);
      if (ch.key_id == "key_reused") KEYGATE_EXPECT_FALSE(ch.record.has_value());
    }
    if (from == 0) {
      KEYGATE_EXPECT(ids == std::vector<std::string>{"key_other", "key_reused"});
    } else {
      KEYGATE_EXPECT(ids == std::vector<std::string>{"key_reused"});
    }
    KEYGATE_EXPECT(b->next_sequence == LastSeq(*store, c));
  }
  // Back again: one entry, live.
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_reused")));
  absl::StatusOr<ChangeBatch> b = store->ChangesSince(start, 100);
  KEYGATE_ASSERT_OK(b);
  KEYGATE_ASSERT(b->changes.size() == 1);
  KEYGATE_EXPECT(b->changes[0].key_id == "key_reused");
  KEYGATE_EXPECT(b->changes[0].record.has_value());
}

}  // namespace

// A corrupt record (stored state the backend cannot decode): Get,
// FindByDigest (current and rolled digest) and a List whose page holds it
// answer kDataLoss; the change feed delivers the key as deleted (failing
// closed) and keeps going past it; other keys read as before.
Findings CheckCorruptRecord(const std::shared_ptr<KeyStore>& store, const BackendHooks& hooks) {
  Checker c;
  if (!hooks.corrupt_record) {
    c.NotApplicable("the backend gives no BackendHooks::corrupt_record");
    return c.Take();
  }
  KeyStore& s = *store;
  KeyRecord bad = MakeRecord("key_cr_b", "alice", "production", KeyKind::kGeneral, "bravo");
  bad.previous = RolledSecret{DigestFor("key_cr_b old"), "x", BaseTime() + absl::Hours(1)};
  for (const KeyRecord& r : {MakeRecord("key_cr_a"), bad, MakeRecord("key_cr_c")}) {
    if (!c.ExpectOk(SuiteInsert(s, r), absl::StrCat("setup: Insert ", r.id))) return c.Take();
  }
  absl::StatusOr<std::uint64_t> applied = s.LastSequence();
  absl::StatusOr<KeyRecord> b1 = s.Get(bad.id);
  if (!c.ExpectOk(applied, "setup: LastSequence") || !c.ExpectOk(b1, "setup: Get key_cr_b")) {
    return c.Take();
  }
  KeyRecord renamed = *b1;
  renamed.name = "bravo renamed";
  if (!c.ExpectOk(SuiteUpdate(s, renamed), "setup: Update key_cr_b") ||
      !c.ExpectOk(hooks.corrupt_record(s, bad.id), "BackendHooks::corrupt_record(key_cr_b)")) {
    return c.Take();
  }
  // A change after the corrupt one: the feed must reach it.
  absl::StatusOr<KeyRecord> c1 = s.Get("key_cr_c");
  if (!c.ExpectOk(c1, "Get key_cr_c")) return c.Take();
  KeyRecord revoked = *c1;
  revoked.state = KeyState::kRevoked;
  if (!c.ExpectOk(SuiteUpdate(s, revoked), "Update key_cr_c after the corruption")) return c.Take();

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

std::vector<Check> FeedChecks() {
  return {
      {"feed", "change feed reports current state in sequence order", false, Simple(ChangeFeed)},
      {"feed", "a replica following the change feed converges", false, Simple(ChangeFeedConverges)},
      {"feed", "the change feed lists a deleted and reinserted id once", false,
       Simple(ChangeFeedOneEntryForReusedId)},
      {"feed", "a corrupt record reads as data loss and as deleted in the feed", false,
       CheckCorruptRecord},
  };
}

}  // namespace keygate::conformance
