// keygate/http.h: turning a Verdict into an HTTP response decision (RFC 6750 3, RFC 9110
// 15.5.2, RFC 6585 4, draft-ietf-httpapi-ratelimit-headers). Outcome to status,
// `WWW-Authenticate: Bearer realm="...", error="..."` and other headers:
//   missing (no Authorization, or another scheme)         401, no error= code
//   invalid request (Bearer syntax, two Authorization
//     headers, a token in the query string)               400, error="invalid_request"
//   malformed, unknown, revoked, expired, wrong env.      401, error="invalid_token" (identical)
//   insufficient scope, account denied                    403, error="insufficient_scope", scope=
//   rate limited                                          429, Retry-After (s, >= 1), RateLimit*
//   insecure transport (nothing checked); denied by IP    403
//   unavailable                                           503, Retry-After
//   ok                                                    allowed; RateLimit* when a limit applies
// `RateLimit-Policy: "name";q=Q;w=W` is the sustained quota (Q per W whole seconds, rounded up
// with Q scaled); `RateLimit: "name";r=R;t=T`: R requests left now, T seconds until full (on a
// denial, until a retry can succeed). Errors carry `Cache-Control: no-store` and a JSON body
// `{"error":"...","message":"..."}`. Realm, policy and scope names go into quoted strings: bytes
// outside 0x20-0x7E are dropped, '"' and '\' escaped (ValidateHttpOptions refuses them instead).
// Thread safety: pure functions. Cost: allocates (the decision's strings), off the hot path.
// Example:
//   keygate::HttpDecision d = keygate::DecideHttp(verdict, requirement, {"api"});
//   if (!d.allowed) { send(d.status, d.headers, d.body); }

#ifndef KEYGATE_HTTP_H_
#define KEYGATE_HTTP_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

#include "keygate/scope.h"
#include "keygate/verdict.h"

namespace keygate {

struct HttpOptions {
  std::string realm = "api";  // printable ASCII (0x20-0x7E); other bytes are dropped
  // The policy name in RateLimit-Policy / RateLimit; printable ASCII, other bytes dropped.
  std::string policy_name = "default";
  int unavailable_retry_after_seconds = 1;  // Retry-After with 503 (below 1: sent as 1)
};

// Checks options at configuration (DecideHttp never fails; it drops what this refuses).
// Errors: kInvalidArgument naming the field, never its text ("realm: byte 3 (0xc3) is not
// printable ASCII (0x20-0x7E)"; "unavailable_retry_after_seconds: must be at least 1").
[[nodiscard]] absl::Status ValidateHttpOptions(const HttpOptions& options);

struct HttpDecision {
  bool allowed = false;
  int status = 0;  // 0 when allowed (the application chooses)
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // empty when allowed
};

// The response for `verdict` checked against `requirement` (table above).
HttpDecision DecideHttp(const Verdict& verdict, const Requirement& requirement,
                        const HttpOptions& options = {});

// Retry-After in whole seconds, rounded up, at least 1.
long long RetryAfterSeconds(std::int64_t retry_after_ns) noexcept;

}  // namespace keygate

#endif  // KEYGATE_HTTP_H_
