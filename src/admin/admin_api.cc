// The admin API (admin_api.h): routing, authentication, the response headers every answer
// carries, and CORS. The routes themselves are in routes.cc.

#include "keygate/admin/admin_api.h"

#include <cstddef>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "admin/embedded.h"
#include "admin/http_parts.h"
#include "admin/routes.h"
#include "admin/text.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/scope.h"

namespace keygate {
namespace {

using admin_internal::Problem;

constexpr std::size_t kMaxBodyLimit = std::size_t{64} << 20;
constexpr std::string_view kApiCsp =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
// The console: its own scripts, styles and icon, requests to its own origin, no DOM sink that
// parses HTML from a string (it builds every node itself).
constexpr std::string_view kConsoleCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'";

// The console's files by path below the base ("/" is its page), or nullptr.
const admin_internal::EmbeddedFile* ConsoleFile(std::string_view path) {
  if (path == "/") path = "/index.html";
  if (path.size() < 2 || path[0] != '/') return nullptr;
  for (const admin_internal::EmbeddedFile& f : admin_internal::ConsoleFiles()) {
    if (path.substr(1) == f.name) return &f;
  }
  return nullptr;
}

std::string_view ContentTypeOf(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  if (name.ends_with(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

bool IsSegmentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '~' || c == '-';
}

absl::Status ValidateBasePath(std::string_view base) {
  if (base.empty()) return absl::OkStatus();
  if (base.front() != '/' || base.back() == '/') {
    return absl::InvalidArgumentError(
        "base_path: must be empty or start with '/' and not end with one (\"/admin\")");
  }
  for (const std::string_view segment : admin_internal::SplitOn(base.substr(1), '/')) {
    if (segment.empty() || segment == "." || segment == "..") {
      return absl::InvalidArgumentError("base_path: has an empty, '.' or '..' segment");
    }
    for (const char c : segment) {
      if (!IsSegmentChar(c)) {
        return absl::InvalidArgumentError(
            "base_path: segments may hold only letters, digits and . _ ~ -");
      }
    }
  }
  return absl::OkStatus();
}

// "scheme://host[:port]", lower case, scheme http or https, no path.
bool IsOrigin(std::string_view origin) {
  std::string_view rest = origin;
  if (!admin_internal::ConsumePrefix(&rest, "https://") &&
      !admin_internal::ConsumePrefix(&rest, "http://")) {
    return false;
  }
  if (rest.empty() || rest.size() > 260) return false;
  std::string_view host = rest;
  std::string_view port;
  if (rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return false;
    host = rest.substr(1, close - 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return false;
      port = after.substr(1);
      if (port.empty()) return false;
    }
    for (const char c : host) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == ':' || c == '.')) {
        return false;
      }
    }
  } else {
    const std::size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (port.empty()) return false;
    }
    for (const char c : host) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) {
        return false;
      }
    }
  }
  if (host.empty() || port.size() > 5) return false;
  for (const char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

void AddCommonHeaders(AdminResponse& r) {
  bool has_csp = false;
  bool has_cache_control = false;
  for (const auto& [name, value] : r.headers) {
    has_csp = has_csp || admin_internal::EqualsIgnoreCase(name, "Content-Security-Policy");
    has_cache_control =
        has_cache_control || admin_internal::EqualsIgnoreCase(name, "Cache-Control");
  }
  if (!has_csp) r.headers.emplace_back("Content-Security-Policy", std::string(kApiCsp));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Cross-Origin-Resource-Policy", "same-origin");
  if (!has_cache_control) r.headers.emplace_back("Cache-Control", "no-store");
}

// The message of an HttpDecision's JSON error body ({"error", "message"}).
std::string DecisionMessage(const HttpDecision& decision) {
  const nlohmann::json body = nlohmann::json::parse(decision.body, nullptr, false);
  if (body.is_object()) {
    const auto it = body.find("message");
    if (it != body.end() && it->is_string()) return it->get<std::string>();
  }
  return "the request was refused";
}

std::string_view CodeForStatus(int status) {
  switch (status) {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 429:
      return "rate_limited";
    case 503:
      return "unavailable";
    default:
      return "refused";
  }
}

}  // namespace

class AdminApi::Impl {
 public:
  Impl(const AdminApi::Options& options, Requirement admin)
      : options_(options), admin_(std::move(admin)), routes_(options) {}

  AdminResponse Handle(const AdminRequest& request) const {
    const admin_internal::SplitTarget target = admin_internal::Split(request.target);
    std::string_view path = target.path;
    if (!admin_internal::ConsumePrefix(&path, options_.base_path) ||
        (!path.empty() && path[0] != '/')) {
      return Finish(request, Problem(404, "not_found", "no such route"));
    }
    if (options_.serve_console) {
      if (path.empty()) {
        // The console's relative links need the trailing slash.
        AdminResponse r;
        r.status = 308;
        r.headers.emplace_back("Location", options_.base_path + "/");
        return Finish(request, std::move(r));
      }
      if (const admin_internal::EmbeddedFile* f = ConsoleFile(path); f != nullptr) {
        return Finish(request, ServeConsoleFile(request, *f));
      }
    }
    const admin_internal::Route* route = routes_.Find(path);
    if (route == nullptr) return Finish(request, Problem(404, "not_found", "no such route"));

    const bool head = request.method == "HEAD";
    const std::string_view method = head ? std::string_view("GET") : request.method;
    if (request.method == "OPTIONS" && IsAllowedOrigin(request)) {
      AdminResponse r;
      r.status = 204;
      r.headers.emplace_back("Access-Control-Allow-Methods", route->AllowedMethods());
      r.headers.emplace_back("Access-Control-Allow-Headers",
                             "Authorization, Content-Type, If-Match");
      r.headers.emplace_back("Access-Control-Max-Age", "600");
      return Finish(request, std::move(r));
    }
    if (!route->Takes(method)) {
      AdminResponse r = Problem(405, "method_not_allowed",
                                absl::StrCat("this route takes ", route->AllowedMethods()));
      r.headers.emplace_back("Allow", route->AllowedMethods());
      return Finish(request, std::move(r));
    }
    if (request.body.size() > options_.max_body_bytes) {
      return Finish(request,
                    Problem(413, "payload_too_large",
                            absl::StrCat("body: larger than ", options_.max_body_bytes, " bytes")));
    }

    AdminResponse r;
    if (route->is_public) {
      r = routes_.Serve(*route, method, path, request, nullptr);
    } else {
      std::optional<admin_internal::Caller> caller;
      r = Authenticate(request, target.query, &caller);
      if (caller.has_value()) r = routes_.Serve(*route, method, path, request, &*caller);
    }
    return Finish(request, std::move(r));
  }

 private:
  // Verifies the request's key against the `admin` scope and reads its owner (the actor).
  AdminResponse Authenticate(const AdminRequest& request, std::string_view query,
                             std::optional<admin_internal::Caller>* caller) const {
    const std::vector<std::string_view> authorization =
        admin_internal::HeaderValues(request, "Authorization");
    HttpRequestFacts facts;
    facts.authorization = authorization;
    facts.raw_query = query;
    facts.tls = request.tls;
    facts.client_address = request.client_address;
    HttpAuthResult auth = options_.authenticator->Check(facts, admin_);
    if (!auth.allowed()) {
      AdminResponse r = Problem(auth.decision.status, CodeForStatus(auth.decision.status),
                                DecisionMessage(auth.decision));
      for (auto& [name, value] : auth.decision.headers) {
        if (admin_internal::EqualsIgnoreCase(name, "Content-Type")) continue;
        r.headers.emplace_back(std::move(name), std::move(value));
      }
      return r;
    }
    absl::StatusOr<KeyRecord> record = options_.manager->Get(auth.verdict.key());
    if (record.status().code() == absl::StatusCode::kNotFound) {
      // Deleted between the verification and now.
      AdminResponse r = Problem(401, "unauthenticated", "the key is no longer valid");
      r.headers.emplace_back("WWW-Authenticate", "Bearer error=\"invalid_token\"");
      return r;
    }
    if (!record.ok()) return admin_internal::ProblemFor(record.status());
    caller->emplace();
    (*caller)->record = *std::move(record);
    for (auto& [name, value] : auth.decision.headers) {
      (*caller)->rate_limit_headers.emplace_back(std::move(name), std::move(value));
    }
    return {};
  }

  // One of the console's files: public (it holds no data; the page asks for a key), GET and
  // HEAD only.
  static AdminResponse ServeConsoleFile(const AdminRequest& request,
                                        const admin_internal::EmbeddedFile& f) {
    if (request.method != "GET" && request.method != "HEAD") {
      AdminResponse r = Problem(405, "method_not_allowed", "this route takes GET, HEAD");
      r.headers.emplace_back("Allow", "GET, HEAD");
      return r;
    }
    AdminResponse r;
    r.status = 200;
    r.headers.emplace_back("Content-Type", std::string(ContentTypeOf(f.name)));
    r.headers.emplace_back("Content-Security-Policy", std::string(kConsoleCsp));
    r.body = std::string(f.data);
    return r;
  }

  bool IsAllowedOrigin(const AdminRequest& request) const {
    const std::vector<std::string_view> origins = admin_internal::HeaderValues(request, "Origin");
    if (origins.size() != 1) return false;
    for (const std::string& allowed : options_.cors_allowed_origins) {
      if (origins[0] == allowed) return true;
    }
    return false;
  }

  // Adds the CORS headers (when origins are listed) and those every response carries; HEAD gets
  // GET's answer without its body (RFC 9110 9.3.2), errors included.
  AdminResponse Finish(const AdminRequest& request, AdminResponse r) const {
    if (request.method == "HEAD") r.body.clear();
    if (!options_.cors_allowed_origins.empty()) {
      r.headers.emplace_back("Vary", "Origin");
      if (IsAllowedOrigin(request)) {
        r.headers.emplace_back("Access-Control-Allow-Origin",
                               std::string(admin_internal::HeaderValues(request, "Origin")[0]));
        r.headers.emplace_back(
            "Access-Control-Expose-Headers",
            "ETag, Location, Retry-After, WWW-Authenticate, RateLimit, RateLimit-Policy");
      }
    }
    AddCommonHeaders(r);
    return r;
  }

  const AdminApi::Options& options_;
  const Requirement admin_;
  const admin_internal::Routes routes_;
};

absl::StatusOr<std::unique_ptr<AdminApi>> AdminApi::Create(Options options) {
  if (options.manager == nullptr) return absl::InvalidArgumentError("manager: must be set");
  if (options.authenticator == nullptr) {
    return absl::InvalidArgumentError("authenticator: must be set");
  }
  if (absl::Status s = ValidateBasePath(options.base_path); !s.ok()) return s;
  if (options.max_body_bytes < 1 || options.max_body_bytes > kMaxBodyLimit) {
    return absl::InvalidArgumentError("max_body_bytes: must be between 1 and 67108864 (64 MiB)");
  }
  for (std::size_t i = 0; i < options.cors_allowed_origins.size(); ++i) {
    if (!IsOrigin(options.cors_allowed_origins[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cors_allowed_origins[", i,
          "]: must be an origin in lower case, \"https://host[:port]\", without a path"));
    }
  }
  // Every registry holds the built-in scopes, admin among them.
  absl::StatusOr<Requirement> admin = options.manager->deployment().scopes().Require({kScopeAdmin});
  if (!admin.ok()) return admin.status();
  return std::unique_ptr<AdminApi>(new AdminApi(std::move(options), *std::move(admin)));
}

AdminApi::AdminApi(Options options, Requirement admin) : options_(std::move(options)) {
  impl_ = std::make_unique<const Impl>(options_, std::move(admin));
}

AdminApi::~AdminApi() = default;

AdminResponse AdminApi::Handle(const AdminRequest& request) const {
  try {
    return impl_->Handle(request);
  } catch (const std::exception&) {
    // std::bad_alloc, or a bug: no detail (it could quote the request).
    AdminResponse r = Problem(500, "internal", "");
    AddCommonHeaders(r);
    return r;
  }
}

bool AdminApi::Serves(std::string_view target) const noexcept {
  std::string_view path = admin_internal::Split(target).path;
  return admin_internal::ConsumePrefix(&path, options_.base_path) &&
         (path.empty() || path[0] == '/');
}

}  // namespace keygate
