// keygate/usage.h: per-key usage the Verifier reports in batches to an optional `UsageSink`
// (metrics, billing, "last used" in a dashboard, rate-limit alerts), besides writing
// `KeyRecord::last_used`.
//
// Thread safety: `Record` runs on the verifier's background thread (or the thread calling
// Verifier::FlushUsage), one batch at a time per verifier; a sink shared by verifiers must be
// thread-safe. Cost: none on the hot path for a request that succeeds (relaxed atomics in the
// key's cache line); one relaxed atomic add for a request its rate limit refuses (in an array
// of its own: a cache miss for a key not denied lately; a key flooded from many cores bounces
// that line between them, as its successes bounce the key's own).
//
// Example:
//   class Metrics final : public keygate::UsageSink {
//    public:
//     void Record(absl::Span<const keygate::KeyUsage> batch) noexcept override {
//       for (const auto& u : batch) {
//         requests_[u.key_id] += u.requests;  // (guarded)
//         if (u.denied != 0) AlertRateLimited(u.key_id, u.first_denied, u.denied);
//       }
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

// One key's usage since the batch before. A key is in a batch when it had a successful
// verification or a rate-limit denial since then (`requests` or `denied` is not 0), once per
// batch; a key with neither is left out.
struct KeyUsage {
  std::string key_id;
  // Successful verifications since the last batch (exact below 2^32 per collection).
  std::uint64_t requests = 0;
  // The latest success, to the second (rounded down); InfinitePast() when `requests` is 0.
  absl::Time last_used = absl::InfinitePast();
  // Requests refused by the key's or its owner's rate limit (`Outcome::kRateLimited`) since
  // the last batch, exact below 2^32 per collection. Each denial is reported once, in exactly
  // one batch, also across Reload() and table resizes. Not uses: a key with only denials gets
  // no `KeyRecord::last_used` write. A limiter that is down (`kUnavailable`) is no denial.
  std::uint64_t denied = 0;
  // The earliest of those denials, to the second (rounded down, 1970-01-01T00:00:01 at the
  // earliest), by the time the verifier judged it at; InfinitePast() when `denied` is 0.
  absl::Time first_denied = absl::InfinitePast();
};

class UsageSink {
 public:
  virtual ~UsageSink() = default;
  // Must not throw; may allocate (off the hot path).
  virtual void Record(absl::Span<const KeyUsage> batch) noexcept = 0;
};

}  // namespace keygate

#endif  // KEYGATE_USAGE_H_
