// The admin API's routes (admin_api.h): which paths exist, the methods each takes, and the
// handlers, which turn JSON and query parameters into KeyManager calls and back.
#ifndef KEYGATE_SRC_ADMIN_ROUTES_H_
#define KEYGATE_SRC_ADMIN_ROUTES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keygate/admin/admin_api.h"
#include "keygate/key.h"

namespace keygate::admin_internal {

enum class RouteId : std::uint8_t {
  kOpenApi,
  kKeys,
  kKey,
  kKeyRevoke,
  kKeyRestore,
  kKeyRoll,
  kKeyReveal,
  kPersonalKeys,
  kAudit,
  kScopes,
  kEnvironments,
  kMe,
  kKeyWebhookDeliveries,
  kWebhookDeliveries,
  kKeyWebhookSecret,
};

struct Route {
  RouteId id;
  bool is_public;               // served without a key (static documents)
  std::string_view methods[3];  // GET routes take HEAD too; unused entries are empty

  bool Takes(std::string_view method) const;
  std::string AllowedMethods() const;  // "GET, HEAD, POST"
};

// The verified caller of a protected route.
struct Caller {
  KeyRecord record;  // its key; `record.owner` is the actor of its changes
  std::vector<std::pair<std::string, std::string>> rate_limit_headers;
};

class Routes {
 public:
  explicit Routes(const AdminApi::Options& options) : options_(options) {}

  // The route of `path` (the target's path below the base path), or nullptr.
  const Route* Find(std::string_view path) const;

  // Answers `method` (one the route takes; HEAD as GET) on `path`; `caller` is null only for
  // public routes.
  AdminResponse Serve(const Route& route, std::string_view method, std::string_view path,
                      const AdminRequest& request, const Caller* caller) const;

 private:
  const AdminApi::Options& options_;
};

}  // namespace keygate::admin_internal

#endif  // KEYGATE_SRC_ADMIN_ROUTES_H_
