// The conformance suite, Subscriptions: after commit, destruction, writes waiting for rounds.
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

void Subscriptions(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KeyStore* raw = store.get();
  std::atomic<int> calls{0};
  std::atomic<bool> inserted{false};
  std::atomic<int> saw_insert{0};
  std::atomic<int> missed{0};
  const std::thread::id writer = std::this_thread::get_id();
  auto sub = store->Subscribe([&] {
    // Called without store locks held: reading the store must work, and must already show the
    // change being reported. A store may also wake its subscribers with no change (a poll, a
    // reconnect, on its own thread), so a callback on another thread while the insert is under
    // way may not see it; one on the writing thread (the insert's own notification) or one
    // that starts after the insert returned must.
    const bool must_see = inserted.load() || std::this_thread::get_id() == writer;
    const bool seen = raw->Get("key_sub1").ok();
    if (seen) saw_insert.fetch_add(1);
    if (must_see && !seen) missed.fetch_add(1);
    calls.fetch_add(1);
  });
  KEYGATE_ASSERT_OK(sub);
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_sub1")));
  inserted.store(true);
  // The insert's own notification shows it (a store that notified only before its commit
  // never gets here).
  KEYGATE_EXPECT(WaitFor([&] { return saw_insert.load() > 0; }, absl::Seconds(10)));
  KEYGATE_EXPECT(missed.load() == 0);

  // Another write, another call (possibly coalesced, never lost).
  const int before = calls.load();
  absl::StatusOr<KeyRecord> r = store->Get("key_sub1");
  KEYGATE_ASSERT_OK(r);
  KeyRecord e = *r;
  e.name = "changed";
  KEYGATE_ASSERT_OK(SuiteUpdate(*store, e));
  KEYGATE_EXPECT(WaitFor([&] { return calls.load() > before; }));

  // Two subscribers are both told.
  std::atomic<int> other{0};
  auto sub2 = store->Subscribe([&] { other.fetch_add(1); });
  KEYGATE_ASSERT_OK(sub2);
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_sub2")));
  KEYGATE_EXPECT(WaitFor([&] { return other.load() > 0; }));

  // Destroyed: never called again.
  sub->reset();
  const int frozen = calls.load();
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_sub3")));
  const int other_before = other.load();
  KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_sub3", std::nullopt));
  KEYGATE_EXPECT(WaitFor([&] { return other.load() > other_before; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  KEYGATE_EXPECT(calls.load() == frozen);
}

void SubscriptionDestructorWaitsForCallback(const std::shared_ptr<KeyStore>& store, Checker& c) {
  std::atomic<bool> in_callback{false};
  std::atomic<int> entered{0};
  auto sub = store->Subscribe([&] {
    in_callback.store(true);
    entered.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    in_callback.store(false);
  });
  KEYGATE_ASSERT_OK(sub);
  std::atomic<bool> insert_ok{false};
  std::thread writer([&] { insert_ok.store(SuiteInsert(*store, MakeRecord("key_wait")).ok()); });
  const bool entered_in_time = WaitFor([&] { return entered.load() > 0; });
  sub->reset();  // must block until the running callback has returned
  const bool still_running = in_callback.load();
  writer.join();
  KEYGATE_ASSERT(insert_ok.load());
  KEYGATE_ASSERT(entered_in_time);
  KEYGATE_EXPECT_FALSE(still_running);
}

// A write returns only after its subscribers have seen it, even when a
// callback round (started by an earlier write) is still running on another
// thread: the writer waits for a round that starts after its commit. Not part
// of key_store.h's contract (a remote store could not promise it): it applies
// to backends that promise it (BackendHooks::writes_wait_for_subscribers).
void WriteWaitsForRunningCallback(const std::shared_ptr<KeyStore>& store, Checker& c) {
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
  KEYGATE_ASSERT_OK(sub);
  std::atomic<bool> first_ok{false};
  std::thread first([&] { first_ok.store(SuiteInsert(*store, MakeRecord("key_first")).ok()); });
  bool entered = false;
  {
    std::unique_lock<std::mutex> lock(mu);
    entered = cv.wait_for(lock, std::chrono::seconds(60), [&] { return rounds > 0; });
  }
  std::atomic<bool> second_returned{false};
  bool second_ok = false;
  bool seen_at_return = false;
  std::thread second([&] {
    second_ok = SuiteInsert(*store, MakeRecord("key_second")).ok();
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
  KEYGATE_ASSERT(entered);
  KEYGATE_ASSERT(first_ok.load());
  KEYGATE_ASSERT(second_ok);
  KEYGATE_EXPECT_FALSE(returned_early);
  KEYGATE_EXPECT(seen_at_return);
}

// Two callbacks held at once on two threads, each writing to the store (a
// callback may use the store): a store whose writes wait for subscriber
// rounds must not make a write from inside a callback wait for a round on
// another thread, whose callback may be waiting for it. The shared state
// lives on the heap, so that threads left deadlocked by a broken store hold
// nothing of this frame.
void CallbacksWritingOnTwoThreads(const std::shared_ptr<KeyStore>& store, Checker& c) {
  struct Shared {
    std::shared_ptr<KeyStore> store;
    std::mutex mu;
    std::condition_variable cv;
    bool x_entered = false;
    bool y_entered = false;
    bool y_done = false;
    bool gave_up = false;  // this store called the subscribers in another order
    int writers_done = 0;
    std::vector<std::string> failed;  // writes that failed
    // Last, so destroyed first: the callbacks use the members above.
    std::unique_ptr<Subscription> x;
    std::unique_ptr<Subscription> y;

    void Write(const std::string& id) {
      const absl::Status w = SuiteInsert(*store, MakeRecord(id));
      std::lock_guard<std::mutex> lock(mu);
      if (!w.ok()) failed.push_back(absl::StrCat("Insert ", id, ": ", w.ToString()));
    }
  };
  auto sh = std::make_shared<Shared>();
  sh->store = store;
  Shared* s = sh.get();
  // x writes from its callback once y is held on another thread.
  absl::StatusOr<std::unique_ptr<Subscription>> x = store->Subscribe([s] {
    {
      std::lock_guard<std::mutex> lock(s->mu);
      if (!s->y_entered || s->x_entered) return;
      s->x_entered = true;
      s->cv.notify_all();
    }
    s->Write("key_dl_x");
  });
  // y, on its first call, waits for x's callback, then writes.
  absl::StatusOr<std::unique_ptr<Subscription>> y = store->Subscribe([s] {
    {
      std::unique_lock<std::mutex> lock(s->mu);
      if (s->y_entered) return;
      s->y_entered = true;
      s->cv.notify_all();
      if (!s->cv.wait_for(lock, std::chrono::seconds(10), [&] { return s->x_entered; })) {
        s->gave_up = true;
        return;
      }
    }
    s->Write("key_dl_y");
  });
  KEYGATE_ASSERT_OK(x);
  KEYGATE_ASSERT_OK(y);
  sh->x = *std::move(x);
  sh->y = *std::move(y);

  auto writer = [sh](const std::string& id) {
    return std::thread([sh, id] {
      sh->Write(id);
      std::lock_guard<std::mutex> lock(sh->mu);
      ++sh->writers_done;
      sh->cv.notify_all();
    });
  };
  std::thread second = writer("key_dl_a");  // y's round, held until x's callback runs
  bool arranged = false;
  {
    std::unique_lock<std::mutex> lock(sh->mu);
    arranged = sh->cv.wait_for(lock, std::chrono::seconds(60), [&] { return sh->y_entered; });
  }
  std::thread first = writer("key_dl_b");  // x's round: writes while y is held
  bool finished = false;
  {
    std::unique_lock<std::mutex> lock(sh->mu);
    finished =
        sh->cv.wait_for(lock, std::chrono::minutes(2), [&] { return sh->writers_done == 2; });
  }
  if (!finished) {
    c.Violation(
        "two subscriber callbacks, each writing to the store from its own thread, deadlocked "
        "(a write from inside a callback must not wait for a round on another thread)");
    // They hold only `sh`, which they keep alive.
    first.detach();
    second.detach();
    return;
  }
  first.join();
  second.join();
  KEYGATE_EXPECT(arranged);
  std::lock_guard<std::mutex> lock(sh->mu);
  for (const std::string& f : sh->failed) c.Violation(f);
  if (sh->gave_up) {
    c.Skip(
        "two callbacks at once: this store did not call the second subscriber's callback "
        "while the first one's was held");
  }
}

}  // namespace

std::vector<Check> SubscriptionChecks() {
  return {
      {"subscriptions", "subscriptions fire after commit and stop when destroyed", false,
       Simple(Subscriptions)},
      {"subscriptions", "destroying a subscription waits for its running callback", true,
       Simple(SubscriptionDestructorWaitsForCallback)},
      {"subscriptions", "a write waits for a callback already running on another thread", true,
       IfPromised(&BackendHooks::writes_wait_for_subscribers,
                  "BackendHooks::writes_wait_for_subscribers", WriteWaitsForRunningCallback)},
      {"subscriptions", "callbacks writing to the store from two threads do not deadlock", true,
       IfPromised(&BackendHooks::writes_wait_for_subscribers,
                  "BackendHooks::writes_wait_for_subscribers", CallbacksWritingOnTwoThreads)},
  };
}

}  // namespace keygate::conformance
