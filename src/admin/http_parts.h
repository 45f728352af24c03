// Request and response pieces of the admin API (admin_api.h): the target's path and query,
// header lookup, entity tags, and responses (JSON, RFC 9457 problem details, a Status mapped to
// its problem).
#ifndef KEYGATE_SRC_ADMIN_HTTP_PARTS_H_
#define KEYGATE_SRC_ADMIN_HTTP_PARTS_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "admin/text.h"
#include "keygate/admin/admin_api.h"

namespace keygate::admin_internal {

struct SplitTarget {
  std::string_view path;   // before '?'
  std::string_view query;  // between '?' and '#'
};
SplitTarget Split(std::string_view target);

using QueryParams = std::map<std::string, std::string, std::less<>>;

// The query's parameters, each of `allowed`, each at most once. Errors (kInvalidArgument):
// "query: unknown parameter 'x'", "<name>: given more than once", "query: bad %-escape".
absl::StatusOr<QueryParams> ParseQuery(std::string_view query,
                                       std::initializer_list<std::string_view> allowed);

// The value of every field named `name` (ASCII case-insensitive), in order.
std::vector<std::string_view> HeaderValues(const AdminRequest& request, std::string_view name);
// The fields named `name` joined with ", " (RFC 9110 5.3); nullopt when there is none.
std::optional<std::string> Header(const AdminRequest& request, std::string_view name);

// If-Match (RFC 9110 13.1.1): "*", or strong entity tags. Our tags are "<version>".
struct IfMatch {
  bool any = false;                     // "*"
  std::vector<std::uint64_t> versions;  // tags of our form; other tags never match
};
// Errors: kInvalidArgument "If-Match: ...".
absl::StatusOr<IfMatch> ParseIfMatch(std::string_view value);
std::string ETag(std::uint64_t version);  // "\"3\""

// Whether a Content-Type value is JSON (application/json, or application/merge-patch+json when
// `merge_patch`), parameters ignored.
bool IsJsonContentType(std::string_view value, bool merge_patch);

// A JSON response.
AdminResponse JsonResponse(int status, std::string body);

// An RFC 9457 problem: {"type": "about:blank", "title", "status", "code", "detail"[, "field"]}.
AdminResponse Problem(int status, std::string_view code, std::string_view detail,
                      std::string_view field = {});

// The problem for a failed call: InvalidArgument 400 (naming the field of "<field>: reason"),
// NotFound 404, AlreadyExists and FailedPrecondition 409, Aborted 412, Unavailable and
// DeadlineExceeded 503 (Retry-After: 1), anything else 500 without detail.
AdminResponse ProblemFor(const absl::Status& status);

// The field a "<field>: <reason>" message names ("rate_limit.rate", "scopes[2]"), else "".
std::string_view FieldOf(std::string_view message);

}  // namespace keygate::admin_internal

#endif  // KEYGATE_SRC_ADMIN_HTTP_PARTS_H_
