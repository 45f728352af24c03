// tests/key_store_conformance.h: the KeyStore conformance suite
// (keygate::conformance, include/keygate/testing/key_store_conformance.h) as
// Catch2 test cases, for keygate's own backends.
//
// Usage, in a backend's test file (one line per backend):
//
//   KEYGATE_KEY_STORE_CONFORMANCE(Memory, "[memory]", MemoryHooks(),
//                                 std::make_shared<keygate::MemoryKeyStore>())
//
// expands to one TEST_CASE "<Backend> conformance" tagged
// `<tags>[store][conformance]` with one section per check, named
// "<group>: <check>" (run one with -c). The factory expression is evaluated
// once per check and must yield a fresh, EMPTY store as something
// convertible to std::shared_ptr<keygate::KeyStore>; it may contain commas.
// The hooks expression yields a conformance::BackendHooks. A violation fails
// the section; a check that does not apply (a hook or promise the backend
// does not give) and a part skipped are warnings in the output.
// KEYGATE_KEY_STORE_CHECK runs one check, by name.
//
// The checks live in tests/key_store_conformance/ (suite.h says how to add a
// group); tests/broken_store_test.cc shows each findings check failing on a
// store that breaks its rule.

#ifndef KEYGATE_TESTS_KEY_STORE_CONFORMANCE_H_
#define KEYGATE_TESTS_KEY_STORE_CONFORMANCE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "catch.h"
#include "key_store_conformance/suite.h"
#include "keygate/key_store.h"
#include "keygate/testing/key_store_conformance.h"

// REQUIREs that a Status / StatusOr is OK, printing the status otherwise.
#ifndef KEYGATE_REQUIRE_OK
#define KEYGATE_REQUIRE_OK(expr)                                                            \
  do {                                                                                      \
    const absl::Status keygate_require_ok_status_ = ::keygate::conformance::StatusOf(expr); \
    INFO(keygate_require_ok_status_.ToString());                                            \
    REQUIRE(keygate_require_ok_status_.ok());                                               \
  } while (false)
#endif

namespace keygate::conformance {

// Turns a check's findings into Catch2 results: each violation fails the
// test case; a skipped part, or the whole check not applying, is a warning.
inline void RequireNoFindings(const Findings& f) {
  if (!f.not_applicable.empty()) WARN("not applicable: " << f.not_applicable);
  for (const std::string& why : f.skipped) WARN("skipped: " << why);
  for (const std::string& v : f.violations) FAIL_CHECK(v);
  CHECK(f.violations.empty());
}

// Runs every check (or only the one named `only`), each in its own section.
inline void RunConformanceSuite(const StoreFactory& factory, const BackendHooks& hooks,
                                std::string_view only = {}) {
  std::size_t ran = 0;
  for (const Check& check : Checks()) {
    if (!only.empty() && check.name != only) continue;
    ++ran;
    DYNAMIC_SECTION(check.group << ": " << check.name) {
      RequireNoFindings(RunCheck(check, factory, hooks));
    }
  }
  REQUIRE(ran > 0);
}

// Every matching record's id, following cursors to the end, checking each
// page's size and order (Catch2 assertions).
inline std::vector<std::string> ListAllIds(KeyStore& store, const ListOptions& options) {
  Checker c;
  std::vector<std::string> ids = ListAllIds(store, options, c);
  RequireNoFindings(c.Take());
  return ids;
}
inline std::vector<std::string> ListAllIds(KeyStore& store, const ListFilter& filter) {
  Checker c;
  std::vector<std::string> ids = ListAllIds(store, filter, c);
  RequireNoFindings(c.Take());
  return ids;
}

}  // namespace keygate::conformance

#define KEYGATE_KSC_FACTORY_(...)                                \
  []() -> absl::StatusOr<std::shared_ptr<::keygate::KeyStore>> { \
    return std::shared_ptr<::keygate::KeyStore>(__VA_ARGS__);    \
  }

// The whole suite; see the top of this file.
#define KEYGATE_KEY_STORE_CONFORMANCE(Backend, Tags, Hooks, ...)                           \
  TEST_CASE(#Backend " conformance", Tags "[store][conformance]") {                        \
    ::keygate::conformance::RunConformanceSuite(KEYGATE_KSC_FACTORY_(__VA_ARGS__), Hooks); \
  }

// One check of the suite, by name.
#define KEYGATE_KEY_STORE_CHECK(Backend, Tags, Name, Hooks, ...)                                 \
  TEST_CASE(#Backend " conformance: " Name, Tags "[store][conformance]") {                       \
    ::keygate::conformance::RunConformanceSuite(KEYGATE_KSC_FACTORY_(__VA_ARGS__), Hooks, Name); \
  }

#endif  // KEYGATE_TESTS_KEY_STORE_CONFORMANCE_H_
