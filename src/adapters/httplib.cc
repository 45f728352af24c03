// The cpp-httplib adapter (keygate/adapters/httplib.h).

#include "keygate/adapters/httplib.h"

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace keygate {
namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + ('a' - 'A'));
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + ('a' - 'A'));
    if (x != y) return false;
  }
  return true;
}

bool IsTls(const httplib::Request& request) noexcept {
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
  return request.ssl != nullptr;
#else
  (void)request;
  return false;
#endif
}

}  // namespace

void ApplyHttplibDecision(const HttpDecision& decision, httplib::Response* response) {
  std::string content_type = "application/json";
  for (const auto& [name, value] : decision.headers) {
    // set_content() writes Content-Type itself; setting it here too would
    // send the header twice.
    if (EqualsIgnoreCase(name, "Content-Type")) {
      content_type = value;
      continue;
    }
    response->set_header(name, value);
  }
  if (decision.allowed) return;
  response->status = decision.status;
  response->set_content(decision.body, content_type);
}

HttpAuthResult CheckHttplibRequest(const HttpAuthenticator& authenticator,
                                   const httplib::Request& request, const Requirement& requirement,
                                   httplib::Response* response, Attribution attribution) {
  // Two values are enough to know the request is a 400.
  std::array<std::string_view, 2> authorization;
  std::size_t n = 0;
  const auto range = request.headers.equal_range("Authorization");
  for (auto it = range.first; it != range.second && n < authorization.size(); ++it) {
    authorization[n++] = it->second;
  }
  HttpRequestFacts facts;
  facts.authorization = absl::Span<const std::string_view>(authorization.data(), n);
  // The query of the request target as received, not `request.params`: by
  // the time a route handler runs, httplib has merged the fields of a
  // urlencoded body into params (a form may legitimately carry a field named
  // api_key), and it splits only on '&', so "?x=1;api_key=..." would pass
  // here and be refused by the Beast adapter. The URL alone decides.
  facts.raw_query = QueryOfTarget(request.target);
  facts.tls = IsTls(request);
  facts.client_address = request.remote_addr;
  HttpAuthResult result = authenticator.Check(facts, requirement, attribution);
  ApplyHttplibDecision(result.decision, response);
  return result;
}

httplib::Server::HandlerWithResponse HttplibPreRoutingHandler(
    std::shared_ptr<const HttpAuthenticator> authenticator, HttplibRequirementFn requirement_for,
    HttplibAuthObserver observer) {
  return [authenticator = std::move(authenticator), requirement_for = std::move(requirement_for),
          observer = std::move(observer)](const httplib::Request& request,
                                          httplib::Response& response) {
    const Requirement* requirement = requirement_for ? requirement_for(request) : nullptr;
    if (requirement == nullptr) return httplib::Server::HandlerResponse::Unhandled;
    const HttpAuthResult result =
        CheckHttplibRequest(*authenticator, request, *requirement, &response);
    if (observer) observer(request, result);
    return result.allowed() ? httplib::Server::HandlerResponse::Unhandled
                            : httplib::Server::HandlerResponse::Handled;
  };
}

httplib::Server::Handler HttplibProtect(std::shared_ptr<const HttpAuthenticator> authenticator,
                                        Requirement requirement, HttplibProtectedHandler handler,
                                        Attribution attribution) {
  return [authenticator = std::move(authenticator), requirement = std::move(requirement),
          handler = std::move(handler),
          attribution](const httplib::Request& request, httplib::Response& response) {
    const HttpAuthResult result =
        CheckHttplibRequest(*authenticator, request, requirement, &response, attribution);
    if (result.allowed() && handler) handler(request, response, result);
  };
}

}  // namespace keygate
