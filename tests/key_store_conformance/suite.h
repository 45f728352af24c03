// The conformance suite's internals (keygate/testing/key_store_conformance.h
// is its API): the Checker a check reports to, the assertion macros, the
// helpers every group shares, and the groups.
//
// Adding a group: a new <group>.cc defining `std::vector<Check>
// <Group>Checks()`, declared below and listed in Checks() (suite.cc) and in
// CMakeLists.txt. A check is either
//   * `void Fn(const std::shared_ptr<KeyStore>& store, Checker& c)`, using
//     KEYGATE_EXPECT (records a violation and goes on) and KEYGATE_ASSERT /
//     KEYGATE_ASSERT_OK (records it and returns from the function), wrapped
//     with Simple() or IfPromised(); or
//   * a CheckFn that makes its own Checker and returns c.Take().
// Every write a check makes goes through SuiteInsert, SuiteUpdate and
// SuiteDelete, so that a change of the write signatures is made once, here.
//
// What the suite requires beyond the header comments of key_store.h:
//   * Times round-trip at microsecond precision: a backend may drop the
//     sub-microsecond part (toward the past) but returns microseconds exactly.
//   * ListPage::next_cursor is empty exactly when no further record matches;
//     a cursor the store did not produce is kInvalidArgument.
//   * A failed write (invalid id, duplicate id or digest, personal key taken,
//     stale version, not found) changes nothing a client can see: no record,
//     no digest, no change entry, LastSequence() does not move.
//   * A subscription callback never runs before the change it reports is
//     visible to readers, never after its Subscription is destroyed, and the
//     destructor waits for a callback in flight on another thread.
// Every check is small enough for a database-backed store (a few hundred
// writes); KEYGATE_STRESS=1 runs the larger concurrent ones.

#ifndef KEYGATE_TESTS_KEY_STORE_CONFORMANCE_SUITE_H_
#define KEYGATE_TESTS_KEY_STORE_CONFORMANCE_SUITE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "keygate/audit.h"
#include "keygate/key_store.h"
#include "keygate/testing/key_store_conformance.h"

namespace keygate::conformance {

// ---------------------------------------------------------------------------
// The three writes. Every check writes through these.

// The audit note of the suite's writes: actor "conformance", a fixed time.
inline AuditNote SuiteNote(EventType type) {
  return AuditNote{type, "conformance", absl::FromUnixSeconds(1'700'000'000), {}};
}
inline absl::Status SuiteInsert(KeyStore& store, const KeyRecord& record) {
  return store.Insert(record, SuiteNote(EventType::kCreated));
}
inline absl::StatusOr<KeyRecord> SuiteUpdate(KeyStore& store, const KeyRecord& record) {
  return store.Update(record, SuiteNote(EventType::kModified));
}
inline absl::Status SuiteDelete(KeyStore& store, std::string_view id,
                                std::optional<std::uint64_t> expected_version) {
  return store.Delete(id, expected_version, SuiteNote(EventType::kDeleted));
}

// ---------------------------------------------------------------------------
// Reporting.

inline absl::Status StatusOf(const absl::Status& s) { return s; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// Collects a check's findings. Thread-safe: the threads of a concurrent
// check report through one Checker.
class Checker {
 public:
  // Records `what` as a violation unless `ok`; returns `ok`.
  bool Expect(bool ok, const std::string& what) {
    if (!ok) Violation(what);
    return ok;
  }
  bool ExpectOk(const absl::Status& s, const std::string& what) {
    if (!s.ok()) Violation(absl::StrCat(what, ": ", s.ToString()));
    return s.ok();
  }
  template <typename T>
  bool ExpectOk(const absl::StatusOr<T>& s, const std::string& what) {
    return ExpectOk(s.status(), what);
  }
  // `s` must have one of `codes`.
  bool ExpectCode(const absl::Status& s, const std::vector<absl::StatusCode>& codes,
                  const std::string& what);
  void Violation(const std::string& what);
  void Skip(const std::string& why);
  void NotApplicable(const std::string& why);
  Findings Take();

 private:
  static constexpr std::size_t kMaxViolations = 50;
  std::mutex mu_;
  Findings findings_;
};

// "<expression> (<file>:<line>)" for a failed assertion.
std::string Where(std::string_view file, int line, std::string_view expression);

// The assertion macros of the Simple() checks; they need a `Checker& c`.
#define KEYGATE_EXPECT(...)                \
  c.Expect(static_cast<bool>(__VA_ARGS__), \
           ::keygate::conformance::Where(__FILE__, __LINE__, #__VA_ARGS__))
#define KEYGATE_EXPECT_FALSE(...) KEYGATE_EXPECT(!(__VA_ARGS__))
#define KEYGATE_ASSERT(...)                   \
  do {                                        \
    if (!KEYGATE_EXPECT(__VA_ARGS__)) return; \
  } while (false)
#define KEYGATE_ASSERT_FALSE(...) KEYGATE_ASSERT(!(__VA_ARGS__))
#define KEYGATE_ASSERT_OK(...)                                                          \
  do {                                                                                  \
    if (!c.ExpectOk(::keygate::conformance::StatusOf(__VA_ARGS__),                      \
                    ::keygate::conformance::Where(__FILE__, __LINE__, #__VA_ARGS__))) { \
      return;                                                                           \
    }                                                                                   \
  } while (false)

using SimpleFn = void (*)(const std::shared_ptr<KeyStore>& store, Checker& c);

// A CheckFn running `fn`.
CheckFn Simple(SimpleFn fn);
// A CheckFn running `fn` when the backend promises `promise`, else not applicable.
CheckFn IfPromised(bool BackendHooks::*promise, std::string_view promise_name, SimpleFn fn);

// ---------------------------------------------------------------------------
// Helpers shared by the groups.

bool StressEnabled();             // KEYGATE_STRESS set (and not "0"): larger concurrent runs
KeyRecord AtMicros(KeyRecord r);  // as any conforming store returns it
std::vector<std::string> Ids(const std::vector<KeyRecord>& records);
std::string Joined(const std::vector<std::string>& ids);
// Polls `pred`; the deadline only guards against a hang, it is no timing claim.
bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(60));
// LastSequence(), or 0 after recording the error.
std::uint64_t LastSeq(KeyStore& store, Checker& c);
// Follows cursors to the end, checking each page's size and order.
std::vector<std::string> ListAllIds(KeyStore& store, ListOptions options, Checker& c,
                                    std::size_t* pages = nullptr);
std::vector<std::string> ListAllIds(KeyStore& store, const ListFilter& filter, Checker& c);
// Every record (List), or the whole feed from the start, or nullopt after reporting.
std::optional<std::vector<KeyRecord>> ReadAllRecords(KeyStore& store, Checker& c,
                                                     const std::string& what);
std::optional<std::vector<Change>> ReadAllChanges(KeyStore& store, Checker& c,
                                                  const std::string& what);
// Ids of every page from `options` on, reporting what is wrong with them.
std::vector<std::string> PageThrough(KeyStore& store, ListOptions options, Checker& c,
                                     const std::string& what);

// ---------------------------------------------------------------------------
// The groups (one file each) and their checks that other tests call by name
// (tests/broken_store_test.cc shows each of them failing on a broken store).

std::vector<Check> WriteChecks();         // writes.cc
std::vector<Check> ListChecks();          // list.cc
std::vector<Check> FeedChecks();          // feed.cc
std::vector<Check> SubscriptionChecks();  // subscriptions.cc
std::vector<Check> ConcurrencyChecks();   // concurrency.cc
std::vector<Check> AuditChecks();         // audit.cc

Findings CheckFailedWritesChangeNothing(const std::shared_ptr<KeyStore>& store,
                                        const BackendHooks& hooks);
Findings CheckHandBuiltCursors(const std::shared_ptr<KeyStore>& store, const BackendHooks& hooks);
Findings CheckCorruptRecord(const std::shared_ptr<KeyStore>& store, const BackendHooks& hooks);
Findings CheckAuditEntries(const std::shared_ptr<KeyStore>& store, const BackendHooks& hooks);
Findings CheckAuditFailedWrites(const std::shared_ptr<KeyStore>& store, const BackendHooks& hooks);
Findings CheckConcurrentReadersAndWriters(const std::shared_ptr<KeyStore>& store,
                                          const BackendHooks& hooks);

}  // namespace keygate::conformance

#endif  // KEYGATE_TESTS_KEY_STORE_CONFORMANCE_SUITE_H_
