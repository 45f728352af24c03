// The PostgreSQL KeyStore (keygate/postgres/postgres_key_store.h): creation, reads and the
// subscriptions; the writes are in writes.cc.

#include "keygate/postgres/postgres_key_store.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "internal/json_collections.h"
#include "internal/key_label.h"
#include "internal/record_columns.h"
#include "keygate/audit.h"
#include "keygate/change_notifier.h"
#include "postgres/listener.h"
#include "postgres/pg_conn.h"
#include "postgres/schema.h"
#include "postgres/store_impl.h"
#include "postgres/test_peer.h"

namespace keygate {
namespace {

using internal::PgParams;
using internal::PgPool;
using internal::PgResult;

constexpr char kCursorPrefix[] = "p1.";
// A name search for one or two characters first looks for a page among this many keys
// (PostgresKeyStore::List): a few ms of reading.
constexpr std::size_t kShortNeedleScan = 10'000;
// ... and then asks the trigram index for at most this many runs of three characters that hold
// it; more, and the needle is too common for that to beat a scan in id order.
constexpr int kMaxShortNeedleRuns = 512;

// `s` with LIKE's wildcards and its default escape character escaped.
std::string LikeEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    if (ch == '%' || ch == '_' || ch == '\\') out.push_back('\\');
    out.push_back(ch);
  }
  return out;
}

constexpr std::size_t kMaxSchemaLength = 48;

absl::Status ValidateSchemaName(std::string_view s) {
  if (s.empty() || s.size() > kMaxSchemaLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("schema: must be 1 to ", kMaxSchemaLength, " bytes"));
  }
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return absl::InvalidArgumentError("schema: must match [a-z_][a-z0-9_]*");
  }
  return absl::OkStatus();
}

absl::Status CheckDuration(absl::Duration d, absl::Duration lo, absl::Duration hi,
                           std::string_view field) {
  if (d < lo || d > hi) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": must be between ",
                                                   absl::FormatDuration(lo), " and ",
                                                   absl::FormatDuration(hi)));
  }
  return absl::OkStatus();
}

}  // namespace

PostgresKeyStore::PostgresKeyStore(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

PostgresKeyStore::~PostgresKeyStore() {
  std::unique_ptr<internal::Listener> listener;
  {
    std::lock_guard<std::mutex> lock(impl_->listener_mu);
    listener = std::move(impl_->listener);
  }
  listener.reset();  // joins the thread
}

const std::string& PostgresKeyStore::description() const noexcept { return impl_->described; }
const PostgresOptions& PostgresKeyStore::options() const noexcept { return impl_->options; }

PostgresStoreStats PostgresKeyStore::Stats() const {
  PostgresStoreStats s;
  s.connects = impl_->pool->connects();
  s.connect_failures = impl_->pool->connect_failures();
  s.deadlines_exceeded = impl_->deadlines.load(std::memory_order_relaxed);
  s.listener_connects = impl_->listener_counters->connects.load(std::memory_order_relaxed);
  s.notifications = impl_->listener_counters->notifications.load(std::memory_order_relaxed);
  s.polls = impl_->listener_counters->polls.load(std::memory_order_relaxed);
  s.corrupt_rows = impl_->corrupt_rows.load(std::memory_order_relaxed);
  return s;
}

absl::StatusOr<std::unique_ptr<PostgresKeyStore>> PostgresKeyStore::Create(Options options) {
  return internal::PostgresTestPeer::Create(std::move(options), kSchemaVersion);
}

absl::StatusOr<std::unique_ptr<PostgresKeyStore>> internal::PostgresTestPeer::Create(
    PostgresOptions options, int schema_version) {
  if (options.url.empty()) return absl::InvalidArgumentError("url: must not be empty");
  absl::StatusOr<std::string> described = DescribePostgresUrl(options.url);
  if (!described.ok()) return described.status();
  if (absl::Status s = ValidateSchemaName(options.schema); !s.ok()) return s;
  if (options.pool_size < 1 || options.pool_size > 64) {
    return absl::InvalidArgumentError("pool_size: must be between 1 and 64");
  }
  if (absl::Status s = CheckDuration(options.call_timeout, absl::Milliseconds(10),
                                     absl::Minutes(10), "call_timeout");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(options.migration_timeout, absl::ZeroDuration(),
                                     absl::Hours(24), "migration_timeout");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(options.poll_interval, absl::Milliseconds(10), absl::Hours(1),
                                     "poll_interval");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(options.reconnect_backoff, absl::Milliseconds(1),
                                     absl::Minutes(1), "reconnect_backoff");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(options.reconnect_backoff_max, options.reconnect_backoff,
                                     absl::Hours(1), "reconnect_backoff_max");
      !s.ok()) {
    return s;
  }
  auto impl = std::make_shared<PostgresKeyStore::Impl>();
  impl->described = *described;
  impl->schema = QuoteIdent(options.schema);
  impl->channel = absl::StrCat("keygate.", options.schema);
  // The server gives up on a statement when the caller would have; a transaction left idle by
  // a stalled client is ended by the server too.
  const std::int64_t timeout_ms = absl::ToInt64Milliseconds(options.call_timeout);
  impl->setup = absl::StrCat("SET statement_timeout = ", timeout_ms,
                             "; SET idle_in_transaction_session_timeout = ", timeout_ms * 2,
                             "; SET lock_timeout = ", timeout_ms,
                             "; SET TIME ZONE 'UTC'; SET standard_conforming_strings = on"
                             // The change feed relies on READ COMMITTED: a writer waiting for the
                             // counter row reads it again once the lock is free (schema.cc).
                             "; SET default_transaction_isolation = 'read committed'");
  impl->pool =
      std::make_unique<PgPool>(options.url, impl->setup, impl->described, options.pool_size);
  impl->options = std::move(options);
  PostgresKeyStore::Impl& m = *impl;
  static const std::string kColumnNames =
      "id, name, description, owner, kind, environment, scopes, state, created_us, updated_us, "
      "expires_us, last_used_us, rate_limit_rate, rate_limit_period_us, rate_limit_burst, "
      "webhook_url, accounts, metadata, digest, hint, previous_digest, previous_hint, "
      "previous_valid_until_us, sealed_token, sealed_webhook_secret";
  // Every write takes its sequence with its key row: UPDATE ... RETURNING on the counter row,
  // which stays locked until COMMIT, so the next writer's sequence is taken after this one's
  // commit and sequences commit in order (schema.cc). A key row carries its latest sequence.
  m.insert_key_sql = m.Sql(absl::StrCat(
      "WITH s AS (UPDATE $S.sequence_counter SET last = last + 1 RETURNING last), "
      "t AS (DELETE FROM $S.changes WHERE key_id = $1) "  // a tombstone of a reused id goes
      "INSERT INTO $S.keys (",
      kColumnNames,
      ", name_lower, version, sequence) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
      "$12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $25, $26, $24, 1, "
      "(SELECT last FROM s)) "
      "RETURNING sequence"));
  m.update_key_sql = m.Sql(
      "WITH s AS (UPDATE $S.sequence_counter SET last = last + 1 RETURNING last) "
      "UPDATE $S.keys SET name = $2, description = $3, owner = $4, kind = $5, environment = $6, "
      "scopes = $7, state = $8, created_us = $9, updated_us = $10, expires_us = $11, "
      "last_used_us = $12, rate_limit_rate = $13, rate_limit_period_us = $14, "
      "rate_limit_burst = $15, webhook_url = $16, accounts = $17, metadata = $18, digest = $19, "
      "hint = $20, previous_digest = $21, previous_hint = $22, previous_valid_until_us = $23, "
      "name_lower = $24, sealed_token = $25, sealed_webhook_secret = $26, version = version + 1, "
      "sequence = (SELECT last FROM s) WHERE id = $1 "
      "RETURNING sequence");
  // A deletion leaves a tombstone with its sequence.
  m.delete_key_sql = m.Sql(
      "WITH s AS (UPDATE $S.sequence_counter SET last = last + 1 RETURNING last), "
      "d AS (DELETE FROM $S.digests WHERE key_id = $1), "
      "k AS (DELETE FROM $S.keys WHERE id = $1) "
      "INSERT INTO $S.changes (key_id, sequence) SELECT $1, last FROM s "
      "ON CONFLICT (key_id) DO UPDATE SET sequence = excluded.sequence RETURNING sequence");
  m.log_sql = m.Sql(
      "WITH a AS (INSERT INTO $S.audit (sequence, at_us, type, actor, key_id, owner, fields, "
      "version, webhook_url) VALUES ($8, $2, $3, $4, $1, $5, $6, $7, $10)) "
      "SELECT pg_notify($9, '')");
  m.get_sql =
      m.Sql(absl::StrCat("SELECT ", internal::kRecordColumns, " FROM $S.keys k WHERE k.id = $1"));
  m.find_sql = m.Sql(absl::StrCat("SELECT ", internal::kRecordColumns,
                                  " FROM $S.digests d JOIN $S.keys k ON k.id = d.key_id "
                                  "WHERE d.digest = $1"));
  // Live keys by sequence merged with tombstones by sequence: two index ranges, one snapshot.
  // (The tombstones' record columns are NULLs of the right types: a join that matches nothing.)
  m.changes_sql = m.Sql(
      absl::StrCat("(SELECT k.sequence, k.id, true, ", internal::kRecordColumns,
                   " FROM $S.keys k WHERE k.sequence > $1 ORDER BY k.sequence LIMIT $2) UNION ALL "
                   "(SELECT c.sequence, c.key_id, false, ",
                   internal::kRecordColumns,
                   " FROM $S.changes c LEFT JOIN $S.keys k ON false WHERE c.sequence > $1 "
                   "ORDER BY c.sequence LIMIT $2) ORDER BY 1 LIMIT $2"));
  {
    const absl::Time deadline = m.Deadline();
    absl::StatusOr<PgPool::Lease> lease = m.pool->Acquire(deadline);
    if (!lease.ok()) return lease.status();
    if (absl::Status s = internal::MigrateSchema(**lease, m.options.schema, schema_version,
                                                 absl::Now() + m.options.migration_timeout);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<PgResult> encoding =
        (*lease)->Exec("SELECT current_setting('server_encoding') = 'UTF8'", deadline);
    if (!encoding.ok()) return encoding.status();
    m.utf8 = encoding->row(0).Bool(0);
  }
  return std::unique_ptr<PostgresKeyStore>(new PostgresKeyStore(std::move(impl)));
}

absl::StatusOr<KeyRecord> PostgresKeyStore::Get(std::string_view id) {
  if (id.find('\0') != std::string_view::npos) return impl_->NotFound(id);  // text cannot hold it
  PgParams p;
  p.BindText(1, id);
  absl::StatusOr<PgResult> r = impl_->Query(impl_->get_sql, p);
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return impl_->NotFound(id);
  return impl_->Decode(r->row(0), 0);
}

absl::StatusOr<KeyRecord> PostgresKeyStore::FindByDigest(const Digest& digest) {
  PgParams p;
  p.BindBlob(1, digest.data(), digest.size());
  absl::StatusOr<PgResult> r = impl_->Query(impl_->find_sql, p);
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError("digest: no such key");
  return impl_->Decode(r->row(0), 0);
}

absl::StatusOr<ListPage> PostgresKeyStore::List(const ListOptions& options) {
  if (options.limit < 1 || options.limit > kMaxListLimit) {
    return absl::InvalidArgumentError(absl::StrCat("limit: must be between 1 and ", kMaxListLimit));
  }
  std::string after;
  if (!options.cursor.empty()) {
    const std::string_view c = options.cursor;
    constexpr std::size_t kPrefix = sizeof(kCursorPrefix) - 1;
    const std::string_view hex = c.size() > kPrefix ? c.substr(kPrefix) : std::string_view();
    const bool ok = c.substr(0, kPrefix) == kCursorPrefix && !hex.empty() && hex.size() % 2 == 0 &&
                    std::all_of(hex.begin(), hex.end(), [](char ch) {
                      return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
                    });
    if (!ok) return absl::InvalidArgumentError("cursor: not a cursor returned by this store");
    after = absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
  }
  const ListFilter& f = options.filter;
  // Text cannot hold NUL: such a needle or filter matches nothing.
  const auto has_nul = [](std::string_view s) { return s.find('\0') != std::string_view::npos; };
  if (has_nul(f.name_contains) || (f.owner.has_value() && has_nul(*f.owner)) ||
      (f.environment.has_value() && has_nul(*f.environment))) {
    return ListPage();
  }
  // One query: the filters and `name_condition` on k.name_lower (its parameters `name_value` and
  // `second_value` are $N and $M) unless empty, the page in id order. kHead matches only within the
  // first kShortNeedleScan keys past the cursor that pass the other filters; kIndexFirst makes the
  // planner find every match before it sorts them (a subquery with OFFSET 0 is planned on its
  // own), where it would otherwise walk the ids in order and test each name against the
  // condition, expecting to stop early.
  enum class Shape { kInIdOrder, kHead, kIndexFirst };
  const auto query = [&](std::string_view name_condition, std::string_view name_value, Shape shape,
                         std::string_view second_value = {}) -> absl::StatusOr<PgResult> {
    PgParams p;
    int n = 0;
    p.BindText(++n, after);
    std::string filters = "k.id > $1";
    if (f.owner.has_value()) {
      p.BindText(++n, *f.owner);
      absl::StrAppend(&filters, " AND k.owner = $", n);
    }
    if (f.environment.has_value()) {
      p.BindText(++n, *f.environment);
      absl::StrAppend(&filters, " AND k.environment = $", n);
    }
    if (f.state.has_value()) {
      p.BindInt(++n, static_cast<std::int64_t>(*f.state));
      absl::StrAppend(&filters, " AND k.state = $", n);
    }
    if (f.kind.has_value()) {
      p.BindInt(++n, static_cast<std::int64_t>(*f.kind));
      absl::StrAppend(&filters, " AND k.kind = $", n);
    }
    std::string name = "true";
    if (!name_condition.empty()) {
      p.BindText(++n, name_value);
      const std::string first = absl::StrCat("$", n);
      std::string second;
      if (name_condition.find("$M") != std::string_view::npos) {
        p.BindText(++n, second_value);
        second = absl::StrCat("$", n);
      }
      name = absl::StrReplaceAll(absl::string_view(name_condition.data(), name_condition.size()),
                                 {{"$N", first}, {"$M", second}});
    }
    p.BindInt(++n, static_cast<std::int64_t>(options.limit) + 1);
    std::string sql;
    switch (shape) {
      case Shape::kInIdOrder:
        sql = absl::StrCat("SELECT ", internal::kRecordColumns, " FROM $S.keys k WHERE ", filters,
                           " AND ", name, " ORDER BY k.id LIMIT $", n);
        break;
      case Shape::kHead:
        sql =
            absl::StrCat("SELECT ", internal::kRecordColumns,
                         " FROM (SELECT * FROM $S.keys k WHERE ", filters, " ORDER BY k.id LIMIT ",
                         kShortNeedleScan, ") k WHERE ", name, " ORDER BY k.id LIMIT $", n);
        break;
      case Shape::kIndexFirst:
        sql = absl::StrCat("SELECT ", internal::kRecordColumns,
                           " FROM (SELECT * FROM $S.keys k WHERE ", filters, " AND ", name,
                           " OFFSET 0) k ORDER BY k.id LIMIT $", n);
        break;
    }
    return impl_->Query(impl_->Sql(sql), p);
  };
  const auto page_of = [&](const PgResult& r) -> absl::StatusOr<ListPage> {
    ListPage page;
    const int rows = std::min(r.rows(), static_cast<int>(options.limit));
    for (int i = 0; i < rows; ++i) {
      absl::StatusOr<KeyRecord> k = impl_->Decode(r.row(i), 0);
      if (!k.ok()) return k.status();
      page.keys.push_back(*std::move(k));
    }
    if (r.rows() > rows && !page.keys.empty()) {
      page.next_cursor = absl::StrCat(kCursorPrefix, absl::BytesToHexString(page.keys.back().id));
    }
    return page;
  };
  const auto answer = [&](absl::StatusOr<PgResult> r) -> absl::StatusOr<ListPage> {
    if (!r.ok()) return r.status();
    return page_of(*r);
  };
  if (f.name_contains.empty()) return answer(query("", "", Shape::kInIdOrder));
  // A literal substring: LIKE's wildcards and its escape character (the default, backslash)
  // escaped.
  const std::string needle = internal::ToLowerAscii(f.name_contains);
  const std::string pattern = absl::StrCat("%", LikeEscape(needle), "%");
  constexpr std::string_view kLike = "k.name_lower LIKE $N";
  if (internal::DbChars(needle, impl_->utf8).size() > 2)
    return answer(query(kLike, pattern, Shape::kInIdOrder));
  // One or two characters give pg_trgm no trigram: the index cannot answer the pattern, and a
  // scan in id order stops early only where matches are dense. So first such a scan, bounded;
  // if it does not fill the page, matches are sparse: every name holding the needle has fewer
  // than three characters (an index of their own) or holds it within a run of three that
  // name_trigrams records, and those runs are patterns the trigram index answers.
  absl::StatusOr<PgResult> dense = query(kLike, pattern, Shape::kHead);
  if (!dense.ok()) return dense.status();
  if (dense->rows() > static_cast<int>(options.limit)) return page_of(*dense);
  PgParams rp;
  rp.BindText(1, needle);
  rp.BindInt(2, kMaxShortNeedleRuns + 1);
  absl::StatusOr<PgResult> runs = impl_->Query(
      impl_->Sql("SELECT t FROM $S.name_trigrams WHERE strpos(t, $1) > 0 LIMIT $2"), rp);
  if (!runs.ok()) return runs.status();
  if (runs->rows() > kMaxShortNeedleRuns) return answer(query(kLike, pattern, Shape::kInIdOrder));
  std::vector<std::string> patterns;
  patterns.reserve(static_cast<std::size_t>(runs->rows()));
  for (int i = 0; i < runs->rows(); ++i) {
    patterns.push_back(absl::StrCat("%", LikeEscape(runs->row(i).Text(0)), "%"));
  }
  return answer(
      query("(k.name_lower LIKE ANY ($N::text[]) OR (char_length(k.name_lower) < 3 AND "
            "k.name_lower LIKE $M))",
            internal::TextArrayLiteral(patterns), Shape::kIndexFirst, pattern));
}

absl::StatusOr<ChangeBatch> PostgresKeyStore::ChangesSince(std::uint64_t after, std::size_t limit) {
  ChangeBatch batch;
  batch.next_sequence = after;
  if (after >= static_cast<std::uint64_t>(INT64_MAX)) return batch;
  const std::size_t capped = std::min<std::size_t>(limit, 1'000'000);
  std::optional<internal::PgPool::Lease> lease;
  absl::StatusOr<PgResult> r = absl::UnavailableError("not read");
  if (std::optional<PgResult> ahead = impl_->TakeFeedAhead(after, capped, &lease)) {
    r = *std::move(ahead);
  } else {
    r = impl_->Query(impl_->changes_sql, Impl::FeedParams(after, capped), &lease);
    if (!r.ok()) return r.status();
  }
  // A full page: the server reads the next one while this one is decoded and applied.
  if (r->rows() > static_cast<int>(capped) && capped > 0) {
    impl_->SendFeedAhead(static_cast<std::uint64_t>(r->row(static_cast<int>(capped) - 1).Int(0)),
                         capped, &lease);
  }
  lease.reset();
  std::vector<absl::Status> corrupt;
  for (int i = 0; i < r->rows(); ++i) {
    if (batch.changes.size() == capped) {
      batch.more = true;
      break;
    }
    const PgResult::Row row = r->row(i);
    Change c;
    c.sequence = static_cast<std::uint64_t>(row.Int(0));
    c.key_id = std::string(row.Text(1));
    if (row.Bool(2)) {
      absl::StatusOr<KeyRecord> k = impl_->Decode(row, 3);
      if (k.ok()) {
        c.record = *std::move(k);
      } else {
        // Fail closed without stopping the feed: the key reads as deleted.
        corrupt.push_back(k.status());
      }
    }
    batch.next_sequence = c.sequence;
    batch.changes.push_back(std::move(c));
  }
  if (!corrupt.empty()) {
    impl_->corrupt_rows.fetch_add(corrupt.size(), std::memory_order_relaxed);
    if (impl_->options.on_corrupt_row) {
      for (const absl::Status& s : corrupt) impl_->options.on_corrupt_row(s);
    }
  }
  return batch;
}

absl::StatusOr<std::uint64_t> PostgresKeyStore::LastSequence() {
  absl::StatusOr<PgResult> r =
      impl_->Query(impl_->Sql("SELECT last FROM $S.sequence_counter"), PgParams());
  if (!r.ok()) return r.status();
  if (r->rows() != 1) return absl::DataLossError(absl::StrCat(impl_->described, ": no counter"));
  return static_cast<std::uint64_t>(r->row(0).Int(0));
}

absl::StatusOr<AuditPage> PostgresKeyStore::ReadAudit(const AuditQuery& query) {
  if (absl::Status s = ValidateAuditQuery(query); !s.ok()) return s;
  AuditPage page;
  page.next_after = query.after;
  if (query.after >= static_cast<std::uint64_t>(INT64_MAX)) return page;
  const auto has_nul = [](const std::optional<std::string>& f) {
    return f.has_value() && f->find('\0') != std::string::npos;
  };
  if (has_nul(query.key_id) || has_nul(query.actor)) return page;  // matches nothing stored
  PgParams p;
  int n = 0;
  p.BindInt(++n, static_cast<std::int64_t>(query.after));
  std::string sql =
      "SELECT sequence, at_us, type, actor, key_id, owner, fields, version, webhook_url "
      "FROM $S.audit "
      "WHERE sequence > $1";
  if (query.key_id.has_value()) {
    p.BindText(++n, *query.key_id);
    absl::StrAppend(&sql, " AND key_id = $", n);
  }
  if (query.actor.has_value()) {
    p.BindText(++n, *query.actor);
    absl::StrAppend(&sql, " AND actor = $", n);
  }
  if (query.since.has_value()) {
    p.BindInt(++n, internal::TimeToMicros(*query.since));
    absl::StrAppend(&sql, " AND at_us >= $", n);
  }
  if (query.until.has_value()) {
    p.BindInt(++n, internal::TimeToMicros(*query.until));
    absl::StrAppend(&sql, " AND at_us < $", n);
  }
  p.BindInt(++n, static_cast<std::int64_t>(query.limit) + 1);
  absl::StrAppend(&sql, " ORDER BY sequence LIMIT $", n);
  absl::StatusOr<PgResult> r = impl_->Query(impl_->Sql(sql), p);
  if (!r.ok()) return r.status();
  for (int i = 0; i < r->rows(); ++i) {
    if (page.events.size() == query.limit) {
      page.more = true;
      break;
    }
    const PgResult::Row row = r->row(i);
    const auto corrupt = [&](std::string_view column) {
      return absl::DataLossError(absl::StrCat(impl_->described, ": audit entry #", row.Int(0),
                                              ": corrupt row (column ", std::string(column), ")"));
    };
    Event e;
    if (row.Int(0) <= 0) return corrupt("sequence");
    e.sequence = static_cast<std::uint64_t>(row.Int(0));
    e.at = internal::MicrosToTime(row.Int(1));
    const std::int64_t type = row.Int(2);
    if (type < static_cast<int>(EventType::kCreated) ||
        type > static_cast<int>(EventType::kRevealed)) {
      return corrupt("type");
    }
    e.type = static_cast<EventType>(type);
    e.actor = std::string(row.Text(3));
    e.key_id = std::string(row.Text(4));
    e.owner = std::string(row.Text(5));
    if (!internal::DecodeJsonStringArray(row.Text(6), &e.changed_fields)) return corrupt("fields");
    if (row.Int(7) < 0) return corrupt("version");
    e.version = static_cast<std::uint64_t>(row.Int(7));
    e.webhook_url = std::string(row.Text(8));
    page.next_after = e.sequence;
    page.events.push_back(std::move(e));
  }
  return page;
}

absl::StatusOr<std::uint64_t> PostgresKeyStore::AuditCursor(std::string_view consumer) {
  if (absl::Status s = ValidateAuditConsumer(consumer); !s.ok()) return s;
  PgParams p;
  p.BindText(1, consumer);
  absl::StatusOr<PgResult> r =
      impl_->Query(impl_->Sql("SELECT sequence FROM $S.audit_cursors WHERE consumer = $1"), p);
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return 0;
  return static_cast<std::uint64_t>(std::max<std::int64_t>(0, r->row(0).Int(0)));
}

absl::StatusOr<std::unique_ptr<Subscription>> PostgresKeyStore::Subscribe(
    std::function<void()> on_change) {
  {
    std::lock_guard<std::mutex> lock(impl_->listener_mu);
    if (impl_->listener == nullptr) {
      internal::ListenerConfig config;
      config.url = impl_->options.url;
      config.setup = impl_->setup;
      config.described = impl_->described;
      config.channel = impl_->options.listen ? impl_->channel : std::string();
      config.connect_timeout = impl_->options.call_timeout;
      config.poll_interval = impl_->options.poll_interval;
      config.backoff = impl_->options.reconnect_backoff;
      config.backoff_max = impl_->options.reconnect_backoff_max;
      config.on_status = impl_->options.on_listener_status;
      impl_->listener = std::make_unique<internal::Listener>(std::move(config), impl_->notifier,
                                                             impl_->listener_counters);
    }
  }
  return impl_->notifier->Subscribe(std::move(on_change));
}

absl::Status PostgresKeyStore::AwaitSubscribers() {
  impl_->Notify();
  return absl::OkStatus();
}

absl::StatusOr<std::uint64_t> PostgresKeyStore::Count() {
  absl::StatusOr<PgResult> r = impl_->Query(impl_->Sql("SELECT count(*) FROM $S.keys"), PgParams());
  if (!r.ok()) return r.status();
  return static_cast<std::uint64_t>(r->row(0).Int(0));
}

}  // namespace keygate

namespace keygate::internal {

void PostgresTestPeer::SetBeforeCommit(PostgresKeyStore& store, std::function<void()> hook) {
  store.impl_->before_commit = std::move(hook);
}

int PostgresTestPeer::ListenerBackendPid(const PostgresKeyStore& store) {
  return store.impl_->listener_counters->backend_pid.load(std::memory_order_relaxed);
}

}  // namespace keygate::internal
