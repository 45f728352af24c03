// keygate/verifier.h: the lock-free, allocation-free hot-path verifier.
//
// A `Verifier` is an in-memory replica of one environment's keys, loaded from
// a `KeyStore` and kept current by the store's change feed. `Verify` answers
// in a few hundred nanoseconds of the calling thread's CPU: parse the header,
// reject malformed tokens (no hashing), hash once, one probe of an
// open-addressing table, the key's checks, GCRA. It takes no lock, allocates
// nothing, throws nothing and does no I/O. Its verdicts are identical
// (outcome and key id) to `ReferenceVerifier`'s, with the rate-limit check
// (`kRateLimited`) added last.
//
// Cost on the reference machine (2 vCPUs of an AMD EPYC with SHA-NI;
// bench/README.md has the figures and how to reproduce them): a hot key
// ~1.5-2x the digest alone (the digest of a 57-byte token is ~100 ns); a
// forged or mistyped token ~0.3-0.5x (rejected by its checksum before any
// hashing); a cold key adds one DRAM round trip. The header shape clients
// send ("Bearer " + one token of this environment) is recognised in one pass
// (~30 ns); any other spelling goes through ParseBearer/ParseToken (~90 ns)
// and gets the same verdict.
//
// Example:
//
//   keygate::VerifierOptions o;
//   o.deployment = deployment;            // the same one the KeyManager uses
//   o.store = store;
//   o.environment = "production";
//   absl::StatusOr<std::unique_ptr<keygate::Verifier>> v =
//       keygate::Verifier::Create(std::move(o));
//   keygate::Requirement read{.scopes = *registry.Compile({"read:all"}),
//                             .scope_name = "read:all"};
//   keygate::Verdict verdict = (*v)->Verify(authorization_header, read);
//   keygate::HttpDecision http = keygate::DecideHttp(verdict, read);
//
// Layout (why it is fast): one 64-byte, cache-line-aligned slot per token
// digest holds everything the checks read (digest, state, expiry,
// environment, scope mask, the key's GCRA TAT, usage counters), found by the
// digest's first 8 bytes in a linear-probing table backed by transparent huge
// pages; the key id for the verdict sits, packed into 16 bytes, in a parallel
// array, fetched at the same time. A lookup of a cold key costs one DRAM
// round trip. Memory: 84 bytes per slot at a load of 0.7 after a load or
// rebuild (the table size is not a power of two), 120 bytes per key.
// A lookup compares 192 bits of the token's digest (an HMAC under the
// deployment's secret pepper): a forged token matches one of n keys with
// probability n / 2^192. Accounts, scope names (for custom evaluators) and per-owner
// limits live in a per-key side record read only when a request needs them.
//
// Concurrency: any number of threads may call Verify/VerifyToken at once.
// Changes are applied by one writer at a time (the feed thread, Sync(),
// Refresh(), the store's change callback) without ever blocking readers:
// slots are immutable once published, except for their state word (revoke /
// restore flip it with one atomic store) and their atomics (TAT, usage); a
// changed key gets a fresh slot and its old slot is retired with one atomic
// store. The fresh slot takes over the key's rate-limit state, and what
// readers charged to the old slot while it was being replaced is added to
// it (a reader already past its lookup may still charge the old slot once;
// that is not waited for). Tables are resized or reloaded by building a new one and swapping a
// pointer; the old one is freed after an epoch grace period (our own
// userspace-RCU-style reclamation: a reader pays a load and two plain stores).
//
// Revocation is linearizable once applied: when Sync(), Refresh() or the
// application of a change-feed entry that revokes, deletes, rolls or
// otherwise restricts a key returns, no Verify that starts afterwards accepts
// what the change forbids (the writer's last store is sequentially
// consistent, so it is visible to every core before the call returns).
//
// To make `KeyManager::Revoke()` itself the linearization point, the
// verifier applies changes synchronously inside the store's change callback
// (`sync_in_callback`, the default): a store that invokes its subscribers on
// the mutating thread before the call returns (MemoryKeyStore does) then
// gives "after Revoke() returns, the key is rejected" with no further step.
// We chose this over a separate `RevokeNow(key_id)` entry point because it
// covers every mutation (revoke, delete, roll, scope or expiry changes),
// cannot be forgotten by the caller, and cannot regress state: the verifier
// only ever applies the store's current record, never a caller's copy.
// Stores whose notifications are asynchronous (a database shared by several
// servers) need one more call, `Refresh(id)` (or `Sync()`) after the
// management call for the same guarantee; otherwise the change applies
// within the feed's latency (push, or `poll_interval` at worst).
// MemoryKeyStore needs none, also with several threads mutating it at once:
// a write returns only after a callback round that started after it ran.
//
// A rolled key's previous token is rejected (kExpired) from its
// `valid_until` on, to the nanosecond of the time passed to (or read by)
// Verify.
//
// Times are kept as int64 Unix nanoseconds, which span the years 1678-2262:
// an expiry or deadline after 2262 counts as "never", and a `now` outside
// the span is held to its end (so absl::InfiniteFuture() expires only keys
// with an expiry; the rate limiter holds `now` to 1824-2116). Within the
// span the verdicts are ReferenceVerifier's.
//
// Thread safety: thread-safe. Destroying the verifier stops its background
// threads; no call may be in progress on it then.

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
  // Required: the deployment (token prefix, environments, scopes, hasher),
  // the store to replicate, and the name of the environment this server
  // serves.
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<KeyStore> store;
  std::string environment;

  // Decides scopes for rules a mask cannot express. nullptr (or a
  // MaskScopeEvaluator): the inline mask check. A custom evaluator makes
  // every verification that reaches the scope check read the key's side
  // record (scope names): one more cache miss for cold keys.
  std::shared_ptr<const ScopeEvaluator> scope_evaluator;

  // Enforces rate limits. nullptr: a LocalRateLimiter (GCRA on the TAT in
  // each key's slot; the call is devirtualised). Keys use their own policy,
  // else their environment's default_rate_limit, else no limit.
  std::shared_ptr<RateLimiter> rate_limiter;
  // An additional limit per owner, shared by all of the owner's keys. A
  // request denied by either limit consumes neither.
  std::optional<RateLimitPolicy> owner_rate_limit;

  // nullptr: SystemClock. Read once per Verify call that takes no `now`.
  std::shared_ptr<const Clock> clock;

  // Follow the store's change feed on a background thread (Subscribe for
  // pushes, plus polling). false: no thread and no subscription; the caller
  // applies changes with Sync() (tests, tools).
  bool follow_changes = true;
  // Apply changes synchronously inside the store's change callback (see the
  // file comment). When false, the callback only wakes the feed thread.
  bool sync_in_callback = true;
  // Safety nets: poll the feed this often even without notifications, and
  // rebuild the whole index from the store this often (zero: never), which
  // also heals a store whose change log lost entries.
  // (Each interval is at most kMaxVerifierInterval, 365 days.)
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration full_resync_interval = absl::Hours(1);
  // Changes fetched per ChangesSince call.
  std::size_t feed_batch = 1000;

  // Count successful verifications per key and remember the last use.
  bool record_usage = true;
  // Collect usage and write `last_used` to the store this often (zero: only
  // on FlushUsage() and at shutdown).
  absl::Duration usage_flush_interval = absl::Minutes(1);
  // Write a key's `last_used` only when it moved by at least this much
  // (KeyStore::TouchLastUsed's `min_advance`): fewer store writes, and for
  // stores without their own TouchLastUsed, fewer version bumps.
  absl::Duration last_used_granularity = absl::Minutes(1);
  // Receives every collected batch (optional).
  std::shared_ptr<UsageSink> usage_sink;

  // Sizes the first table (avoids resizes during the initial load); at most
  // kMaxExpectedKeys. The table is allocated and initialised up front: about
  // 120 B per expected key (twice that during a Reload).
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
  // Loads every key from the store (ChangesSince(0) until exhausted) and,
  // with follow_changes, subscribes, applies what was committed between the
  // load and the subscription (so every change that returned before Create
  // returns is in force), and starts the feed thread.
  // Errors: kInvalidArgument naming the option ("deployment: required",
  // "environment: unknown environment 'x'" (the name quoted only if it is a
  // well-formed one), "feed_batch: ...", "poll_interval: must be at most 365
  // days", "expected_keys: ...", "owner_rate_limit.burst: ..." as
  // ValidateRateLimitPolicy); the store's errors (kUnavailable ...) from the
  // initial load or the catch-up after subscribing.
  static absl::StatusOr<std::unique_ptr<Verifier>> Create(VerifierOptions options);

  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // Verifies an Authorization header value, reading the clock once.
  Verdict Verify(std::string_view authorization, const Requirement& requirement) const noexcept;
  Verdict Verify(std::string_view authorization, const Requirement& requirement,
                 absl::Time now) const noexcept;
  // Verifies a bare token (ReferenceVerifier steps 2-11).
  Verdict VerifyToken(std::string_view token, const Requirement& requirement) const noexcept;
  Verdict VerifyToken(std::string_view token, const Requirement& requirement,
                      absl::Time now) const noexcept;
  // The hot path allocates nothing, except that the first call on each
  // thread registers the thread for reclamation (one small allocation per
  // thread, ever).

  // Pulls the change feed now and applies everything committed before the
  // call. Errors: the store's (kUnavailable ...); the index keeps serving
  // its last state.
  absl::Status Sync();
  // Reads `key_id`'s current record from the store and applies it at once
  // (a delete if it no longer exists); linearizable revocation for stores
  // whose change notifications are asynchronous. Errors: the store's; a
  // kDataLoss (the key's record cannot be decoded) also drops the key, so
  // that it fails closed.
  absl::Status Refresh(std::string_view key_id);
  // Rebuilds the index from a full read of the store (what the periodic
  // resync does); rate-limit and usage state carry over. So does what
  // readers still on the old index consume while it is swapped out (here
  // and when the index is resized): it is added to the new index's state
  // once they have left, so every request let through is charged. While
  // both indexes serve (from the copy of a key's state until the readers
  // have left the old index: for a resize, the length of the copy), each
  // decides on its own view, so a key whose bucket runs out in that window
  // can pass a few requests beyond its limit; they are charged, and repaid
  // by the denials that follow. (A key whose bucket was full
  // is charged from the moment its state was copied, by the verifier's
  // clock: up to the copy's duration too much.) The read takes no
  // lock that feed application needs; the new index is brought up to date
  // with the feed before it replaces the old one, so a change applied
  // during the read (a revoke, say) is never undone, not even briefly.
  // Errors: the store's; the old index keeps serving.
  absl::Status Reload();

  // Collects usage, calls the UsageSink, and writes last_used with one
  // KeyStore::TouchLastUsed call (for the bundled stores: one transaction,
  // no version bump, no change-feed entry, so concurrent management changes
  // are neither overwritten nor aborted). Errors: the store's; the
  // last-used times are then kept for the next flush (the sink has had the
  // counts already, and gets each count once).
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
