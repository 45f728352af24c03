// keygate/admin/httplib.h: the admin API (admin_api.h) in a cpp-httplib server. Header-only;
// link keygate::admin and keygate::httplib (for httplib's CPPHTTPLIB_* definitions).
//
// `MountAdminApi` routes GET (and so HEAD), POST, PATCH, DELETE, PUT and OPTIONS below the API's
// base path to `AdminApi::Handle` (PUT and OPTIONS only to be answered 405, or a CORS
// preflight); `AdminHttplibHandler` is that handler, to register yourself. TLS is the request's
// own (an SSLServer connection), the client address httplib's `remote_addr`. httplib reads
// bodies of any size by default: call `server.set_payload_max_length(max_body_bytes)` (a
// server-wide setting, so it is left to you).
// Thread safety: as AdminApi::Handle (thread-safe; httplib uses a thread pool). Cost: the
// AdminApi's, plus copying fields.
//
// Example:
//   httplib::SSLServer server(cert_path, key_path);
//   server.set_payload_max_length(api->options().max_body_bytes);
//   keygate::MountAdminApi(server, api);  // std::shared_ptr<const keygate::AdminApi>
//   server.listen("127.0.0.1", 8443);

#ifndef KEYGATE_ADMIN_HTTPLIB_H_
#define KEYGATE_ADMIN_HTTPLIB_H_

#include <httplib.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keygate/admin/admin_api.h"

namespace keygate {

inline httplib::Server::Handler AdminHttplibHandler(std::shared_ptr<const AdminApi> api) {
  return [api = std::move(api)](const httplib::Request& request, httplib::Response& response) {
    std::vector<std::pair<std::string_view, std::string_view>> fields;
    fields.reserve(request.headers.size());
    for (const auto& [name, value] : request.headers) fields.emplace_back(name, value);
    AdminRequest admin_request;
    admin_request.method = request.method;
    admin_request.target = request.target;
    admin_request.headers = fields;
    admin_request.body = request.body;
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
    admin_request.tls = request.ssl != nullptr;
#endif
    admin_request.client_address = request.remote_addr;
    AdminResponse answer = api->Handle(admin_request);
    response.status = answer.status;
    for (auto& [name, value] : answer.headers) response.set_header(name, value);
    // Not set_content(): it would send Content-Type a second time.
    response.body = std::move(answer.body);
  };
}

// The regular expression httplib matches for `base_path` and everything below it.
inline std::string AdminHttplibPattern(std::string_view base_path) {
  std::string pattern;
  for (const char c : base_path) {
    if (c == '.') pattern += '\\';
    pattern += c;
  }
  return pattern + "(/.*)?";
}

inline void MountAdminApi(httplib::Server& server, std::shared_ptr<const AdminApi> api) {
  const std::string pattern = AdminHttplibPattern(api->options().base_path);
  const httplib::Server::Handler handler = AdminHttplibHandler(std::move(api));
  server.Get(pattern, handler);
  server.Post(pattern, handler);
  server.Patch(pattern, handler);
  server.Delete(pattern, handler);
  server.Put(pattern, handler);
  server.Options(pattern, handler);
}

}  // namespace keygate

#endif  // KEYGATE_ADMIN_HTTPLIB_H_
