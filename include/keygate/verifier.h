// keygate/verifier.h: the lock-free, allocation-free hot-path verifier.
//
// An in-memory replica of one environment's keys, loaded from a `KeyStore`
// and following its change feed. Verdicts equal `ReferenceVerifier`'s, with
// `kRateLimited` checked last. docs/design.md explains the layout,
// reclamation and linearizability. Times are int64 Unix nanoseconds (years
// 1678-2262; a later expiry counts as never).
//
// Cost (bench/README.md): a hot key ~1.5-2x the digest alone (~100 ns); a
// mistyped token ~0.3-0.5x (no hashing); a cold key adds one DRAM round
// trip. Memory: about 120 bytes per key.
//
// Revocation: when Sync(), Refresh() or a change-feed entry's application
// returns, no Verify that starts afterwards accepts what the change forbids.
// With `sync_in_callback` (the default) and a store that notifies before a
// write returns (both bundled stores do for writes made through them),
// that holds as soon as `KeyManager::Revoke()` returns. Other writers'
// changes apply within the feed's latency (push, or `poll_interval`), or at
// once after `Refresh(id)`.
//
// Example:
//
//   keygate::VerifierOptions o;
//   o.deployment = deployment;            // the same one the KeyManager uses
//   o.store = store;
//   o.environment = "production";
//   absl::StatusOr<std::unique_ptr<keygate::Verifier>> v =
//       keygate::Verifier::Create(std::move(o));
//   // Once per route; a misspelled scope fails here, not open.
//   absl::StatusOr<keygate::Requirement> read = registry.Require({"read:all"});
//   keygate::Verdict verdict = (*v)->Verify(authorization_header, *read);
//   keygate::HttpDecision http = keygate::DecideHttp(verdict, *read);
//
// Thread safety: thread-safe; any number of threads may verify while one
// change is applied at a time, without blocking them. Destroying the
// verifier stops its threads; no call may be in progress then.

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

struct VerifierOptions {
  // Required: the deployment, the store to replicate, the environment.
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<KeyStore> store;
  std::string environment;

  // Scope rules a mask cannot express. nullptr: the inline mask check. A
  // custom evaluator costs one more cache miss per cold key.
  std::shared_ptr<const ScopeEvaluator> scope_evaluator;

  // nullptr: a LocalRateLimiter (GCRA in each key's slot, devirtualised).
  // Keys use their own policy, else their environment's default, else none.
  std::shared_ptr<RateLimiter> rate_limiter;
  // A limit per owner over all their keys; a denial consumes neither limit.
  std::optional<RateLimitPolicy> owner_rate_limit;

  // nullptr: SystemClock. Read once per Verify call that takes no `now`.
  std::shared_ptr<const Clock> clock;

  // Follow the store's change feed on a background thread (push and poll).
  // false: the caller applies changes with Sync().
  bool follow_changes = true;
  // Apply changes inside the store's change callback (see the file
  // comment). false: the callback only wakes the feed thread.
  bool sync_in_callback = true;
  // Poll the feed this often without notifications; rebuild the index from
  // the store this often (zero: never). Each at most kMaxVerifierInterval.
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration full_resync_interval = absl::Hours(1);
  // Changes fetched per ChangesSince call.
  std::size_t feed_batch = 1000;

  // Count successful verifications per key and remember the last use.
  bool record_usage = true;
  // Flush usage this often (zero: only on FlushUsage() and at shutdown).
  absl::Duration usage_flush_interval = absl::Minutes(1);
  // Write `last_used` only when it moved by at least this much
  // (KeyStore::TouchLastUsed's `min_advance`).
  absl::Duration last_used_granularity = absl::Minutes(1);
  // Receives every collected batch (optional).
  std::shared_ptr<UsageSink> usage_sink;

  // Sizes the first table (no resizes during the load); at most
  // kMaxExpectedKeys. Allocated up front: ~120 B per key (2x during Reload).
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
  std::size_t total_bytes = 0;         // + key-id array, side records in use, writer index
  std::uint64_t applied_sequence = 0;  // store sequence applied so far
  std::uint64_t changes_applied = 0;
  std::uint64_t rebuilds = 0;       // table swaps (resizes, compactions, reloads)
  std::uint64_t sync_failures = 0;  // feed pulls that failed (store unavailable)
  bool membarrier = false;          // readers run fence-free
};

class Verifier {
 public:
  // Loads every key, subscribes (with follow_changes) and applies what was
  // committed meanwhile, so every change that returned before Create
  // returns is in force. Errors: kInvalidArgument naming the option
  // ("deployment: required", "environment: unknown environment 'x'",
  // "poll_interval: must be at most 365 days", ...); the store's errors
  // (kUnavailable ...).
  static absl::StatusOr<std::unique_ptr<Verifier>> Create(VerifierOptions options);

  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // Verifies an Authorization header value, reading the clock once.
  Verdict Verify(std::string_view authorization, const Requirement& requirement) const noexcept;
  Verdict Verify(std::string_view authorization, const Requirement& requirement,
                 absl::Time now) const noexcept;
  // Verifies a bare token (ReferenceVerifier steps 2-11).
  // Neither allocates, except once per thread ever (its reclamation record).
  Verdict VerifyToken(std::string_view token, const Requirement& requirement) const noexcept;
  Verdict VerifyToken(std::string_view token, const Requirement& requirement,
                      absl::Time now) const noexcept;

  // Pulls the change feed now and applies everything committed before the
  // call. Errors: the store's (kUnavailable ...); the index keeps serving
  // its last state.
  absl::Status Sync();
  // Reads `key_id`'s record from the store and applies it at once (a
  // delete if it is gone). Errors: the store's; kDataLoss (undecodable
  // record) also drops the key: fail closed.
  absl::Status Refresh(std::string_view key_id);
  // Rebuilds the index from a full read of the store (the periodic resync).
  // Rate-limit and usage state carry over, including what readers of the
  // old index consumed during the swap; a key whose bucket runs out during
  // the swap may pass a few extra requests, which are charged and repaid
  // (docs/design.md). A change applied during the read is never undone.
  // Errors: the store's; the old index keeps serving.
  absl::Status Reload();

  // Collects usage, calls the UsageSink, and writes last_used with one
  // KeyStore::TouchLastUsed call. Errors: the store's; the last-used times
  // are kept for the next flush (the sink gets each count once).
  absl::Status FlushUsage();

  // Stops the background threads and flushes usage one last time.
  // Idempotent: a call made while another runs returns once that one is
  // done. Verify keeps working afterwards on the last state.
  void Shutdown();

  VerifierStats Stats() const;

 private:
  struct Impl;
  explicit Verifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_VERIFIER_H_
