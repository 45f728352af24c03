// Verdict -> HTTP response mapping (DESIGN.md section 6, RFC 6750, RFC 6585).
#include "keygate/http.h"

#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "catch.h"
#include "internal/gcra.h"
#include "keygate/key.h"
#include "keygate/rate_limiter.h"
#include "test_util.h"

namespace keygate {
namespace {

std::map<std::string, std::string> Headers(const HttpDecision& d) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : d.headers) {
    REQUIRE(m.count(k) == 0);  // no header twice
    m[k] = v;
  }
  return m;
}

Verdict V(Outcome o) {
  Verdict v;
  v.outcome = o;
  return v;
}

TEST_CASE("No credentials: 401 with a bare Bearer challenge", "[http]") {
  const HttpDecision d = DecideHttp(V(Outcome::kMissing), Requirement::AnyValidKey(), {"api"});
  CHECK_FALSE(d.allowed);
  CHECK(d.status == 401);
  auto h = Headers(d);
  CHECK(h["WWW-Authenticate"] == "Bearer realm=\"api\"");
  CHECK(h["Cache-Control"] == "no-store");
  CHECK(h["Content-Type"] == "application/json");
  CHECK(d.body.find("\"error\":\"unauthorized\"") != std::string::npos);
}

TEST_CASE("Bad request syntax: 400 invalid_request", "[http]") {
  const HttpDecision d = DecideHttp(V(Outcome::kInvalidRequest), Requirement::AnyValidKey());
  CHECK(d.status == 400);
  CHECK(Headers(d)["WWW-Authenticate"].rfind("Bearer realm=\"api\", error=\"invalid_request\"",
                                             0) == 0);
}

TEST_CASE("Unusable tokens all get one identical 401 invalid_token", "[http][oracle]") {
  const Outcome outcomes[] = {Outcome::kMalformed, Outcome::kUnknown, Outcome::kRevoked,
                              Outcome::kExpired, Outcome::kWrongEnvironment};
  Verdict first_v = V(Outcome::kMalformed);
  const HttpDecision first = DecideHttp(first_v, Requirement::AnyValidKey());
  CHECK(first.status == 401);
  CHECK(Headers(first)["WWW-Authenticate"].find("error=\"invalid_token\"") != std::string::npos);
  for (Outcome o : outcomes) {
    Verdict v = V(o);
    v.set_key("key_0123456789abcdefghijkl");  // identified keys leak nothing either
    const HttpDecision d = DecideHttp(v, Requirement::AnyValidKey());
    INFO(OutcomeName(o));
    CHECK(d.status == first.status);
    CHECK(d.headers == first.headers);
    CHECK(d.body == first.body);
  }
}

TEST_CASE("Missing scope: 403 insufficient_scope naming the scope", "[http]") {
  const Requirement req = testing::MustRequire(*ScopeRegistry::Default(), {"write:all"});
  const HttpDecision d = DecideHttp(V(Outcome::kInsufficientScope), req);
  CHECK(d.status == 403);
  CHECK(Headers(d)["WWW-Authenticate"] ==
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"write:all\"");
  CHECK(d.body.find("write:all") != std::string::npos);
  CHECK(DecideHttp(V(Outcome::kAccountDenied), req).status == 403);
}

TEST_CASE("Over the limit: 429 with Retry-After and RateLimit headers", "[http][ratelimit]") {
  Verdict v = V(Outcome::kRateLimited);
  v.rate.limit = 10;
  v.rate.remaining = 0;
  v.rate.window_ns = 60'000'000'000;
  v.rate.reset_ns = 59'000'000'000;
  v.rate.retry_after_ns = 2'100'000'000;  // 2.1 s rounds up to 3
  const HttpDecision d = DecideHttp(v, Requirement::AnyValidKey(), {"api", "burst"});
  CHECK(d.status == 429);
  auto h = Headers(d);
  CHECK(h["Retry-After"] == "3");
  CHECK(h["RateLimit-Policy"] == "\"burst\";q=10;w=60");
  CHECK(h["RateLimit"] == "\"burst\";r=0;t=3");
  CHECK(h["Cache-Control"] == "no-store");
  CHECK(h.count("WWW-Authenticate") == 0);

  v.rate.retry_after_ns = 1;  // never "Retry-After: 0"
  CHECK(Headers(DecideHttp(v, Requirement::AnyValidKey()))["Retry-After"] == "1");
  CHECK(RetryAfterSeconds(0) == 1);
  CHECK(RetryAfterSeconds(1'000'000'000) == 1);
  CHECK(RetryAfterSeconds(1'000'000'001) == 2);
  // Rounding up never overflows.
  CHECK(RetryAfterSeconds(std::numeric_limits<std::int64_t>::max()) == 9'223'372'037);
  v.rate.window_ns = std::numeric_limits<std::int64_t>::max();
  CHECK(Headers(DecideHttp(v, Requirement::AnyValidKey(), {"api", "day"}))["RateLimit-Policy"] ==
        "\"day\";q=10;w=9223372037");
}

TEST_CASE("Allowed requests carry the quota headers only when a limit applies", "[http]") {
  HttpDecision d = DecideHttp(V(Outcome::kOk), Requirement::AnyValidKey());
  CHECK(d.allowed);
  CHECK(d.headers.empty());
  CHECK(d.body.empty());
  Verdict v = V(Outcome::kOk);
  v.rate.limit = 100;
  v.rate.remaining = 99;
  v.rate.window_ns = 1'000'000'000;
  v.rate.reset_ns = 10'000'000;
  d = DecideHttp(v, Requirement::AnyValidKey());
  auto h = Headers(d);
  CHECK(h["RateLimit-Policy"] == "\"default\";q=100;w=1");
  CHECK(h["RateLimit"] == "\"default\";r=99;t=1");
}

TEST_CASE("RateLimit-Policy states the sustained quota, whatever the burst", "[http]") {
  // A client that spaces its requests as `q` per `w` seconds says must never
  // exceed the policy's rate, and the quota is the rate, not the burst.
  struct Case {
    RateLimitPolicy policy;
    const char* header;
  };
  const Case cases[] = {
      {{100, absl::Seconds(1), 1}, "\"default\";q=100;w=1"},
      {{1000, absl::Hours(1), 10}, "\"default\";q=1000;w=3600"},
      {{10, absl::Minutes(1), 100}, "\"default\";q=10;w=60"},
      {{100, absl::Milliseconds(100), 5}, "\"default\";q=1000;w=1"},  // period < 1 s
      {{3, absl::Milliseconds(1500), 2}, "\"default\";q=4;w=2"},      // 2 s allow 4 (rounded down)
  };
  for (const Case& c : cases) {
    INFO(c.header);
    const GcraPolicy p = GcraPolicy::Compile(c.policy);
    std::atomic<std::int64_t> tat{internal::kGcraNeverUsed};
    Verdict v = V(Outcome::kOk);
    const LimitDecision d = internal::GcraAcquireOne(p, tat, 1, 1'700'000'000'000'000'000);
    REQUIRE(d.result == LimitResult::kAllowed);
    v.rate = d.status;
    auto h = Headers(DecideHttp(v, Requirement::AnyValidKey()));
    CHECK(h["RateLimit-Policy"] == c.header);
    CHECK_THAT(h["RateLimit"],
               Catch::StartsWith(absl::StrCat("\"default\";r=", c.policy.burst - 1, ";t=")));
  }
}

TEST_CASE("Plain HTTP, IP denial and an unavailable backend", "[http]") {
  CHECK(DecideHttp(V(Outcome::kInsecureTransport), Requirement::AnyValidKey()).status == 403);
  CHECK(DecideHttp(V(Outcome::kDeniedByIp), Requirement::AnyValidKey()).status == 403);
  const HttpDecision d = DecideHttp(V(Outcome::kUnavailable), Requirement::AnyValidKey());
  CHECK(d.status == 503);
  CHECK_FALSE(d.allowed);
  CHECK(Headers(d)["Retry-After"] == "1");
  // A default-constructed verdict fails closed.
  CHECK(DecideHttp(Verdict{}, Requirement::AnyValidKey()).status == 503);
}

TEST_CASE("Realm text is escaped inside the quoted string", "[http]") {
  HttpOptions o;
  o.realm = "my \"api\"\r\n";
  CHECK(Headers(DecideHttp(V(Outcome::kMissing), Requirement::AnyValidKey(),
                           o))["WWW-Authenticate"] == "Bearer realm=\"my \\\"api\\\"\"");
}

// Every byte of every header value is visible ASCII or a space: what RFC
// 9110 field values and RFC 8941 sf-strings allow without obs-text.
bool VisibleAscii(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7E) return false;
  }
  return true;
}

TEST_CASE("Realm and policy name never put non-ASCII or control bytes in headers",
          "[http][headers]") {
  HttpOptions o;
  o.realm = "Z\xC3\xBCrich \x80\xFF\x7F\x1B[2Japi\t\"x\"";
  constexpr char kPolicy[] = "per-key\xE2\x80\xA8\x85\x00\r\nX-Injected: 1";  // a NUL inside
  o.policy_name = std::string(kPolicy, sizeof(kPolicy) - 1);
  Verdict v = V(Outcome::kRateLimited);
  v.rate.limit = 5;
  v.rate.window_ns = 1'000'000'000;
  v.rate.retry_after_ns = 1;
  for (const HttpDecision& d : {DecideHttp(V(Outcome::kMissing), Requirement::AnyValidKey(), o),
                                DecideHttp(V(Outcome::kUnknown), Requirement::AnyValidKey(), o),
                                DecideHttp(v, Requirement::AnyValidKey(), o)}) {
    for (const auto& [name, value] : d.headers) {
      INFO(name << ": " << value);
      CHECK(VisibleAscii(value));
    }
  }
  // Each byte outside visible ASCII is dropped, as control characters always
  // were; quotes and backslashes are escaped.
  CHECK(Headers(DecideHttp(V(Outcome::kMissing), Requirement::AnyValidKey(),
                           o))["WWW-Authenticate"] == "Bearer realm=\"Zrich [2Japi\\\"x\\\"\"");
  auto h = Headers(DecideHttp(v, Requirement::AnyValidKey(), o));
  CHECK(h["RateLimit-Policy"] == "\"per-keyX-Injected: 1\";q=5;w=1");
  CHECK(h["RateLimit"] == "\"per-keyX-Injected: 1\";r=0;t=1");
}

TEST_CASE("ValidateHttpOptions refuses header text that would be dropped, naming the field",
          "[http][headers]") {
  CHECK(ValidateHttpOptions({}).ok());
  HttpOptions o;
  o.realm = "Billing API (v2) \"eu\"";  // quotes are escaped, not refused
  o.policy_name = "per-key";
  CHECK(ValidateHttpOptions(o).ok());

  o.realm = "Z\xC3\xBCrich";
  absl::Status s = ValidateHttpOptions(o);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.message() == "realm: byte 1 (0xc3) is not printable ASCII (0x20-0x7E)");
  o.realm = "api";
  o.policy_name = "a\r\nb";
  s = ValidateHttpOptions(o);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.message() == "policy_name: byte 1 (0x0d) is not printable ASCII (0x20-0x7E)");
  o.policy_name = "tab\there";
  CHECK(ValidateHttpOptions(o).code() == absl::StatusCode::kInvalidArgument);
  o.policy_name = "default";
  o.unavailable_retry_after_seconds = 0;
  s = ValidateHttpOptions(o);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.message() == "unavailable_retry_after_seconds: must be at least 1");
}

TEST_CASE("Verdicts print their outcome and key id only", "[http][verdict]") {
  Verdict v = V(Outcome::kRevoked);
  v.set_key("key_abc");
  std::ostringstream os;
  os << v;
  CHECK(os.str() == "Verdict(revoked, key_abc)");
}

}  // namespace
}  // namespace keygate
