// Authorization header parsing (RFC 6750 2.1).
#include "keygate/bearer.h"

#include <string>

#include "catch.h"

namespace keygate {
namespace {

BearerParse Parse(std::string_view h, std::string_view* tok = nullptr) {
  std::string_view t;
  const BearerParse r = ParseBearer(h, &t);
  if (tok != nullptr) *tok = t;
  return r;
}

TEST_CASE("Bearer scheme is case-insensitive and whitespace-tolerant", "[bearer]") {
  std::string_view t;
  for (std::string_view h : {"Bearer abc", "bearer abc", "BEARER abc", "  Bearer   abc  ",
                             "\tBearer abc\t", "bEaReR abc"}) {
    INFO(h);
    REQUIRE(Parse(h, &t) == BearerParse::kOk);
    CHECK(t == "abc");
  }
  REQUIRE(Parse("Bearer kg_live_0aZ-._~+/==", &t) == BearerParse::kOk);
  CHECK(t == "kg_live_0aZ-._~+/==");
}

TEST_CASE("Missing credentials are distinguished from malformed ones", "[bearer]") {
  CHECK(Parse("") == BearerParse::kMissing);
  CHECK(Parse("   ") == BearerParse::kMissing);
  CHECK(Parse("Basic dXNlcjpwYXNz") == BearerParse::kWrongScheme);
  CHECK(Parse("Token abc") == BearerParse::kWrongScheme);
  CHECK(Parse("Bearerabc") == BearerParse::kWrongScheme);
  CHECK(Parse("abc") == BearerParse::kWrongScheme);
  CHECK(Parse("Digest username=\"a\"") == BearerParse::kWrongScheme);
  CHECK(Parse("Bea\"rer abc") == BearerParse::kMalformed);  // not an auth-scheme
  CHECK(Parse("(Bearer) abc") == BearerParse::kMalformed);
  CHECK(Parse("Bearer") == BearerParse::kMalformed);
  CHECK(Parse("Bearer ") == BearerParse::kMalformed);
  CHECK(Parse("Bearer a b") == BearerParse::kMalformed);
  CHECK(Parse("Bearer abc, Basic xyz") == BearerParse::kMalformed);
  CHECK(Parse("Bearer =abc") == BearerParse::kMalformed);
  CHECK(Parse("Bearer ab=c") == BearerParse::kMalformed);
  CHECK(Parse("Bearer a\"b") == BearerParse::kMalformed);
  CHECK(Parse("Bearer\tabc") == BearerParse::kMalformed);  // RFC 6750: 1*SP; not a scheme
  CHECK(Parse(std::string("Bearer ab\0c", 11)) == BearerParse::kMalformed);
}

TEST_CASE("Overlong Authorization headers are rejected", "[bearer]") {
  const std::string ok = "Bearer " + std::string(kMaxAuthorizationLength - 7, 'a');
  CHECK(Parse(ok) == BearerParse::kOk);
  CHECK(Parse(ok + "a") == BearerParse::kMalformed);
}

TEST_CASE("b64token grammar", "[bearer]") {
  CHECK(IsB64Token("a"));
  CHECK(IsB64Token("a=="));
  CHECK_FALSE(IsB64Token(""));
  CHECK_FALSE(IsB64Token("=="));
  CHECK_FALSE(IsB64Token("a b"));
  CHECK_FALSE(IsB64Token("a,b"));
}

}  // namespace
}  // namespace keygate
