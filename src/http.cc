#include "keygate/http.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "internal/json_string.h"

namespace keygate {
namespace {

// Bytes a quoted string may hold without obs-text: visible ASCII and space
// (RFC 9110 qdtext and quoted-pair; RFC 8941 sf-string). Tab is left out too.
bool IsPrintableAscii(unsigned char u) noexcept { return u >= 0x20 && u <= 0x7E; }

// RFC 9110 quoted-string content: escape '"' and '\'; drop every byte that is
// not printable ASCII (control characters, DEL, non-ASCII), so that no
// option can split a header or put bytes in it that an intermediary rejects.
std::string QuotedStringContent(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (!IsPrintableAscii(static_cast<unsigned char>(c))) continue;
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

absl::Status ValidatePrintableAscii(std::string_view field, std::string_view value) {
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto u = static_cast<unsigned char>(value[i]);
    if (!IsPrintableAscii(u)) {
      return absl::InvalidArgumentError(
          absl::StrCat(absl::string_view(field.data(), field.size()), ": byte ", i, " (0x",
                       absl::Hex(u, absl::kZeroPad2), ") is not printable ASCII (0x20-0x7E)"));
    }
  }
  return absl::OkStatus();
}

long long CeilSeconds(std::int64_t ns) noexcept {
  if (ns <= 0) return 0;
  // ns / 1e9 rounded up, without overflowing near INT64_MAX.
  const long long whole = ns / 1'000'000'000;
  return ns % 1'000'000'000 != 0 ? whole + 1 : whole;
}

// The policy as the draft's quota: `q` requests per window of `w` whole
// seconds. A policy of `limit` (its rate) per whole-second period is sent as
// it is; any other period is rounded up to whole seconds, and `q` becomes
// the requests the rate allows in that window, rounded down (100 per 100 ms
// is q=1000;w=1). The burst is not the quota: it shows in `r`.
void PolicyQuota(const RateLimitStatus& r, unsigned long long* q, long long* w) {
  *w = std::max(1LL, CeilSeconds(r.window_ns));
  if (r.window_ns <= 0) {
    *q = r.limit;
    return;
  }
  const absl::uint128 scaled = absl::uint128(r.limit) * static_cast<std::uint64_t>(*w) *
                               1'000'000'000u / static_cast<std::uint64_t>(r.window_ns);
  *q = absl::Uint128High64(scaled) != 0 ? std::numeric_limits<std::uint64_t>::max()
                                        : absl::Uint128Low64(scaled);
}

void AddRateLimitHeaders(const Verdict& v, const HttpOptions& o, bool denied, HttpDecision* d) {
  if (!v.rate.applies()) return;
  const std::string name = QuotedStringContent(o.policy_name);
  unsigned long long q = 0;
  long long w = 0;
  PolicyQuota(v.rate, &q, &w);
  d->headers.emplace_back("RateLimit-Policy", absl::StrCat("\"", name, "\";q=", q, ";w=", w));
  // On a denial `t` is when the next request can succeed, so that Retry-After
  // is never earlier than `t` (draft-ietf-httpapi-ratelimit-headers).
  const long long t =
      denied ? RetryAfterSeconds(v.rate.retry_after_ns) : CeilSeconds(v.rate.reset_ns);
  d->headers.emplace_back("RateLimit",
                          absl::StrCat("\"", name, "\";r=", v.rate.remaining, ";t=", t));
}

HttpDecision Deny(int status, std::string www_authenticate, std::string_view error,
                  std::string_view message) {
  HttpDecision d;
  d.allowed = false;
  d.status = status;
  if (!www_authenticate.empty())
    d.headers.emplace_back("WWW-Authenticate", std::move(www_authenticate));
  d.headers.emplace_back("Cache-Control", "no-store");
  d.headers.emplace_back("Content-Type", "application/json");
  d.body = absl::StrCat("{\"error\":", internal::JsonString(error),
                        ",\"message\":", internal::JsonString(message), "}");
  return d;
}

}  // namespace

absl::Status ValidateHttpOptions(const HttpOptions& options) {
  if (absl::Status s = ValidatePrintableAscii("realm", options.realm); !s.ok()) return s;
  if (absl::Status s = ValidatePrintableAscii("policy_name", options.policy_name); !s.ok()) {
    return s;
  }
  if (options.unavailable_retry_after_seconds < 1) {
    return absl::InvalidArgumentError("unavailable_retry_after_seconds: must be at least 1");
  }
  return absl::OkStatus();
}

long long RetryAfterSeconds(std::int64_t retry_after_ns) noexcept {
  const long long s = CeilSeconds(retry_after_ns);
  return s < 1 ? 1 : s;
}

HttpDecision DecideHttp(const Verdict& verdict, const Requirement& requirement,
                        const HttpOptions& options) {
  if (verdict.outcome == Outcome::kOk) {
    HttpDecision d;
    d.allowed = true;
    AddRateLimitHeaders(verdict, options, /*denied=*/false, &d);
    return d;
  }
  // Only denials pay for the challenge string.
  const std::string realm =
      absl::StrCat("Bearer realm=\"", QuotedStringContent(options.realm), "\"");
  switch (verdict.outcome) {
    case Outcome::kOk:
      break;  // answered above
    case Outcome::kMissing:
      return Deny(401, realm, "unauthorized",
                  "Authentication required: send Authorization: Bearer <api key>.");
    case Outcome::kInvalidRequest:
      return Deny(400,
                  absl::StrCat(realm,
                               ", error=\"invalid_request\", error_description=\"Malformed "
                               "Authorization request\""),
                  "invalid_request",
                  "Send exactly one Authorization header of the form 'Bearer <api key>', and never "
                  "the key in the URL.");
    // One answer for every token that does not identify a usable key: nothing
    // in status, headers or body tells these cases apart (ASVS 6.3.8).
    case Outcome::kMalformed:
    case Outcome::kUnknown:
    case Outcome::kRevoked:
    case Outcome::kExpired:
    case Outcome::kWrongEnvironment:
      return Deny(401,
                  absl::StrCat(realm,
                               ", error=\"invalid_token\", error_description=\"The API key "
                               "is invalid\""),
                  "invalid_token", "The API key is missing, malformed, revoked or expired.");
    case Outcome::kInsufficientScope: {
      std::string header = absl::StrCat(realm, ", error=\"insufficient_scope\"");
      std::string message = "The API key lacks the scope this endpoint requires.";
      if (!requirement.scope_name().empty()) {
        const std::string scope = QuotedStringContent(requirement.scope_name());
        absl::StrAppend(&header, ", scope=\"", scope, "\"");
        message = absl::StrCat("The API key lacks the required scope: ", scope, ".");
      }
      return Deny(403, std::move(header), "insufficient_scope", message);
    }
    case Outcome::kAccountDenied:
      return Deny(403, absl::StrCat(realm, ", error=\"insufficient_scope\""), "insufficient_scope",
                  "The API key is not linked to the requested account.");
    case Outcome::kRateLimited: {
      HttpDecision d = Deny(429, "", "rate_limited", "");
      const long long retry = RetryAfterSeconds(verdict.rate.retry_after_ns);
      d.body = absl::StrCat(
          "{\"error\":\"rate_limited\",\"message\":\"Rate limit exceeded; retry after ", retry,
          " second", retry == 1 ? "" : "s", ".\"}");
      d.headers.emplace_back("Retry-After", absl::StrCat(retry));
      AddRateLimitHeaders(verdict, options, /*denied=*/true, &d);
      return d;
    }
    case Outcome::kInsecureTransport:
      return Deny(403, "", "https_required",
                  "This API is served over HTTPS only; plain HTTP requests are rejected.");
    case Outcome::kDeniedByIp:
      return Deny(403, "", "forbidden", "Requests from this address are not allowed.");
    case Outcome::kUnavailable:
      break;
  }
  HttpDecision d =
      Deny(503, "", "unavailable", "Authentication is temporarily unavailable; retry later.");
  d.headers.emplace_back("Retry-After",
                         absl::StrCat(std::max(1, options.unavailable_retry_after_seconds)));
  return d;
}

}  // namespace keygate
