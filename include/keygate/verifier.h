// keygate/verifier.h: the lock-free, allocation-free hot-path verifier.
//
// What: an in-memory replica of one environment's keys, loaded from a
// `KeyStore` and kept current from its change feed. Verdicts equal
// `ReferenceVerifier`'s (`kRateLimited` is checked last).
//
// Ownership: the verifier shares ownership of everything in its options.
// Thread safety: thread-safe. Any number of threads may verify while
// changes are applied, without blocking them. No call may be in progress
// when the verifier is destroyed (the destructor calls Shutdown()).
//
// Revocation: once Sync(), Refresh() or the feed's application of a change
// returns, no Verify that starts afterwards accepts what the change
// forbids. With `sync_in_callback` and a bundled store, that holds as soon
// as `KeyManager::Revoke()` returns (docs/design.md).
//
// Cost (bench/README.md): a hot key ~1.5-2x the token's digest alone
// (~100 ns); a mistyped token ~0.3-0.5x (no hashing); a cold key one more
// DRAM round trip. About 120 bytes of memory per key, and 11 more mapped for rate-limit
// denial counters (Stats().total_bytes counts them), resident only where keys are denied.
//
// Example:
//
//   keygate::VerifierOptions o;
//   o.deployment = deployment;  // the same one the KeyManager uses
//   o.store = store;
//   o.environment = "production";
//   absl::StatusOr<std::unique_ptr<keygate::Verifier>> v =
//       keygate::Verifier::Create(std::move(o));
//   absl::StatusOr<keygate::Requirement> read = registry.Require({"read:all"});
//   keygate::Verdict verdict = (*v)->Verify(authorization_header, *read);
//   keygate::HttpDecision http = keygate::DecideHttp(verdict, *read);

#ifndef KEYGATE_VERIFIER_H_
#define KEYGATE_VERIFIER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/key.h"
#include "keygate/key_store.h"
#include "keygate/rate_limiter.h"
#include "keygate/scope.h"
#include "keygate/usage.h"
#include "keygate/verdict.h"

namespace keygate {

// Validated once, by Verifier::Create. Intervals are at most
// kMaxVerifierInterval.
struct VerifierOptions {
  // Required.
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<KeyStore> store;
  std::string environment;  // a name in deployment->environments()

  // nullptr: the inline mask check (a custom one costs a cache miss).
  std::shared_ptr<const ScopeEvaluator> scope_evaluator;
  // nullptr: LocalRateLimiter. Policy: the key's, else its environment's.
  std::shared_ptr<RateLimiter> rate_limiter;
  // A limit per owner over all their keys; a denial consumes neither limit.
  std::optional<RateLimitPolicy> owner_rate_limit;
  // nullptr: SystemClock; read once per Verify that takes no `now`.
  std::shared_ptr<const Clock> clock;

  // Follow the change feed on a background thread (false: call Sync()).
  bool follow_changes = true;
  // Apply changes inside the store's change callback (false: only wake).
  bool sync_in_callback = true;
  // Pull the feed this often without a notification; rebuild from a full
  // read this often (zero: never); fetch this many changes per call (a
  // pull of several batches reads the next on a short-lived thread while
  // it applies one).
  absl::Duration poll_interval = absl::Seconds(1);       // > 0
  absl::Duration full_resync_interval = absl::Hours(1);  // >= 0
  std::size_t feed_batch = 1000;                         // 1 .. kMaxListLimit

  // Count successful verifications and rate-limit denials per key, and remember the last use
  // and the first denial (KeyUsage).
  bool record_usage = true;
  // Flush this often (zero: only FlushUsage() and Shutdown()); write
  // last_used only when it moved this much (TouchLastUsed's min_advance).
  absl::Duration usage_flush_interval = absl::Minutes(1);
  absl::Duration last_used_granularity = absl::Minutes(1);
  std::shared_ptr<UsageSink> usage_sink;  // optional; gets every batch

  // Sizes the first table; at most kMaxExpectedKeys (~120 B per key).
  std::size_t expected_keys = 0;
};

inline constexpr absl::Duration kMaxVerifierInterval = absl::Hours(24 * 365);
// 2^31: the index addresses at most 2^32 - 2 slots, at a load of 0.7.
inline constexpr std::size_t kMaxExpectedKeys = std::size_t{1} << 31;

// Counters for monitoring; a consistent snapshot of the writer's view.
struct VerifierStats {
  std::size_t keys = 0;                // keys indexed (all environments of the store)
  std::size_t slots_live = 0;          // live slots (a key in its roll grace has two)
  std::size_t slots_retired = 0;       // retired slots awaiting the next rebuild
  std::size_t capacity = 0;            // slots in the table
  std::size_t index_bytes = 0;         // hot slots (64 B each)
  std::size_t total_bytes = 0;         // + key ids, denial counters, side records, writer index
  std::uint64_t applied_sequence = 0;  // store sequence applied so far
  std::uint64_t changes_applied = 0;
  std::uint64_t rebuilds = 0;       // table swaps (resizes, compactions, reloads)
  std::uint64_t sync_failures = 0;  // feed pulls that failed (store unavailable)
  bool membarrier = false;          // readers run fence-free
};

class Verifier {
 public:
  // Validates `options`, loads every key and subscribes to the feed, so
  // that every change that returned before Create returns is in force.
  // Errors: kInvalidArgument naming the option ("deployment: required",
  // "environment: unknown environment 'x'", "poll_interval: must be at most
  // 365 days", ...); kResourceExhausted (index allocation); the store's.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Verifier>> Create(VerifierOptions options);

  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // Verifies an Authorization header value at `now` (default: the clock,
  // read once). Times are held to int64 Unix nanoseconds (1678-2262; a
  // later expiry is never). No allocation, except once per thread ever.
  [[nodiscard]] Verdict Verify(std::string_view authorization,
                               const Requirement& requirement) const noexcept;
  [[nodiscard]] Verdict Verify(std::string_view authorization, const Requirement& requirement,
                               absl::Time now) const noexcept;
  // Verifies a bare token (ReferenceVerifier steps 2-11), as Verify does.
  [[nodiscard]] Verdict VerifyToken(std::string_view token,
                                    const Requirement& requirement) const noexcept;
  [[nodiscard]] Verdict VerifyToken(std::string_view token, const Requirement& requirement,
                                    absl::Time now) const noexcept;

  // Applies everything committed to the feed before the call.
  // Errors: the store's (kUnavailable ...); the index keeps its last state.
  [[nodiscard]] absl::Status Sync();
  // Reads `key_id` from the store and applies it at once (a delete if it
  // is gone). Errors: the store's; kDataLoss also drops the key.
  [[nodiscard]] absl::Status Refresh(std::string_view key_id);
  // Rebuilds the index from a full read of the store; rate-limit and usage
  // state carry over. Errors: the store's; the old index keeps serving.
  [[nodiscard]] absl::Status Reload();

  // Hands collected usage to the UsageSink and writes last_used with one
  // KeyStore::TouchLastUsed. Errors: the store's (the times are kept).
  [[nodiscard]] absl::Status FlushUsage();

  // Stops the background threads and flushes usage once more. Idempotent;
  // a concurrent call returns when the first is done. Verify still works.
  void Shutdown();

  // The writer's counters; waits for a change being applied.
  VerifierStats Stats() const;

 private:
  struct Impl;
  explicit Verifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_VERIFIER_H_
