// Strict JSON request bodies for the admin API (admin_api.h): parsed by nlohmann::json, with
// what its parser allows but an API must refuse (invalid UTF-8, duplicate members, excess
// depth) refused first, and typed readers whose errors name the member.
#ifndef KEYGATE_SRC_ADMIN_JSON_BODY_H_
#define KEYGATE_SRC_ADMIN_JSON_BODY_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace keygate::admin_internal {

inline constexpr int kMaxJsonDepth = 16;

// `body` as one JSON object. Errors (kInvalidArgument, never quoting the body): "body: not
// valid UTF-8 (byte N)", "body: not valid JSON (byte N)", "body: must be a JSON object",
// "body: duplicate member 'x'", "body: nested deeper than 16".
absl::StatusOr<nlohmann::json> ParseJsonObject(std::string_view body);

// `name` quoted ('x') when it has the shape of a member name ([a-z0-9_]{1,32}); otherwise a
// description, so that text from a request (a pasted token) never reaches an error.
std::string QuoteMemberName(std::string_view name);

// Reads the members of one JSON object, each at most once, with errors naming
// "<prefix><member>: <reason>". Unknown() names the first member never asked for.
class JsonFields {
 public:
  // `object` must be an object and outlive the reader.
  explicit JsonFields(const nlohmann::json& object, std::string prefix = "");

  bool Has(std::string_view name);
  bool IsNull(std::string_view name);  // present and null

  // Each reads the member when present (else leaves *out, returns OK); a present member of the
  // wrong type is "<field>: must be a string" (and so on).
  absl::Status String(std::string_view name, std::string* out);
  absl::Status OptionalString(std::string_view name, std::optional<std::string>* out);
  absl::Status StringArray(std::string_view name, std::vector<std::string>* out);
  absl::Status StringMap(std::string_view name, std::map<std::string, std::string>* out);
  // An integer 0 .. max.
  absl::Status Uint(std::string_view name, std::uint64_t max, std::optional<std::uint64_t>* out);
  // An RFC 3339 time ("2027-01-01T00:00:00Z", "...+02:00").
  absl::Status Time(std::string_view name, std::optional<absl::Time>* out);
  // The member's object, or nullptr when absent; "<field>: must be an object" otherwise.
  absl::StatusOr<const nlohmann::json*> Object(std::string_view name);

  // kInvalidArgument "<prefix>: unknown member 'x'" for a member no call above asked for.
  absl::Status Unknown() const;

  std::string Field(std::string_view name) const;  // prefix + name

 private:
  const nlohmann::json* Find(std::string_view name);

  const nlohmann::json& object_;
  std::string prefix_;
  std::set<std::string, std::less<>> asked_;
};

// RFC 3339 ("2027-01-01T00:00:00Z", fraction and offset allowed). False if it is not one.
bool ParseRfc3339(std::string_view text, absl::Time* out);

}  // namespace keygate::admin_internal

#endif  // KEYGATE_SRC_ADMIN_JSON_BODY_H_
