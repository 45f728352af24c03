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
// Header text: the realm, the policy name and the scope name are written
// into quoted strings (RFC 9110 5.6.4; the policy name is an RFC 8941
// sf-string), which take visible ASCII and spaces only: every byte outside
// 0x20-0x7E (control characters, DEL, and every byte of non-ASCII UTF-8) is
// dropped, and '"' and '\' are escaped. So no option can split a header or
// put bytes in it that a proxy or client may reject or misread. To refuse
// such text up front instead of having it dropped, check the options with
// ValidateHttpOptions when they are configured.
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
  // Printable ASCII (0x20-0x7E); other bytes are dropped from the header.
  std::string realm = "api";
  // Name of the rate-limit policy in RateLimit-Policy / RateLimit. Printable
  // ASCII (0x20-0x7E); other bytes are dropped from the headers.
  std::string policy_name = "default";
  // Retry-After sent with 503 (a value below 1 is sent as 1).
  int unavailable_retry_after_seconds = 1;
};

// Checks options before use (DecideHttp itself never fails: it drops what
// this refuses, see the file comment). Errors: kInvalidArgument naming the
// field, never quoting its text: "realm: byte 3 (0xc3) is not printable
// ASCII (0x20-0x7E)", the same for "policy_name", and
// "unavailable_retry_after_seconds: must be at least 1".
absl::Status ValidateHttpOptions(const HttpOptions& options);

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
