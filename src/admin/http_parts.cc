// Request and response pieces of the admin API (http_parts.h).

#include "admin/http_parts.h"

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "admin/json_body.h"
#include "internal/json_writer.h"
#include "internal/percent.h"

namespace keygate::admin_internal {
namespace {

std::string_view Title(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 503:
      return "Service Unavailable";
    default:
      return "Internal Server Error";
  }
}

}  // namespace

SplitTarget Split(std::string_view target) {
  const std::size_t hash = target.find('#');
  if (hash != std::string_view::npos) target = target.substr(0, hash);
  const std::size_t q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

absl::StatusOr<QueryParams> ParseQuery(std::string_view query,
                                       std::initializer_list<std::string_view> allowed) {
  QueryParams params;
  for (const std::string_view piece : SplitOn(query, '&')) {
    if (piece.empty()) continue;
    const std::size_t eq = piece.find('=');
    std::string name;
    std::string value;
    if (!internal::PercentDecode(piece.substr(0, eq), true, &name) ||
        (eq != std::string_view::npos &&
         !internal::PercentDecode(piece.substr(eq + 1), true, &value))) {
      return absl::InvalidArgumentError("query: bad %-escape");
    }
    bool known = false;
    for (const std::string_view a : allowed) known = known || a == name;
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("query: unknown parameter ", QuoteMemberName(name)));
    }
    if (!params.emplace(name, std::move(value)).second) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": given more than once"));
    }
  }
  return params;
}

std::vector<std::string_view> HeaderValues(const AdminRequest& request, std::string_view name) {
  std::vector<std::string_view> values;
  for (const auto& [n, v] : request.headers) {
    if (EqualsIgnoreCase(n, name)) values.push_back(v);
  }
  return values;
}

std::optional<std::string> Header(const AdminRequest& request, std::string_view name) {
  std::optional<std::string> joined;
  for (const std::string_view v : HeaderValues(request, name)) {
    if (joined.has_value()) {
      absl::StrAppend(&*joined, ", ", AV(v));
    } else {
      joined.emplace(v);
    }
  }
  return joined;
}

absl::StatusOr<IfMatch> ParseIfMatch(std::string_view value) {
  IfMatch m;
  const std::string_view trimmed = Trim(value);
  if (trimmed == "*") {
    m.any = true;
    return m;
  }
  const auto bad = [] {
    return absl::InvalidArgumentError(
        "If-Match: must be \"*\" or entity tags such as \"3\" (the key's version, quoted)");
  };
  bool any_tag = false;
  for (std::string_view tag : SplitOn(trimmed, ',')) {
    tag = Trim(tag);
    if (tag.empty()) continue;
    const bool weak = ConsumePrefix(&tag, "W/");
    if (tag.size() < 2 || tag.front() != '"' || tag.back() != '"') return bad();
    const std::string_view opaque = tag.substr(1, tag.size() - 2);
    for (const char c : opaque) {
      // etagc (RFC 9110 8.8.3): %x21 / %x23-7E / obs-text.
      const auto u = static_cast<unsigned char>(c);
      if (u == 0x22 || u < 0x21 || u == 0x7F) return bad();
    }
    any_tag = true;
    std::uint64_t version = 0;
    // A weak tag never matches under If-Match's strong comparison.
    if (!weak && ParseDecimal(opaque, &version)) {
      m.versions.push_back(version);
    }
  }
  if (!any_tag) return bad();
  return m;
}

std::string ETag(std::uint64_t version) { return absl::StrCat("\"", version, "\""); }

bool IsJsonContentType(std::string_view value, bool merge_patch) {
  std::string_view type = value.substr(0, value.find(';'));
  type = Trim(type);
  return EqualsIgnoreCase(type, "application/json") ||
         (merge_patch && EqualsIgnoreCase(type, "application/merge-patch+json"));
}

AdminResponse JsonResponse(int status, std::string body) {
  AdminResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = std::move(body);
  return r;
}

AdminResponse Problem(int status, std::string_view code, std::string_view detail,
                      std::string_view field) {
  internal::JsonWriter w;
  w.BeginObject();
  w.Key("type").String("about:blank");
  w.Key("title").String(Title(status));
  w.Key("status").Int(status);
  w.Key("code").String(code);
  if (!detail.empty()) w.Key("detail").String(detail);
  if (!field.empty()) w.Key("field").String(field);
  w.EndObject();
  AdminResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/problem+json");
  r.body = w.str();
  return r;
}

std::string_view FieldOf(std::string_view message) {
  const std::size_t colon = message.find(": ");
  if (colon == std::string_view::npos || colon == 0 || colon > 64) return {};
  const std::string_view field = message.substr(0, colon);
  for (const char c : field) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                    c == '[' || c == ']' || c == '-' || (c >= 'A' && c <= 'Z');
    if (!ok) return {};
  }
  return field;
}

AdminResponse ProblemFor(const absl::Status& status) {
  const std::string_view message(status.message().data(), status.message().size());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return Problem(400, "invalid_argument", message, FieldOf(message));
    case absl::StatusCode::kNotFound:
      return Problem(404, "not_found", message);
    case absl::StatusCode::kAlreadyExists:
      return Problem(409, "already_exists", message, FieldOf(message));
    case absl::StatusCode::kFailedPrecondition:
      return Problem(409, "failed_precondition", message);
    case absl::StatusCode::kAborted:
      return Problem(412, "version_conflict", message);
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted: {
      AdminResponse r = Problem(503, "unavailable", message);
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    default:
      return Problem(500, "internal", "");
  }
}

}  // namespace keygate::admin_internal
