// examples/server/server.h: the example API server's HTTP side, on
// Boost.Beast with OpenSSL (the only translation unit that includes Beast).
//
// Routes (requirements from the product documents' scope table):
//   GET    /healthz             no authentication (also on the plain port)
//   GET    /v1/projects         read:all
//   POST   /v1/projects         write:all   {"name":"..."}; attributed to the key's owner
//   DELETE /v1/projects/{id}    admin       attributed to the key's owner
//   GET    /open/v1/projects    no authentication, same handler as GET
//                               /v1/projects (only with bench_routes: the
//                               benchmark's "without keygate" baseline)
//   *      /admin/...           the admin API (keygate/admin/admin_api.h), admin
//                               keys only, when built with keygate::admin
//                               (bodies up to the server's 64 KiB)
// Every request gets one access-log line with the key id and the verdict,
// never the token (never the query string, where a careless client may have
// put one, and never a path segment that looks like a token).
//
// Limits (what an embedding server must set too: keygate/adapters/beast.h):
// request header 8 KiB, body 64 KiB, read buffer 8 KiB (so a chunked body's
// trailer section is bounded by it); trailers are refused (400: a field sent
// after the body, Authorization included, is never read as a header); a
// Transfer-Encoding whose final coding is not chunked, or any in HTTP/1.0,
// gets 400 and the connection is closed (RFC 9112 6.3); at most
// max_connections connections are served at once (the rest are closed at
// accept); when descriptors run out, accepting pauses for 100 ms at a time;
// an exception from a connection's I/O ends that connection only.
#ifndef KEYGATE_EXAMPLES_SERVER_SERVER_H_
#define KEYGATE_EXAMPLES_SERVER_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

#include "internal/self_signed_cert.h"
#include "keygate/admin/admin_api.h"
#include "keygate/http_request.h"
#include "keygate/scope.h"

namespace keygate_example {

// The largest request body the server reads (413 past it).
inline constexpr std::size_t kMaxBodyBytes = std::size_t{64} * 1024;

struct ServerConfig {
  std::string address = "127.0.0.1";
  int https_port = 8443;  // 0: any free port (see port_file)
  int http_port = -1;     // plain HTTP listener: -1 none, 0 any free port
  int threads = 2;
  keygate::internal::PemPair tls;
  // Written once listening: "https=<port>\nhttp=<port>\n" (http=-1 when off).
  std::string port_file;
  bool bench_routes = false;
  std::FILE* access_log = nullptr;  // nullptr: no access log
  // The deployment's token prefix and environment tags: path segments that
  // start with "<prefix>_" or hold "<prefix>_<tag>_" anywhere are redacted
  // from the access log (see README.md).
  std::string token_prefix = "kg";
  std::vector<std::string> environment_tags = {"test", "live"};
  // Connections served at once; more are closed as soon as they are accepted.
  int max_connections = 512;
};

struct Api {
  std::shared_ptr<const keygate::HttpAuthenticator> auth;
  keygate::Requirement read;   // GET /v1/projects
  keygate::Requirement write;  // POST /v1/projects
  keygate::Requirement admin;  // DELETE /v1/projects/{id}
  // Answers the requests it Serves() (/admin/...); null: none mounted.
  std::shared_ptr<const keygate::AdminApi> admin_api;
};

// Serves until SIGINT or SIGTERM, then stops accepting, lets requests in
// flight finish (at most 5 s) and returns OK. Errors: kInvalidArgument (bad
// address, certificate or key), kUnavailable (cannot bind), kInternal (I/O
// error writing port_file).
absl::Status Serve(const ServerConfig& config, const Api& api);

}  // namespace keygate_example

#endif  // KEYGATE_EXAMPLES_SERVER_SERVER_H_
