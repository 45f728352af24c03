// Decoding a stored key row (record_row.h).

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

}  // namespace keygate::internal
