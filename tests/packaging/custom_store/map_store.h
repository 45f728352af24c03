// MapStore: a small in-memory KeyStore written the way a third party would,
// against keygate's public headers only. Not keygate's MemoryKeyStore: the
// point is that the installed conformance suite checks a store keygate has
// never seen. Subscribers are a keygate::ChangeNotifier.
#ifndef KEYGATE_CUSTOM_STORE_MAP_STORE_H_
#define KEYGATE_CUSTOM_STORE_MAP_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "keygate/audit.h"
#include "keygate/change_notifier.h"
#include "keygate/key_store.h"

namespace custom {

class MapStore final : public keygate::KeyStore {
 public:
  absl::Status Insert(const keygate::KeyRecord& record, const keygate::AuditNote& note) override;
  absl::StatusOr<keygate::KeyRecord> Get(std::string_view id) override;
  absl::StatusOr<keygate::KeyRecord> FindByDigest(const keygate::Digest& digest) override;
  absl::StatusOr<keygate::KeyRecord> Update(const keygate::KeyRecord& record,
                                            const keygate::AuditNote& note) override;
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> expected_version,
                      const keygate::AuditNote& note) override;
  absl::StatusOr<keygate::ListPage> List(const keygate::ListOptions& options) override;
  absl::Status TouchLastUsed(absl::Span<const keygate::LastUsedUpdate> updates,
                             absl::Duration min_advance) override;
  absl::StatusOr<keygate::ChangeBatch> ChangesSince(std::uint64_t after,
                                                    std::size_t limit) override;
  absl::StatusOr<std::uint64_t> LastSequence() override;
  absl::StatusOr<keygate::AuditPage> ReadAudit(const keygate::AuditQuery& query) override;
  absl::StatusOr<std::uint64_t> AuditCursor(std::string_view consumer) override;
  absl::Status AckAudit(std::string_view consumer, std::uint64_t sequence) override;
  absl::StatusOr<std::unique_ptr<keygate::Subscription>> Subscribe(
      std::function<void()> on_change) override;
  absl::Status AwaitSubscribers() override;

  // Marks the stored state of `id` undecodable (the conformance suite's
  // corrupt_record hook); no change is logged. Errors: kNotFound.
  absl::Status Corrupt(std::string_view id);

 private:
  struct Entry {
    keygate::KeyRecord record;
    bool corrupt = false;
  };

  absl::Status CheckUnique(const keygate::KeyRecord& r) const;  // under mu_
  void Index(const keygate::KeyRecord& r);                      // under mu_
  void Unindex(const keygate::KeyRecord& r);                    // under mu_
  // Appends the change and its audit entry; under mu_.
  void Log(const std::string& id, const keygate::AuditNote& note, std::string_view owner,
           std::uint64_t version, std::string_view webhook_url);

  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> records_;
  std::map<keygate::Digest, std::string> by_digest_;
  std::map<std::pair<std::string, std::string>, std::string> active_personal_;
  std::map<std::uint64_t, std::string> log_;                   // latest sequence per key
  std::map<std::string, std::uint64_t, std::less<>> key_seq_;  // key -> its entry in log_
  std::uint64_t last_sequence_ = 0;
  std::map<std::uint64_t, keygate::Event> audit_;
  std::map<std::string, std::uint64_t, std::less<>> cursors_;
  keygate::ChangeNotifier notifier_;
};

}  // namespace custom

#endif  // KEYGATE_CUSTOM_STORE_MAP_STORE_H_
