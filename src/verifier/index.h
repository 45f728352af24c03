// The verifier's reader (private): the published index and the lock-free
// Verify path over it. The table layout and the reader/writer protocol are
// in internal/verifier_index.h, the reclamation in internal/epoch.h.
//
// Thread safety: every Verify* method may run on any number of threads at
// once, without locks, while the writer (writer.h) publishes tables and
// policies through Publish() and mutable_policies().

#ifndef KEYGATE_SRC_VERIFIER_INDEX_H_
#define KEYGATE_SRC_VERIFIER_INDEX_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

#include "internal/canonical_token.h"
#include "internal/verifier_index.h"
#include "keygate/clock.h"
#include "keygate/digest.h"
#include "keygate/rate_limiter.h"
#include "keygate/scope.h"
#include "keygate/verdict.h"

namespace keygate::internal {

inline constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

// Unix nanoseconds, saturated to the int64 range (years 1678-2262): an
// expiry past 2262 is kNever.
inline std::int64_t ToNs(absl::Time t) noexcept { return absl::ToUnixNanos(t); }
// A deadline (expiry, a rolled secret's valid_until), rounded up to a whole
// nanosecond. absl::Time has quarter nanoseconds, and `now` is taken in
// whole ones (rounded down), so `deadline <= now` then holds exactly when it
// holds for the absl::Time values, as in ReferenceVerifier; rounded down, a
// key expiring at .25 ns past `now` was already refused.
inline std::int64_t DeadlineNs(absl::Time t) noexcept {
  const std::int64_t ns = ToNs(t);
  return ns < kNever && absl::FromUnixNanos(ns) < t ? ns + 1 : ns;
}
// `now` likewise, but always before kNever, so that a key without an expiry
// stays valid at any `now` (absl::InfiniteFuture() included).
inline std::int64_t NowNs(absl::Time t) noexcept { return std::min(ToNs(t), kNever - 1); }

// The 192 bits of a digest that an index lookup compares (verifier_index.h,
// Slot); w[0] is also the hash that places the slot.
struct DigestKey {
  std::uint64_t w[3] = {0, 0, 0};
};
inline DigestKey KeyOf(const Digest& d) noexcept {
  DigestKey k;
  std::memcpy(k.w, d.data(), sizeof k.w);
  return k;
}
inline DigestKey KeyOf(const Slot& s) noexcept { return {{s.digest[0], s.digest[1], s.digest[2]}}; }
inline bool SameDigest(const Slot& s, const DigestKey& k) noexcept {
  return s.digest[0] == k.w[0] && s.digest[1] == k.w[1] && s.digest[2] == k.w[2];
}

// The live slot holding `d` (its ctrl word in `*ctrl`), or -1.
inline std::int64_t FindSlot(const Table& t, const DigestKey& d, std::uint64_t* ctrl) noexcept {
  std::uint64_t i = Home(d.w[0], t.capacity);
  for (;;) {
    const Slot& s = t.slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_acquire);
    const std::uint64_t kind = c & kKindMask;
    if (kind == kKindEmpty) return -1;
    if (kind == kKindLive && SameDigest(s, d)) {
      *ctrl = c;
      return static_cast<std::int64_t>(i);
    }
    i = NextSlot(i, t.capacity);
  }
}

// The key id of `slot` (live or retired), unpacked or from its side record.
std::string IdOf(const Table& t, std::size_t slot);

// Policy table entries: indices 1 .. 0xFFFE are usable (0 and 0xFFFF are
// kPolicyNone and kPolicyInExtra).
inline constexpr std::size_t kPolicySlots = std::size_t{1} << 16;

// What the reader needs of the options, resolved once by Verifier::Create.
struct ReaderConfig {
  const TokenHasher* hasher = nullptr;
  std::string prefix;
  std::string env_tag;
  std::vector<std::string> other_tags;        // tags of the deployment's other environments
  const ScopeEvaluator* evaluator = nullptr;  // nullptr: inline mask check
  RateLimiter* limiter = nullptr;
  bool local_limiter = true;  // devirtualised GCRA
  GcraPolicy owner_policy;    // invalid: no owner limit
  const Clock* clock = nullptr;
  bool record_usage = true;
};

class IndexReader {
 public:
  explicit IndexReader(ReaderConfig config);
  IndexReader(const IndexReader&) = delete;
  IndexReader& operator=(const IndexReader&) = delete;

  // False if the policy table could not be allocated.
  bool ok() const noexcept { return policies_ != nullptr; }

  // `now` null: read the clock, once, while the slot's cache miss is in
  // flight (and not at all for requests rejected before the lookup).
  Verdict VerifyHeader(std::string_view authorization, const Requirement& req,
                       const absl::Time* now) const noexcept;
  Verdict VerifyToken(std::string_view token, const Requirement& req,
                      const absl::Time* now) const noexcept;

  // The published table; read inside an epoch read section.
  const Table* table() const noexcept { return table_.load(std::memory_order_seq_cst); }
  // Makes `t` what readers see (the writer, which owns it, then waits for a
  // grace period before freeing the previous one).
  void Publish(const Table* t) noexcept { table_.store(t, std::memory_order_seq_cst); }
  // The writer fills an entry before publishing a slot that refers to it,
  // and never changes it afterwards.
  GcraPolicy* mutable_policies() noexcept { return policies_; }
  const ReaderConfig& config() const noexcept { return config_; }

 private:
  // Steps 2-3 by the general parsers (any token the one-pass recogniser did
  // not take), then Lookup.
  Verdict VerifyGeneral(std::string_view token, const Requirement& req,
                        const absl::Time* now) const noexcept;
  // Steps 4 on, for a token known to be well formed and of this environment.
  Verdict Lookup(std::string_view token, const Requirement& req,
                 const absl::Time* now) const noexcept;
  // Steps 5 on, for the key's current slot `i` (ctrl `c`); `valid_until`
  // is the previous secret's deadline when that was the one presented,
  // else kNever.
  Verdict Check(const Table& t, std::size_t i, std::uint64_t c, const Requirement& req,
                std::int64_t now_ns, std::int64_t valid_until) const noexcept;

  const ReaderConfig config_;
  const CanonicalToken canonical_;  // the fast recogniser for env_tag's tokens
  std::atomic<const Table*> table_{nullptr};
  ZeroArray policy_mem_{kPolicySlots * sizeof(GcraPolicy)};
  GcraPolicy* const policies_ = static_cast<GcraPolicy*>(policy_mem_.data());
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_VERIFIER_INDEX_H_
