// keygate/key_store_wrapper.h: a KeyStore that forwards every call to
// another, for decorators (fault injection, metrics, access checks).
//
// Derive from it and override only the calls you change; every other call,
// including ones a later version of KeyStore adds, reaches the wrapped
// store unchanged. TouchLastUsed and AwaitSubscribers are forwarded too, so
// a wrapper keeps the wrapped store's own usage writes and notification
// order (see key_store.h).
//
// Example:
//
//   class CountingStore final : public keygate::KeyStoreWrapper {
//    public:
//     using KeyStoreWrapper::KeyStoreWrapper;
//     absl::StatusOr<keygate::KeyRecord> Get(std::string_view id) override {
//       gets.fetch_add(1);
//       return target().Get(id);
//     }
//     std::atomic<int> gets{0};
//   };
//
// Ownership: shares ownership of the wrapped store. Thread safety: as the
// wrapped store's. Cost: one virtual call per forwarded call.

#ifndef KEYGATE_KEY_STORE_WRAPPER_H_
#define KEYGATE_KEY_STORE_WRAPPER_H_

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

namespace keygate {

class KeyStoreWrapper : public KeyStore {
 public:
  // `target` must not be null.
  explicit KeyStoreWrapper(std::shared_ptr<KeyStore> target) : target_(std::move(target)) {}

  [[nodiscard]] absl::Status Insert(const KeyRecord& record, const AuditNote& note) override {
    return target_->Insert(record, note);
  }
  [[nodiscard]] absl::StatusOr<KeyRecord> Get(std::string_view id) override {
    return target_->Get(id);
  }
  [[nodiscard]] absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) override {
    return target_->FindByDigest(digest);
  }
  [[nodiscard]] absl::StatusOr<KeyRecord> Update(const KeyRecord& record,
                                                 const AuditNote& note) override {
    return target_->Update(record, note);
  }
  [[nodiscard]] absl::Status Delete(std::string_view id,
                                    std::optional<std::uint64_t> expected_version,
                                    const AuditNote& note) override {
    return target_->Delete(id, expected_version, note);
  }
  [[nodiscard]] absl::StatusOr<ListPage> List(const ListOptions& options) override {
    return target_->List(options);
  }
  [[nodiscard]] absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                           absl::Duration min_advance) override {
    return target_->TouchLastUsed(updates, min_advance);
  }
  [[nodiscard]] absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after,
                                                         std::size_t limit) override {
    return target_->ChangesSince(after, limit);
  }
  [[nodiscard]] absl::StatusOr<std::uint64_t> LastSequence() override {
    return target_->LastSequence();
  }
  [[nodiscard]] absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& query) override {
    return target_->ReadAudit(query);
  }
  [[nodiscard]] absl::StatusOr<std::uint64_t> AuditCursor(std::string_view consumer) override {
    return target_->AuditCursor(consumer);
  }
  [[nodiscard]] absl::Status AckAudit(std::string_view consumer, std::uint64_t sequence) override {
    return target_->AckAudit(consumer, sequence);
  }
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change) override {
    return target_->Subscribe(std::move(on_change));
  }
  [[nodiscard]] absl::Status AwaitSubscribers() override { return target_->AwaitSubscribers(); }

 protected:
  KeyStore& target() { return *target_; }

 private:
  std::shared_ptr<KeyStore> target_;
};

}  // namespace keygate

#endif  // KEYGATE_KEY_STORE_WRAPPER_H_
