// Helpers shared by the unit tests.
#ifndef KEYGATE_TESTS_TEST_UTIL_H_
#define KEYGATE_TESTS_TEST_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "catch.h"
#include "keygate/secret.h"

namespace keygate::testing {

inline std::string StatusText(const absl::Status& s) { return s.ToString(); }
template <typename T>
std::string StatusText(const absl::StatusOr<T>& s) {
  return s.status().ToString();
}

// A token's text, for tests only.
inline std::string Text(const Secret& s) {
  return std::string(s.Reveal(InsecureSecretAccess::Get()));
}

}  // namespace keygate::testing

// REQUIRE that a Status / StatusOr is ok, printing the status when it is not.
#define REQUIRE_OK(expr)                                     \
  do {                                                       \
    const auto& require_ok_value_ = (expr);                  \
    INFO(::keygate::testing::StatusText(require_ok_value_)); \
    REQUIRE(require_ok_value_.ok());                         \
  } while (false)

#endif  // KEYGATE_TESTS_TEST_UTIL_H_
