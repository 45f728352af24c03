// libFuzzer target: the keygate CLI's hand-parsed option values: durations
// (ParseDurationWithDays, src/cli/format.h), --rate and --expires
// (src/cli/parse.h). Input: the option value; or a --burst value, a newline,
// and the option value.
// Invariants:
//   - a duration without the "d" suffix is exactly what absl::ParseDuration
//     reads; one with it is a whole number of days in [0, 100000];
//   - a refused --rate or --expires is kInvalidArgument with a fixed message
//     (user input, which may be a misplaced token, is never echoed);
//   - an accepted --rate keeps --burst, or defaults it to the rate capped to
//     [1, 1000000];
//   - a rate that passes ValidateRateLimitPolicy compiles to a GCRA policy
//     that is not capped (burst x T exactly), and the way `keygate show`
//     prints it ("N per <duration>") reads back as the same policy;
//   - --expires as a duration is `now` plus that duration.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/format.h"
#include "cli/parse.h"

#include "keygate/key.h"
#include "keygate/rate_limiter.h"

namespace {

constexpr std::string_view kRateError = "--rate: expected REQUESTS/PERIOD, e.g. 100/1m or 10/1s";
constexpr std::string_view kExpiresError =
    "--expires: expected a duration (30d, 12h, 90m) or an RFC 3339 time (2030-01-01T00:00:00Z)";

bool IsRefusal(const absl::Status& s, std::string_view message) {
  return s.code() == absl::StatusCode::kInvalidArgument &&
         std::string_view(s.message().data(), s.message().size()) == message;
}

void CheckDuration(std::string_view text) {
  absl::Duration d;
  const bool ok = keygate::cli::ParseDurationWithDays(text, &d);
  if (text.size() > 1 && text.back() == 'd') {
    if (ok && (d < absl::ZeroDuration() || d > absl::Hours(24 * 100000) ||
               d % absl::Hours(24) != absl::ZeroDuration())) {
      std::abort();
    }
    return;
  }
  absl::Duration want;
  const bool want_ok = absl::ParseDuration(absl::string_view(text.data(), text.size()), &want);
  if (ok != want_ok || (ok && d != want)) std::abort();
}

void CheckRate(std::string_view text, std::optional<std::uint32_t> burst) {
  const absl::StatusOr<keygate::RateLimitPolicy> p = keygate::cli::ParseRate(text, burst);
  if (!p.ok()) {
    if (!IsRefusal(p.status(), kRateError)) std::abort();
    return;
  }
  const std::uint64_t default_burst = p->rate == 0 ? 1 : std::min<std::uint64_t>(p->rate, 1000000);
  if (p->burst != burst.value_or(static_cast<std::uint32_t>(default_burst))) std::abort();
  if (!keygate::ValidateRateLimitPolicy(*p, "rate_limit").ok()) return;

  const keygate::GcraPolicy g = keygate::GcraPolicy::Compile(*p);
  if (!g.valid() || g.emission_ns < 1 ||
      g.capacity_ns != g.emission_ns * static_cast<std::int64_t>(p->burst)) {
    std::abort();
  }
  const std::string shown = absl::StrCat(p->rate, "/", absl::FormatDuration(p->period));
  const absl::StatusOr<keygate::RateLimitPolicy> again = keygate::cli::ParseRate(shown, p->burst);
  if (!again.ok() || *again != *p) std::abort();
}

void CheckExpires(std::string_view text) {
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  absl::Time t;
  const absl::Status s = keygate::cli::ParseExpires(text, now, &t);
  if (!s.ok()) {
    if (!IsRefusal(s, kExpiresError)) std::abort();
    return;
  }
  absl::Duration d;
  if (keygate::cli::ParseDurationWithDays(text, &d) && t != now + d) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<std::uint32_t> burst;
  if (const std::size_t nl = text.find('\n'); nl != std::string_view::npos) {
    std::uint32_t b = 0;
    if (absl::SimpleAtoi(absl::string_view(text.data(), nl), &b)) burst = b;
    text.remove_prefix(nl + 1);
  }
  CheckDuration(text);
  CheckRate(text, burst);
  CheckExpires(text);
  return 0;
}
