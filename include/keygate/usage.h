// keygate/usage.h: per-key usage reported by the Verifier.
//
// The verifier counts successful verifications per key and remembers when
// each key was last used, with relaxed atomics in the key's own cache line
// (no extra memory traffic on the hot path). A background task collects the
// counts in batches, writes `KeyRecord::last_used` back to the store (one
// `KeyStore::TouchLastUsed` call per flush: no version bump) and hands
// the batch to an optional `UsageSink` (metrics, billing, "last used" in a
// dashboard).
//
// Example:
//
//   class Metrics final : public keygate::UsageSink {
//    public:
//     void Record(absl::Span<const keygate::KeyUsage> batch) noexcept override {
//       for (const auto& u : batch) requests_[u.key_id] += u.requests;  // (guarded)
//     }
//   };
//   options.usage_sink = std::make_shared<Metrics>();
//
// Thread safety: `Record` is called from the verifier's background thread (or
// the thread calling Verifier::FlushUsage), one batch at a time per verifier;
// a sink shared by several verifiers must be thread-safe.

#ifndef KEYGATE_USAGE_H_
#define KEYGATE_USAGE_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace keygate {

struct KeyUsage {
  std::string key_id;
  // Successful verifications since the previous batch (exact unless more than
  // 2^32 arrive between two collections).
  std::uint64_t requests = 0;
  // The latest successful verification, to the second.
  absl::Time last_used = absl::InfinitePast();
};

class UsageSink {
 public:
  virtual ~UsageSink() = default;
  // Must not throw; may allocate (off the hot path).
  virtual void Record(absl::Span<const KeyUsage> batch) noexcept = 0;
};

}  // namespace keygate

#endif  // KEYGATE_USAGE_H_
