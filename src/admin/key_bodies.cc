// The admin API's key request bodies (key_bodies.h).

#include "admin/key_bodies.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "admin/json_body.h"
#include "admin/text.h"
#include "keygate/key.h"
#include "keygate/key_manager.h"

namespace keygate::admin_internal {
namespace {

using nlohmann::json;

constexpr std::uint64_t kMaxRate = 1'000'000'000;
constexpr std::uint64_t kMaxPeriodMs = std::uint64_t{24} * 3600 * 1000;
constexpr std::uint64_t kMaxBurst = 1'000'000;

// Returns early with the error of a Status expression.
#define KEYGATE_ADMIN_RETURN_IF_ERROR(expr)            \
  do {                                                 \
    if (absl::Status _s = (expr); !_s.ok()) return _s; \
  } while (false)

// A RateLimitPolicy member: absent leaves `*out` unset, null sets it to "none", an object
// {"rate", "period_ms", "burst"} (burst defaults to 1) to that policy.
absl::Status ReadRateLimit(JsonFields& fields, std::optional<std::optional<RateLimitPolicy>>* out) {
  if (!fields.Has("rate_limit")) return absl::OkStatus();
  if (fields.IsNull("rate_limit")) {
    out->emplace(std::nullopt);
    return absl::OkStatus();
  }
  absl::StatusOr<const json*> object = fields.Object("rate_limit");
  if (!object.ok()) return object.status();
  JsonFields f(**object, "rate_limit.");
  std::optional<std::uint64_t> rate;
  std::optional<std::uint64_t> period_ms;
  std::optional<std::uint64_t> burst;
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.Uint("rate", kMaxRate, &rate));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.Uint("period_ms", kMaxPeriodMs, &period_ms));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.Uint("burst", kMaxBurst, &burst));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.Unknown());
  if (!rate.has_value()) return absl::InvalidArgumentError("rate_limit.rate: required");
  if (!period_ms.has_value()) return absl::InvalidArgumentError("rate_limit.period_ms: required");
  RateLimitPolicy p;
  p.rate = *rate;
  p.period = absl::Milliseconds(static_cast<std::int64_t>(*period_ms));
  p.burst = static_cast<std::uint32_t>(burst.value_or(1));
  out->emplace(p);
  return absl::OkStatus();
}

// An "expires" member: absent leaves `*out` unset, null is "never", else an RFC 3339 time.
absl::Status ReadExpires(JsonFields& fields, std::optional<std::optional<absl::Time>>* out) {
  if (!fields.Has("expires")) return absl::OkStatus();
  if (fields.IsNull("expires")) {
    out->emplace(std::nullopt);
    return absl::OkStatus();
  }
  std::optional<absl::Time> t;
  KEYGATE_ADMIN_RETURN_IF_ERROR(fields.Time("expires", &t));
  out->emplace(t);
  return absl::OkStatus();
}

}  // namespace

absl::Status InJsonTerms(absl::Status s) {
  std::string_view message = SV(s.message());
  if (ConsumePrefix(&message, "rate_limit.period:")) {
    return absl::Status(s.code(), absl::StrCat("rate_limit.period_ms:", AV(message)));
  }
  return s;
}

absl::StatusOr<CreateKeyRequest> ParseCreate(std::string_view body,
                                             std::string_view default_owner) {
  absl::StatusOr<json> object = ParseJsonObject(body);
  if (!object.ok()) return object.status();
  JsonFields f(*object);
  CreateKeyRequest r;
  r.owner = std::string(default_owner);
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.String("name", &r.name));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.String("description", &r.description));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.String("owner", &r.owner));
  std::string kind = "general";
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.String("kind", &kind));
  if (!ParseKeyKind(kind, &r.kind)) {
    return absl::InvalidArgumentError("kind: must be \"general\" or \"personal\"");
  }
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.String("environment", &r.environment));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.StringArray("scopes", &r.scopes));
  std::optional<std::optional<absl::Time>> expires;
  KEYGATE_ADMIN_RETURN_IF_ERROR(ReadExpires(f, &expires));
  if (expires.has_value()) r.expires = *expires;
  std::optional<std::optional<RateLimitPolicy>> rate_limit;
  KEYGATE_ADMIN_RETURN_IF_ERROR(ReadRateLimit(f, &rate_limit));
  if (rate_limit.has_value()) r.rate_limit = *rate_limit;
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.String("webhook_url", &r.webhook_url));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.StringArray("accounts", &r.accounts));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.StringMap("metadata", &r.metadata));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.Unknown());
  if (r.environment.empty()) return absl::InvalidArgumentError("environment: required");
  return r;
}

absl::StatusOr<KeyUpdate> ParseUpdate(std::string_view body) {
  absl::StatusOr<json> object = ParseJsonObject(body);
  if (!object.ok()) return object.status();
  JsonFields f(*object);
  for (const std::string_view fixed : {"owner", "kind", "environment"}) {
    if (f.Has(fixed)) {
      return absl::InvalidArgumentError(
          absl::StrCat(AV(fixed), ": cannot be changed (create a new key instead)"));
    }
  }
  KeyUpdate u;
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.OptionalString("name", &u.name));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.OptionalString("description", &u.description));
  if (f.Has("scopes")) {
    u.scopes.emplace();
    KEYGATE_ADMIN_RETURN_IF_ERROR(f.StringArray("scopes", &*u.scopes));
  }
  KEYGATE_ADMIN_RETURN_IF_ERROR(ReadExpires(f, &u.expires));
  KEYGATE_ADMIN_RETURN_IF_ERROR(ReadRateLimit(f, &u.rate_limit));
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.OptionalString("webhook_url", &u.webhook_url));
  if (f.Has("accounts")) {
    u.accounts.emplace();
    KEYGATE_ADMIN_RETURN_IF_ERROR(f.StringArray("accounts", &*u.accounts));
  }
  if (f.Has("metadata")) {
    u.metadata.emplace();
    KEYGATE_ADMIN_RETURN_IF_ERROR(f.StringMap("metadata", &*u.metadata));
  }
  KEYGATE_ADMIN_RETURN_IF_ERROR(f.Unknown());
  return u;
}

#undef KEYGATE_ADMIN_RETURN_IF_ERROR

}  // namespace keygate::admin_internal
