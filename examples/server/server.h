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
// Every request gets one access-log line with the key id and the verdict,
// never the token (never the query string, where a careless client may have
// put one, and never a path segment that looks like a token).
#ifndef KEYGATE_EXAMPLES_SERVER_SERVER_H_
#define KEYGATE_EXAMPLES_SERVER_SERVER_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"

#include "keygate/http_request.h"
#include "keygate/scope.h"
#include "tls.h"

namespace keygate_example {

struct ServerConfig {
  std::string address = "127.0.0.1";
  int https_port = 8443;  // 0: any free port (see port_file)
  int http_port = -1;     // plain HTTP listener: -1 none, 0 any free port
  int threads = 2;
  PemPair tls;
  // Written once listening: "https=<port>\nhttp=<port>\n" (http=-1 when off).
  std::string port_file;
  bool bench_routes = false;
  std::FILE* access_log = nullptr;  // nullptr: no access log
  // The deployment's token prefix: path segments that start with it and '_'
  // are redacted from the access log (see README.md).
  std::string token_prefix = "kg";
};

struct Api {
  std::shared_ptr<const keygate::HttpAuthenticator> auth;
  keygate::Requirement read;   // GET /v1/projects
  keygate::Requirement write;  // POST /v1/projects
  keygate::Requirement admin;  // DELETE /v1/projects/{id}
};

// Serves until SIGINT or SIGTERM, then stops accepting, lets requests in
// flight finish (at most 5 s) and returns OK. Errors: kInvalidArgument (bad
// address, certificate or key), kUnavailable (cannot bind), kInternal (I/O
// error writing port_file).
absl::Status Serve(const ServerConfig& config, const Api& api);

}  // namespace keygate_example

#endif  // KEYGATE_EXAMPLES_SERVER_SERVER_H_
