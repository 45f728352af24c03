// ChangeNotifier: rounds, waiting, re-entrancy and destruction during a
// round. Ordering checks only: a thread that must block is released by
// another, and what each saw is compared afterwards.

#include "keygate/change_notifier.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "catch.h"

namespace keygate {
namespace {

// A latch a test thread waits on until another opens it.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }
  bool IsOpen() {
    std::lock_guard<std::mutex> lock(mu_);
    return open_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// An ordered log of what the threads did.
class Log {
 public:
  void Add(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(what));
  }
  std::vector<std::string> Events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> events_;
};

// Runs `body` on a thread; a deadlock is reported and ends the process
// instead of hanging until ctest's timeout (a hang guard, not a timing check).
void RunOrAbortOnHang(const std::function<void()>& body, const char* what) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread t([&] {
    body();
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  if (!cv.wait_for(lock, std::chrono::minutes(2), [&] { return done; })) {
    std::fprintf(stderr, "change_notifier_test: deadlock: %s\n", what);
    std::abort();
  }
  lock.unlock();
  t.join();
}

std::unique_ptr<Subscription> MustSubscribe(ChangeNotifier& n, std::function<void()> f) {
  absl::StatusOr<std::unique_ptr<Subscription>> s = n.Subscribe(std::move(f));
  REQUIRE(s.ok());
  return *std::move(s);
}

TEST_CASE("ChangeNotifier refuses an empty callback", "[notifier]") {
  ChangeNotifier n;
  absl::StatusOr<std::unique_ptr<Subscription>> s = n.Subscribe(nullptr);
  CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_FALSE(n.HasSubscribers());
  n.Notify();  // nobody to tell
}

TEST_CASE("ChangeNotifier calls each subscriber once per notification, on the caller's thread",
          "[notifier]") {
  ChangeNotifier n;
  Log log;
  const std::thread::id self = std::this_thread::get_id();
  std::atomic<int> elsewhere{0};
  auto a = MustSubscribe(n, [&] {
    if (std::this_thread::get_id() != self) elsewhere.fetch_add(1);
    log.Add("a");
  });
  auto b = MustSubscribe(n, [&] { log.Add("b"); });
  CHECK(n.HasSubscribers());
  n.Notify();
  CHECK(log.Events() == std::vector<std::string>{"a", "b"});
  n.NotifyWithoutWaiting();  // no round elsewhere: runs here too
  CHECK(log.Events() == std::vector<std::string>{"a", "b", "a", "b"});
  CHECK(elsewhere.load() == 0);

  // Destroyed: never called again; the other one still is.
  a.reset();
  n.Notify();
  CHECK(log.Events() == std::vector<std::string>{"a", "b", "a", "b", "b"});
  b.reset();
  CHECK_FALSE(n.HasSubscribers());
  n.Notify();
  CHECK(log.Events().size() == 5);
}

// The linearizability promise: Notify() returns only after a round that
// started after the call, even while a round (started earlier) is held on
// another thread; a notification is never lost.
TEST_CASE("ChangeNotifier::Notify waits for a round that started after it", "[notifier]") {
  ChangeNotifier n;
  std::mutex mu;
  int version = 1;  // the "store": a round reads it when it starts
  std::vector<int> seen;
  Gate first_round_entered;
  Gate release_first_round;
  auto sub = MustSubscribe(n, [&] {
    int v = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      v = version;
      seen.push_back(v);
    }
    if (v == 1) {
      first_round_entered.Open();
      release_first_round.Wait();
    }
  });
  std::thread first([&] { n.Notify(); });
  first_round_entered.Wait();

  // A write while round 1 (which read version 1) is held on `first`.
  {
    std::lock_guard<std::mutex> lock(mu);
    version = 2;
  }
  std::atomic<bool> calling{false};
  std::thread releaser([&] {
    while (!calling.load()) std::this_thread::yield();
    // Let Notify reach the held round before it ends; if it has not, the
    // round it runs itself must still cover it.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    release_first_round.Open();
  });
  calling.store(true);
  n.Notify();
  const bool released_before_return = release_first_round.IsOpen();
  std::vector<int> at_return;
  {
    std::lock_guard<std::mutex> lock(mu);
    at_return = seen;
  }
  releaser.join();
  first.join();
  // A Notify that returned while round 1 was held did not wait for it.
  CHECK(released_before_return);
  REQUIRE(at_return.size() == 2);
  CHECK(at_return[0] == 1);
  CHECK(at_return[1] == 2);  // the round that covered the write started after it
}

TEST_CASE("ChangeNotifier::NotifyWithoutWaiting leaves the round to the thread running one",
          "[notifier]") {
  ChangeNotifier n;
  std::atomic<int> rounds{0};
  Gate entered;
  Gate release;
  auto sub = MustSubscribe(n, [&] {
    if (rounds.fetch_add(1) == 0) {
      entered.Open();
      release.Wait();
    }
  });
  std::thread first([&] { n.Notify(); });
  entered.Wait();
  // Returns although round 1 is held (it would otherwise wait forever).
  RunOrAbortOnHang([&] { n.NotifyWithoutWaiting(); }, "NotifyWithoutWaiting waited");
  CHECK(rounds.load() == 1);
  release.Open();
  first.join();
  // `first`'s loop ran one more round for the notification it was given.
  CHECK(rounds.load() == 2);
}

TEST_CASE("A callback may notify its own notifier: one more round, no deadlock", "[notifier]") {
  ChangeNotifier n;
  int calls = 0;
  auto sub = MustSubscribe(n, [&] {
    if (++calls == 1) n.Notify();  // a write from inside the callback
  });
  RunOrAbortOnHang([&] { n.Notify(); }, "a callback notifying its own notifier");
  CHECK(calls == 2);  // the write's round ran after the callback returned
}

// Two callbacks running at once on two threads, each writing to the store:
// each write would wait for the other subscriber's round, which is held by a
// callback waiting for it. A notification from inside any callback does not
// wait for a round on another thread.
TEST_CASE("Callbacks on two threads that both write do not deadlock", "[notifier][concurrent]") {
  RunOrAbortOnHang(
      [] {
        ChangeNotifier n;
        Gate x_entered;
        Gate y_entered;
        std::atomic<int> x_calls{0};
        std::atomic<int> y_calls{0};
        auto x = MustSubscribe(n, [&] {
          // Round 1 of x on `t2` is quick; round 2, on t1, writes while y
          // is held on t2.
          if (x_calls.fetch_add(1) == 1) {
            x_entered.Open();
            n.Notify();
          }
        });
        auto y = MustSubscribe(n, [&] {
          if (y_calls.fetch_add(1) == 0) {
            y_entered.Open();
            x_entered.Wait();  // x's callback now runs on t1
            n.Notify();
          }
        });
        std::thread second([&] {
          n.Notify();  // x (round 1), then y, held until x runs on t1
        });
        y_entered.Wait();
        std::thread first([&] {
          n.Notify();  // x round 2 writes: y is running on `second`
        });
        first.join();
        second.join();
        CHECK(x_calls.load() >= 2);
        CHECK(y_calls.load() >= 2);  // y's own write and x's both reached y
        // Quiet again: a plain notification still runs each once.
        const int xs = x_calls.load();
        const int ys = y_calls.load();
        n.Notify();
        CHECK(x_calls.load() == xs + 1);
        CHECK(y_calls.load() == ys + 1);
      },
      "two callbacks writing from two threads");
}

TEST_CASE("Destroying a Subscription waits for its callback running on another thread",
          "[notifier][concurrent]") {
  ChangeNotifier n;
  Log log;
  Gate entered;
  Gate release;
  std::atomic<int> calls{0};
  auto sub = MustSubscribe(n, [&] {
    if (calls.fetch_add(1) == 0) {
      entered.Open();
      release.Wait();
    }
    log.Add("callback returned");
  });
  std::thread notifier([&] { n.Notify(); });
  entered.Wait();
  std::thread destroyer([&] {
    sub.reset();  // must block until the running callback has returned
    log.Add("destroyed");
  });
  // Release only once the destroyer has been started; either way the
  // destructor's return must come after the callback's.
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    log.Add("released");
    release.Open();
  });
  destroyer.join();
  releaser.join();
  notifier.join();
  CHECK(log.Events() == std::vector<std::string>{"released", "callback returned", "destroyed"});
  n.Notify();
  CHECK(calls.load() == 1);  // never again once destroyed
  CHECK_FALSE(n.HasSubscribers());
}

TEST_CASE("A callback may destroy its own Subscription", "[notifier]") {
  ChangeNotifier n;
  int calls = 0;
  std::unique_ptr<Subscription> sub;
  sub = MustSubscribe(n, [&] {
    ++calls;
    n.Notify();   // a pending round...
    sub.reset();  // ...that must not run: the subscription is gone
  });
  RunOrAbortOnHang([&] { n.Notify(); }, "a callback destroying its own subscription");
  CHECK(calls == 1);
  n.Notify();
  CHECK(calls == 1);
}

TEST_CASE("A callback may destroy the notifier; its Subscriptions outlive it, inert",
          "[notifier]") {
  auto n = std::make_unique<ChangeNotifier>();
  Log log;
  std::unique_ptr<Subscription> first = MustSubscribe(*n, [&] {
    log.Add("first");
    n.reset();  // the store goes away inside its own notification
  });
  std::unique_ptr<Subscription> second = MustSubscribe(*n, [&] { log.Add("second"); });
  ChangeNotifier* raw = n.get();
  raw->Notify();
  CHECK(n == nullptr);
  // The round that was under way still reaches every subscriber.
  CHECK(log.Events() == std::vector<std::string>{"first", "second"});
  first.reset();
  second.reset();
}

}  // namespace
}  // namespace keygate
