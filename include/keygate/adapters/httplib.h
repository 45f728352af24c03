// keygate/adapters/httplib.h: protecting cpp-httplib endpoints (target keygate::httplib).
//
// Three ways in: `HttplibPreRoutingHandler` (one handler for the server, mapping each request to
// its route's Requirement), `HttplibProtect` (wraps one route's handler, which also receives the
// HttpAuthResult) and `CheckHttplibRequest` (the check alone). TLS is detected from the request
// (an `SSLServer` connection); a credential in the URL is looked for in `Request::target`'s query,
// never `Request::params` (which holds urlencoded body fields too). keygate::httplib carries
// Debian's CPPHTTPLIB_OPENSSL_SUPPORT (and zlib/brotli) definitions: the class layout needs them.
// Thread safety: as the authenticator's and your callbacks' (httplib uses a thread pool).
//
// Example:
//   httplib::SSLServer server(cert_path, key_path);
//   std::shared_ptr<const keygate::HttpAuthenticator> auth =
//       *keygate::HttpAuthenticator::Create({.verifier = verifier});  // check .ok() first
//   server.set_pre_routing_handler(keygate::HttplibPreRoutingHandler(
//       auth, [&](const httplib::Request& req) -> const keygate::Requirement* {
//         if (req.path == "/healthz") return nullptr;
//         return req.method == "GET" ? &kReadAll : &kWriteAll;
//       }));

#ifndef KEYGATE_ADAPTERS_HTTPLIB_H_
#define KEYGATE_ADAPTERS_HTTPLIB_H_

#include <httplib.h>

#include <functional>
#include <memory>

#include "keygate/http.h"
#include "keygate/http_request.h"
#include "keygate/scope.h"

namespace keygate {

// Checks `request` against `requirement` and writes the decision into `*response`: on a
// denial, status, headers and JSON body; when allowed, the RateLimit headers only.
HttpAuthResult CheckHttplibRequest(const HttpAuthenticator& authenticator,
                                   const httplib::Request& request, const Requirement& requirement,
                                   httplib::Response* response,
                                   Attribution attribution = Attribution::kKeyIdOnly);

// Writes `decision` into `*response` (as CheckHttplibRequest does).
void ApplyHttplibDecision(const HttpDecision& decision, httplib::Response* response);

// The Requirement of `request`'s route, outliving the server; nullptr: public, passes untouched.
using HttplibRequirementFn = std::function<const Requirement*(const httplib::Request&)>;
// Sees every checked request (for logs and metrics).
using HttplibAuthObserver = std::function<void(const httplib::Request&, const HttpAuthResult&)>;

// For `Server::set_pre_routing_handler`: Handled (the response is the error) for a denied
// request; Unhandled otherwise, with the RateLimit headers already on the response.
httplib::Server::HandlerWithResponse HttplibPreRoutingHandler(
    std::shared_ptr<const HttpAuthenticator> authenticator, HttplibRequirementFn requirement_for,
    HttplibAuthObserver observer = nullptr);

using HttplibProtectedHandler =
    std::function<void(const httplib::Request&, httplib::Response&, const HttpAuthResult&)>;

// A route handler running `handler` for requests passing `requirement`; others get the error.
httplib::Server::Handler HttplibProtect(std::shared_ptr<const HttpAuthenticator> authenticator,
                                        Requirement requirement, HttplibProtectedHandler handler,
                                        Attribution attribution = Attribution::kKeyIdOnly);

}  // namespace keygate

#endif  // KEYGATE_ADAPTERS_HTTPLIB_H_
