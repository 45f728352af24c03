// keygate/admin/admin_api.h: key management over HTTP (target keygate::admin). `AdminApi` answers
// one request (method, target, header fields, body) with one response; any server mounts it
// (keygate/admin/beast.h, keygate/admin/httplib.h, or your own few lines). The JSON API is
// described by an OpenAPI 3.1 document it serves at `{base}/api/v1/openapi.json`.
//
// Routes under `{base}/api/v1` (`base` defaults to "/admin"), each for a key with the `admin`
// scope (verified by the HttpAuthenticator you give: no key 401, another key 403, a limited key
// 429, plain HTTP 403 unless the authenticator allows it):
//   GET    /keys                ?environment= &owner= &state= &kind= &name= &limit= &cursor=
//   POST   /keys                create; 201 with the token (once) and `Cache-Control: no-store`;
//                               with per-key webhook secrets and a webhook URL, also the key's
//                               `webhook_secret` (once)
//   GET    /keys/{id}           one key; `ETag: "<version>"`
//   PATCH  /keys/{id}           modify; needs `If-Match: "<version>"` (428 without, 412 stale)
//   DELETE /keys/{id}           delete permanently; 204 (If-Match honoured when sent)
//   POST   /keys/{id}/revoke    block; /restore unblocks; 200 with the key
//   POST   /keys/{id}/roll      {"grace_seconds": n}: a new token, the old one works n seconds
//   POST   /keys/{id}/reveal    a recoverable key's token again (audited; 409 when hash-only)
//   POST   /keys/{id}/webhook-secret  {"overlap_seconds": n}: a new webhook secret (once), the
//                               old one signs too for n seconds (409 without per-key secrets)
//   POST   /personal-keys       {"owner", "environment", "scopes"}: the owner's personal key,
//                               created (201, with its token) or as it is (200, no token)
//   GET    /audit               ?key_id= &actor= &since= &until= &after= &limit=
//   GET    /keys/{id}/webhook-deliveries  ?limit=  the key's webhook messages, newest first,
//                               each with its attempts (also of a deleted key that has some)
//   GET    /webhook-deliveries  ?limit=  every key's, newest first
//   GET    /scopes, /environments, /me (the calling key's id, owner and scopes, and whether
//                               tokens are recoverable and keys get their own webhook secrets)
// Every mutation is recorded in the audit log with the calling key's owner as the actor.
//
// The web console (unless `serve_console` is false) is served at `{base}/` (`{base}` itself
// redirects there, 308): a page, a script, a style sheet and an icon embedded in the library,
// 39 KB (11 KB gzipped), public since they hold no data. It signs in with a pasted admin key, kept
// in the page's memory only (never in storage, a cookie or a URL), and calls the routes above. Its
// answers carry a Content-Security-Policy that allows only its own origin, no inline script and
// no HTML parsed from strings (`require-trusted-types-for 'script'`).
//
// The webhook delivery log is read from `webhook_deliveries` (a WebhookDispatcher's Deliveries,
// keygate/webhooks/webhook_dispatcher.h; the admin component does not link the dispatcher).
// Without one, both of its routes answer 404 with the code "webhooks_off". A message shows its
// webhook-id, type, key, URL, state, next attempt (pending only) and each attempt's time, HTTP
// status, latency, address and error: never a signature or a signing secret.
//
// Errors are RFC 9457 problem details (`application/problem+json`): {"type", "title",
// "status", "detail", and "field" when one field is at fault}, e.g. 400 {"detail": "name: must
// not be empty", "field": "name"}. Bad input is always a 4xx, never a 500: a body over
// `max_body_bytes` 413; not JSON, not valid UTF-8, a duplicate member, nesting deeper than 16,
// an unknown member or query parameter, a wrong type 400; a body that is not
// `application/json` 415; an unknown path 404; a method a path does not take 405 (with
// `Allow`). 503 with Retry-After when the store is down. Messages never quote a token: text
// from the request is quoted only when it has the shape of a name, scope, environment or id.
//
// Every API response carries `Content-Security-Policy` (`default-src 'none'; frame-ancestors
// 'none'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
// `X-Frame-Options: DENY`, `Cross-Origin-Resource-Policy: same-origin` and `Cache-Control:
// no-store`. CORS is off unless origins are listed: no Access-Control-* header, and a preflight
// (OPTIONS) is a method no route takes, 405. For a listed origin, a preflight gets 204 without a
// key, and every answer `Access-Control-Allow-Origin`.
//
// Ownership: an AdminApi shares its manager and authenticator (shared_ptr) and owns nothing else;
// requests are borrowed for the call, responses are values.
// Thread safety: `Handle` is const and thread-safe (the manager and authenticator are). Cost: one
// verification and one store read (the caller's owner) per request, plus the route's store work;
// not a hot path.
//
// Example:
//   keygate::AdminApi::Options o;
//   o.manager = manager;              // std::shared_ptr<keygate::KeyManager>
//   o.authenticator = authenticator;  // verifies the admin keys (e.g. a ReferenceVerifier's)
//   absl::StatusOr<std::unique_ptr<keygate::AdminApi>> api = keygate::AdminApi::Create(o);
//   if (!api.ok()) return api.status();
//   std::pair<std::string_view, std::string_view> fields[] = {{"Authorization", auth}};
//   keygate::AdminResponse r = (*api)->Handle(
//       {.method = "GET", .target = "/admin/api/v1/keys?limit=10", .headers = fields,
//        .tls = true, .client_address = peer});
//   // send r.status, r.headers, r.body

#ifndef KEYGATE_ADMIN_ADMIN_API_H_
#define KEYGATE_ADMIN_ADMIN_API_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/scope.h"
// WebhookDelivery only, a plain struct: keygate::admin does not link keygate::webhooks.
#include "keygate/webhooks/webhook_dispatcher.h"

namespace keygate {

// One HTTP request, as any server sees it. Views must outlive the Handle call.
struct AdminRequest {
  std::string_view method;  // "GET", "POST", ... (case-sensitive, RFC 9110)
  std::string_view target;  // origin form: "/admin/api/v1/keys?limit=10"
  // Every header field in order, names in any case; repeated fields as repeated pairs.
  absl::Span<const std::pair<std::string_view, std::string_view>> headers = {};
  std::string_view body = {};
  bool tls = false;                 // the request arrived over TLS
  std::string_view client_address;  // the peer's IP address as text
};

struct AdminResponse {
  int status = 500;
  std::vector<std::pair<std::string, std::string>> headers;  // Content-Type among them
  std::string body;
};

inline constexpr std::size_t kDefaultAdminMaxBodyBytes = std::size_t{1} << 20;  // 1 MiB

// The webhook delivery log: the messages of `key_id` (every key's when empty), newest first, at
// most `limit` (1 .. 1000), each with its attempts. Called from any request thread at once:
// must be thread-safe. Example: [d](std::string_view key, std::size_t limit) { return
// d->Deliveries(key, limit); } for a std::shared_ptr<WebhookDispatcher> d.
using WebhookDeliveryLog = std::function<absl::StatusOr<std::vector<WebhookDelivery>>(
    std::string_view key_id, std::size_t limit)>;

class AdminApi {
 public:
  // Every field has an initializer, so designated initializers may leave any out.
  struct Options {
    std::shared_ptr<KeyManager> manager = nullptr;                     // required
    std::shared_ptr<const HttpAuthenticator> authenticator = nullptr;  // required
    // Where the API is mounted: "" (the root) or "/segment[/segment...]" without a trailing
    // '/', each segment of [A-Za-z0-9._~-].
    std::string base_path = "/admin";
    // Larger bodies are refused with 413 before they are parsed; 1 .. 64 MiB. A server should
    // stop reading at this size too (the adapters do).
    std::size_t max_body_bytes = kDefaultAdminMaxBodyBytes;
    // Origins ("https://console.example.com") allowed to call the API from a browser; each is
    // "scheme://host[:port]" in lower case. Empty: CORS off.
    std::vector<std::string> cors_allowed_origins = {};
    // Serve the web console at `{base}/` (false: the JSON API only).
    bool serve_console = true;
    // Where the webhook routes read the delivery log; empty: they answer 404 "webhooks_off".
    WebhookDeliveryLog webhook_deliveries = nullptr;
  };

  // Errors: kInvalidArgument "manager: must be set", "authenticator: must be set",
  // "base_path: ...", "max_body_bytes: ...", "cors_allowed_origins[i]: ...".
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<AdminApi>> Create(Options options);

  AdminApi(const AdminApi&) = delete;
  AdminApi& operator=(const AdminApi&) = delete;
  ~AdminApi();

  // The response to `request` (never throws; an internal failure is a 500 problem without
  // detail). A target outside `base_path` gets 404.
  [[nodiscard]] AdminResponse Handle(const AdminRequest& request) const;

  // Whether `target`'s path is `base_path` or below it: the requests to route to Handle.
  [[nodiscard]] bool Serves(std::string_view target) const noexcept;

  const Options& options() const noexcept { return options_; }

 private:
  class Impl;
  explicit AdminApi(Options options, Requirement admin);
  Options options_;
  std::unique_ptr<const Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_ADMIN_ADMIN_API_H_
