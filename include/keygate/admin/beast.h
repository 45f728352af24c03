// keygate/admin/beast.h: the admin API (admin_api.h) in a Boost.Beast server. Header-only; link
// keygate::admin and keygate::beast.
//
// `ServeAdminBeast` turns a request whose target `AdminApi::Serves` into the AdminApi's answer:
// status, every header field (repeated ones kept), body, the request's version and keep-alive;
// Content-Length is set, except for HEAD (no body, and no length rather than a wrong one).
// Read the body with a limit of `api.options().max_body_bytes` (the parser's body_limit) and
// answer 413 yourself past it. The server duties of keygate/adapters/beast.h apply (header and
// buffer limits, no trailers, ...).
// Thread safety: as AdminApi::Handle (thread-safe). Cost: the AdminApi's, plus copying fields.
//
// Example (inside a session's request handler):
//   if (admin->Serves(std::string_view(req.target().data(), req.target().size()))) {
//     return send(keygate::ServeAdminBeast(*admin, req, {.tls = true, .client_address = peer}));
//   }

#ifndef KEYGATE_ADMIN_BEAST_H_
#define KEYGATE_ADMIN_BEAST_H_

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>
#include <string_view>
#include <utility>
#include <vector>

#include "keygate/adapters/beast.h"
#include "keygate/admin/admin_api.h"

namespace keygate {

inline BeastResponse ServeAdminBeast(
    const AdminApi& api,
    const boost::beast::http::request<boost::beast::http::string_body>& request,
    const BeastConnection& connection) {
  const auto view = [](boost::beast::string_view s) {
    return std::string_view(s.data(), s.size());
  };
  std::vector<std::pair<std::string_view, std::string_view>> fields;
  for (const auto& field : request)
    fields.emplace_back(view(field.name_string()), view(field.value()));
  AdminRequest admin_request;
  admin_request.method = view(request.method_string());
  admin_request.target = view(request.target());
  admin_request.headers = fields;
  admin_request.body = request.body();
  admin_request.tls = connection.tls;
  admin_request.client_address = connection.client_address;
  AdminResponse answer = api.Handle(admin_request);

  BeastResponse response;
  response.version(request.version());
  response.keep_alive(request.keep_alive());
  response.result(static_cast<unsigned>(answer.status));
  for (const auto& [name, value] : answer.headers) response.insert(name, value);
  response.body() = std::move(answer.body);
  if (request.method() == boost::beast::http::verb::head || answer.status == 204) {
    response.erase(boost::beast::http::field::content_length);
  } else {
    response.prepare_payload();
  }
  return response;
}

}  // namespace keygate

#endif  // KEYGATE_ADMIN_BEAST_H_
