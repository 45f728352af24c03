// Stores written to break the KeyStore contract, one mistake each, and the
// conformance check that must catch it: proof that the suite's checks can
// fail (key_store_conformance.h). Each store wraps a MemoryKeyStore; the
// faithful wrapper passes every check, so a finding is the mistake's.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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
#include "absl/strings/str_join.h"

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/memory_key_store.h"
#include "test_util.h"

namespace keygate {
namespace {

using conformance::BackendHooks;
using conformance::Findings;

// Forwards everything to a MemoryKeyStore, TouchLastUsed included.
class PassThrough : public testing::ForwardingStore {
 public:
  PassThrough() : ForwardingStore(std::make_shared<MemoryKeyStore>()) {}
  absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                             absl::Duration min_advance) override {
    return inner().TouchLastUsed(updates, min_advance);
  }
};

// The hooks MemoryKeyStore's own conformance test gives.
BackendHooks MemoryHooks() {
  BackendHooks hooks;
  hooks.cursor_for = [](std::string_view id) { return absl::StrCat("id:", std::string(id)); };
  hooks.malformed_cursors = {"id:", "id", "ID:key_hc14"};
  return hooks;
}

// The check found a violation whose text holds `text`.
void RequireCaught(const Findings& f, const std::string& text) {
  INFO("violations:\n" << absl::StrJoin(f.violations, "\n"));
  REQUIRE_FALSE(f.violations.empty());
  bool found = false;
  for (const std::string& v : f.violations) found = found || absl::StrContains(v, text);
  CHECK(found);
}

// (a) Writes a change-log entry even when the write fails (a log row
// written before the checks, outside the transaction): here, the entry of a
// key inserted and deleted at once, so no record changes.
class AppendsOnFailedWrite final : public PassThrough {
 public:
  absl::Status Insert(const KeyRecord& r, const AuditNote& note) override {
    return Logged(PassThrough::Insert(r, note));
  }
  absl::StatusOr<KeyRecord> Update(const KeyRecord& r, const AuditNote& note) override {
    absl::StatusOr<KeyRecord> s = PassThrough::Update(r, note);
    (void)Logged(s.status());
    return s;
  }
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> v,
                      const AuditNote& note) override {
    return Logged(PassThrough::Delete(id, v, note));
  }

 private:
  absl::Status Logged(absl::Status s) {
    if (!s.ok()) {
      KeyRecord phantom = conformance::MakeRecord(absl::StrCat("key_zz_log", next_.fetch_add(1)));
      if (inner().Insert(phantom, keygate::testing::CreatedNote()).ok())
        (void)inner().Delete(phantom.id, std::nullopt, keygate::testing::DeletedNote());
    }
    return s;
  }
  std::atomic<int> next_{0};
};

// (b1) An update of a missing key creates it (an upsert), though it still
// answers kNotFound.
class UpsertsOnUpdate final : public PassThrough {
 public:
  absl::StatusOr<KeyRecord> Update(const KeyRecord& r, const AuditNote& note) override {
    absl::StatusOr<KeyRecord> s = PassThrough::Update(r, note);
    if (s.status().code() == absl::StatusCode::kNotFound)
      (void)inner().Insert(r, keygate::testing::CreatedNote());
    return s;
  }
};

// (b2) An update refused for a conflict or a taken digest or personal slot
// still writes the fields it could (columns written before the uniqueness
// check, not rolled back).
class PartialUpdateOnFailure final : public PassThrough {
 public:
  absl::StatusOr<KeyRecord> Update(const KeyRecord& r, const AuditNote& note) override {
    absl::StatusOr<KeyRecord> s = PassThrough::Update(r, note);
    const absl::StatusCode code = s.status().code();
    if (code == absl::StatusCode::kAborted || code == absl::StatusCode::kAlreadyExists) {
      absl::StatusOr<KeyRecord> cur = inner().Get(r.id);
      if (cur.ok()) {
        KeyRecord partial = *cur;
        partial.name = r.name;
        partial.description = r.description;
        (void)inner().Update(partial, keygate::testing::ModifiedNote());
      }
    }
    return s;
  }
};

// (c1) A cursor it cannot parse starts from the beginning.
class ForgivesBadCursor final : public PassThrough {
 public:
  absl::StatusOr<ListPage> List(const ListOptions& o) override {
    absl::StatusOr<ListPage> page = PassThrough::List(o);
    if (page.status().code() != absl::StatusCode::kInvalidArgument || o.cursor.empty()) return page;
    ListOptions from_start = o;
    from_start.cursor.clear();
    return PassThrough::List(from_start);
  }
};

// (c2) Decodes a cursor one byte short, so it resumes after an earlier id
// (and returns keys twice).
class CursorOffByOne final : public PassThrough {
 public:
  absl::StatusOr<ListPage> List(const ListOptions& o) override {
    ListOptions shifted = o;
    if (shifted.cursor.size() > 4) shifted.cursor.pop_back();
    return PassThrough::List(shifted);
  }
};

// (d) A store that can hold corrupt records (marked through the hook);
// faithful unless told to get one of the corrupt-record rules wrong.
struct CorruptionBugs {
  bool get_serves_it = false;     // Get returns the record (its last good state)
  bool find_serves_it = false;    // FindByDigest returns it
  bool list_skips_it = false;     // List leaves it out of the page, no error
  bool feed_stops_at_it = false;  // ChangesSince fails at it
  bool feed_serves_it = false;    // ChangesSince delivers the record, not a delete
};

class CorruptibleStore final : public PassThrough {
 public:
  explicit CorruptibleStore(CorruptionBugs bugs = {}) : bugs_(bugs) {}

  static BackendHooks Hooks() {
    BackendHooks hooks = MemoryHooks();
    hooks.corrupt_record = [](KeyStore& store, std::string_view id) {
      static_cast<CorruptibleStore&>(store).Corrupt(id);
      return absl::OkStatus();
    };
    return hooks;
  }

  absl::StatusOr<KeyRecord> Get(std::string_view id) override {
    absl::StatusOr<KeyRecord> r = PassThrough::Get(id);
    if (r.ok() && IsCorrupt(r->id) && !bugs_.get_serves_it) return Loss(r->id);
    return r;
  }
  absl::StatusOr<KeyRecord> FindByDigest(const Digest& d) override {
    absl::StatusOr<KeyRecord> r = PassThrough::FindByDigest(d);
    if (r.ok() && IsCorrupt(r->id) && !bugs_.find_serves_it) return Loss(r->id);
    return r;
  }
  absl::StatusOr<ListPage> List(const ListOptions& o) override {
    absl::StatusOr<ListPage> page = PassThrough::List(o);
    if (!page.ok()) return page;
    std::vector<KeyRecord> kept;
    for (KeyRecord& r : page->keys) {
      if (!IsCorrupt(r.id)) {
        kept.push_back(std::move(r));
      } else if (!bugs_.list_skips_it) {
        return Loss(r.id);
      }
    }
    page->keys = std::move(kept);
    return page;
  }
  absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) override {
    absl::StatusOr<ChangeBatch> b = PassThrough::ChangesSince(after, limit);
    if (!b.ok()) return b;
    for (Change& c : b->changes) {
      if (!c.record.has_value() || !IsCorrupt(c.key_id)) continue;
      if (bugs_.feed_stops_at_it) return Loss(c.key_id);
      if (!bugs_.feed_serves_it) c.record.reset();
    }
    return b;
  }

 private:
  void Corrupt(std::string_view id) {
    std::lock_guard<std::mutex> lock(mu_);
    corrupt_.emplace(id);
  }
  bool IsCorrupt(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return corrupt_.count(id) > 0;
  }
  static absl::Status Loss(const std::string& id) {
    return absl::DataLossError(absl::StrCat("key ", id, ": corrupt record"));
  }

  const CorruptionBugs bugs_;
  std::mutex mu_;
  std::set<std::string> corrupt_;
};

// (e1) Hands out a next_sequence one short, so the last change of each
// batch comes again in the next.
class FeedRepeatsLastChange final : public PassThrough {
 public:
  absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) override {
    absl::StatusOr<ChangeBatch> b = PassThrough::ChangesSince(after, limit);
    if (b.ok() && !b->changes.empty()) b->next_sequence = b->changes.back().sequence - 1;
    return b;
  }
};

// (e2) Destroying a Subscription does not unsubscribe: the callback keeps
// running until the store goes.
class LeaksSubscriptions final : public PassThrough {
 public:
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::function<void()> cb) override {
    absl::StatusOr<std::unique_ptr<Subscription>> sub = PassThrough::Subscribe(std::move(cb));
    if (!sub.ok()) return sub;
    std::lock_guard<std::mutex> lock(mu_);
    kept_.push_back(*std::move(sub));
    return std::unique_ptr<Subscription>(std::make_unique<Subscription>());
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Subscription>> kept_;
};

// (e3) Touches by rewriting the whole record it read first, retrying a
// conflict with the newer version but its older copy, over the concurrent
// change (what key_store.h's default TouchLastUsed must not do). It waits
// for such a change, so the race is met on every touch.
class TouchOverwritesUpdates final : public PassThrough {
 public:
  absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                             absl::Duration /*min_advance*/) override {
    for (const LastUsedUpdate& u : updates) {
      absl::StatusOr<KeyRecord> read = inner().Get(u.key_id);
      if (!read.ok()) continue;
      KeyRecord r = *read;
      r.last_used = u.last_used;
      for (int i = 0; i < 5'000; ++i) {  // a hang guard; the change comes at once
        absl::StatusOr<KeyRecord> cur = inner().Get(u.key_id);
        if (!cur.ok() || cur->version != read->version) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      for (int tries = 0; tries < 100; ++tries) {
        absl::StatusOr<KeyRecord> cur = inner().Get(u.key_id);
        if (!cur.ok()) break;
        r.version = cur->version;
        if (inner().Update(r, keygate::testing::ModifiedNote()).ok()) break;
      }
    }
    return absl::OkStatus();
  }
};

TEST_CASE("The faithful wrappers pass every findings check", "[broken][store][concurrent]") {
  const BackendHooks hooks = MemoryHooks();
  conformance::RequireNoFindings(
      conformance::CheckFailedWritesChangeNothing(std::make_shared<PassThrough>(), hooks));
  conformance::RequireNoFindings(
      conformance::CheckHandBuiltCursors(std::make_shared<PassThrough>(), hooks));
  conformance::RequireNoFindings(
      conformance::CheckConcurrentReadersAndWriters(std::make_shared<PassThrough>(), hooks));
  // A corruptible store that follows the rules passes the corrupt-record
  // check, and without the hook the check does not apply: reported as such,
  // not as passed.
  const Findings corrupt = conformance::CheckCorruptRecord(std::make_shared<CorruptibleStore>(),
                                                           CorruptibleStore::Hooks());
  conformance::RequireNoFindings(corrupt);
  CHECK(corrupt.skipped.empty());
  CHECK(conformance::OutcomeOf(corrupt) == conformance::Outcome::kPassed);
  const Findings skipped =
      conformance::CheckCorruptRecord(std::make_shared<CorruptibleStore>(), hooks);
  CHECK(skipped.violations.empty());
  CHECK(conformance::OutcomeOf(skipped) == conformance::Outcome::kNotApplicable);
  CHECK_THAT(skipped.not_applicable, Catch::Contains("corrupt_record"));
}

TEST_CASE("A store that logs a failed write fails the failed-write check", "[broken][store]") {
  const Findings f = conformance::CheckFailedWritesChangeNothing(
      std::make_shared<AppendsOnFailedWrite>(), MemoryHooks());
  RequireCaught(f, "Insert with an empty id failed but changed the store: LastSequence moved");
  RequireCaught(f, "Update of a missing key failed but changed the store: LastSequence moved");
  RequireCaught(f, "Delete with a stale version failed but changed the store: the change feed");
}

TEST_CASE("A store that creates a key on a failed update fails the failed-write check",
          "[broken][store]") {
  const Findings f = conformance::CheckFailedWritesChangeNothing(
      std::make_shared<UpsertsOnUpdate>(), MemoryHooks());
  RequireCaught(f,
                "Update of a missing key failed but changed the store: key key_fw_missing "
                "appeared");
}

TEST_CASE("A store that writes part of a failed update fails the failed-write check",
          "[broken][store]") {
  const Findings f = conformance::CheckFailedWritesChangeNothing(
      std::make_shared<PartialUpdateOnFailure>(), MemoryHooks());
  RequireCaught(f,
                "Update with a stale version failed but changed the store: key key_fw_b changed");
  RequireCaught(f,
                "Update taking another key's rolled digest failed but changed the store: key "
                "key_fw_g changed");
  RequireCaught(f, "Update restoring a second active personal key failed but changed the store");
}

TEST_CASE("A store that forgives a malformed cursor fails the cursor check", "[broken][store]") {
  const Findings f =
      conformance::CheckHandBuiltCursors(std::make_shared<ForgivesBadCursor>(), MemoryHooks());
  RequireCaught(f, "List with the malformed cursor \"%%not a cursor%%\"");
  RequireCaught(f, "List with the malformed cursor \"id:\"");
}

TEST_CASE("A store that resumes a cursor at the wrong id fails the cursor check",
          "[broken][store]") {
  const Findings f =
      conformance::CheckHandBuiltCursors(std::make_shared<CursorOffByOne>(), MemoryHooks());
  RequireCaught(f, "a hand-built cursor naming key_hc14 limit 100 gave");
  RequireCaught(f, "the store's cursor after key_hc14 with another filter gave");
}

TEST_CASE("Stores that serve a corrupt record fail the corrupt-record check", "[broken][store]") {
  struct Variant {
    const char* what;
    bool CorruptionBugs::*bug;
    const char* caught;
  };
  const Variant variants[] = {
      {"Get serves it", &CorruptionBugs::get_serves_it,
       "Get of the corrupt key: expected DATA_LOSS"},
      {"FindByDigest serves it", &CorruptionBugs::find_serves_it,
       "FindByDigest of the corrupt key's rolled digest: expected DATA_LOSS"},
      {"List skips it", &CorruptionBugs::list_skips_it,
       "List of a page holding the corrupt key: expected DATA_LOSS"},
      {"the feed stops at it", &CorruptionBugs::feed_stops_at_it,
       "ChangesSince over the corrupt key"},
      {"the feed serves it", &CorruptionBugs::feed_serves_it,
       "the feed delivers the corrupt key with a record"},
  };
  for (const Variant& v : variants) {
    INFO(v.what);
    CorruptionBugs bugs;
    bugs.*v.bug = true;
    RequireCaught(conformance::CheckCorruptRecord(std::make_shared<CorruptibleStore>(bugs),
                                                  CorruptibleStore::Hooks()),
                  v.caught);
  }
}

TEST_CASE("A feed that repeats a change fails the concurrent check",
          "[broken][store][concurrent]") {
  RequireCaught(conformance::CheckConcurrentReadersAndWriters(
                    std::make_shared<FeedRepeatsLastChange>(), MemoryHooks()),
                "(not strictly increasing)");
}

TEST_CASE("A subscription that outlives its destruction fails the concurrent check",
          "[broken][store][concurrent]") {
  RequireCaught(conformance::CheckConcurrentReadersAndWriters(
                    std::make_shared<LeaksSubscriptions>(), MemoryHooks()),
                "ran after the Subscription was destroyed");
}

TEST_CASE("A touch that overwrites a concurrent update fails the concurrent check",
          "[broken][store][concurrent]") {
  RequireCaught(conformance::CheckConcurrentReadersAndWriters(
                    std::make_shared<TouchOverwritesUpdates>(), MemoryHooks()),
                "an update was lost to a touch");
}

TEST_CASE("Pages that repeat keys under writes fail the concurrent check",
          "[broken][store][concurrent]") {
  RequireCaught(conformance::CheckConcurrentReadersAndWriters(std::make_shared<CursorOffByOne>(),
                                                              MemoryHooks()),
                "out of order or twice");
}

}  // namespace
}  // namespace keygate
