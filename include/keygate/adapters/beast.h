// keygate/adapters/beast.h: protecting Boost.Beast endpoints (target keygate::beast).
//
// `CheckBeastRequest` reads every Authorization field and the target's query, runs the
// `HttpAuthenticator` and writes the complete error response on a denial, only the RateLimit
// headers when allowed. Say in `BeastConnection` whether the stream is TLS and who the peer is.
// Thread-safe; cost: the authenticator's, plus the error response a denial allocates.
//
// The server around it must bound header, body and read buffer (a chunked trailer is only
// bounded by the buffer), refuse requests with trailers (an `Authorization` trailer is read as a
// field), answer 400 and close on a Transfer-Encoding not ending in one `chunked` or on HTTP/1.0
// with one, catch exceptions around `io_context::run()`, cap connections and time out idle reads;
// see docs/design.md, "HTTP adapters", and examples/server/server.cc, which does all of this.
//
// Example (inside a session's request handler):
//   keygate::BeastResponse res;
//   keygate::HttpAuthResult auth = keygate::CheckBeastRequest(
//       authenticator, req, {.tls = true, .client_address = peer_ip}, kWriteAll, &res);
//   if (!auth.allowed()) return send(std::move(res));  // 400/401/403/429/503
//   res.body() = CreateProject(auth.verdict.key());     // log the key id, never the token

#ifndef KEYGATE_ADAPTERS_BEAST_H_
#define KEYGATE_ADAPTERS_BEAST_H_

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string_view>

#include "keygate/http.h"
#include "keygate/http_request.h"
#include "keygate/scope.h"

namespace keygate {

// What the server knows about the connection a request came on.
struct BeastConnection {
  bool tls = false;                 // the stream is an ssl_stream (or a trusted proxy said so)
  std::string_view client_address;  // the peer's IP as text
};

using BeastRequestHeader = boost::beast::http::request_header<boost::beast::http::fields>;
using BeastResponse = boost::beast::http::response<boost::beast::http::string_body>;

// Checks `request` (any `http::request<Body>` converts) against `requirement` and writes the
// decision into `*response`, whose version and keep-alive follow the request's.
HttpAuthResult CheckBeastRequest(const HttpAuthenticator& authenticator,
                                 const BeastRequestHeader& request,
                                 const BeastConnection& connection, const Requirement& requirement,
                                 BeastResponse* response,
                                 Attribution attribution = Attribution::kKeyIdOnly);

// Writes `decision` into `*response`: a denial replaces status, body and the decision's headers
// and calls prepare_payload() (HEAD: no body, Content-Length kept); allowed only adds headers.
void ApplyBeastDecision(const HttpDecision& decision, const BeastRequestHeader& request,
                        BeastResponse* response);

}  // namespace keygate

#endif  // KEYGATE_ADAPTERS_BEAST_H_
