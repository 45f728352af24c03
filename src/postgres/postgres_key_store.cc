// The PostgreSQL KeyStore (keygate/postgres/postgres_key_store.h).
//
// Every write is one transaction: the key's rows, then one statement (kLogSql) that takes the
// next sequence from the counter row (locking it to commit: writers commit in sequence order),
// records the change and the audit entry, and sends NOTIFY; after COMMIT the writer runs this
// process's subscribers itself (ChangeNotifier::Notify), so a revoke returns only once the local
// verifiers have it. Other processes learn of it from the NOTIFY, or from the poll.

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
#include "postgres/test_peer.h"

namespace keygate {
namespace {

using internal::KeyLabel;
using internal::PgConn;
using internal::PgParams;
using internal::PgPool;
using internal::PgResult;

constexpr char kCursorPrefix[] = "p1.";
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

// A PostgreSQL array literal of text elements.
std::string TextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.push_back('"');
    for (const char c : values[i]) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

// COPY text format: one field.
void AppendCopyText(std::string* out, std::string_view v) {
  for (const char c : v) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      default:
        out->push_back(c);
    }
  }
}

// Builds one COPY text row from the record binder's calls (BindRecordColumns).
class CopyRow {
 public:
  explicit CopyRow(std::string* out) : out_(out) {}
  void BindText(int, std::string_view v) {
    Sep();
    AppendCopyText(out_, v);
  }
  void BindInt(int, std::int64_t v) {
    Sep();
    absl::StrAppend(out_, v);
  }
  void BindNull(int) {
    Sep();
    out_->append("\\N");
  }
  void BindBlob(int, const void* data, std::size_t size) {
    Sep();
    out_->append("\\\\x");
    out_->append(absl::BytesToHexString(absl::string_view(static_cast<const char*>(data), size)));
  }
  void End() { out_->push_back('\n'); }

 private:
  void Sep() {
    if (!first_) out_->push_back('\t');
    first_ = false;
  }
  std::string* out_;
  bool first_ = true;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct PostgresKeyStore::Impl {
  PostgresOptions options;
  std::string described;
  std::string schema;   // quoted
  std::string channel;  // the NOTIFY channel
  std::string setup;    // per-connection SET statements
  std::unique_ptr<PgPool> pool;
  std::shared_ptr<ChangeNotifier> notifier = std::make_shared<ChangeNotifier>();
  std::shared_ptr<internal::ListenerCounters> listener_counters =
      std::make_shared<internal::ListenerCounters>();
  std::mutex listener_mu;
  std::unique_ptr<internal::Listener> listener;  // guarded by listener_mu; from Subscribe
  std::atomic<std::uint64_t> deadlines{0};
  std::atomic<std::uint64_t> corrupt_rows{0};

  // SQL with $S replaced by the schema.
  std::string Sql(std::string_view text) const {
    return absl::StrReplaceAll(absl::string_view(text.data(), text.size()), {{"$S", schema}});
  }
  std::string insert_key_sql, update_key_sql, log_sql, get_sql, find_sql, changes_sql;

  absl::Time Deadline() const { return absl::Now() + options.call_timeout; }

  absl::Status Counted(absl::Status s) {
    if (s.code() == absl::StatusCode::kUnavailable &&
        s.message().find("deadline exceeded") != absl::string_view::npos) {
      deadlines.fetch_add(1, std::memory_order_relaxed);
    }
    return s;
  }

  // Runs `body` in a transaction on a pooled connection: COMMIT when it succeeds, ROLLBACK
  // otherwise (a broken connection is dropped instead).
  absl::Status InTransaction(absl::Time deadline,
                             const std::function<absl::Status(PgConn&)>& body) {
    absl::StatusOr<PgPool::Lease> lease = pool->Acquire(deadline);
    if (!lease.ok()) return Counted(lease.status());
    PgConn& c = **lease;
    if (absl::Status s = c.ExecScript("BEGIN", deadline); !s.ok()) return Counted(s);
    absl::Status s = body(c);
    if (s.ok()) return Counted(c.ExecScript("COMMIT", deadline));
    if (!c.broken()) {
      if (!c.ExecScript("ROLLBACK", deadline).ok()) c.set_broken();
    }
    return Counted(s);
  }

  absl::StatusOr<PgResult> Query(const std::string& sql, const PgParams& params) {
    const absl::Time deadline = Deadline();
    absl::StatusOr<PgPool::Lease> lease = pool->Acquire(deadline);
    if (!lease.ok()) return Counted(lease.status());
    absl::StatusOr<PgResult> r = (*lease)->Exec(sql, params, deadline);
    if (!r.ok()) return Counted(r.status());
    return r;
  }

  absl::Status NotFound(std::string_view id) const {
    return absl::NotFoundError(absl::StrCat(KeyLabel(id), ": not found"));
  }
  absl::Status VersionConflict(std::string_view id, std::uint64_t expected,
                               std::uint64_t stored) const {
    return absl::AbortedError(absl::StrCat(KeyLabel(id), ": version conflict (expected ", expected,
                                           ", stored ", stored, ")"));
  }
  // A unique violation (its message: the constraint) as the contract's kAlreadyExists.
  absl::Status Conflict(const absl::Status& s, const KeyRecord& r) const {
    if (s.code() != absl::StatusCode::kAlreadyExists) return s;
    const std::string_view constraint(s.message().data(), s.message().size());
    if (constraint == "keys_one_active_personal") {
      return absl::AlreadyExistsError(absl::StrCat(KeyLabel(r.id), ": owner '", r.owner,
                                                   "' already has an active personal key in "
                                                   "environment '",
                                                   r.environment, "'"));
    }
    if (constraint == "digests_pkey") {
      return absl::AlreadyExistsError(
          absl::StrCat(KeyLabel(r.id), ": digest already in use by another key"));
    }
    return absl::AlreadyExistsError(absl::StrCat(KeyLabel(r.id), ": already exists"));
  }

  absl::StatusOr<KeyRecord> Decode(const PgResult::Row& row, int first) const {
    return internal::DecodeRecordColumns(row, first, described);
  }

  // The digests of `r` into the digests table.
  absl::Status InsertDigests(PgConn& c, const KeyRecord& r, absl::Time deadline) {
    PgParams p;
    p.BindText(1, r.id);
    p.BindBlob(2, r.digest.data(), r.digest.size());
    std::string sql = Sql("INSERT INTO $S.digests (digest, key_id) VALUES ($2, $1)");
    if (r.previous.has_value() && r.previous->digest != r.digest) {
      p.BindBlob(3, r.previous->digest.data(), r.previous->digest.size());
      sql += ", ($3, $1)";
    }
    absl::StatusOr<PgResult> res = c.Exec(sql, p, deadline);
    return res.ok() ? absl::OkStatus() : Conflict(res.status(), r);
  }

  // Appends the change and the audit entry of a write (kLogSql); returns the sequence.
  absl::StatusOr<std::uint64_t> AppendLog(PgConn& c, const AuditNote& note, std::string_view id,
                                          std::string_view owner, std::uint64_t version,
                                          absl::Time deadline) {
    const Event e = MakeAuditEvent(note, 0, id, owner, version);
    PgParams p;
    p.BindText(1, id);
    p.BindInt(2, internal::TimeToMicros(e.at));
    p.BindInt(3, static_cast<std::int64_t>(e.type));
    p.BindText(4, e.actor);
    p.BindText(5, e.owner);
    p.BindText(6, internal::EncodeJsonStringArray(e.changed_fields));
    p.BindInt(7, static_cast<std::int64_t>(e.version));
    p.BindText(8, channel);
    absl::StatusOr<PgResult> r = c.Exec(log_sql, p, deadline);
    if (!r.ok()) return r.status();
    if (r->rows() != 1) return absl::InternalError(absl::StrCat(described, ": no sequence"));
    return static_cast<std::uint64_t>(r->row(0).Int(0));
  }

  struct Located {
    std::uint64_t version = 0;
    std::string owner;
    std::string digest;
    std::string previous_digest;
  };
  // The key's row, locked to the end of the transaction.
  absl::StatusOr<std::optional<Located>> Lock(PgConn& c, std::string_view id, absl::Time deadline) {
    PgParams p;
    p.BindText(1, id);
    absl::StatusOr<PgResult> r =
        c.Exec(Sql("SELECT version, owner, digest, previous_digest FROM $S.keys WHERE id = $1 FOR "
                   "UPDATE"),
               p, deadline);
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return std::optional<Located>();
    const PgResult::Row row = r->row(0);
    Located l;
    l.version = static_cast<std::uint64_t>(row.Int(0));
    l.owner = std::string(row.Text(1));
    l.digest = std::string(row.Blob(2));
    if (!row.IsNull(3)) l.previous_digest = std::string(row.Blob(3));
    return std::optional<Located>(std::move(l));
  }

  void Notify() {
    // A callback may drop the last reference to this store: keep the notifier.
    const std::shared_ptr<ChangeNotifier> n = notifier;
    n->Notify();
  }
};

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
                             "; SET lock_timeout = ", timeout_ms, "; SET TIME ZONE 'UTC'");
  impl->pool =
      std::make_unique<PgPool>(options.url, impl->setup, impl->described, options.pool_size);
  impl->options = std::move(options);
  PostgresKeyStore::Impl& m = *impl;
  static const std::string kColumnNames =
      "id, name, description, owner, kind, environment, scopes, state, created_us, updated_us, "
      "expires_us, last_used_us, rate_limit_rate, rate_limit_period_us, rate_limit_burst, "
      "webhook_url, accounts, metadata, digest, hint, previous_digest, previous_hint, "
      "previous_valid_until_us";
  m.insert_key_sql = m.Sql(absl::StrCat(
      "INSERT INTO $S.keys (", kColumnNames,
      ", name_lower, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
      "$14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, 1)"));
  m.update_key_sql = m.Sql(
      "UPDATE $S.keys SET name = $2, description = $3, owner = $4, kind = $5, environment = $6, "
      "scopes = $7, state = $8, created_us = $9, updated_us = $10, expires_us = $11, "
      "last_used_us = $12, rate_limit_rate = $13, rate_limit_period_us = $14, "
      "rate_limit_burst = $15, webhook_url = $16, accounts = $17, metadata = $18, digest = $19, "
      "hint = $20, previous_digest = $21, previous_hint = $22, previous_valid_until_us = $23, "
      "name_lower = $24, version = version + 1 WHERE id = $1");
  // The counter row stays locked until COMMIT: the next writer's sequence is taken after this
  // one's commit, so sequences commit in order (schema.cc).
  m.log_sql = m.Sql(
      "WITH s AS (UPDATE $S.sequence_counter SET last = last + 1 RETURNING last), "
      "c AS (INSERT INTO $S.changes (key_id, sequence) SELECT $1, last FROM s "
      "ON CONFLICT (key_id) DO UPDATE SET sequence = excluded.sequence), "
      "a AS (INSERT INTO $S.audit (sequence, at_us, type, actor, key_id, owner, fields, version) "
      "SELECT last, $2, $3, $4, $1, $5, $6, $7 FROM s) "
      "SELECT s.last FROM s, pg_notify($8, '') AS n");
  m.get_sql =
      m.Sql(absl::StrCat("SELECT ", internal::kRecordColumns, " FROM $S.keys k WHERE k.id = $1"));
  m.find_sql = m.Sql(absl::StrCat("SELECT ", internal::kRecordColumns,
                                  " FROM $S.digests d JOIN $S.keys k ON k.id = d.key_id "
                                  "WHERE d.digest = $1"));
  m.changes_sql = m.Sql(absl::StrCat(
      "SELECT c.sequence, c.key_id, k.id IS NOT NULL, ", internal::kRecordColumns,
      " FROM $S.changes c LEFT JOIN $S.keys k ON k.id = c.key_id WHERE c.sequence > $1 "
      "ORDER BY c.sequence LIMIT $2"));
  {
    const absl::Time deadline = m.Deadline();
    absl::StatusOr<PgPool::Lease> lease = m.pool->Acquire(deadline);
    if (!lease.ok()) return lease.status();
    if (absl::Status s =
            internal::MigrateSchema(**lease, m.options.schema, schema_version, deadline);
        !s.ok()) {
      return s;
    }
  }
  return std::unique_ptr<PostgresKeyStore>(new PostgresKeyStore(std::move(impl)));
}

absl::Status PostgresKeyStore::Insert(const KeyRecord& record, const AuditNote& note) {
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kInsert); !s.ok()) return s;
  if (absl::Status s = internal::CheckRecordShape(record); !s.ok()) return s;
  Impl& m = *impl_;
  const absl::Time deadline = m.Deadline();
  absl::Status s = m.InTransaction(deadline, [&](PgConn& c) -> absl::Status {
    PgParams p;
    internal::BindRecordColumns(p, record, 1);
    p.BindText(24, internal::ToLowerAscii(record.name));
    if (absl::StatusOr<PgResult> r = c.Exec(m.insert_key_sql, p, deadline); !r.ok()) {
      return m.Conflict(r.status(), record);
    }
    if (absl::Status d = m.InsertDigests(c, record, deadline); !d.ok()) return d;
    return m.AppendLog(c, note, record.id, record.owner, 1, deadline).status();
  });
  if (!s.ok()) return s;
  m.Notify();
  return absl::OkStatus();
}

absl::StatusOr<KeyRecord> PostgresKeyStore::Get(std::string_view id) {
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

absl::StatusOr<KeyRecord> PostgresKeyStore::Update(const KeyRecord& record, const AuditNote& note) {
  if (absl::Status s = internal::CheckUpdateShape(record); !s.ok()) return s;
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kUpdate); !s.ok()) return s;
  Impl& m = *impl_;
  const absl::Time deadline = m.Deadline();
  KeyRecord stored = record;
  absl::Status s = m.InTransaction(deadline, [&](PgConn& c) -> absl::Status {
    absl::StatusOr<std::optional<Impl::Located>> loc = m.Lock(c, record.id, deadline);
    if (!loc.ok()) return loc.status();
    if (!loc->has_value()) return m.NotFound(record.id);
    const Impl::Located& l = **loc;
    if (l.version != record.version) return m.VersionConflict(record.id, record.version, l.version);
    PgParams p;
    internal::BindRecordColumns(p, record, 1);
    p.BindText(24, internal::ToLowerAscii(record.name));
    if (absl::StatusOr<PgResult> r = c.Exec(m.update_key_sql, p, deadline); !r.ok()) {
      return m.Conflict(r.status(), record);
    }
    const std::string_view digest(reinterpret_cast<const char*>(record.digest.data()),
                                  record.digest.size());
    const std::string_view previous =
        record.previous.has_value()
            ? std::string_view(reinterpret_cast<const char*>(record.previous->digest.data()),
                               record.previous->digest.size())
            : std::string_view();
    if (digest != l.digest || previous != l.previous_digest) {
      PgParams d;
      d.BindText(1, record.id);
      if (absl::StatusOr<PgResult> r =
              c.Exec(m.Sql("DELETE FROM $S.digests WHERE key_id = $1"), d, deadline);
          !r.ok()) {
        return r.status();
      }
      if (absl::Status st = m.InsertDigests(c, record, deadline); !st.ok()) return st;
    }
    stored.version = l.version + 1;
    return m.AppendLog(c, note, record.id, record.owner, stored.version, deadline).status();
  });
  if (!s.ok()) return s;
  m.Notify();
  return stored;
}

absl::Status PostgresKeyStore::Delete(std::string_view id,
                                      std::optional<std::uint64_t> expected_version,
                                      const AuditNote& note) {
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kDelete); !s.ok()) return s;
  Impl& m = *impl_;
  const absl::Time deadline = m.Deadline();
  absl::Status s = m.InTransaction(deadline, [&](PgConn& c) -> absl::Status {
    absl::StatusOr<std::optional<Impl::Located>> loc = m.Lock(c, id, deadline);
    if (!loc.ok()) return loc.status();
    if (!loc->has_value()) return m.NotFound(id);
    const Impl::Located& l = **loc;
    if (expected_version.has_value() && *expected_version != l.version) {
      return m.VersionConflict(id, *expected_version, l.version);
    }
    PgParams p;
    p.BindText(1, id);
    if (absl::StatusOr<PgResult> r =
            c.Exec(m.Sql("WITH d AS (DELETE FROM $S.digests WHERE key_id = $1) "
                         "DELETE FROM $S.keys WHERE id = $1"),
                   p, deadline);
        !r.ok()) {
      return r.status();
    }
    return m.AppendLog(c, note, id, l.owner, 0, deadline).status();
  });
  if (!s.ok()) return s;
  m.Notify();
  return absl::OkStatus();
}

absl::Status PostgresKeyStore::TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                             absl::Duration min_advance) {
  if (updates.empty()) return absl::OkStatus();
  // The latest time per key (one row per key in the join), in id order.
  std::vector<std::pair<std::string, std::int64_t>> latest;
  latest.reserve(updates.size());
  for (const LastUsedUpdate& u : updates) {
    latest.emplace_back(u.key_id, internal::TimeToMicros(u.last_used));
  }
  std::sort(latest.begin(), latest.end());
  std::vector<std::string> ids;
  std::vector<std::string> times;
  for (std::size_t i = 0; i < latest.size(); ++i) {
    if (i + 1 < latest.size() && latest[i + 1].first == latest[i].first) continue;
    ids.push_back(latest[i].first);
    times.push_back(absl::StrCat(latest[i].second));
  }
  PgParams p;
  p.BindText(1, TextArray(ids));
  p.BindText(2, TextArray(times));
  p.BindInt(3, std::max<std::int64_t>(0, absl::ToInt64Microseconds(min_advance)));
  // Forward only, and only by at least min_advance; no version, no change row: usage is not
  // verification state (key_store.h).
  return impl_
      ->Query(impl_->Sql("UPDATE $S.keys k SET last_used_us = u.t "
                         "FROM unnest($1::text[], $2::bigint[]) AS u(id, t) "
                         "WHERE k.id = u.id AND (k.last_used_us IS NULL OR "
                         "(u.t > k.last_used_us AND u.t - k.last_used_us >= $3))"),
              p)
      .status();
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
  PgParams p;
  int n = 0;
  p.BindText(++n, after);
  std::string sql =
      absl::StrCat("SELECT ", internal::kRecordColumns, " FROM $S.keys k WHERE k.id > $1");
  if (f.owner.has_value()) {
    p.BindText(++n, *f.owner);
    absl::StrAppend(&sql, " AND k.owner = $", n);
  }
  if (f.environment.has_value()) {
    p.BindText(++n, *f.environment);
    absl::StrAppend(&sql, " AND k.environment = $", n);
  }
  if (f.state.has_value()) {
    p.BindInt(++n, static_cast<std::int64_t>(*f.state));
    absl::StrAppend(&sql, " AND k.state = $", n);
  }
  if (f.kind.has_value()) {
    p.BindInt(++n, static_cast<std::int64_t>(*f.kind));
    absl::StrAppend(&sql, " AND k.kind = $", n);
  }
  if (!f.name_contains.empty()) {
    // A literal substring: LIKE's wildcards and its escape character escaped.
    std::string pattern = "%";
    for (const char ch : internal::ToLowerAscii(f.name_contains)) {
      if (ch == '%' || ch == '_' || ch == '\\') pattern.push_back('\\');
      pattern.push_back(ch);
    }
    pattern.push_back('%');
    p.BindText(++n, pattern);
    absl::StrAppend(&sql, " AND k.name_lower LIKE $", n, " ESCAPE '\\'");
  }
  p.BindInt(++n, static_cast<std::int64_t>(options.limit) + 1);
  absl::StrAppend(&sql, " ORDER BY k.id LIMIT $", n);
  absl::StatusOr<PgResult> r = impl_->Query(impl_->Sql(sql), p);
  if (!r.ok()) return r.status();
  ListPage page;
  const int rows = std::min(r->rows(), static_cast<int>(options.limit));
  for (int i = 0; i < rows; ++i) {
    absl::StatusOr<KeyRecord> k = impl_->Decode(r->row(i), 0);
    if (!k.ok()) return k.status();
    page.keys.push_back(*std::move(k));
  }
  if (r->rows() > rows && !page.keys.empty()) {
    page.next_cursor = absl::StrCat(kCursorPrefix, absl::BytesToHexString(page.keys.back().id));
  }
  return page;
}

absl::StatusOr<ChangeBatch> PostgresKeyStore::ChangesSince(std::uint64_t after, std::size_t limit) {
  ChangeBatch batch;
  batch.next_sequence = after;
  if (after >= static_cast<std::uint64_t>(INT64_MAX)) return batch;
  const std::size_t capped = std::min<std::size_t>(limit, 1'000'000);
  PgParams p;
  p.BindInt(1, static_cast<std::int64_t>(after));
  p.BindInt(2, static_cast<std::int64_t>(capped) + 1);
  absl::StatusOr<PgResult> r = impl_->Query(impl_->changes_sql, p);
  if (!r.ok()) return r.status();
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
  PgParams p;
  int n = 0;
  p.BindInt(++n, static_cast<std::int64_t>(query.after));
  std::string sql =
      "SELECT sequence, at_us, type, actor, key_id, owner, fields, version FROM $S.audit "
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
        type > static_cast<int>(EventType::kRolled)) {
      return corrupt("type");
    }
    e.type = static_cast<EventType>(type);
    e.actor = std::string(row.Text(3));
    e.key_id = std::string(row.Text(4));
    e.owner = std::string(row.Text(5));
    if (!internal::DecodeJsonStringArray(row.Text(6), &e.changed_fields)) return corrupt("fields");
    if (row.Int(7) < 0) return corrupt("version");
    e.version = static_cast<std::uint64_t>(row.Int(7));
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

absl::Status PostgresKeyStore::AckAudit(std::string_view consumer, std::uint64_t sequence) {
  if (absl::Status s = ValidateAuditConsumer(consumer); !s.ok()) return s;
  absl::StatusOr<std::uint64_t> last = LastSequence();
  if (!last.ok()) return last.status();
  if (sequence > *last) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence: ", sequence, " is beyond the last one (", *last, ")"));
  }
  PgParams p;
  p.BindText(1, consumer);
  p.BindInt(2, static_cast<std::int64_t>(sequence));
  return impl_
      ->Query(impl_->Sql("INSERT INTO $S.audit_cursors (consumer, sequence) VALUES ($1, $2) "
                         "ON CONFLICT (consumer) DO UPDATE SET sequence = "
                         "greatest($S.audit_cursors.sequence, excluded.sequence)"),
              p)
      .status();
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
      config.channel = impl_->channel;
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

absl::Status PostgresKeyStore::InsertBatch(absl::Span<const KeyRecord> records,
                                           const AuditNote& note) {
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kInsert); !s.ok()) return s;
  if (records.empty()) return absl::OkStatus();
  for (const KeyRecord& r : records) {
    if (absl::Status s = internal::CheckRecordShape(r); !s.ok()) return s;
  }
  // Conflicts inside the batch, by id and digest, named before anything is sent.
  std::vector<const KeyRecord*> order;
  order.reserve(records.size());
  for (const KeyRecord& r : records) order.push_back(&r);
  std::sort(order.begin(), order.end(),
            [](const KeyRecord* a, const KeyRecord* b) { return a->id < b->id; });
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (order[i]->id == order[i - 1]->id) {
      return absl::AlreadyExistsError(absl::StrCat(KeyLabel(order[i]->id), ": already exists"));
    }
  }
  {
    std::vector<std::pair<Digest, const KeyRecord*>> digests;
    for (const KeyRecord* r : order) {
      digests.emplace_back(r->digest, r);
      if (r->previous.has_value() && r->previous->digest != r->digest) {
        digests.emplace_back(r->previous->digest, r);
      }
    }
    std::sort(digests.begin(), digests.end());
    for (std::size_t i = 1; i < digests.size(); ++i) {
      if (digests[i].first == digests[i - 1].first) {
        return absl::AlreadyExistsError(absl::StrCat(KeyLabel(digests[i].second->id),
                                                     ": digest already in use by another key"));
      }
    }
  }
  std::string data;
  data.reserve(records.size() * 400);
  for (const KeyRecord* r : order) {
    CopyRow row(&data);
    internal::BindRecordColumns(row, *r, 1);
    row.BindText(24, internal::ToLowerAscii(r->name));
    row.BindInt(25, 1);
    row.End();
  }
  Impl& m = *impl_;
  const auto chunks = static_cast<std::int64_t>(records.size() / 10'000 + 1);
  const absl::Time deadline = absl::Now() + m.options.call_timeout * chunks;
  const Event e = MakeAuditEvent(note, 0, "", "", 1);
  absl::Status s = m.InTransaction(deadline, [&](PgConn& c) -> absl::Status {
    const std::int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (absl::Status st = c.ExecScript(
            m.Sql(absl::StrCat("SET LOCAL statement_timeout = ", std::max<std::int64_t>(1, ms),
                               "; CREATE TEMP TABLE keygate_staging "
                               "(LIKE $S.keys INCLUDING DEFAULTS) ON COMMIT DROP")),
            deadline);
        !st.ok()) {
      return st;
    }
    if (absl::Status st = c.CopyIn(
            "COPY keygate_staging (id, name, description, owner, kind, environment, scopes, "
            "state, created_us, updated_us, expires_us, last_used_us, rate_limit_rate, "
            "rate_limit_period_us, rate_limit_burst, webhook_url, accounts, metadata, digest, "
            "hint, previous_digest, previous_hint, previous_valid_until_us, name_lower, version) "
            "FROM STDIN",
            data, deadline);
        !st.ok()) {
      return st;
    }
    // Conflicts with stored keys, named by id (the constraint errors below would not say which).
    struct Probe {
      const char* sql;
      const char* what;
    };
    const Probe probes[] = {
        {"SELECT s.id FROM keygate_staging s JOIN $S.keys k ON k.id = s.id ORDER BY s.id LIMIT 1",
         "already exists"},
        {"SELECT s.id FROM keygate_staging s JOIN $S.digests d "
         "ON d.digest = s.digest OR d.digest = s.previous_digest ORDER BY s.id LIMIT 1",
         "digest already in use by another key"},
        {"SELECT s.id FROM keygate_staging s JOIN $S.keys k ON k.owner = s.owner AND "
         "k.environment = s.environment AND k.kind = 1 AND k.state = 1 "
         "WHERE s.kind = 1 AND s.state = 1 ORDER BY s.id LIMIT 1",
         "owner already has an active personal key in its environment"},
    };
    for (const Probe& probe : probes) {
      absl::StatusOr<PgResult> r = c.Exec(m.Sql(probe.sql), deadline);
      if (!r.ok()) return r.status();
      if (r->rows() > 0) {
        return absl::AlreadyExistsError(
            absl::StrCat(KeyLabel(r->row(0).Text(0)), ": ", probe.what));
      }
    }
    PgParams p;
    p.BindInt(1, static_cast<std::int64_t>(records.size()));
    p.BindInt(2, internal::TimeToMicros(e.at));
    p.BindInt(3, static_cast<std::int64_t>(e.type));
    p.BindText(4, e.actor);
    p.BindText(5, internal::EncodeJsonStringArray(e.changed_fields));
    p.BindText(6, m.channel);
    // One statement: keys, digests, then the sequences in id order (the counter locked to
    // COMMIT, as every write), change rows, audit entries and the NOTIFY.
    absl::StatusOr<PgResult> r = c.Exec(
        m.Sql("WITH k AS (INSERT INTO $S.keys SELECT * FROM keygate_staging), "
              "d AS (INSERT INTO $S.digests (digest, key_id) "
              "  SELECT digest, id FROM keygate_staging UNION ALL "
              "  SELECT previous_digest, id FROM keygate_staging "
              "  WHERE previous_digest IS NOT NULL AND previous_digest <> digest), "
              "s AS (UPDATE $S.sequence_counter SET last = last + $1 RETURNING last - $1 AS base), "
              "n AS (SELECT st.id, st.owner, s.base + row_number() OVER (ORDER BY st.id) AS seq "
              "  FROM keygate_staging st, s), "
              "c AS (INSERT INTO $S.changes (key_id, sequence) SELECT id, seq FROM n "
              "  ON CONFLICT (key_id) DO UPDATE SET sequence = excluded.sequence), "
              "a AS (INSERT INTO $S.audit (sequence, at_us, type, actor, key_id, owner, fields, "
              "  version) SELECT seq, $2, $3, $4, id, owner, $5, 1 FROM n) "
              "SELECT s.base FROM s, pg_notify($6, '') AS x"),
        p, deadline);
    if (!r.ok()) {
      return r.status().code() == absl::StatusCode::kAlreadyExists
                 ? absl::AlreadyExistsError(absl::StrCat(
                       "a key of the batch conflicts with one written meanwhile (constraint ",
                       r.status().message(), ")"))
                 : r.status();
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  m.Notify();
  return absl::OkStatus();
}

}  // namespace keygate

namespace keygate::internal {

int PostgresTestPeer::ListenerBackendPid(const PostgresKeyStore& store) {
  return store.impl_->listener_counters->backend_pid.load(std::memory_order_relaxed);
}

}  // namespace keygate::internal
