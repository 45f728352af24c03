// libFuzzer target: decoding a stored key row (src/sqlite/record_row.h), as a
// damaged or hand-edited database file could hold it. The input is the 26
// columns of one row: per column a tag byte (0 NULL, 1 integer: 8 bytes
// little-endian, 2 text / 3 blob: a length byte, then the bytes), bound to
// "SELECT ?1, ..., ?26" on an in-memory database.
// Invariants:
//   - a decoded record, written back as the store writes it, decodes to the
//     same record (times, rate limits, digests, JSON columns round-trip);
//   - a refused row is kDataLoss "sqlite <path>: key <id>: corrupt row
//     (column <name>)", naming the id only when it has the generated shape
//     (anything else may be a token);
//   - a decoded rate limit is one a write could store (it passes
//     ValidateRateLimitPolicy and compiles to a limiting GcraPolicy).
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/gcra.h"
#include "internal/record_columns.h"
#include "keygate/key.h"
#include "keygate/rate_limiter.h"
#include "sqlite/record_row.h"
#include "sqlite/sqlite_db.h"

namespace {

using keygate::KeyRecord;
using keygate::internal::SqliteDb;
using keygate::internal::Statement;

constexpr int kColumns = 26;
constexpr char kPath[] = "fuzz.db";

std::string SelectSql() {
  std::string sql = "SELECT ?1";
  for (int i = 2; i <= kColumns; ++i) absl::StrAppend(&sql, ", ?", i);
  return sql;
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  std::uint8_t Byte() {
    if (in_.empty()) return 0;
    const auto b = static_cast<std::uint8_t>(in_.front());
    in_.remove_prefix(1);
    return b;
  }
  std::int64_t Int() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(Byte()) << (8 * i);
    return static_cast<std::int64_t>(v);
  }
  std::string_view Bytes() {
    const std::size_t n = std::min<std::size_t>(Byte(), in_.size());
    const std::string_view out = in_.substr(0, n);
    in_.remove_prefix(n);
    return out;
  }

 private:
  std::string_view in_;
};

SqliteDb& Db() {
  static SqliteDb* db = [] {
    absl::StatusOr<std::unique_ptr<SqliteDb>> d =
        SqliteDb::Open(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!d.ok()) std::abort();
    return d->release();
  }();
  return *db;
}

// Binds `r` in the kRecordColumns order, encoded as SqliteKeyStore writes it.
void BindAsStored(Statement& s, const KeyRecord& r) {
  keygate::internal::BindRecordColumns(s, r, 1, 25);
  s.BindInt(24, static_cast<std::int64_t>(r.version));
}

void CheckRefusal(const absl::Status& status, std::string_view id) {
  if (status.code() != absl::StatusCode::kDataLoss) std::abort();
  const std::string label =
      keygate::IsGeneratedKeyId(id) ? absl::StrCat("key ", std::string(id)) : "key (not a key id)";
  const std::string_view m(status.message().data(), status.message().size());
  bool known = false;
  for (const char* column :
       {"kind", "scopes", "state", "rate_limit", "accounts", "metadata", "digest",
        "previous_digest", "version", "sealed_token", "sealed_webhook_secret"}) {
    known = known ||
            m == absl::StrCat("sqlite ", kPath, ": ", label, ": corrupt row (column ", column, ")");
  }
  if (!known) std::abort();
}

void CheckRateLimit(const keygate::RateLimitPolicy& policy) {
  // A decoded policy is one a write could have stored: it limits.
  if (!keygate::ValidateRateLimitPolicy(policy, "rate_limit").ok()) std::abort();
  const keygate::GcraPolicy g = keygate::GcraPolicy::Compile(policy);
  if (!g.valid()) std::abort();
  if (g.emission_ns < 1 || g.capacity_ns < 0 || g.period_ns <= 0) std::abort();
  std::atomic<std::int64_t> tat{keygate::internal::kGcraNeverUsed};
  (void)keygate::internal::GcraAcquireOne(g, tat, 1, 0);
  (void)keygate::internal::GcraAcquireOne(g, tat, policy.burst, 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string sql = SelectSql();
  Reader in(std::string_view(reinterpret_cast<const char*>(data), size));
  absl::StatusOr<KeyRecord> first;
  {
    absl::StatusOr<Statement> s = Db().Prepare(sql);
    if (!s.ok()) std::abort();
    for (int c = 1; c <= kColumns; ++c) {
      switch (in.Byte() % 4) {
        case 0:
          s->BindNull(c);
          break;
        case 1:
          s->BindInt(c, in.Int());
          break;
        case 2:
          s->BindText(c, in.Bytes());
          break;
        default: {
          const std::string_view b = in.Bytes();
          s->BindBlob(c, b.data(), b.size());
          break;
        }
      }
    }
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok() || !*row) std::abort();
    first = keygate::internal::DecodeRecord(*s, 0, kPath);
    if (!first.ok()) {
      CheckRefusal(first.status(), s->Text(0));
      return 0;
    }
    if (keygate::internal::TimeToMicros(first->created) != s->Int(8) ||
        first->previous.has_value() == s->IsNull(20) ||
        first->rate_limit.has_value() == s->IsNull(12)) {
      std::abort();
    }
  }
  if (first->rate_limit) CheckRateLimit(*first->rate_limit);

  absl::StatusOr<Statement> s = Db().Prepare(sql);
  if (!s.ok()) std::abort();
  BindAsStored(*s, *first);
  absl::StatusOr<bool> row = s->Step();
  if (!row.ok() || !*row) std::abort();
  const absl::StatusOr<KeyRecord> again = keygate::internal::DecodeRecord(*s, 0, kPath);
  if (!again.ok() || *again != *first) std::abort();
  return 0;
}
