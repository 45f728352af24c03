// Option values of the `keygate` command-line tool that are parsed by hand:
// expiry times, audit time bounds and rate limits. Their own unit so that fuzz/cli_parse_fuzz.cc
// can check them (durations are ParseDurationWithDays, format.h).
#ifndef KEYGATE_SRC_CLI_PARSE_H_
#define KEYGATE_SRC_CLI_PARSE_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/key.h"

namespace keygate::cli {

// --expires: a duration from `now` ("30d", "12h", ParseDurationWithDays) or
// an RFC 3339 time ("2030-01-01T00:00:00Z"). Errors: kInvalidArgument
// "--expires: expected ...". The result is not range-checked (KeyManager
// refuses a time in the past).
absl::Status ParseExpires(std::string_view text, absl::Time now, absl::Time* out);

// --since / --until of `keygate audit`, named by `flag`: a duration before
// `now` ("90m", "7d": that long ago) or an RFC 3339 time. Errors:
// kInvalidArgument "<flag>: expected ..." (the text is not quoted back).
absl::Status ParseTimeBound(std::string_view flag, std::string_view text, absl::Time now,
                            absl::Time* out);

// --rate: "REQUESTS/PERIOD" ("100/1m" is 100 requests per minute); the burst
// is `burst`, else the rate capped at 1,000,000 (at least 1). Errors:
// kInvalidArgument "--rate: expected ...". The policy is not range-checked
// (ValidateRateLimitPolicy does that, in KeyManager).
absl::StatusOr<RateLimitPolicy> ParseRate(std::string_view text,
                                          std::optional<std::uint32_t> burst);

}  // namespace keygate::cli

#endif  // KEYGATE_SRC_CLI_PARSE_H_
