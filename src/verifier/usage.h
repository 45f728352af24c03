// The verifier's usage collector (private): gathers the per-slot request
// counts, last-use times and rate-limit denials that Verify leaves in the
// published table, with what the writer carried out of tables it swapped
// away, hands each batch to the UsageSink and writes last_used (of keys
// that had successful requests only) with one KeyStore::TouchLastUsed.
//
// Thread safety: thread-safe. Flush() runs one at a time (flush_mu_);
// pending usage is under pending_mu_; the flush thread's wake-up state is
// under thread_mu_. None of them is taken by Verify.

#ifndef KEYGATE_SRC_VERIFIER_USAGE_H_
#define KEYGATE_SRC_VERIFIER_USAGE_H_

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "keygate/key_store.h"
#include "keygate/usage.h"
#include "verifier/index.h"

namespace keygate::internal {

struct UsageConfig {
  KeyStore* store = nullptr;
  UsageSink* sink = nullptr;             // optional
  absl::Duration last_used_granularity;  // TouchLastUsed's min_advance
  absl::Duration flush_interval;         // zero: no flush thread
};

class UsageCollector {
  struct PendingUse {
    std::uint64_t requests = 0;
    std::uint32_t last_s = 0;
    bool touch = false;  // last_s is to be written (a use, or a failed write put back)
    std::uint64_t denied = 0;
    std::uint32_t first_denied_s = 0;  // 0: none

    void AddUses(std::uint32_t n, std::uint32_t last) {
      requests += n;
      last_s = std::max(last_s, last);
      touch = true;
    }
    void AddDenials(std::uint32_t n, std::uint32_t first) {
      first_denied_s = denied == 0 ? first : std::min(first_denied_s, first);
      denied += n;
    }
  };

 public:
  UsageCollector(const IndexReader& reader, UsageConfig config);
  ~UsageCollector();  // stops the flush thread
  UsageCollector(const UsageCollector&) = delete;
  UsageCollector& operator=(const UsageCollector&) = delete;

  // Scans the published table, adds the pending usage, calls the sink with
  // every key that had requests or denials, and the store with the
  // last-used times of those that had requests. Errors: the store's (the
  // last-used times are kept for the next flush; the sink gets each count
  // once); kResourceExhausted if this thread cannot enter a read section.
  absl::Status Flush();

  // Starts the periodic flush thread (with a positive flush_interval).
  void Start();
  // Stops and joins the flush thread. Idempotent.
  void Stop();

  // Holds the pending-usage lock while the writer moves the counts of a
  // table that no reader can reach any more into the next flush.
  class Carry {
   public:
    explicit Carry(UsageCollector& u) : u_(u), lock_(u.pending_mu_) {}
    void Add(const std::string& id, std::uint32_t uses, std::uint32_t last_s) {
      u_.pending_[id].AddUses(uses, last_s);
    }
    // `denied` denials, the earliest at Unix second `first_s` (TakeDenials).
    void AddDenials(const std::string& id, std::uint32_t denied, std::uint32_t first_s) {
      u_.pending_[id].AddDenials(denied, first_s);
    }

   private:
    UsageCollector& u_;
    std::lock_guard<std::mutex> lock_;
  };

 private:
  void Loop();

  const IndexReader& reader_;
  const UsageConfig config_;

  std::mutex flush_mu_;  // one flush at a time; taken before pending_mu_
  std::mutex pending_mu_;
  std::unordered_map<std::string, PendingUse> pending_;  // under pending_mu_

  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool stopping_ = false;  // under thread_mu_
  std::thread thread_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_VERIFIER_USAGE_H_
