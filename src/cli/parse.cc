// Hand-parsed option values of the keygate CLI (parse.h).

#include "cli/parse.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/format.h"

namespace keygate::cli {

absl::Status ParseExpires(std::string_view text, absl::Time now, absl::Time* out) {
  absl::Duration d;
  if (ParseDurationWithDays(text, &d)) {
    *out = now + d;
    return absl::OkStatus();
  }
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, absl::string_view(text.data(), text.size()), out, &err)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      "--expires: expected a duration (30d, 12h, 90m) or an RFC 3339 time "
      "(2030-01-01T00:00:00Z)");
}

absl::Status ParseTimeBound(std::string_view flag, std::string_view text, absl::Time now,
                            absl::Time* out) {
  absl::Duration d;
  if (ParseDurationWithDays(text, &d) && d >= absl::ZeroDuration()) {
    *out = now - d;
    return absl::OkStatus();
  }
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, absl::string_view(text.data(), text.size()), out, &err)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(absl::string_view(flag.data(), flag.size()),
                   ": expected a duration ago (30d, 12h, 90m) or an RFC 3339 time "
                   "(2030-01-01T00:00:00Z)"));
}

absl::StatusOr<RateLimitPolicy> ParseRate(std::string_view text,
                                          std::optional<std::uint32_t> burst) {
  const std::size_t slash = text.find('/');
  RateLimitPolicy p;
  if (slash == std::string_view::npos ||
      !absl::SimpleAtoi(absl::string_view(text.data(), slash), &p.rate) ||
      !ParseDurationWithDays(text.substr(slash + 1), &p.period)) {
    return absl::InvalidArgumentError("--rate: expected REQUESTS/PERIOD, e.g. 100/1m or 10/1s");
  }
  const std::uint64_t default_burst = std::min<std::uint64_t>(p.rate, 1'000'000);
  p.burst = burst.value_or(static_cast<std::uint32_t>(std::max<std::uint64_t>(default_burst, 1)));
  return p;
}

}  // namespace keygate::cli
