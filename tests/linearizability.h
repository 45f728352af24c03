// tests/linearizability.h: records concurrent histories of key management and
// verification, and checks them for linearizability against a sequential
// model of one key's life.
//
// A concurrent test records every operation it makes: a management call
// (create, revoke, restore, roll, modify, delete) that succeeded, and every
// verification with the verdict it gave, each with its invocation and
// response ticks on one shared logical clock (`History::Now`, one atomic
// counter). `Check` then asks whether there is one sequential order of all
// operations that respects real time (an operation that returned before
// another was invoked comes first) in which every operation does what the
// model says: each management call is allowed in the state it meets, and
// each verdict is exactly the one the model gives for its token in that
// state. This is the Knossos / Porcupine question, decided per key (a
// history is linearizable iff each key's sub-history is: keys are
// independent objects) and per replica (see Op::replica), with the Wing &
// Gong search as improved by Lowe
// (memoising configurations already explored). Verifications do not change
// the state, so one that matches the current state and may go next is
// placed at once, without branching; the search branches only over
// concurrent management calls.
//
// What it proves, in the words of the README's promises: once a revoke,
// delete or roll has returned, no verification that starts afterwards
// accepts what it forbids (with the `now` that verification used); and no
// verdict names a reason (unknown, revoked, expired, insufficient scope, ok)
// that the key was never in during the verification's interval: a revoked
// key reported as unknown, or a deleted token that comes back after a later
// operation, is a violation.
//
// The model of one key (what `KeyManager` and `ReferenceVerifier` document):
//   absent --create--> live --delete--> deleted (for good; ids are unique)
//   live: revoked or not (revoke/restore are idempotent), a current token, at
//   most one previous token accepted while `now < valid_until` (a roll with
//   zero grace forgets it; a later roll replaces it), an optional expiry,
//   granted scopes. Roll needs an active key; revoke, restore, modify and
//   delete need a live one.
// A verification of token t at time `now` answers, in ReferenceVerifier's
// order: unknown (no live key holds t), expired (t is the previous token and
// now >= valid_until), revoked, expired (expires <= now), insufficient
// scope, ok.
//
// Example:
//
//   keygate::linearizability::History history;
//   keygate::linearizability::History::Log& log = history.NewLog();  // per thread
//   Op op = Op::Revoke(id);
//   op.call = history.Now();
//   ... manager.Revoke(id, "w") ...  // record only if it succeeded
//   op.ret = history.Now();
//   log.Add(std::move(op));
//   ...
//   CheckResult r = Check(history.Ops());
//   INFO(r.failure); CHECK(r.linearizable);
//
// Tokens are secrets: messages name them by key and issue order ("token 2
// of key_..."), never by value.
//
// Thread safety: History::Now and NewLog are thread-safe; a Log is used by
// one thread at a time; Ops and Check run once every recording thread is
// done.

#ifndef KEYGATE_TESTS_LINEARIZABILITY_H_
#define KEYGATE_TESTS_LINEARIZABILITY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

#include "keygate/verdict.h"

namespace keygate::linearizability {

// A point on the history's logical clock. Distinct for every call of
// History::Now.
using Tick = std::uint64_t;

enum class OpKind : std::uint8_t {
  kCreate,
  kRevoke,
  kRestore,
  kRoll,
  kModify,
  kDelete,
  kVerify,
};

std::string_view OpKindName(OpKind kind) noexcept;

// One operation of the history. `call` < `ret`; management calls are
// recorded only when they succeeded (a call that failed is assumed to have
// changed nothing, which is what KeyManager documents).
struct Op {
  OpKind kind = OpKind::kVerify;
  // The key operated on; for kVerify, the key that `token` was issued to,
  // or empty for a token that was never issued.
  std::string key;
  Tick call = 0;
  Tick ret = 0;
  // kCreate: the key's first token; kRoll: the new token; kVerify: the token
  // presented.
  std::string token;
  // kCreate: the granted scopes (nullopt: none). kModify: set when changed.
  std::optional<std::vector<std::string>> scopes;
  // kCreate: the expiry (the inner nullopt: none). kModify: set when changed
  // (the inner nullopt clears it).
  std::optional<std::optional<absl::Time>> expires;
  // kRoll: the previous token is accepted while now < this; nullopt: zero
  // grace, the previous token is forgotten at once.
  std::optional<absl::Time> previous_valid_until;
  // kVerify: the required scope ("" for none), the time the verifier was
  // given, and what it answered (the outcome and Verdict::key()).
  std::string scope;
  absl::Time now = absl::UnixEpoch();
  Outcome outcome = Outcome::kUnavailable;
  std::string verdict_key;
  // kVerify: the replica that answered (a Verifier, a ReferenceVerifier on
  // the store, a verifier on a database replica). Each replica must be
  // linearizable on its own, with the same management calls: the check is
  // made per replica, since two replicas may disagree while a change travels
  // from one to the other.
  int replica = 0;
  // Who made the call, for messages (a thread number, or -1).
  int client = -1;

  static Op Create(std::string key, std::string token, std::vector<std::string> scopes,
                   std::optional<absl::Time> expires = std::nullopt);
  static Op Revoke(std::string key);
  static Op Restore(std::string key);
  static Op Roll(std::string key, std::string new_token,
                 std::optional<absl::Time> previous_valid_until);
  static Op Modify(std::string key, std::optional<std::vector<std::string>> scopes,
                   std::optional<std::optional<absl::Time>> expires = std::nullopt);
  static Op Delete(std::string key);
  // The verdict is filled in after the call.
  static Op Verify(std::string key, std::string token, std::string scope, absl::Time now);
};

// Collects the operations of one test run.
class History {
 public:
  // The operations of one thread. Not thread-safe: one per thread.
  class Log {
   public:
    void Add(Op op) { ops_.push_back(std::move(op)); }
    std::size_t size() const noexcept { return ops_.size(); }

   private:
    friend class History;
    std::vector<Op> ops_;
  };

  // A fresh tick, after every tick handed out before (a sequentially
  // consistent fetch-add: if one operation's `ret` is below another's
  // `call`, the first returned before the second began, and everything the
  // first did happens-before the second).
  Tick Now() noexcept { return clock_.fetch_add(1, std::memory_order_seq_cst); }

  // A new log; valid as long as the History. Thread-safe.
  Log& NewLog();

  // Every operation of every log. Call once the recording threads are done.
  std::vector<Op> Ops() const;

 private:
  std::atomic<Tick> clock_{1};
  mutable std::mutex mu_;
  std::deque<Log> logs_;
};

struct CheckOptions {
  // Whether `granted` satisfies `required` (never called with an empty
  // `required`, which every key satisfies). nullptr: `required` is one of
  // `granted`, literally (right for scopes that imply no others).
  std::function<bool(const std::vector<std::string>& granted, std::string_view required)>
      scope_allows;
  // Each verdict that identifies a key (all but unknown) must name the key
  // its token was issued to, and an unknown one none.
  bool check_verdict_key = true;
  // Configurations the search may explore per key before it gives up
  // (the result is then inconclusive, and not linearizable).
  std::size_t max_configurations = 2'000'000;
};

struct CheckResult {
  bool linearizable = false;
  bool inconclusive = false;  // the search ran out of max_configurations
  std::size_t keys = 0;       // keys checked (a group for never-issued tokens counts)
  std::size_t operations = 0;
  std::size_t verifications = 0;
  std::size_t configurations = 0;  // explored, all keys together
  std::string key;                 // the key found not linearizable
  int replica = 0;                 // and the replica
  // For a history that is not linearizable: the key, the operation that
  // could not be placed in the longest consistent prefix found, what the
  // model allowed there, and the operations concurrent with it.
  std::string failure;
};

// Decides whether `ops` is linearizable (see the file comment). A history
// that is malformed (ret <= call, a token issued to two keys, a verify that
// names another key than the one its token was issued to) is reported as
// not linearizable, with the reason in `failure`.
CheckResult Check(const std::vector<Op>& ops, const CheckOptions& options = {});

// Every operation of `key` (management calls, and the verifies of
// `replica`), one a line in invocation order, tokens by number: to read
// what led up to a failure.
std::string DescribeKey(const std::vector<Op>& ops, std::string_view key, int replica = 0);

}  // namespace keygate::linearizability

#endif  // KEYGATE_TESTS_LINEARIZABILITY_H_
