// Compact JSON output (json_writer.h).

#include "internal/json_writer.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/json_string.h"
#include "keygate/audit.h"
#include "keygate/key.h"

namespace keygate::internal {

void JsonWriter::Separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_.push_back(',');
    first_.back() = false;
  }
}

JsonWriter& JsonWriter::BeginObject() {
  Separate();
  out_.push_back('{');
  first_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::EndObject() {
  out_.push_back('}');
  first_.pop_back();
  return *this;
}

JsonWriter& JsonWriter::BeginArray() {
  Separate();
  out_.push_back('[');
  first_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::EndArray() {
  out_.push_back(']');
  first_.pop_back();
  return *this;
}

JsonWriter& JsonWriter::Key(std::string_view key) {
  Separate();
  AppendJsonString(&out_, key);
  out_.push_back(':');
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view value) {
  Separate();
  AppendJsonString(&out_, value);
  return *this;
}

JsonWriter& JsonWriter::Int(std::int64_t value) {
  Separate();
  absl::StrAppend(&out_, value);
  return *this;
}

JsonWriter& JsonWriter::Uint(std::uint64_t value) {
  Separate();
  absl::StrAppend(&out_, value);
  return *this;
}

JsonWriter& JsonWriter::Bool(bool value) {
  Separate();
  out_.append(value ? "true" : "false");
  return *this;
}

JsonWriter& JsonWriter::Raw(std::string_view json) {
  Separate();
  out_.append(json);
  return *this;
}

JsonWriter& JsonWriter::Null() {
  Separate();
  out_.append("null");
  return *this;
}

JsonWriter& JsonWriter::Time(absl::Time t) { return String(JsonTime(t)); }

JsonWriter& JsonWriter::OptionalTime(const std::optional<absl::Time>& t) {
  return t.has_value() ? Time(*t) : Null();
}

JsonWriter& JsonWriter::StringArray(const std::vector<std::string>& values) {
  BeginArray();
  for (const std::string& v : values) String(v);
  return EndArray();
}

std::string JsonTime(absl::Time t) {
  if (t == absl::InfiniteFuture()) return "infinite-future";
  if (t == absl::InfinitePast()) return "infinite-past";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

void WriteRecordJson(JsonWriter& w, const KeyRecord& r) {
  w.BeginObject();
  w.Key("id").String(r.id);
  w.Key("name").String(r.name);
  w.Key("description").String(r.description);
  w.Key("owner").String(r.owner);
  w.Key("kind").String(KeyKindName(r.kind));
  w.Key("environment").String(r.environment);
  w.Key("scopes").StringArray(r.scopes);
  w.Key("state").String(KeyStateName(r.state));
  w.Key("created").Time(r.created);
  w.Key("updated").Time(r.updated);
  w.Key("expires").OptionalTime(r.expires);
  w.Key("last_used").OptionalTime(r.last_used);
  w.Key("rate_limit");
  WriteRateLimitJson(w, r.rate_limit);
  w.Key("webhook_url").String(r.webhook_url);
  w.Key("accounts").StringArray(r.accounts);
  w.Key("metadata").BeginObject();
  for (const auto& [k, v] : r.metadata) w.Key(k).String(v);
  w.EndObject();
  w.Key("hint").String(r.hint);
  w.Key("previous");
  if (r.previous.has_value()) {
    w.BeginObject();
    w.Key("hint").String(r.previous->hint);
    w.Key("valid_until").Time(r.previous->valid_until);
    w.EndObject();
  } else {
    w.Null();
  }
  w.Key("recoverable").Bool(!r.sealed_token.empty());  // the sealed copy itself never leaves
  w.Key("own_webhook_secret").Bool(!r.sealed_webhook_secret.empty());  // nor the sealed secret
  w.Key("version").Uint(r.version);
  w.EndObject();
}

void WriteRateLimitJson(JsonWriter& w, const std::optional<RateLimitPolicy>& policy) {
  if (!policy.has_value()) {
    w.Null();
    return;
  }
  w.BeginObject();
  w.Key("rate").Uint(policy->rate);
  w.Key("period_ms").Int(absl::ToInt64Milliseconds(policy->period));
  w.Key("burst").Uint(policy->burst);
  w.EndObject();
}

void WriteEventJson(JsonWriter& w, const Event& e) {
  w.BeginObject();
  w.Key("sequence").Uint(e.sequence);
  w.Key("type").String(EventTypeName(e.type));
  w.Key("at").Time(e.at);
  w.Key("actor").String(e.actor);
  w.Key("key_id").String(e.key_id);
  w.Key("owner").String(e.owner);
  w.Key("changed_fields").StringArray(e.changed_fields);
  w.Key("version").Uint(e.version);
  w.EndObject();
}

}  // namespace keygate::internal
