// The Boost.Beast adapter (keygate/adapters/beast.h).

#include "keygate/adapters/beast.h"

#include <array>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>
#include <cstddef>
#include <string>
#include <string_view>

namespace keygate {
namespace {

namespace http = boost::beast::http;

// Beast 1.74 uses boost::string_view; keygate speaks std::string_view.
template <typename View>
std::string_view Std(const View& v) noexcept {
  return std::string_view(v.data(), v.size());
}

// What http::message::keep_alive() computes, from the header alone
// (RFC 9112 9.3): HTTP/1.1 persists unless "close"; HTTP/1.0 only with
// "keep-alive".
bool KeepAlive(const BeastRequestHeader& request) {
  bool close = false;
  bool keep_alive = false;
  const auto range = request.equal_range(http::field::connection);
  for (auto it = range.first; it != range.second; ++it) {
    for (const auto& token : http::token_list(it->value())) {
      if (boost::beast::iequals(token, "close")) close = true;
      if (boost::beast::iequals(token, "keep-alive")) keep_alive = true;
    }
  }
  return request.version() >= 11 ? !close : keep_alive;
}

}  // namespace

void ApplyBeastDecision(const HttpDecision& decision, const BeastRequestHeader& request,
                        BeastResponse* response) {
  if (decision.allowed) {
    for (const auto& [name, value] : decision.headers) response->set(name, value);
    return;
  }
  response->version(request.version());
  response->keep_alive(KeepAlive(request));
  response->result(static_cast<unsigned>(decision.status));
  for (const auto& [name, value] : decision.headers) response->set(name, value);
  response->body() = decision.body;
  response->prepare_payload();
  if (request.method() == http::verb::head) response->body().clear();
}

HttpAuthResult CheckBeastRequest(const HttpAuthenticator& authenticator,
                                 const BeastRequestHeader& request,
                                 const BeastConnection& connection, const Requirement& requirement,
                                 BeastResponse* response, Attribution attribution) {
  // Two values are enough to know the request is a 400.
  std::array<std::string_view, 2> authorization;
  std::size_t n = 0;
  const auto range = request.equal_range(http::field::authorization);
  for (auto it = range.first; it != range.second && n < authorization.size(); ++it) {
    authorization[n++] = Std(it->value());
  }
  HttpRequestFacts facts;
  facts.authorization = absl::Span<const std::string_view>(authorization.data(), n);
  facts.raw_query = QueryOfTarget(Std(request.target()));
  facts.tls = connection.tls;
  facts.client_address = connection.client_address;
  HttpAuthResult result = authenticator.Check(facts, requirement, attribution);
  ApplyBeastDecision(result.decision, request, response);
  return result;
}

}  // namespace keygate
