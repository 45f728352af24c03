// keygate/adapters/beast.h: protecting Boost.Beast endpoints (target
// keygate::beast).
//
// `CheckBeastRequest` reads what keygate needs from a Beast request (every
// Authorization field, the query of the target), runs the
// `HttpAuthenticator`, and writes the outcome into your response: on a
// denial the complete error response (status, WWW-Authenticate,
// Retry-After, RateLimit, Cache-Control: no-store, JSON body); when allowed,
// only the RateLimit headers, and you fill in the rest. Beast does not know
// whether the stream under it is TLS or who the peer is: say so in
// `BeastConnection`.
//
// Example (inside a session's request handler):
//
//   namespace http = boost::beast::http;
//   http::response<http::string_body> res;
//   keygate::HttpAuthResult auth = keygate::CheckBeastRequest(
//       authenticator, req, {.tls = true, .client_address = peer_ip}, kWriteAll, &res);
//   if (!auth.allowed()) return send(std::move(res));     // 400/401/403/429/503
//   log << auth.verdict.key();                            // never the token
//   res.result(http::status::created);
//   res.body() = CreateProject(...);
//   res.prepare_payload();
//
// Thread safety: the functions are thread-safe if the authenticator is (it
// is). Cost: the authenticator's; a denial allocates the error response.
//
// What the server around it must do: keygate checks the credential, not the
// HTTP layer, and a request no one has a key for reaches that layer first.
// With Beast 1.74 (examples/server/server.cc does all of this):
//
// * Limits: `parser.header_limit(8 * 1024)` and `parser.body_limit(...)` on
//   every `request_parser`, and a bounded read buffer
//   (`beast::flat_buffer buffer{8 * 1024}`). Neither limit covers a chunked
//   body's trailer section: Beast keeps all of it in the buffer, so only the
//   buffer's bound limits it (unbounded, four connections took the example
//   server to 261 MB), and a trailer field of 64 KiB makes Beast throw
//   `std::length_error`.
// * Trailers: Beast adds trailer fields to the request's fields, so an
//   `Authorization` sent after the body is one of the fields
//   `CheckBeastRequest` reads. Refuse requests with trailers (compare the
//   number of fields after `async_read_header` and after `async_read`), or
//   check before the body is read.
// * Framing (RFC 9112 6.1, 6.3): Beast frames a request whose
//   Transfer-Encoding does not end in `chunked` by its Content-Length, and
//   reads the rest as another request. Read the header first
//   (`async_read_header`); if Transfer-Encoding is present and its final
//   coding is not a single `chunked`, or the request is HTTP/1.0, answer 400
//   and close the connection.
// * Exceptions: Beast and the allocator throw from inside `io_context::run()`;
//   uncaught, one request ends the process. Call `run()` in a loop that
//   catches, logs the message (never the request) and runs again: the
//   unwound handler releases its session, which closes that connection only.
// * Connections: cap the connections served at once (close the excess at
//   accept) below the descriptor limit, time out idle reads and TLS
//   handshakes (`tcp_stream::expires_after`), and when `async_accept` fails
//   with EMFILE, ENFILE, ENOBUFS or ENOMEM wait (a 100 ms timer) before
//   accepting again: the listening socket stays readable, and retrying at
//   once spins.

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

// Checks `request` (any `http::request<Body>` converts to its header) against
// `requirement` and writes the decision into `*response` (see the file
// comment). The response's version and keep-alive follow the request's.
HttpAuthResult CheckBeastRequest(const HttpAuthenticator& authenticator,
                                 const BeastRequestHeader& request,
                                 const BeastConnection& connection, const Requirement& requirement,
                                 BeastResponse* response,
                                 Attribution attribution = Attribution::kKeyIdOnly);

// Writes `decision` into `*response`: a denial replaces status, body and the
// decision's headers and calls prepare_payload() (for a HEAD request the
// body is left out, Content-Length kept); an allowed decision only adds its
// headers.
void ApplyBeastDecision(const HttpDecision& decision, const BeastRequestHeader& request,
                        BeastResponse* response);

}  // namespace keygate

#endif  // KEYGATE_ADAPTERS_BEAST_H_
