// keygate/testing/key_store_conformance.h: the KeyStore conformance suite, for a backend's own
// tests (target `keygate::conformance`, find_package component `conformance`). Every bundled
// store passes it; a third-party store that passes it keeps the contract of key_store.h.
//
// The suite is a list of checks, each run on a fresh, EMPTY store from your factory. A check
// returns the violations it found (none: the store conforms); no test framework is needed.
// Checks that need to know the backend (cursor form, corrupting a record) or a promise beyond
// key_store.h read `BackendHooks`; without the hook such a check is not applicable (reported so,
// never as passed). Thread safety: checks run threads of their own; run one check at a time per
// store. Cost: each check makes at most a few hundred writes (KEYGATE_STRESS=1: more).
//
// Example (any test framework, or none):
//   keygate::conformance::BackendHooks hooks;
//   hooks.cursor_for = [](std::string_view id) { return "c:" + std::string(id); };
//   std::vector<keygate::conformance::CheckResult> results = keygate::conformance::RunSuite(
//       [] { return absl::StatusOr<std::shared_ptr<keygate::KeyStore>>(MakeMyStore()); }, hooks);
//   std::cout << keygate::conformance::FormatReport(results);
//   return keygate::conformance::AllPassed(results) ? 0 : 1;

#ifndef KEYGATE_TESTING_KEY_STORE_CONFORMANCE_H_
#define KEYGATE_TESTING_KEY_STORE_CONFORMANCE_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/digest.h"
#include "keygate/key.h"
#include "keygate/key_store.h"

namespace keygate::conformance {

// What the suite must be told of a backend. Every member is optional.
struct BackendHooks {
  // The cursor, in this store's form, that makes List resume after `id` (whether or not a key
  // has that id). Unset: the hand-built cursor part of the cursor check is skipped.
  std::function<std::string(std::string_view id)> cursor_for;
  // Strings close to this store's cursor form that name no id (List must refuse them).
  std::vector<std::string> malformed_cursors;
  // Makes the stored state of key `id` undecodable, as a bad disk or a hand edit would, without
  // a change-log entry. Unset: the corrupt-record check is not applicable.
  std::function<absl::Status(KeyStore& store, std::string_view id)> corrupt_record;
  // TouchLastUsed bumps no version and appends no change (as both bundled stores promise).
  bool touch_is_not_a_change = false;
  // A write returns after every subscriber finished a callback round that started after its
  // commit, also while a round runs on another thread (a ChangeNotifier gives this).
  bool writes_wait_for_subscribers = false;
};

struct Findings {
  std::vector<std::string> violations;  // empty: the store conforms
  std::vector<std::string> skipped;     // parts that did not run, and why
  std::string not_applicable;           // set: the check did not apply (why)
};

enum class Outcome { kPassed, kFailed, kNotApplicable };

// kFailed with any violation, else kNotApplicable when `not_applicable` is set, else kPassed.
Outcome OutcomeOf(const Findings& findings);
std::string_view OutcomeName(Outcome outcome);  // "PASS", "FAIL", "N/A"

using CheckFn =
    std::function<Findings(const std::shared_ptr<KeyStore>& store, const BackendHooks& hooks)>;

struct Check {
  std::string group;        // e.g. "writes", "list", "feed", "subscriptions", "concurrency"
  std::string name;         // what it checks, unique in the suite
  bool concurrent = false;  // runs threads (worth running under ThreadSanitizer)
  CheckFn run;
};

// Every check, grouped, in a fixed order.
const std::vector<Check>& Checks();

// A fresh, empty store per call.
using StoreFactory = std::function<absl::StatusOr<std::shared_ptr<KeyStore>>()>;

// Runs `check` on a store from `factory`; a factory error is a violation.
Findings RunCheck(const Check& check, const StoreFactory& factory, const BackendHooks& hooks);

struct CheckResult {
  std::string group;
  std::string name;
  Outcome outcome = Outcome::kPassed;
  Findings findings;
};

// Runs every check `select` accepts (all when unset), one store each, in order.
std::vector<CheckResult> RunSuite(const StoreFactory& factory, const BackendHooks& hooks,
                                  const std::function<bool(const Check&)>& select = {});

// One line per check ("PASS group: name", "N/A ...: why"), one more per violation or skip.
std::string FormatReport(const std::vector<CheckResult>& results);

// No check failed (not-applicable ones do not fail).
bool AllPassed(const std::vector<CheckResult>& results);

// Test data the checks use, for a backend's own tests: a valid active general key `id` whose
// digest is DigestFor(id), created and updated at BaseTime() (whole microseconds).
KeyRecord MakeRecord(std::string id, std::string owner = "alice",
                     std::string environment = "production", KeyKind kind = KeyKind::kGeneral,
                     std::string name = "");
Digest DigestFor(std::string_view seed);  // distinct and deterministic per seed
absl::Time BaseTime();

}  // namespace keygate::conformance

#endif  // KEYGATE_TESTING_KEY_STORE_CONFORMANCE_H_
