// A KeyRecord as the columns of a stored key row, shared by the SQL stores (SQLite, PostgreSQL):
// one decoder and one encoder, over each backend's own row reader and parameter binder.
//
// The columns, in order (kRecordColumns): id, name, description, owner, kind, environment,
// scopes, state, created_us, updated_us, expires_us, last_used_us, rate_limit_rate,
// rate_limit_period_us, rate_limit_burst, webhook_url, accounts, metadata, digest, hint,
// previous_digest, previous_hint, previous_valid_until_us, version, sealed_token,
// sealed_webhook_secret. Lists and maps
// are JSON text (json_collections.h); times integer microseconds since the Unix epoch (NULL: unset;
// INT64_MIN/MAX: infinite); kind and state the enum values.
#ifndef KEYGATE_SRC_INTERNAL_RECORD_COLUMNS_H_
#define KEYGATE_SRC_INTERNAL_RECORD_COLUMNS_H_

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/json_collections.h"
#include "internal/key_label.h"
#include "keygate/key.h"

namespace keygate::internal {

// The record columns of `keys k`, in the order DecodeRecordColumns reads them.
inline constexpr char kRecordColumns[] =
    "k.id, k.name, k.description, k.owner, k.kind, k.environment, k.scopes, k.state, "
    "k.created_us, k.updated_us, k.expires_us, k.last_used_us, k.rate_limit_rate, "
    "k.rate_limit_period_us, k.rate_limit_burst, k.webhook_url, k.accounts, k.metadata, "
    "k.digest, k.hint, k.previous_digest, k.previous_hint, k.previous_valid_until_us, "
    "k.version, k.sealed_token, k.sealed_webhook_secret";

// Time <-> integer microseconds since the Unix epoch. Infinite times map to INT64_MIN /
// INT64_MAX and back.
inline std::int64_t TimeToMicros(absl::Time t) {
  if (t == absl::InfiniteFuture()) return std::numeric_limits<std::int64_t>::max();
  if (t == absl::InfinitePast()) return std::numeric_limits<std::int64_t>::min();
  return absl::ToUnixMicros(t);
}
inline absl::Time MicrosToTime(std::int64_t us) {
  if (us == std::numeric_limits<std::int64_t>::max()) return absl::InfiniteFuture();
  if (us == std::numeric_limits<std::int64_t>::min()) return absl::InfinitePast();
  return absl::FromUnixMicros(us);
}

// `s` lowered in ASCII only (what name search matches).
inline std::string ToLowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// kDataLoss "<where>: <KeyLabel(id)>: corrupt row (column <column>)".
inline absl::Status CorruptRecordColumn(std::string_view where, std::string_view id,
                                        std::string_view column) {
  return absl::DataLossError(absl::StrCat(std::string(where), ": ", KeyLabel(id),
                                          ": corrupt row (column ", std::string(column), ")"));
}

// Decodes the record columns of `row` starting at column `first`. `Row` has
// `std::string_view Text(int)`, `std::int64_t Int(int)`, `bool IsNull(int)` and
// `std::string_view Blob(int)`. Errors: kDataLoss (CorruptRecordColumn) for a kind or state out
// of range, a list or map column that is not the JSON the stores write, a rate limit no write
// could have stored, a digest that is not kDigestSize bytes, or a sealed token longer than
// kMaxSealedTokenLength.
template <typename Row>
absl::StatusOr<KeyRecord> DecodeRecordColumns(const Row& row, int first, std::string_view where) {
  const int o = first;
  const auto digest = [](std::string_view blob, Digest* out) {
    if (blob.size() != out->size()) return false;
    std::memcpy(out->data(), blob.data(), blob.size());
    return true;
  };
  KeyRecord r;
  r.id = std::string(row.Text(o + 0));
  r.name = std::string(row.Text(o + 1));
  r.description = std::string(row.Text(o + 2));
  r.owner = std::string(row.Text(o + 3));
  const std::int64_t kind = row.Int(o + 4);
  if (kind != static_cast<int>(KeyKind::kPersonal) && kind != static_cast<int>(KeyKind::kGeneral)) {
    return CorruptRecordColumn(where, r.id, "kind");
  }
  r.kind = static_cast<KeyKind>(kind);
  r.environment = std::string(row.Text(o + 5));
  if (!DecodeJsonStringArray(row.Text(o + 6), &r.scopes)) {
    return CorruptRecordColumn(where, r.id, "scopes");
  }
  const std::int64_t state = row.Int(o + 7);
  if (state != static_cast<int>(KeyState::kActive) &&
      state != static_cast<int>(KeyState::kRevoked)) {
    return CorruptRecordColumn(where, r.id, "state");
  }
  r.state = static_cast<KeyState>(state);
  r.created = MicrosToTime(row.Int(o + 8));
  r.updated = MicrosToTime(row.Int(o + 9));
  if (!row.IsNull(o + 10)) r.expires = MicrosToTime(row.Int(o + 10));
  if (!row.IsNull(o + 11)) r.last_used = MicrosToTime(row.Int(o + 11));
  if (!row.IsNull(o + 12)) {
    // A policy no write could have stored would compile to "no limit": refused, so a damaged
    // row fails closed instead of unlimited.
    const std::int64_t rate = row.Int(o + 12);
    const std::int64_t period_us = row.Int(o + 13);
    const std::int64_t burst = row.Int(o + 14);
    if (rate <= 0 || period_us <= 0 || burst < 0 || burst > UINT32_MAX) {
      return CorruptRecordColumn(where, r.id, "rate_limit");
    }
    RateLimitPolicy p;
    p.rate = static_cast<std::uint64_t>(rate);
    p.period = absl::Microseconds(period_us);
    p.burst = static_cast<std::uint32_t>(burst);
    if (!ValidateRateLimitPolicy(p, "rate_limit").ok()) {
      return CorruptRecordColumn(where, r.id, "rate_limit");
    }
    r.rate_limit = p;
  }
  r.webhook_url = std::string(row.Text(o + 15));
  if (!DecodeJsonStringArray(row.Text(o + 16), &r.accounts)) {
    return CorruptRecordColumn(where, r.id, "accounts");
  }
  if (!DecodeJsonStringMap(row.Text(o + 17), &r.metadata)) {
    return CorruptRecordColumn(where, r.id, "metadata");
  }
  if (!digest(row.Blob(o + 18), &r.digest)) return CorruptRecordColumn(where, r.id, "digest");
  r.hint = std::string(row.Text(o + 19));
  if (!row.IsNull(o + 20)) {
    RolledSecret prev;
    if (!digest(row.Blob(o + 20), &prev.digest)) {
      return CorruptRecordColumn(where, r.id, "previous_digest");
    }
    prev.hint = std::string(row.Text(o + 21));
    prev.valid_until = MicrosToTime(row.Int(o + 22));
    r.previous = std::move(prev);
  }
  const std::int64_t version = row.Int(o + 23);
  if (version < 1) return CorruptRecordColumn(where, r.id, "version");
  r.version = static_cast<std::uint64_t>(version);
  // Longer than any write stores: refused here, or every later write of the key would fail.
  if (row.Text(o + 24).size() > kMaxSealedTokenLength) {
    return CorruptRecordColumn(where, r.id, "sealed_token");
  }
  r.sealed_token = std::string(row.Text(o + 24));
  if (row.Text(o + 25).size() > kMaxSealedWebhookSecretLength) {
    return CorruptRecordColumn(where, r.id, "sealed_webhook_secret");
  }
  r.sealed_webhook_secret = std::string(row.Text(o + 25));
  return r;
}

// Binds the record columns of `r` but `version` to parameters first .. first + 22 of `b`, in
// column order, then `sealed_token` to parameter `sealed_param` and `sealed_webhook_secret` to
// `sealed_param + 1` (the last bind calls: a binder that ignores indexes, as a COPY row, sees them
// after previous_valid_until_us). `Binder` has
// `BindText(int, std::string_view)`, `BindInt(int, std::int64_t)`, `BindNull(int)` and
// `BindBlob(int, const void*, std::size_t)`.
template <typename Binder>
void BindRecordColumns(Binder& b, const KeyRecord& r, int first, int sealed_param) {
  const int o = first;
  b.BindText(o + 0, r.id);
  b.BindText(o + 1, r.name);
  b.BindText(o + 2, r.description);
  b.BindText(o + 3, r.owner);
  b.BindInt(o + 4, static_cast<std::int64_t>(r.kind));
  b.BindText(o + 5, r.environment);
  b.BindText(o + 6, EncodeJsonStringArray(r.scopes));
  b.BindInt(o + 7, static_cast<std::int64_t>(r.state));
  b.BindInt(o + 8, TimeToMicros(r.created));
  b.BindInt(o + 9, TimeToMicros(r.updated));
  if (r.expires.has_value()) {
    b.BindInt(o + 10, TimeToMicros(*r.expires));
  } else {
    b.BindNull(o + 10);
  }
  if (r.last_used.has_value()) {
    b.BindInt(o + 11, TimeToMicros(*r.last_used));
  } else {
    b.BindNull(o + 11);
  }
  if (r.rate_limit.has_value()) {
    b.BindInt(o + 12, static_cast<std::int64_t>(r.rate_limit->rate));
    b.BindInt(o + 13, absl::ToInt64Microseconds(r.rate_limit->period));
    b.BindInt(o + 14, static_cast<std::int64_t>(r.rate_limit->burst));
  } else {
    b.BindNull(o + 12);
    b.BindNull(o + 13);
    b.BindNull(o + 14);
  }
  b.BindText(o + 15, r.webhook_url);
  b.BindText(o + 16, EncodeJsonStringArray(r.accounts));
  b.BindText(o + 17, EncodeJsonStringMap(r.metadata));
  b.BindBlob(o + 18, r.digest.data(), r.digest.size());
  b.BindText(o + 19, r.hint);
  if (r.previous.has_value()) {
    b.BindBlob(o + 20, r.previous->digest.data(), r.previous->digest.size());
    b.BindText(o + 21, r.previous->hint);
    b.BindInt(o + 22, TimeToMicros(r.previous->valid_until));
  } else {
    b.BindNull(o + 20);
    b.BindNull(o + 21);
    b.BindNull(o + 22);
  }
  b.BindText(sealed_param, r.sealed_token);
  b.BindText(sealed_param + 1, r.sealed_webhook_secret);
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_RECORD_COLUMNS_H_
