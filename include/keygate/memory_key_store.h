// keygate/memory_key_store.h: a `KeyStore` held in process memory, for tests, examples and
// single-process servers that provision keys at start-up. Nothing survives the process.
//
// Thread safety: thread-safe (one mutex, released before callbacks). Callbacks run on the writing
// thread after the commit, one at a time per subscription; a write returns only after every
// subscriber has seen it (a write from inside a callback does not wait: ChangeNotifier). A callback
// may use the store and destroy its own Subscription; destroying one from another thread waits
// for a running callback, so hold no lock there that the callback takes.
// Cost: O(log n) Get, O(1) FindByDigest, List scans (fine up to thousands of keys). The change
// log keeps one entry per key ever stored, deleted keys included; the audit log one per write.
//
// Example:
//   auto store = std::make_shared<keygate::MemoryKeyStore>();

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

  [[nodiscard]] absl::Status Insert(const KeyRecord& record, const AuditNote& note) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> Get(std::string_view id) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> Update(const KeyRecord& record,
                                                 const AuditNote& note) override;
  [[nodiscard]] absl::Status Delete(std::string_view id,
                                    std::optional<std::uint64_t> expected_version,
                                    const AuditNote& note) override;
  [[nodiscard]] absl::StatusOr<ListPage> List(const ListOptions& options) override;
  // In place under the store's lock: no version bump, change or notification.
  [[nodiscard]] absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                           absl::Duration min_advance) override;
  [[nodiscard]] absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after,
                                                         std::size_t limit) override;
  [[nodiscard]] absl::StatusOr<std::uint64_t> LastSequence() override;
  [[nodiscard]] absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& query) override;
  [[nodiscard]] absl::StatusOr<std::uint64_t> AuditCursor(std::string_view consumer) override;
  [[nodiscard]] absl::Status AckAudit(std::string_view consumer, std::uint64_t sequence) override;
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change) override;
  [[nodiscard]] absl::Status AwaitSubscribers() override;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace keygate

#endif  // KEYGATE_MEMORY_KEY_STORE_H_
