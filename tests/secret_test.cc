// Secret: access, equality, redaction, copies and moves.
#include "keygate/secret.h"

#include <sstream>
#include <string>
#include <utility>

#include "catch.h"

namespace keygate {
namespace {

std::string_view Bytes(const Secret& s) { return s.Reveal(InsecureSecretAccess::Get()); }

TEST_CASE("Secret reveals its bytes only through the access token", "[secret]") {
  Secret s("kg_live_abc");
  CHECK(Bytes(s) == "kg_live_abc");
  CHECK(s.size() == 11);
  CHECK_FALSE(s.empty());
  s.Clear();
  CHECK(s.empty());
  CHECK(Bytes(s).empty());
}

TEST_CASE("Secret never prints its bytes", "[secret][redaction]") {
  const Secret s("kg_live_supersecretvalue");
  std::ostringstream os;
  os << s;
  CHECK(os.str() == "Secret(redacted)");
  CHECK(os.str().find("supersecret") == std::string::npos);
}

TEST_CASE("Secret equality compares contents", "[secret]") {
  CHECK(Secret("abc") == Secret("abc"));
  CHECK(Secret("abc") != Secret("abd"));
  CHECK(Secret("abc") != Secret("abcd"));
  CHECK(Secret() == Secret(""));
  CHECK(ConstantTimeEquals("xyz", "xyz"));
  CHECK_FALSE(ConstantTimeEquals("xyz", "xy"));
  CHECK_FALSE(ConstantTimeEquals("xyz", "xya"));
}

TEST_CASE("Secret copies are independent and moves empty the source", "[secret]") {
  Secret a("first-secret-value-longer-than-sso-buffer");
  Secret b = a;
  CHECK(b == a);
  b = Secret("other");
  CHECK(Bytes(a) == "first-secret-value-longer-than-sso-buffer");
  Secret c = std::move(a);
  CHECK(Bytes(c) == "first-secret-value-longer-than-sso-buffer");
  CHECK(a.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  Secret d;
  d = std::move(c);
  CHECK(c.empty());  // NOLINT(bugprone-use-after-move)
  CHECK(Bytes(d) == "first-secret-value-longer-than-sso-buffer");
}

}  // namespace
}  // namespace keygate
