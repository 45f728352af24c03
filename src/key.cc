// Names, parsing and printing of the key model (key.h).

#include "keygate/key.h"

#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/text_escape.h"

namespace keygate {

bool IsGeneratedKeyId(std::string_view id) noexcept {
  if (id.size() != kKeyIdLength || id.substr(0, 4) != "key_") return false;
  for (char c : id.substr(4)) {
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) {
      return false;
    }
  }
  return true;
}

std::string_view KeyKindName(KeyKind kind) noexcept {
  switch (kind) {
    case KeyKind::kPersonal:
      return "personal";
    case KeyKind::kGeneral:
      return "general";
    case KeyKind::kUnspecifiedDoNotUse:
      break;
  }
  return "unspecified";
}

std::string_view KeyStateName(KeyState state) noexcept {
  switch (state) {
    case KeyState::kActive:
      return "active";
    case KeyState::kRevoked:
      return "revoked";
    case KeyState::kUnspecifiedDoNotUse:
      break;
  }
  return "unspecified";
}

bool ParseKeyKind(std::string_view name, KeyKind* out) noexcept {
  if (name == "personal") {
    *out = KeyKind::kPersonal;
    return true;
  }
  if (name == "general") {
    *out = KeyKind::kGeneral;
    return true;
  }
  return false;
}

bool ParseKeyState(std::string_view name, KeyState* out) noexcept {
  if (name == "active") {
    *out = KeyState::kActive;
    return true;
  }
  if (name == "revoked") {
    *out = KeyState::kRevoked;
    return true;
  }
  return false;
}

absl::Status ValidateRateLimitPolicy(const RateLimitPolicy& policy, std::string_view field) {
  const std::string f(field);
  if (policy.rate < 1 || policy.rate > kMaxRateLimitRate) {
    return absl::InvalidArgumentError(
        absl::StrCat(f, ".rate: must be between 1 and ", kMaxRateLimitRate));
  }
  if (policy.period < kMinRateLimitPeriod || policy.period > kMaxRateLimitPeriod) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".period: must be between 1ms and 24h"));
  }
  if (policy.burst < 1 || policy.burst > kMaxRateLimitBurst) {
    return absl::InvalidArgumentError(
        absl::StrCat(f, ".burst: must be between 1 and ", kMaxRateLimitBurst));
  }
  // The limiter spaces requests by period / rate; below 1 ns it would round
  // to zero and stop limiting at all.
  const std::int64_t period_ns = absl::ToInt64Nanoseconds(policy.period);
  if (static_cast<std::uint64_t>(period_ns) < policy.rate) {
    return absl::InvalidArgumentError(
        absl::StrCat(f, ".rate: more than one request per nanosecond over the period"));
  }
  // The bucket as GcraPolicy::Compile sizes it: burst x T, T rounded to
  // nearest. The product can exceed 2^64, so T is compared with the bound
  // divided by burst instead.
  const std::uint64_t t = (static_cast<std::uint64_t>(period_ns) + policy.rate / 2) / policy.rate;
  if (t > static_cast<std::uint64_t>(kMaxRateLimitBucketNs) / policy.burst) {
    return absl::InvalidArgumentError(absl::StrCat(
        f,
        ".burst: burst x period / rate must be at most 73 years (fewer requests per burst, "
        "or a higher rate)"));
  }
  return absl::OkStatus();
}

absl::Time TruncateToMicros(absl::Time t) noexcept {
  if (t == absl::InfiniteFuture() || t == absl::InfinitePast()) return t;
  // ToUnixMicros rounds toward the past, which is what we document.
  return absl::FromUnixMicros(absl::ToUnixMicros(t));
}

std::ostream& operator<<(std::ostream& os, const KeyRecord& record) {
  // Deliberately no digest, hint or metadata: one short, safe line for logs
  // (text escaped: a record written by other code may hold any bytes).
  return os << "KeyRecord(" << internal::EscapeText(record.id) << ", name=\""
            << internal::EscapeText(record.name) << "\", " << KeyKindName(record.kind) << ", "
            << internal::EscapeText(record.environment) << ", " << KeyStateName(record.state)
            << ", owner=" << internal::EscapeText(record.owner) << ", v" << record.version << ")";
}

}  // namespace keygate
