// Strict JSON request bodies (json_body.h).

#include "admin/json_body.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "admin/text.h"
#include "internal/utf8.h"

namespace keygate::admin_internal {
namespace {

using nlohmann::json;

// The byte offset of the first invalid UTF-8 sequence, or nullopt.
std::optional<std::size_t> FirstInvalidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const internal::Utf8Step step = internal::DecodeUtf8(s.substr(i));
    if (!step.valid) return i;
    i += step.length;
  }
  return std::nullopt;
}

// Whether arrays and objects nest deeper than `max` (strings skipped). Checked before parsing,
// so a body of a million '[' builds nothing.
bool NestsDeeperThan(std::string_view s, int max) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

bool IsMemberNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

}  // namespace

std::string QuoteMemberName(std::string_view name) {
  if (name.empty() || name.size() > 32) return "(a member name of another form)";
  for (const char c : name) {
    if (!IsMemberNameChar(c)) return "(a member name of another form)";
  }
  return absl::StrCat("'", AV(name), "'");
}

absl::StatusOr<json> ParseJsonObject(std::string_view body) {
  if (const std::optional<std::size_t> bad = FirstInvalidUtf8(body)) {
    return absl::InvalidArgumentError(absl::StrCat("body: not valid UTF-8 (byte ", *bad, ")"));
  }
  if (NestsDeeperThan(body, kMaxJsonDepth)) {
    return absl::InvalidArgumentError(
        absl::StrCat("body: nested deeper than ", kMaxJsonDepth, " levels"));
  }
  // Members seen in each open container (arrays hold none); the first duplicate is reported.
  std::vector<std::optional<std::set<std::string>>> open;
  std::optional<std::string> duplicate;
  const auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open.emplace_back(std::in_place);
        break;
      case json::parse_event_t::array_start:
        open.emplace_back(std::nullopt);
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open.empty() && open.back().has_value() && parsed.is_string() &&
            !open.back()->insert(parsed.get<std::string>()).second && !duplicate.has_value()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  json value;
  try {
    value = json::parse(body.begin(), body.end(), callback, /*allow_exceptions=*/true,
                        /*ignore_comments=*/false);
  } catch (const json::parse_error& e) {
    // e.what() quotes the input near the error: never repeated (it may hold a token).
    return absl::InvalidArgumentError(absl::StrCat("body: not valid JSON (byte ", e.byte, ")"));
  } catch (const json::exception&) {
    return absl::InvalidArgumentError("body: not valid JSON");
  }
  if (duplicate.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("body: duplicate member ", QuoteMemberName(*duplicate)));
  }
  if (!value.is_object()) return absl::InvalidArgumentError("body: must be a JSON object");
  return value;
}

bool ParseRfc3339(std::string_view text, absl::Time* out) {
  // absl's RFC 3339 format takes 'T' or 't' and "Z" or "+hh:mm"; RFC 3339 needs the seconds.
  std::string err;
  return text.size() >= 20 && text.size() <= 64 &&
         absl::ParseTime(absl::RFC3339_full, std::string(text), out, &err);
}

JsonFields::JsonFields(const json& object, std::string prefix)
    : object_(object), prefix_(std::move(prefix)) {}

std::string JsonFields::Field(std::string_view name) const {
  return absl::StrCat(prefix_, AV(name));
}

const json* JsonFields::Find(std::string_view name) {
  asked_.emplace(name);
  const auto it = object_.find(name);
  return it == object_.end() ? nullptr : &*it;
}

bool JsonFields::Has(std::string_view name) { return Find(name) != nullptr; }

bool JsonFields::IsNull(std::string_view name) {
  const json* v = Find(name);
  return v != nullptr && v->is_null();
}

absl::Status JsonFields::String(std::string_view name, std::string* out) {
  const json* v = Find(name);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(Field(name), ": must be a string"));
  }
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status JsonFields::OptionalString(std::string_view name, std::optional<std::string>* out) {
  if (!Has(name)) return absl::OkStatus();
  return String(name, &out->emplace());
}

absl::Status JsonFields::StringArray(std::string_view name, std::vector<std::string>* out) {
  const json* v = Find(name);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(Field(name), ": must be an array of strings"));
  }
  std::vector<std::string> values;
  values.reserve(v->size());
  for (std::size_t i = 0; i < v->size(); ++i) {
    const json& item = (*v)[i];
    if (!item.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(Field(name), "[", i, "]: must be a string"));
    }
    values.push_back(item.get<std::string>());
  }
  *out = std::move(values);
  return absl::OkStatus();
}

absl::Status JsonFields::StringMap(std::string_view name, std::map<std::string, std::string>* out) {
  const json* v = Find(name);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(Field(name), ": must be an object of strings"));
  }
  std::map<std::string, std::string> values;
  for (const auto& [key, item] : v->items()) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Field(name), ": the value of ", QuoteMemberName(key), " must be a string"));
    }
    values.emplace(key, item.get<std::string>());
  }
  *out = std::move(values);
  return absl::OkStatus();
}

absl::Status JsonFields::Uint(std::string_view name, std::uint64_t max,
                              std::optional<std::uint64_t>* out) {
  const json* v = Find(name);
  if (v == nullptr) return absl::OkStatus();
  if (v->is_number_unsigned()) {
    const auto n = v->get<std::uint64_t>();
    if (n <= max) {
      *out = n;
      return absl::OkStatus();
    }
  } else if (!v->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(Field(name), ": must be an integer"));
  }
  return absl::InvalidArgumentError(absl::StrCat(Field(name), ": must be between 0 and ", max));
}

absl::Status JsonFields::Time(std::string_view name, std::optional<absl::Time>* out) {
  const json* v = Find(name);
  if (v == nullptr) return absl::OkStatus();
  absl::Time t;
  if (!v->is_string() || !ParseRfc3339(v->get_ref<const std::string&>(), &t)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Field(name), ": must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\""));
  }
  *out = t;
  return absl::OkStatus();
}

absl::StatusOr<const json*> JsonFields::Object(std::string_view name) {
  const json* v = Find(name);
  if (v == nullptr) return nullptr;
  if (!v->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(Field(name), ": must be an object"));
  }
  return v;
}

absl::Status JsonFields::Unknown() const {
  for (const auto& [key, value] : object_.items()) {
    if (asked_.find(key) == asked_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix_.empty() ? "body" : prefix_.substr(0, prefix_.size() - 1),
                       ": unknown member ", QuoteMemberName(key)));
    }
  }
  return absl::OkStatus();
}

}  // namespace keygate::admin_internal
