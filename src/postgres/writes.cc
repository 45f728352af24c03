// PostgresKeyStore's writes (keygate/postgres/postgres_key_store.h).
//
// Every write is one transaction: the statement that writes the key's row also takes the next
// sequence from the counter row (locking it to COMMIT: writers commit in sequence order) and
// stores it on the row (a deletion: on its tombstone); then the digests; then one statement
// (Impl::log_sql) records the audit entry and sends NOTIFY. After COMMIT the writer runs
// this process's subscribers itself (ChangeNotifier::Notify), so a revoke returns only once the
// local verifiers have it. Other processes learn of it from the NOTIFY, or from the poll.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "internal/json_collections.h"
#include "internal/key_label.h"
#include "internal/record_columns.h"
#include "keygate/audit.h"
#include "keygate/postgres/postgres_key_store.h"
#include "postgres/pg_conn.h"
#include "postgres/store_impl.h"

namespace keygate {
namespace {

using internal::KeyLabel;
using internal::PgConn;
using internal::PgParams;
using internal::PgResult;

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

// The distinct runs of three characters of a batch's names, for name_trigrams (schema.cc), cut
// here only where this process and the database count characters alike: a UTF8 database (a
// client_encoding other than the database's would cut a single-byte encoding's characters
// differently). Elsewhere the trigger cuts them.
class NameTrigrams {
 public:
  explicit NameTrigrams(bool utf8) : utf8_(utf8) {}
  bool here() const { return utf8_; }
  void Add(std::string_view name) {
    if (!here()) return;
    const std::vector<std::string_view> chars = internal::DbChars(name, utf8_);
    for (std::size_t i = 0; i + 3 <= chars.size(); ++i) {
      const std::size_t begin = static_cast<std::size_t>(chars[i].data() - name.data());
      const std::size_t end =
          static_cast<std::size_t>(chars[i + 2].data() - name.data()) + chars[i + 2].size();
      const absl::string_view run(name.data() + begin, end - begin);
      if (!runs_.contains(run)) runs_.emplace(run);
    }
  }
  std::string ArrayLiteral() const {
    return internal::TextArrayLiteral(std::vector<std::string>(runs_.begin(), runs_.end()));
  }

 private:
  bool utf8_;
  absl::flat_hash_set<std::string> runs_;
};

}  // namespace

absl::Status PostgresKeyStore::Insert(const KeyRecord& record, const AuditNote& note) {
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kInsert); !s.ok()) return s;
  if (absl::Status s = internal::CheckRecordShape(record); !s.ok()) return s;
  Impl& m = *impl_;
  const absl::Time deadline = m.Deadline();
  absl::Status s = m.InTransaction(deadline, [&](PgConn& c) -> absl::Status {
    PgParams p;
    internal::BindRecordColumns(p, record, 1, 25);
    p.BindText(24, internal::ToLowerAscii(record.name));
    absl::StatusOr<PgResult> written = c.Exec(m.insert_key_sql, p, deadline);
    if (!written.ok()) return m.Conflict(written.status(), record);
    if (absl::Status d = m.InsertDigests(c, record, deadline); !d.ok()) return d;
    return m.AppendLog(c, note, record.id, record.owner, 1, record.webhook_url, *written, deadline);
  });
  if (!s.ok()) return s;
  m.Notify();
  return absl::OkStatus();
}

absl::StatusOr<KeyRecord> PostgresKeyStore::Update(const KeyRecord& record, const AuditNote& note) {
  if (absl::Status s = internal::CheckUpdateShape(record); !s.ok()) return s;
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kUpdate); !s.ok()) return s;
  Impl& m = *impl_;
  if (record.id.find('\0') != std::string::npos) return m.NotFound(record.id);  // text cannot
  const absl::Time deadline = m.Deadline();
  KeyRecord stored = record;
  absl::Status s = m.InTransaction(deadline, [&](PgConn& c) -> absl::Status {
    absl::StatusOr<std::optional<Impl::Located>> loc = m.Lock(c, record.id, deadline);
    if (!loc.ok()) return loc.status();
    if (!loc->has_value()) return m.NotFound(record.id);
    const Impl::Located& l = **loc;
    if (l.version != record.version) return m.VersionConflict(record.id, record.version, l.version);
    PgParams p;
    internal::BindRecordColumns(p, record, 1, 25);
    p.BindText(24, internal::ToLowerAscii(record.name));
    absl::StatusOr<PgResult> written = c.Exec(m.update_key_sql, p, deadline);
    if (!written.ok()) return m.Conflict(written.status(), record);
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
    return m.AppendLog(c, note, record.id, record.owner, stored.version, record.webhook_url,
                       *written, deadline);
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
  if (id.find('\0') != std::string_view::npos) return m.NotFound(id);  // text cannot hold it
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
    absl::StatusOr<PgResult> written = c.Exec(m.delete_key_sql, p, deadline);
    if (!written.ok()) return written.status();
    return m.AppendLog(c, note, id, l.owner, 0, l.webhook_url, *written, deadline);
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
    // An id text cannot hold names no stored key: skipped, as missing keys are.
    if (u.key_id.find('\0') != std::string::npos) continue;
    latest.emplace_back(u.key_id, internal::TimeToMicros(u.last_used));
  }
  if (latest.empty()) return absl::OkStatus();
  // In id order, which is also the order the rows are locked in (the plan walks the array):
  // servers flushing the same keys at once cannot deadlock.
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
  {
    std::vector<std::tuple<std::string_view, std::string_view, const KeyRecord*>> personal;
    for (const KeyRecord* r : order) {
      if (r->kind == KeyKind::kPersonal && r->state == KeyState::kActive) {
        personal.emplace_back(r->owner, r->environment, r);
      }
    }
    std::sort(personal.begin(), personal.end());
    for (std::size_t i = 1; i < personal.size(); ++i) {
      if (std::get<0>(personal[i]) == std::get<0>(personal[i - 1]) &&
          std::get<1>(personal[i]) == std::get<1>(personal[i - 1])) {
        const KeyRecord& r = *std::get<2>(personal[i]);
        return absl::AlreadyExistsError(absl::StrCat(
            KeyLabel(r.id), ": owner '", r.owner,
            "' already has an active personal key in environment '", r.environment, "'"));
      }
    }
  }
  std::string data;
  data.reserve(records.size() * 400);
  NameTrigrams trigrams(impl_->utf8);
  for (const KeyRecord* r : order) {
    CopyRow row(&data);
    internal::BindRecordColumns(row, *r, 1, 25);
    const std::string lower = internal::ToLowerAscii(r->name);
    trigrams.Add(lower);
    row.BindText(24, lower);
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
            m.Sql(absl::StrCat(
                "SET LOCAL statement_timeout = ", std::max<std::int64_t>(1, ms),
                "; SET LOCAL jit = off; ",
                trigrams.here() ? "SET LOCAL keygate.name_trigrams_written = on; " : "",
                "CREATE TEMP TABLE keygate_staging "
                "(LIKE $S.keys INCLUDING DEFAULTS) ON COMMIT DROP; "
                "ALTER TABLE keygate_staging DROP COLUMN sequence")),
            deadline);
        !st.ok()) {
      return st;
    }
    // In the order CopyRow appends them (BindRecordColumns, then the lowered name and version).
    static constexpr char kStagedColumns[] =
        "id, name, description, owner, kind, environment, scopes, state, created_us, updated_us, "
        "expires_us, last_used_us, rate_limit_rate, rate_limit_period_us, rate_limit_burst, "
        "webhook_url, accounts, metadata, digest, hint, previous_digest, previous_hint, "
        "previous_valid_until_us, sealed_token, sealed_webhook_secret, name_lower, version";
    if (absl::Status st = c.CopyIn(
            absl::StrCat("COPY keygate_staging (", kStagedColumns, ") FROM STDIN"), data, deadline);
        !st.ok()) {
      return st;
    }
    // Statistics of the staging table: without them the planner takes it for millions of rows.
    if (absl::Status st = c.ExecScript("ANALYZE keygate_staging", deadline); !st.ok()) return st;
    // Conflicts with stored keys, named by id (the constraint errors below would not say which).
    struct Probe {
      const char* sql;
      const char* what;
    };
    const Probe probes[] = {
        {"SELECT min(s.id) FROM keygate_staging s WHERE EXISTS "
         "(SELECT 1 FROM $S.keys k WHERE k.id = s.id) HAVING count(*) > 0",
         "already exists"},
        {"SELECT min(s.id) FROM keygate_staging s WHERE EXISTS "
         "(SELECT 1 FROM $S.digests d WHERE d.digest = s.digest) OR EXISTS "
         "(SELECT 1 FROM $S.digests d WHERE d.digest = s.previous_digest) HAVING count(*) > 0",
         "digest already in use by another key"},
        {"SELECT min(s.id) FROM keygate_staging s WHERE s.kind = 1 AND s.state = 1 AND EXISTS "
         "(SELECT 1 FROM $S.keys k WHERE k.owner = s.owner AND k.environment = s.environment "
         "AND k.kind = 1 AND k.state = 1) HAVING count(*) > 0",
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
    p.BindText(7, trigrams.ArrayLiteral());
    // One statement: the sequences (the counter locked to COMMIT, as every write), the keys
    // with their sequences in id order (columns named: a column a migration added comes after
    // `sequence` in the table), tombstones of reused ids dropped, digests, audit entries, the
    // names' runs of three characters (name_trigrams, schema.cc) and the NOTIFY.
    absl::StatusOr<PgResult> r = c.Exec(
        m.Sql(absl::StrCat(
            "WITH s AS (UPDATE $S.sequence_counter SET last = last + $1 "
            "  RETURNING last - $1 AS base), "
            "k AS (INSERT INTO $S.keys (",
            kStagedColumns, ", sequence) SELECT ", kStagedColumns,
            ", s.base + row_number() OVER (ORDER BY id) "
            "  FROM keygate_staging, s RETURNING id, owner, sequence, webhook_url), "
            "t AS (DELETE FROM $S.changes c USING keygate_staging st WHERE c.key_id = st.id), "
            "d AS (INSERT INTO $S.digests (digest, key_id) "
            "  SELECT digest, id FROM keygate_staging UNION ALL "
            "  SELECT previous_digest, id FROM keygate_staging "
            "  WHERE previous_digest IS NOT NULL AND previous_digest <> digest), "
            "a AS (INSERT INTO $S.audit (sequence, at_us, type, actor, key_id, owner, fields, "
            "  version, webhook_url) SELECT sequence, $2, $3, $4, id, owner, $5, 1, webhook_url "
            "  FROM k), "
            "n AS (INSERT INTO $S.name_trigrams (t) SELECT unnest($7::text[]) "
            "  ON CONFLICT DO NOTHING) "
            "SELECT s.base FROM s, pg_notify($6, '') AS x")),
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
