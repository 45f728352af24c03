// keygate/usage.h: per-key usage the Verifier reports in batches to an optional `UsageSink`
// (metrics, billing, "last used" in a dashboard), besides writing `KeyRecord::last_used`.
//
// Thread safety: `Record` runs on the verifier's background thread (or the thread calling
// Verifier::FlushUsage), one batch at a time per verifier; a sink shared by verifiers must be
// thread-safe. Cost: none on the hot path (relaxed atomics in the key's cache line).
//
// Example:
//   class Metrics final : public keygate::UsageSink {
//    public:
//     void Record(absl::Span<const keygate::KeyUsage> batch) noexcept override {
//       for (const auto& u : batch) requests_[u.key_id] += u.requests;  // (guarded)
//     }
//   };
//   options.usage_sink = std::make_shared<Metrics>();

#ifndef KEYGATE_USAGE_H_
#define KEYGATE_USAGE_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace keygate {

struct KeyUsage {
  std::string key_id;
  // Successful verifications since the last batch (exact below 2^32 per collection).
  std::uint64_t requests = 0;
  absl::Time last_used = absl::InfinitePast();  // latest success, to the second
};

class UsageSink {
 public:
  virtual ~UsageSink() = default;
  // Must not throw; may allocate (off the hot path).
  virtual void Record(absl::Span<const KeyUsage> batch) noexcept = 0;
};

}  // namespace keygate

#endif  // KEYGATE_USAGE_H_
