// MemoryKeyStore: the shared conformance suite plus what only this backend
// promises (the unavailability hook, subscription callback details).

#include "keygate/memory_key_store.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "catch.h"
#include "key_store_conformance.h"
#include "keygate/key_store_wrapper.h"
#include "test_util.h"

namespace {

// MemoryKeyStore's cursors are "id:" and the id; it cannot hold a corrupt
// record, so that check does not apply. It promises what a ChangeNotifier
// gives and keeps touches out of the change feed.
keygate::conformance::BackendHooks MemoryHooks() {
  keygate::conformance::BackendHooks hooks;
  hooks.cursor_for = [](std::string_view id) { return absl::StrCat("id:", std::string(id)); };
  hooks.malformed_cursors = {"id:", "id", "ID:key_hc14", "id;key_hc14", "key_hc14"};
  hooks.touch_is_not_a_change = true;
  hooks.writes_wait_for_subscribers = true;
  return hooks;
}

}  // namespace

KEYGATE_KEY_STORE_CONFORMANCE(Memory, "[memory]", MemoryHooks(),
                              std::make_shared<keygate::MemoryKeyStore>())

// A wrapper that overrides nothing is the store it wraps.
KEYGATE_KEY_STORE_CONFORMANCE(
    WrappedMemory, "[memory][wrapper]", MemoryHooks(),
    std::make_shared<keygate::KeyStoreWrapper>(std::make_shared<keygate::MemoryKeyStore>()))

// KeyStore's default TouchLastUsed (Get + Update), for stores without their
// own: the same forward-only semantics.
KEYGATE_KEY_STORE_CHECK(DefaultTouch, "[memory]", "touching last_used moves it forward only",
                        keygate::conformance::BackendHooks(),
                        std::make_shared<keygate::testing::ForwardingStore>(
                            std::make_shared<keygate::MemoryKeyStore>()))

namespace keygate {
namespace {

using conformance::MakeRecord;

TEST_CASE("MemoryKeyStore refuses a sealed token longer than kMaxSealedTokenLength",
          "[memory][store]") {
  MemoryKeyStore store;
  KeyRecord r = MakeRecord("key_big");
  r.sealed_token = std::string(kMaxSealedTokenLength + 1, 'x');
  const absl::Status refused = store.Insert(r, keygate::testing::CreatedNote());
  CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(refused.message()) ==
        absl::StrCat("sealed_token: longer than ", kMaxSealedTokenLength, " bytes"));
  CHECK(store.Get("key_big").status().code() == absl::StatusCode::kNotFound);
  r.sealed_token.pop_back();
  r.sealed_webhook_secret = std::string(kMaxSealedWebhookSecretLength + 1, 'x');
  const absl::Status secret = store.Insert(r, keygate::testing::CreatedNote());
  CHECK(secret.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(secret.message()) == absl::StrCat("sealed_webhook_secret: longer than ",
                                                      kMaxSealedWebhookSecretLength, " bytes"));
  r.sealed_webhook_secret.pop_back();
  CHECK(store.Insert(r, keygate::testing::CreatedNote()).ok());
}

TEST_CASE("MemoryKeyStore change feed keeps one entry per key", "[memory][store][changes]") {
  MemoryKeyStore store;
  KEYGATE_REQUIRE_OK(store.Insert(MakeRecord("key_a"), keygate::testing::CreatedNote()));
  KEYGATE_REQUIRE_OK(store.Insert(MakeRecord("key_b"), keygate::testing::CreatedNote()));
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<KeyRecord> a = store.Get("key_a");
    KEYGATE_REQUIRE_OK(a);
    KEYGATE_REQUIRE_OK(store.Update(*a, keygate::testing::ModifiedNote()));
  }
  absl::StatusOr<ChangeBatch> batch = store.ChangesSince(0, 100);
  KEYGATE_REQUIRE_OK(batch);
  REQUIRE(batch->changes.size() == 2);
  CHECK(batch->changes[0].key_id == "key_b");
  CHECK(batch->changes[0].sequence == 2);
  CHECK(batch->changes[1].key_id == "key_a");
  CHECK(batch->changes[1].sequence == 7);
  CHECK(batch->next_sequence == 7);
}

TEST_CASE("MemoryKeyStore lets a callback destroy its own subscription",
          "[memory][store][subscribe]") {
  MemoryKeyStore store;
  std::unique_ptr<Subscription> sub;
  std::atomic<int> calls{0};
  absl::StatusOr<std::unique_ptr<Subscription>> made = store.Subscribe([&] {
    calls.fetch_add(1);
    sub.reset();  // from inside the callback: must not deadlock
  });
  KEYGATE_REQUIRE_OK(made);
  sub = std::move(*made);
  KEYGATE_REQUIRE_OK(store.Insert(MakeRecord("key_1"), keygate::testing::CreatedNote()));
  CHECK(calls.load() == 1);
  CHECK(sub == nullptr);
  KEYGATE_REQUIRE_OK(store.Insert(MakeRecord("key_2"), keygate::testing::CreatedNote()));
  CHECK(calls.load() == 1);
}

TEST_CASE("MemoryKeyStore callbacks may write to the store", "[memory][store][subscribe]") {
  MemoryKeyStore store;
  std::atomic<int> calls{0};
  std::atomic<bool> nested_ok{false};
  auto sub = store.Subscribe([&] {
    if (calls.fetch_add(1) == 0) {
      // No lock is held during the callback, so this cannot deadlock; the
      // nested notification is folded into one more call on this thread.
      nested_ok.store(
          store.Insert(MakeRecord("key_from_callback"), keygate::testing::CreatedNote()).ok());
    }
  });
  KEYGATE_REQUIRE_OK(sub);
  KEYGATE_REQUIRE_OK(store.Insert(MakeRecord("key_first"), keygate::testing::CreatedNote()));
  CHECK(calls.load() == 2);
  CHECK(nested_ok.load());
  KEYGATE_REQUIRE_OK(store.Get("key_from_callback"));
}

TEST_CASE(
    "MemoryKeyStore runs one subscription's callback on one thread at a time and loses "
    "no wake-up",
    "[memory][store][subscribe][concurrent]") {
  auto store = std::make_shared<MemoryKeyStore>();
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  std::atomic<std::uint64_t> max_seen{0};
  auto sub = store->Subscribe([&] {
    const int now = in_flight.fetch_add(1) + 1;
    int prev = max_in_flight.load();
    while (now > prev && !max_in_flight.compare_exchange_weak(prev, now)) {
    }
    absl::StatusOr<std::uint64_t> seq = store->LastSequence();
    if (seq.ok()) {
      std::uint64_t m = max_seen.load();
      while (*seq > m && !max_seen.compare_exchange_weak(m, *seq)) {
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    in_flight.fetch_sub(1);
  });
  KEYGATE_REQUIRE_OK(sub);
  const int threads = 4;
  const int per_thread = conformance::StressEnabled() ? 500 : 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        if (!store
                 ->Insert(MakeRecord(absl::StrCat("key_", t, "_", i)),
                          keygate::testing::CreatedNote())
                 .ok())
          failures++;
      }
    });
  }
  for (std::thread& th : pool) th.join();
  REQUIRE(failures.load() == 0);
  CHECK(max_in_flight.load() == 1);
  // Every writer notified after its commit, so some call saw the last one.
  CHECK(max_seen.load() == static_cast<std::uint64_t>(threads * per_thread));
}

TEST_CASE("A MemoryKeyStore write returns only after every subscriber has seen it",
          "[memory][store][subscribe][concurrent]") {
  // What a verifier applying changes in its callback relies on for
  // "rejected once Revoke() returns", also with concurrent writers whose
  // notifications are folded into another thread's callback round.
  auto store = std::make_shared<MemoryKeyStore>();
  std::atomic<std::uint64_t> applied{0};  // highest sequence a finished round saw
  auto sub = store->Subscribe([&] {
    absl::StatusOr<std::uint64_t> seq = store->LastSequence();
    std::this_thread::sleep_for(std::chrono::microseconds(100));  // a slow subscriber
    if (seq.ok()) {
      std::uint64_t m = applied.load();
      while (*seq > m && !applied.compare_exchange_weak(m, *seq)) {
      }
    }
  });
  KEYGATE_REQUIRE_OK(sub);
  const int threads = 4;
  const int per_thread = conformance::StressEnabled() ? 300 : 40;
  std::atomic<int> stale{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        if (!store
                 ->Insert(MakeRecord(absl::StrCat("key_w", t, "_", i)),
                          keygate::testing::CreatedNote())
                 .ok()) {
          failures++;
          continue;
        }
        // This write's sequence is at most LastSequence() now; a round that
        // started after the write read at least the write's sequence.
        absl::StatusOr<KeyRecord> r = store->Get(absl::StrCat("key_w", t, "_", i));
        absl::StatusOr<ChangeBatch> mine = store->ChangesSince(0, kMaxListLimit);
        std::uint64_t my_seq = 0;
        if (mine.ok()) {
          for (const Change& c : mine->changes) {
            if (r.ok() && c.key_id == r->id) my_seq = c.sequence;
          }
        }
        if (my_seq == 0 || applied.load() < my_seq) stale++;
      }
    });
  }
  for (std::thread& th : pool) th.join();
  REQUIRE(failures.load() == 0);
  CHECK(stale.load() == 0);
}

TEST_CASE("KeyStoreWrapper forwards AwaitSubscribers to the store it wraps",
          "[memory][wrapper][subscribe]") {
  // KeyStore's default does nothing: a wrapper that fell back to it would
  // let KeyManager return before the verifiers have a concurrent write.
  auto inner = std::make_shared<MemoryKeyStore>();
  KeyStoreWrapper wrapper(inner);
  std::atomic<int> rounds{0};
  absl::StatusOr<std::unique_ptr<Subscription>> sub = wrapper.Subscribe([&] { ++rounds; });
  KEYGATE_REQUIRE_OK(sub);
  KEYGATE_REQUIRE_OK(wrapper.AwaitSubscribers());
  CHECK(rounds.load() == 1);  // the wrapped store ran one round, on this thread
}

TEST_CASE("A MemoryKeyStore subscription may outlive its store", "[memory][store][subscribe]") {
  auto store = std::make_unique<MemoryKeyStore>();
  absl::StatusOr<std::unique_ptr<Subscription>> sub = store->Subscribe([] {});
  KEYGATE_REQUIRE_OK(sub);
  store.reset();
  sub->reset();  // must not touch the freed store: ASan's check, not an assertion
}

}  // namespace
}  // namespace keygate
