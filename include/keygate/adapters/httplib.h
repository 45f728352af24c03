// keygate/adapters/httplib.h: protecting cpp-httplib endpoints (target
// keygate::httplib).
//
// Three ways in, from the most to the least automatic:
//   * `HttplibPreRoutingHandler`: one handler for the whole server
//     (`Server::set_pre_routing_handler`); a function maps each request to
//     its route's Requirement (nullptr: public route). A denial is answered
//     before routing; an allowed request continues to its handler with the
//     RateLimit headers already on the response.
//   * `HttplibProtect`: wraps one route's handler; the handler also receives
//     the HttpAuthResult (key id, principal) for its audit log.
//   * `CheckHttplibRequest`: the check itself, for your own plumbing.
// TLS is detected from the request (an `SSLServer` connection); credentials
// in the URL are looked for in the query of the request target as received
// (`Request::target`), exactly as the Beast adapter does. `Request::params`
// is not used: httplib merges the fields of a urlencoded body into it, and a
// form field named `api_key` (say, a third-party key the user stores) is no
// credential sent in the URL.
//
// Example:
//
//   httplib::SSLServer server(cert_path, key_path);
//   auto auth = std::make_shared<keygate::HttpAuthenticator>(verifier);
//   server.set_pre_routing_handler(keygate::HttplibPreRoutingHandler(
//       auth, [&](const httplib::Request& req) -> const keygate::Requirement* {
//         if (req.path == "/healthz") return nullptr;
//         return req.method == "GET" ? &kReadAll : &kWriteAll;
//       }));
//   server.Post("/v1/projects", keygate::HttplibProtect(auth, kWriteAll,
//       [](const httplib::Request&, httplib::Response& res,
//          const keygate::HttpAuthResult& auth) { ... auth.verdict.key() ... }));
//
// Build note: Debian's libcpp-httplib is compiled with
// CPPHTTPLIB_OPENSSL_SUPPORT (and zlib/brotli); keygate::httplib carries
// those definitions to you, since the library's class layout depends on them.
//
// Thread safety: the handlers are thread-safe if the authenticator and your
// callbacks are (httplib runs handlers on a thread pool). Requirements are
// held by pointer or copied with their string views: the scope and account
// names they view must outlive the server.

#ifndef KEYGATE_ADAPTERS_HTTPLIB_H_
#define KEYGATE_ADAPTERS_HTTPLIB_H_

#include <httplib.h>

#include <functional>
#include <memory>

#include "keygate/http.h"
#include "keygate/http_request.h"
#include "keygate/scope.h"

namespace keygate {

// Checks `request` against `requirement` and writes the decision into
// `*response`: on a denial, status, headers and the JSON body; when allowed,
// the RateLimit headers only.
HttpAuthResult CheckHttplibRequest(const HttpAuthenticator& authenticator,
                                   const httplib::Request& request, const Requirement& requirement,
                                   httplib::Response* response,
                                   Attribution attribution = Attribution::kKeyIdOnly);

// Writes `decision` into `*response` (as CheckHttplibRequest does).
void ApplyHttplibDecision(const HttpDecision& decision, httplib::Response* response);

// The requirement of the route `request` will reach; nullptr for a public
// route (the request passes untouched). The pointee must outlive the server.
using HttplibRequirementFn = std::function<const Requirement*(const httplib::Request&)>;
// Sees every checked request (for logs and metrics).
using HttplibAuthObserver = std::function<void(const httplib::Request&, const HttpAuthResult&)>;

// A handler for `Server::set_pre_routing_handler`. Returns Handled (the
// response is the error) for denied requests, Unhandled otherwise.
httplib::Server::HandlerWithResponse HttplibPreRoutingHandler(
    std::shared_ptr<const HttpAuthenticator> authenticator, HttplibRequirementFn requirement_for,
    HttplibAuthObserver observer = nullptr);

using HttplibProtectedHandler =
    std::function<void(const httplib::Request&, httplib::Response&, const HttpAuthResult&)>;

// A route handler that runs `handler` only for requests that pass
// `requirement`, and answers the others with the error response.
httplib::Server::Handler HttplibProtect(std::shared_ptr<const HttpAuthenticator> authenticator,
                                        Requirement requirement, HttplibProtectedHandler handler,
                                        Attribution attribution = Attribution::kKeyIdOnly);

}  // namespace keygate

#endif  // KEYGATE_ADAPTERS_HTTPLIB_H_
