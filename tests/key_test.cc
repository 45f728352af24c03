// The key model: enum names, rate-limit bounds, time precision, printing.

#include "keygate/key.h"

#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "catch.h"

namespace keygate {
namespace {

TEST_CASE("Key kinds and states round-trip through their names", "[key]") {
  for (KeyKind k : {KeyKind::kPersonal, KeyKind::kGeneral}) {
    KeyKind parsed = KeyKind::kUnspecifiedDoNotUse;
    REQUIRE(ParseKeyKind(KeyKindName(k), &parsed));
    CHECK(parsed == k);
  }
  for (KeyState s : {KeyState::kActive, KeyState::kRevoked}) {
    KeyState parsed = KeyState::kUnspecifiedDoNotUse;
    REQUIRE(ParseKeyState(KeyStateName(s), &parsed));
    CHECK(parsed == s);
  }
  CHECK(KeyKindName(KeyKind::kPersonal) == "personal");
  CHECK(KeyKindName(KeyKind::kGeneral) == "general");
  CHECK(KeyStateName(KeyState::kActive) == "active");
  CHECK(KeyStateName(KeyState::kRevoked) == "revoked");
  KeyKind kind = KeyKind::kGeneral;
  CHECK_FALSE(ParseKeyKind("Personal", &kind));
  CHECK_FALSE(ParseKeyKind("unspecified", &kind));
  CHECK_FALSE(ParseKeyKind("", &kind));
  CHECK(kind == KeyKind::kGeneral);  // untouched on failure
  KeyState state = KeyState::kActive;
  CHECK_FALSE(ParseKeyState("blocked", &state));
  CHECK(state == KeyState::kActive);
}

TEST_CASE("Rate-limit policies are range-checked with the field named", "[key][ratelimit]") {
  CHECK(ValidateRateLimitPolicy({1, absl::Seconds(1), 1}, "rate_limit").ok());
  CHECK(ValidateRateLimitPolicy({1, kMinRateLimitPeriod, 1}, "x").ok());
  CHECK(ValidateRateLimitPolicy({1, kMaxRateLimitPeriod, 26'000}, "x").ok());
  CHECK(
      ValidateRateLimitPolicy({kMaxRateLimitRate, absl::Seconds(1), kMaxRateLimitBurst}, "x").ok());
  // The bucket (burst x period / rate) is at most 2^61 ns, 73 years: one per
  // day fits 26,687 in a burst, not a million.
  CHECK(ValidateRateLimitPolicy({1, kMaxRateLimitPeriod, 26'687}, "x").ok());
  CHECK(ValidateRateLimitPolicy({1, kMaxRateLimitPeriod, 26'688}, "x").message().substr(0, 8) ==
        "x.burst:");
  CHECK(ValidateRateLimitPolicy({1, kMaxRateLimitPeriod, kMaxRateLimitBurst}, "x")
            .message()
            .substr(0, 8) == "x.burst:");
  CHECK(ValidateRateLimitPolicy({kMaxRateLimitRate, absl::Seconds(1), 1}, "x").ok());
  absl::Status s = ValidateRateLimitPolicy({0, absl::Seconds(1), 1}, "env.limit");
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.message().substr(0, 16) == "env.limit.rate: ");
  CHECK(ValidateRateLimitPolicy({kMaxRateLimitRate + 1, absl::Hours(1), 1}, "x")
            .message()
            .substr(0, 7) == "x.rate:");
  CHECK(ValidateRateLimitPolicy({1, kMinRateLimitPeriod - absl::Nanoseconds(1), 1}, "x")
            .message()
            .substr(0, 9) == "x.period:");
  CHECK(ValidateRateLimitPolicy({1, kMaxRateLimitPeriod + absl::Nanoseconds(1), 1}, "x")
            .message()
            .substr(0, 9) == "x.period:");
  CHECK(ValidateRateLimitPolicy({1, -absl::Seconds(1), 1}, "x").message().substr(0, 9) ==
        "x.period:");
  CHECK(ValidateRateLimitPolicy({1, absl::Seconds(1), 0}, "x").message().substr(0, 8) ==
        "x.burst:");
  CHECK(ValidateRateLimitPolicy({1, absl::Seconds(1), kMaxRateLimitBurst + 1}, "x")
            .message()
            .substr(0, 8) == "x.burst:");
  // 1 ns per request is the finest the limiter represents.
  CHECK(ValidateRateLimitPolicy({1'000'000, absl::Milliseconds(1), 1}, "x").ok());
  CHECK(
      ValidateRateLimitPolicy({1'000'001, absl::Milliseconds(1), 1}, "x").message().substr(0, 7) ==
      "x.rate:");
}

TEST_CASE("Times are truncated toward the past at microseconds", "[key][time]") {
  const absl::Time base = absl::FromUnixMicros(1'700'000'000'000'001);
  CHECK(TruncateToMicros(base) == base);
  CHECK(TruncateToMicros(base + absl::Nanoseconds(999)) == base);
  CHECK(TruncateToMicros(base - absl::Nanoseconds(1)) == base - absl::Microseconds(1));
  const absl::Time before_epoch = absl::FromUnixMicros(-5) - absl::Nanoseconds(1);
  CHECK(TruncateToMicros(before_epoch) == absl::FromUnixMicros(-6));
  CHECK(TruncateToMicros(absl::InfiniteFuture()) == absl::InfiniteFuture());
  CHECK(TruncateToMicros(absl::InfinitePast()) == absl::InfinitePast());
}

TEST_CASE("Records print id, name, kind, environment, state, owner and version only",
          "[key][redaction]") {
  KeyRecord r;
  r.id = "key_0123456789abcdefghijkl";
  r.name = "ci";
  r.owner = "alice";
  r.kind = KeyKind::kGeneral;
  r.environment = "production";
  r.state = KeyState::kRevoked;
  r.version = 4;
  r.hint = "kg_live_...WXYZ";
  r.digest.fill(0xab);
  r.metadata = {{"secretish", "value"}};
  std::ostringstream os;
  os << r;
  CHECK(os.str() ==
        "KeyRecord(key_0123456789abcdefghijkl, name=\"ci\", general, production, revoked, "
        "owner=alice, v4)");
  CHECK(os.str().find("abab") == std::string::npos);
  CHECK(os.str().find("WXYZ") == std::string::npos);
  // Text a record may hold (other code can write a store) is escaped.
  r.name = "ci\", owner=root)\r\nKeyRecord(x";
  std::ostringstream forged;
  forged << r;
  CHECK(forged.str() ==
        "KeyRecord(key_0123456789abcdefghijkl, name=\"ci\", owner=root)\\r\\nKeyRecord(x\", "
        "general, production, revoked, owner=alice, v4)");
}

}  // namespace
}  // namespace keygate
