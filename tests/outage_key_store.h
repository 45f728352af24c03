// A KeyStore that can be switched off, for tests of how callers meet a backend
// that is down: while unavailable, every call answers kUnavailable and nothing
// reaches the wrapped store.
#ifndef KEYGATE_TESTS_OUTAGE_KEY_STORE_H_
#define KEYGATE_TESTS_OUTAGE_KEY_STORE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "keygate/key_store.h"
#include "keygate/key_store_wrapper.h"
#include "keygate/memory_key_store.h"

namespace keygate::testing {

class OutageKeyStore final : public KeyStoreWrapper {
 public:
  explicit OutageKeyStore(std::shared_ptr<KeyStore> target = std::make_shared<MemoryKeyStore>())
      : KeyStoreWrapper(std::move(target)) {}

  // While set, every call returns kUnavailable.
  void SetUnavailable(bool unavailable) { down_.store(unavailable, std::memory_order_release); }

  absl::Status Insert(const KeyRecord& record, const AuditNote& note) override {
    if (Down()) return Error();
    return KeyStoreWrapper::Insert(record, note);
  }
  absl::StatusOr<KeyRecord> Get(std::string_view id) override {
    if (Down()) return Error();
    return KeyStoreWrapper::Get(id);
  }
  absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) override {
    if (Down()) return Error();
    return KeyStoreWrapper::FindByDigest(digest);
  }
  absl::StatusOr<KeyRecord> Update(const KeyRecord& record, const AuditNote& note) override {
    if (Down()) return Error();
    return KeyStoreWrapper::Update(record, note);
  }
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> expected_version,
                      const AuditNote& note) override {
    if (Down()) return Error();
    return KeyStoreWrapper::Delete(id, expected_version, note);
  }
  absl::StatusOr<ListPage> List(const ListOptions& options) override {
    if (Down()) return Error();
    return KeyStoreWrapper::List(options);
  }
  absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                             absl::Duration min_advance) override {
    if (Down()) return Error();
    return KeyStoreWrapper::TouchLastUsed(updates, min_advance);
  }
  absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) override {
    if (Down()) return Error();
    return KeyStoreWrapper::ChangesSince(after, limit);
  }
  absl::StatusOr<std::uint64_t> LastSequence() override {
    if (Down()) return Error();
    return KeyStoreWrapper::LastSequence();
  }
  absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& query) override {
    if (Down()) return Error();
    return KeyStoreWrapper::ReadAudit(query);
  }
  absl::StatusOr<std::uint64_t> AuditCursor(std::string_view consumer) override {
    if (Down()) return Error();
    return KeyStoreWrapper::AuditCursor(consumer);
  }
  absl::Status AckAudit(std::string_view consumer, std::uint64_t sequence) override {
    if (Down()) return Error();
    return KeyStoreWrapper::AckAudit(consumer, sequence);
  }
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change) override {
    if (Down()) return Error();
    return KeyStoreWrapper::Subscribe(std::move(on_change));
  }

 private:
  bool Down() const { return down_.load(std::memory_order_acquire); }
  static absl::Status Error() { return absl::UnavailableError("outage key store: unavailable"); }
  std::atomic<bool> down_{false};
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_OUTAGE_KEY_STORE_H_
