// Encoding and decoding a stored key row (record_row.h).

#include "sqlite/record_row.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/key_label.h"
#include "sqlite/json.h"

namespace keygate::internal {
namespace {

bool CopyDigest(std::string_view blob, Digest* out) {
  if (blob.size() != out->size()) return false;
  std::memcpy(out->data(), blob.data(), blob.size());
  return true;
}

absl::Status Corrupt(std::string_view path, std::string_view id, std::string_view column) {
  return absl::DataLossError(absl::StrCat("sqlite ", std::string(path), ": ", KeyLabel(id),
                                          ": corrupt row (column ", std::string(column), ")"));
}

}  // namespace

absl::StatusOr<KeyRecord> DecodeRecord(const Statement& s, int first, std::string_view path) {
  const int o = first;
  KeyRecord r;
  r.id = std::string(s.Text(o + 0));
  r.name = std::string(s.Text(o + 1));
  r.description = std::string(s.Text(o + 2));
  r.owner = std::string(s.Text(o + 3));
  const std::int64_t kind = s.Int(o + 4);
  if (kind != static_cast<int>(KeyKind::kPersonal) && kind != static_cast<int>(KeyKind::kGeneral)) {
    return Corrupt(path, r.id, "kind");
  }
  r.kind = static_cast<KeyKind>(kind);
  r.environment = std::string(s.Text(o + 5));
  if (!DecodeJsonStringArray(s.Text(o + 6), &r.scopes)) return Corrupt(path, r.id, "scopes");
  const std::int64_t state = s.Int(o + 7);
  if (state != static_cast<int>(KeyState::kActive) &&
      state != static_cast<int>(KeyState::kRevoked)) {
    return Corrupt(path, r.id, "state");
  }
  r.state = static_cast<KeyState>(state);
  r.created = MicrosToTime(s.Int(o + 8));
  r.updated = MicrosToTime(s.Int(o + 9));
  if (!s.IsNull(o + 10)) r.expires = MicrosToTime(s.Int(o + 10));
  if (!s.IsNull(o + 11)) r.last_used = MicrosToTime(s.Int(o + 11));
  if (!s.IsNull(o + 12)) {
    // A policy no write could have stored would compile to "no limit":
    // refused, so a damaged row fails closed instead of unlimited.
    const std::int64_t rate = s.Int(o + 12);
    const std::int64_t period_us = s.Int(o + 13);
    const std::int64_t burst = s.Int(o + 14);
    if (rate <= 0 || period_us <= 0 || burst < 0 || burst > UINT32_MAX) {
      return Corrupt(path, r.id, "rate_limit");
    }
    RateLimitPolicy p;
    p.rate = static_cast<std::uint64_t>(rate);
    p.period = absl::Microseconds(period_us);
    p.burst = static_cast<std::uint32_t>(burst);
    if (!ValidateRateLimitPolicy(p, "rate_limit").ok()) return Corrupt(path, r.id, "rate_limit");
    r.rate_limit = p;
  }
  r.webhook_url = std::string(s.Text(o + 15));
  if (!DecodeJsonStringArray(s.Text(o + 16), &r.accounts)) return Corrupt(path, r.id, "accounts");
  if (!DecodeJsonStringMap(s.Text(o + 17), &r.metadata)) return Corrupt(path, r.id, "metadata");
  if (!CopyDigest(s.Blob(o + 18), &r.digest)) return Corrupt(path, r.id, "digest");
  r.hint = std::string(s.Text(o + 19));
  if (!s.IsNull(o + 20)) {
    RolledSecret prev;
    if (!CopyDigest(s.Blob(o + 20), &prev.digest)) return Corrupt(path, r.id, "previous_digest");
    prev.hint = std::string(s.Text(o + 21));
    prev.valid_until = MicrosToTime(s.Int(o + 22));
    r.previous = std::move(prev);
  }
  r.version = static_cast<std::uint64_t>(s.Int(o + 23));
  return r;
}

std::string ToLowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

void BindRecord(Statement& s, const KeyRecord& r) {
  // ?1 id, ?2..?24 the fields; the caller binds ?25 version, ?26 change_seq
  // and ?27 pk.
  s.BindText(1, r.id);
  s.BindText(2, r.name);
  s.BindText(3, ToLowerAscii(r.name));
  s.BindText(4, r.description);
  s.BindText(5, r.owner);
  s.BindInt(6, static_cast<std::int64_t>(r.kind));
  s.BindText(7, r.environment);
  s.BindText(8, internal::EncodeJsonStringArray(r.scopes));
  s.BindInt(9, static_cast<std::int64_t>(r.state));
  s.BindInt(10, internal::TimeToMicros(r.created));
  s.BindInt(11, internal::TimeToMicros(r.updated));
  if (r.expires.has_value()) {
    s.BindInt(12, internal::TimeToMicros(*r.expires));
  } else {
    s.BindNull(12);
  }
  if (r.last_used.has_value()) {
    s.BindInt(13, internal::TimeToMicros(*r.last_used));
  } else {
    s.BindNull(13);
  }
  if (r.rate_limit.has_value()) {
    s.BindInt(14, static_cast<std::int64_t>(r.rate_limit->rate));
    s.BindInt(15, absl::ToInt64Microseconds(r.rate_limit->period));
    s.BindInt(16, static_cast<std::int64_t>(r.rate_limit->burst));
  } else {
    s.BindNull(14);
    s.BindNull(15);
    s.BindNull(16);
  }
  s.BindText(17, r.webhook_url);
  s.BindText(18, internal::EncodeJsonStringArray(r.accounts));
  s.BindText(19, internal::EncodeJsonStringMap(r.metadata));
  s.BindBlob(20, r.digest.data(), r.digest.size());
  s.BindText(21, r.hint);
  if (r.previous.has_value()) {
    s.BindBlob(22, r.previous->digest.data(), r.previous->digest.size());
    s.BindText(23, r.previous->hint);
    s.BindInt(24, internal::TimeToMicros(r.previous->valid_until));
  } else {
    s.BindNull(22);
    s.BindNull(23);
    s.BindNull(24);
  }
}

}  // namespace keygate::internal
