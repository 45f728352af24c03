// keygate/http.h: turning a verdict into an HTTP response decision
// (RFC 6750 3, RFC 9110 15.5.2, RFC 6585 4, draft-ietf-httpapi-ratelimit-headers).
//
// | outcome                                          | status | headers |
// |--------------------------------------------------|--------|-------------------------------------------|
// | missing                                          | 401    | WWW-Authenticate: Bearer
// realm="..."      | | invalid request (syntax, scheme, two headers,    | 400    | ...
// error="invalid_request"               | |   token in the query string)                     | | |
// | malformed, unknown, revoked, expired, wrong env  | 401    | ... error="invalid_token"
// (identical)     | | insufficient scope, account denied               | 403    | ...
// error="insufficient_scope", scope=".."| | rate limited                                     | 429
// | Retry-After, RateLimit-Policy, RateLimit  | | insecure transport (plain HTTP) | 403    | (no
// credentials are ever checked)         | | denied by IP                                     | 403
// |                                           | | unavailable | 503    | Retry-After | | ok | 200*
// | RateLimit-Policy, RateLimit when a limit applies |
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
