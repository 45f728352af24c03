// keygate/memory_key_store.h: a `KeyStore` held in process memory.
//
// For tests, examples and single-process servers that provision keys at
// start-up. Nothing survives the process. Passes the KeyStore conformance
// suite.
//
// Example:
//
//   auto store = std::make_shared<keygate::MemoryKeyStore>();
//
// Thread safety: thread-safe (one mutex; callbacks run after it is released).
// Subscription callbacks run on the writing thread, after the write
// committed; one subscription's callback never runs on two threads at once
// (a change that arrives meanwhile makes the running thread call it once
// more, so no wake-up is lost), and a write returns only after a callback
// round that started after the write has finished: when Insert/Update/Delete
// returns, every subscriber has seen it. A write from inside a callback does
// not wait for itself. A callback may use the store, and may destroy
// its own Subscription (the destructor then does not wait for itself).
// Destroying a Subscription from another thread waits for a running
// callback, so do not hold a lock there that the callback takes.
// Cost: O(log n) Get, O(1) FindByDigest; List scans (fine for tests and
// thousands of keys; use SQLite for more). The change log keeps one entry per
// key ever stored (its latest change), deleted keys included.

#ifndef KEYGATE_MEMORY_KEY_STORE_H_
#define KEYGATE_MEMORY_KEY_STORE_H_

#include <memory>

#include "keygate/key_store.h"

namespace keygate {

class MemoryKeyStore final : public KeyStore {
 public:
  MemoryKeyStore();
  ~MemoryKeyStore() override;
  MemoryKeyStore(const MemoryKeyStore&) = delete;
  MemoryKeyStore& operator=(const MemoryKeyStore&) = delete;

  absl::Status Insert(const KeyRecord& record) override;
  absl::StatusOr<KeyRecord> Get(std::string_view id) override;
  absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) override;
  absl::StatusOr<KeyRecord> Update(const KeyRecord& record) override;
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> expected_version) override;
  absl::StatusOr<ListPage> List(const ListOptions& options) override;
  // In place under the store's lock: no version bump, no change, no
  // notification.
  absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                             absl::Duration min_advance) override;
  absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) override;
  absl::StatusOr<std::uint64_t> LastSequence() override;
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::function<void()> on_change) override;
  absl::Status AwaitSubscribers() override;

  // Test hook: while set, every method returns kUnavailable (a backend that
  // is down), so callers' fail-closed paths can be tested.
  void SetUnavailableForTesting(bool unavailable);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace keygate

#endif  // KEYGATE_MEMORY_KEY_STORE_H_
