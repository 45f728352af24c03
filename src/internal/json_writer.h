// Compact JSON output shared by the CLI's --json and the admin API: a streaming writer and the
// one JSON form of a key record and of an audit event (no digest: it is not secret, but nothing
// a client needs either; never a token).
#ifndef KEYGATE_SRC_INTERNAL_JSON_WRITER_H_
#define KEYGATE_SRC_INTERNAL_JSON_WRITER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

#include "keygate/audit.h"
#include "keygate/key.h"

namespace keygate::internal {

// Writes compact JSON; inserts commas itself. Strings go through AppendJsonString
// (json_string.h): always valid UTF-8 out.
class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(std::int64_t value);
  JsonWriter& Uint(std::uint64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  JsonWriter& Time(absl::Time t);  // RFC 3339 UTC string (JsonTime)
  JsonWriter& OptionalTime(const std::optional<absl::Time>& t);
  JsonWriter& StringArray(const std::vector<std::string>& values);
  // A value already written as JSON (by another JsonWriter), copied as it is.
  JsonWriter& Raw(std::string_view json);

  const std::string& str() const { return out_; }

 private:
  void Separate();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

// RFC 3339 in UTC with the fraction the time has ("2026-05-01T12:00:00.25Z").
std::string JsonTime(absl::Time t);

// {"id", "name", "description", "owner", "kind", "environment", "scopes", "state", "created",
// "updated", "expires", "last_used", "rate_limit": {"rate", "period_ms", "burst"} | null,
// "webhook_url", "accounts", "metadata", "hint", "previous": {"hint", "valid_until"} | null,
// "recoverable", "version"}.
void WriteRecordJson(JsonWriter& w, const KeyRecord& r);

// {"rate", "period_ms", "burst"}, or null.
void WriteRateLimitJson(JsonWriter& w, const std::optional<RateLimitPolicy>& policy);

// {"sequence", "type", "at", "actor", "key_id", "owner", "changed_fields", "version"}.
void WriteEventJson(JsonWriter& w, const Event& e);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_JSON_WRITER_H_
