// keygate/http.h: turning a verdict into an HTTP response decision
// (RFC 6750 3, RFC 9110 15.5.2, RFC 6585 4, draft-ietf-httpapi-ratelimit-headers).
//
// Outcome to response:
//   * missing (no Authorization, or another scheme such as Basic: RFC 6750
//     3.1 treats both as no credentials): 401, `WWW-Authenticate: Bearer
//     realm="..."` with no error code;
//   * invalid request (Bearer syntax, two Authorization headers, a token in
//     the query string): 400, `... error="invalid_request"`;
//   * malformed, unknown, revoked, expired, wrong environment: 401,
//     `... error="invalid_token"`, identical for all five;
//   * insufficient scope, account denied: 403,
//     `... error="insufficient_scope", scope="..."`;
//   * rate limited: 429, `Retry-After` (whole seconds, >= 1),
//     `RateLimit-Policy` and `RateLimit`;
//   * insecure transport (plain HTTP): 403, no credentials are ever checked;
//   * denied by IP: 403;
//   * unavailable: 503, `Retry-After`;
//   * ok: 200 (*), with `RateLimit-Policy` and `RateLimit` when a limit
//     applies.
// `RateLimit-Policy: "name";q=Q;w=W` states the policy's sustained quota, Q
// requests per W whole seconds (its rate per period; a period that is not
// whole seconds is rounded up, and Q scaled down to match). The burst shows
// in `RateLimit: "name";r=R;t=T`: R requests can be made now, and T seconds
// until the bucket is full again (on a denial, until a retry can succeed).
// (*) the application's own status; `allowed` is true.
// Every error carries `Cache-Control: no-store` and a JSON body
// `{"error":"...","message":"..."}`.
//
// Example:
//
//   keygate::HttpDecision d = keygate::DecideHttp(verdict, requirement, {"api"});
//   if (!d.allowed) { send(d.status, d.headers, d.body); }
//
// Thread safety: pure functions. Not on the allocation-free path: building
// the decision allocates strings (only for denied requests and for headers).

#ifndef KEYGATE_HTTP_H_
#define KEYGATE_HTTP_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keygate/scope.h"
#include "keygate/verdict.h"

namespace keygate {

struct HttpOptions {
  std::string realm = "api";
  // Name of the rate-limit policy in RateLimit-Policy / RateLimit.
  std::string policy_name = "default";
  // Retry-After sent with 503.
  int unavailable_retry_after_seconds = 1;
};

struct HttpDecision {
  bool allowed = false;
  int status = 0;  // 0 when allowed (the application chooses)
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // empty when allowed
};

HttpDecision DecideHttp(const Verdict& verdict, const Requirement& requirement,
                        const HttpOptions& options = {});

// Retry-After in whole seconds, rounded up, at least 1.
long long RetryAfterSeconds(std::int64_t retry_after_ns) noexcept;

}  // namespace keygate

#endif  // KEYGATE_HTTP_H_
