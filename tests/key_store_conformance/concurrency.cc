// The conformance suite, Concurrent writers and readers.
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

void ConcurrentWriters(const std::shared_ptr<KeyStore>& store, Checker& c) {
  const int threads = 4;
  const int per_thread = StressEnabled() ? 500 : 40;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const std::string id = absl::StrCat("key_t", t, "_", 1000 + i);
        if (!SuiteInsert(*store, MakeRecord(id, absl::StrCat("owner", t))).ok()) failures++;
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
        if (!SuiteUpdate(*store, e).ok()) failures++;
        if (i % 5 == 0 && !SuiteDelete(*store, id, 2).ok()) failures++;
      }
    });
  }
  for (std::thread& th : pool) th.join();
  KEYGATE_ASSERT(failures.load() == 0);

  const int deleted_per_thread = (per_thread + 4) / 5;
  const int survivors = threads * (per_thread - deleted_per_thread);
  const int writes = threads * (2 * per_thread + deleted_per_thread);
  std::vector<std::string> ids = ListAllIds(*store, ListFilter{}, c);
  KEYGATE_EXPECT(ids.size() == static_cast<std::size_t>(survivors));
  KEYGATE_EXPECT(LastSeq(*store, c) >= static_cast<std::uint64_t>(writes));
  ListOptions o;
  o.limit = kMaxListLimit;
  for (;;) {
    absl::StatusOr<ListPage> page = store->List(o);
    KEYGATE_ASSERT_OK(page);
    for (const KeyRecord& r : page->keys) {
      KEYGATE_EXPECT(r.version == 2);
      KEYGATE_EXPECT(r.name.rfind("updated ", 0) == 0);
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
    KEYGATE_ASSERT_OK(b);
    for (const Change& ch : b->changes) {
      KEYGATE_ASSERT(ch.sequence > prev);
      prev = ch.sequence;
      fed.insert(ch.key_id);
    }
    cursor = b->next_sequence;
    if (!b->more) break;
  }
  KEYGATE_EXPECT(fed.size() == static_cast<std::size_t>(threads * per_thread));
}

void ConcurrentCompareAndSet(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KeyRecord r = MakeRecord("key_counter");
  r.metadata["n"] = "0";
  KEYGATE_ASSERT_OK(SuiteInsert(*store, r));
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
          absl::StatusOr<KeyRecord> stored = SuiteUpdate(*store, next);
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
  KEYGATE_ASSERT(errors.load() == 0);
  absl::StatusOr<KeyRecord> final_state = store->Get("key_counter");
  KEYGATE_ASSERT_OK(final_state);
  // No lost update: every successful CAS saw the previous one.
  KEYGATE_EXPECT(final_state->metadata.at("n") == std::to_string(threads * increments));
  KEYGATE_EXPECT(final_state->version == static_cast<std::uint64_t>(threads * increments + 1));
}

}  // namespace

// Readers while writers write: List pages (no key twice or out of order, no
// key that stayed throughout missing), a change-feed follower (sequences
// strictly increasing across batches, converging on the store), subscribers
// coming and going (no callback after its Subscription was destroyed), and
// TouchLastUsed on keys under compare-and-set (no update lost to a touch).
Findings CheckConcurrentReadersAndWriters(const std::shared_ptr<KeyStore>& store,
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
    if (!c.ExpectOk(SuiteInsert(s, MakeRecord(stable.back())), "setup: Insert")) return c.Take();
  }
  KeyRecord counter = MakeRecord("key_counter");
  counter.metadata["n"] = "0";
  if (!c.ExpectOk(SuiteInsert(s, counter), "setup: Insert key_counter")) return c.Take();

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
      absl::StatusOr<KeyRecord> stored = SuiteUpdate(s, next);
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
        if (!c.ExpectOk(SuiteInsert(s, MakeRecord(mine.back(), absl::StrCat("writer", t))),
                        "writer: Insert")) {
          break;
        }
        cas(
            mine.back(), [](KeyRecord& r) { r.description = "updated"; }, "writer");
        cas(
            stable[(i + t) % stable_keys],
            [i](KeyRecord& r) { r.name = absl::StrCat("renamed ", i); }, "writer");
        if (mine.size() > 3) {
          c.ExpectOk(SuiteDelete(s, mine[mine.size() - 4], std::nullopt), "writer: Delete");
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
  c.ExpectOk(SuiteInsert(s, MakeRecord("key_m_last")), "Insert after the threads ended");
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

std::vector<Check> ConcurrencyChecks() {
  return {
      {"concurrency", "concurrent writers are all accounted for", true, Simple(ConcurrentWriters)},
      {"concurrency", "concurrent compare-and-set loses no update", true,
       Simple(ConcurrentCompareAndSet)},
      {"concurrency", "readers and subscribers and touches stay consistent under writes", true,
       CheckConcurrentReadersAndWriters},
  };
}

}  // namespace keygate::conformance
