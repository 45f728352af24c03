// The SQLite KeyStore (keygate/sqlite/sqlite_key_store.h).
//
// Concurrency: one connection, one mutex (see the header for why). Writes run
// in BEGIN IMMEDIATE transactions so a writer waits for another process's
// write lock (busy timeout) before it reads anything, instead of failing on a
// lock upgrade half-way. Subscribers are called by the writer itself after
// its commit (same process; or the writer waits for a callback round already
// running on another thread to cover its commit) or by a poller thread that
// watches PRAGMA data_version on its own connection (other processes); never
// under the store mutex.

#include "keygate/sqlite/sqlite_key_store.h"

#include <sqlite3.h>

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
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "internal/key_label.h"
#include "keygate/audit.h"
#include "sqlite/audit_rows.h"
#include "sqlite/change_log.h"
#include "sqlite/list_query.h"
#include "sqlite/notifier.h"
#include "sqlite/open.h"
#include "sqlite/record_row.h"
#include "sqlite/sqlite_db.h"

namespace keygate {
namespace {

using internal::BindRecord;
using internal::CheckFileTrust;
using internal::ConfigureAndMigrate;
using internal::CreateDatabase;
using internal::kRecordColumns;
using internal::NameKey;
using internal::Notifier;
using internal::OpenPath;
using internal::PrepareFile;
using internal::SqliteDb;
using internal::Statement;
using internal::ToLowerAscii;
using internal::WalSwitch;
using internal::WriteTransaction;

constexpr char kMemoryPath[] = ":memory:";

constexpr char kInsertKeySql[] =
    "INSERT INTO keys(pk, id, name, name_lower, description, owner, kind, environment, scopes, "
    "state, created_us, updated_us, expires_us, last_used_us, rate_limit_rate, "
    "rate_limit_period_us, rate_limit_burst, webhook_url, accounts, metadata, digest, hint, "
    "previous_digest, previous_hint, previous_valid_until_us, version, change_seq, sealed_token, "
    "sealed_webhook_secret) "
    "VALUES (?27, ?1, ?2, ?24, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
    "?18, ?19, ?20, ?21, ?22, ?23, ?25, ?26, ?28, ?29)";

constexpr char kUpdateKeySql[] =
    "UPDATE keys SET name = ?2, name_lower = ?24, description = ?3, owner = ?4, kind = ?5, "
    "environment = ?6, scopes = ?7, state = ?8, created_us = ?9, updated_us = ?10, "
    "expires_us = ?11, last_used_us = ?12, rate_limit_rate = ?13, rate_limit_period_us = ?14, "
    "rate_limit_burst = ?15, webhook_url = ?16, accounts = ?17, metadata = ?18, digest = ?19, "
    "hint = ?20, previous_digest = ?21, previous_hint = ?22, previous_valid_until_us = ?23, "
    "version = ?25, change_seq = ?26, sealed_token = ?28, sealed_webhook_secret = ?29 "
    "WHERE pk = ?27";

}  // namespace

// ---------------------------------------------------------------------------

struct SqliteKeyStore::Impl {
  SqliteOptions options;
  bool in_memory = false;
  std::vector<std::string> open_warnings;      // CheckFileTrust
  std::atomic<std::uint64_t> corrupt_rows{0};  // ChangesSince's undecodable rows
  std::mutex mu;
  std::unique_ptr<SqliteDb> db;  // guarded by mu
  std::shared_ptr<Notifier> notifier;

  // A stored key's row, as the write paths need it (Locate).
  struct Located {
    std::int64_t pk = 0;
    std::uint64_t version = 0;
    std::int64_t change_seq = 0;
    std::string digest;
    std::string previous_digest;
    std::string name_lower;
    std::string owner;
    std::string webhook_url;
  };

  // Decodes the kRecordColumns starting at column `o` (record_row.h).
  absl::StatusOr<KeyRecord> Decode(const Statement& s, int o) const {
    return internal::DecodeRecord(s, o, options.path);
  }

  absl::Status NotFound(std::string_view id) const {
    return absl::NotFoundError(absl::StrCat(internal::KeyLabel(id), ": not found"));
  }

  absl::Status InsertDigest(const KeyRecord& r, const Digest& d, std::int64_t pk, int slot) {
    absl::StatusOr<Statement> ins =
        db->Prepare("INSERT INTO digests(digest, key_pk, slot) VALUES (?1, ?2, ?3)");
    if (!ins.ok()) return ins.status();
    ins->BindBlob(1, d.data(), d.size());
    ins->BindInt(2, pk);
    ins->BindInt(3, slot);
    absl::Status s = ins->Run();
    if (!s.ok() && s.code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(
          absl::StrCat(internal::KeyLabel(r.id), ": digest already in use by another key"));
    }
    return s;
  }

  absl::Status InsertDigests(const KeyRecord& r, std::int64_t pk) {
    if (absl::Status s = InsertDigest(r, r.digest, pk, 0); !s.ok()) return s;
    if (r.previous.has_value() && r.previous->digest != r.digest) {
      return InsertDigest(r, r.previous->digest, pk, 1);
    }
    return absl::OkStatus();
  }

  // Removes the digests of the located key `l` (by value: the digests table
  // has no index by key, which would cost as much to maintain as the table).
  absl::Status DeleteDigests(const Located& l) {
    absl::StatusOr<Statement> del =
        db->Prepare("DELETE FROM digests WHERE digest IN (?1, ?2) AND key_pk = ?3");
    if (!del.ok()) return del.status();
    del->BindBlob(1, l.digest.data(), l.digest.size());
    if (l.previous_digest.empty()) {
      del->BindNull(2);
    } else {
      del->BindBlob(2, l.previous_digest.data(), l.previous_digest.size());
    }
    del->BindInt(3, l.pk);
    return del->Run();
  }

  // Refines a constraint failure on the keys table into the contract's
  // kAlreadyExists messages.
  absl::Status KeyConstraint(const absl::Status& s, const KeyRecord& r) const {
    if (s.code() != absl::StatusCode::kAlreadyExists) return s;
    const std::string_view msg(s.message().data(), s.message().size());
    if (msg.find("keys.owner") != std::string_view::npos) {
      return absl::AlreadyExistsError(absl::StrCat(internal::KeyLabel(r.id), ": owner '", r.owner,
                                                   "' already has an active personal key in "
                                                   "environment '",
                                                   r.environment, "'"));
    }
    if (msg.find("keys.id") != std::string_view::npos) {
      return absl::AlreadyExistsError(absl::StrCat(internal::KeyLabel(r.id), ": already exists"));
    }
    return s;
  }

  // Inserts `records` inside an open write transaction. Rows go in in id
  // order and digests in digest order, not in the caller's order: the two
  // random-keyed B-trees (keys.id, digests) are then updated page by page
  // instead of at random, which is what keeps a million-key import fast.
  // Sequence numbers follow the id order within the batch.
  absl::Status InsertLocked(absl::Span<const KeyRecord> records, const AuditNote& note) {
    std::vector<std::size_t> order(records.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return records[a].id < records[b].id; });
    struct DigestRow {
      const Digest* digest;
      std::int64_t pk;
      int slot;
      const KeyRecord* record;
    };
    std::vector<DigestRow> digests;
    digests.reserve(records.size());
    absl::StatusOr<std::int64_t> next = internal::NextSequence(*db);
    if (!next.ok()) return next.status();
    std::int64_t seq = *next;
    for (const std::size_t i : order) {
      const KeyRecord& r = records[i];
      const std::int64_t pk = seq++;
      if (absl::Status s = internal::DropTombstone(*db, r.id); !s.ok()) return s;
      if (absl::Status s = internal::AppendChange(*db, pk, r.id, pk, 0); !s.ok()) return s;
      if (absl::Status s =
              internal::AppendAuditRow(*db, MakeAuditEvent(note, static_cast<std::uint64_t>(pk),
                                                           r.id, r.owner, 1, r.webhook_url));
          !s.ok()) {
        return s;
      }
      absl::StatusOr<Statement> ins = db->Prepare(kInsertKeySql);
      if (!ins.ok()) return ins.status();
      BindRecord(*ins, r);
      ins->BindInt(25, 1);
      ins->BindInt(26, pk);  // change_seq
      ins->BindInt(27, pk);
      if (absl::Status s = ins->Run(); !s.ok()) return KeyConstraint(s, r);
      if (absl::Status s = IndexName(pk, r.name); !s.ok()) return s;
      digests.push_back({&r.digest, pk, 0, &r});
      if (r.previous.has_value() && r.previous->digest != r.digest) {
        digests.push_back({&r.previous->digest, pk, 1, &r});
      }
    }
    std::sort(digests.begin(), digests.end(),
              [](const DigestRow& a, const DigestRow& b) { return *a.digest < *b.digest; });
    for (const DigestRow& d : digests) {
      if (absl::Status s = InsertDigest(*d.record, *d.digest, d.pk, d.slot); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Adds / removes a key's name in the trigram index (external content:
  // the values must be exactly what keys.name_key holds).
  absl::Status IndexName(std::int64_t pk, std::string_view name) {
    absl::StatusOr<Statement> q =
        db->Prepare("INSERT INTO key_names(rowid, name_key) VALUES (?1, ?2)");
    if (!q.ok()) return q.status();
    q->BindInt(1, pk);
    q->BindText(2, NameKey(name));
    return q->Run();
  }
  absl::Status UnindexName(std::int64_t pk, std::string_view name_lower) {
    absl::StatusOr<Statement> q =
        db->Prepare("INSERT INTO key_names(key_names, rowid, name_key) VALUES ('delete', ?1, ?2)");
    if (!q.ok()) return q.status();
    q->BindInt(1, pk);
    std::string key(name_lower);
    key.push_back('\x01');
    q->BindText(2, key);
    return q->Run();
  }

  absl::StatusOr<std::optional<Located>> Locate(std::string_view id) {
    absl::StatusOr<Statement> q = db->Prepare(
        "SELECT pk, version, change_seq, digest, previous_digest, name_lower, owner, webhook_url "
        "FROM keys WHERE id = ?1");
    if (!q.ok()) return q.status();
    q->BindText(1, id);
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) return std::optional<Located>();
    Located l;
    l.pk = q->Int(0);
    l.version = static_cast<std::uint64_t>(q->Int(1));
    l.change_seq = q->Int(2);
    l.digest = std::string(q->Blob(3));
    l.previous_digest = std::string(q->Blob(4));
    l.name_lower = std::string(q->Text(5));
    l.owner = std::string(q->Text(6));
    l.webhook_url = std::string(q->Text(7));
    return std::optional<Located>(std::move(l));
  }

  absl::Status VersionConflict(std::string_view id, std::uint64_t expected,
                               std::uint64_t stored) const {
    return absl::AbortedError(absl::StrCat(internal::KeyLabel(id), ": version conflict (expected ",
                                           expected, ", stored ", stored, ")"));
  }
};

SqliteKeyStore::SqliteKeyStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteKeyStore::~SqliteKeyStore() {
  if (impl_->notifier != nullptr) impl_->notifier->StopAndJoin();
}

const std::string& SqliteKeyStore::path() const noexcept { return impl_->options.path; }
const SqliteOptions& SqliteKeyStore::options() const noexcept { return impl_->options; }
const std::vector<std::string>& SqliteKeyStore::open_warnings() const noexcept {
  return impl_->open_warnings;
}

absl::StatusOr<std::unique_ptr<SqliteKeyStore>> SqliteKeyStore::Create(Options options) {
  if (options.path.empty()) return absl::InvalidArgumentError("path: must not be empty");
  // SQLite (built with URI names on, as Debian's is) would open a "file:"
  // name as a URI, whose path and mode may differ from the file created here.
  if (options.path.rfind("file:", 0) == 0) {
    return absl::InvalidArgumentError(
        "path: an SQLite \"file:\" URI is not a file path; pass a plain path (prefix \"./\" "
        "for a file whose name starts with \"file:\")");
  }
  if (options.poll_interval < absl::Milliseconds(1) || options.poll_interval > absl::Hours(1)) {
    return absl::InvalidArgumentError("poll_interval: must be between 1 ms and 1 h");
  }
  if (options.busy_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("busy_timeout: must not be negative");
  }
  auto impl = std::make_unique<Impl>();
  impl->in_memory = options.path == kMemoryPath;
  if (!impl->in_memory) {
    absl::StatusOr<bool> create = PrepareFile(options);
    if (!create.ok()) return create.status();
    if (*create) {
      if (absl::Status s = CreateDatabase(options); !s.ok()) return s;
    }
    // After creating: another process's file may have won the race.
    if (absl::Status s = CheckFileTrust(options, &impl->open_warnings); !s.ok()) return s;
  }
  // From here on the file exists and is not ours alone (other processes may
  // use it, or it was there before): a failure leaves it as it is.
  const int flags =
      SQLITE_OPEN_READWRITE | (impl->in_memory ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOFOLLOW;
  const std::string open_path = impl->in_memory ? options.path : OpenPath(options.path);
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(options.path, flags, open_path);
  if (!db.ok()) return db.status();
  if (absl::Status s = ConfigureAndMigrate(
          **db, options, impl->in_memory ? WalSwitch::kNever : WalSwitch::kBeforeSchema);
      !s.ok()) {
    return s;
  }
  impl->db = *std::move(db);
  impl->notifier =
      std::make_shared<Notifier>(options.path, open_path, impl->in_memory, options.poll_interval);
  impl->options = std::move(options);
  return std::unique_ptr<SqliteKeyStore>(new SqliteKeyStore(std::move(impl)));
}

absl::Status SqliteKeyStore::Insert(const KeyRecord& record, const AuditNote& note) {
  return InsertBatch(absl::MakeConstSpan(&record, 1), note);
}

absl::Status SqliteKeyStore::InsertBatch(absl::Span<const KeyRecord> records,
                                         const AuditNote& note) {
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kInsert); !s.ok()) {
    return s;
  }
  if (records.empty()) return absl::OkStatus();
  for (const KeyRecord& r : records) {
    if (absl::Status s = internal::CheckRecordShape(r); !s.ok()) return s;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    WriteTransaction tx(impl_->db.get());
    if (absl::Status s = tx.Begin(); !s.ok()) return s;
    if (absl::Status s = impl_->InsertLocked(records, note); !s.ok()) return s;
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
  }
  // A callback may drop the last reference to this store: keep the notifier.
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return absl::OkStatus();
}

absl::StatusOr<KeyRecord> SqliteKeyStore::Get(std::string_view id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  static const std::string sql =
      absl::StrCat("SELECT ", kRecordColumns, " FROM keys k WHERE k.id = ?1");
  absl::StatusOr<Statement> q = impl_->db->Prepare(sql);
  if (!q.ok()) return q.status();
  q->BindText(1, id);
  absl::StatusOr<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return impl_->NotFound(id);
  return impl_->Decode(*q, 0);
}

absl::StatusOr<KeyRecord> SqliteKeyStore::FindByDigest(const Digest& digest) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  static const std::string sql =
      absl::StrCat("SELECT ", kRecordColumns,
                   " FROM digests d JOIN keys k ON k.pk = d.key_pk WHERE d.digest = ?1");
  absl::StatusOr<Statement> q = impl_->db->Prepare(sql);
  if (!q.ok()) return q.status();
  q->BindBlob(1, digest.data(), digest.size());
  absl::StatusOr<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError("digest: no such key");
  return impl_->Decode(*q, 0);
}

absl::StatusOr<KeyRecord> SqliteKeyStore::Update(const KeyRecord& record, const AuditNote& note) {
  if (absl::Status s = internal::CheckUpdateShape(record); !s.ok()) return s;
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kUpdate); !s.ok()) {
    return s;
  }
  KeyRecord stored = record;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    SqliteDb& db = *impl_->db;
    WriteTransaction tx(&db);
    if (absl::Status s = tx.Begin(); !s.ok()) return s;
    absl::StatusOr<std::optional<Impl::Located>> loc = impl_->Locate(record.id);
    if (!loc.ok()) return loc.status();
    if (!loc->has_value()) return impl_->NotFound(record.id);
    const Impl::Located& l = **loc;
    if (l.version != record.version) {
      return impl_->VersionConflict(record.id, record.version, l.version);
    }
    absl::StatusOr<std::int64_t> seq =
        internal::AppendNextChange(*impl_->db, record.id, l.pk, l.change_seq);
    if (!seq.ok()) return seq.status();
    stored.version = l.version + 1;
    if (absl::Status s = internal::AppendAuditRow(
            db, MakeAuditEvent(note, static_cast<std::uint64_t>(*seq), record.id, record.owner,
                               stored.version, record.webhook_url));
        !s.ok()) {
      return s;
    }
    {
      absl::StatusOr<Statement> up = db.Prepare(kUpdateKeySql);
      if (!up.ok()) return up.status();
      BindRecord(*up, record);
      up->BindInt(25, static_cast<std::int64_t>(stored.version));
      up->BindInt(26, *seq);
      up->BindInt(27, l.pk);
      if (absl::Status s = up->Run(); !s.ok()) return impl_->KeyConstraint(s, record);
    }
    if (ToLowerAscii(record.name) != l.name_lower) {
      if (absl::Status s = impl_->UnindexName(l.pk, l.name_lower); !s.ok()) return s;
      if (absl::Status s = impl_->IndexName(l.pk, record.name); !s.ok()) return s;
    }
    const std::string_view digest(reinterpret_cast<const char*>(record.digest.data()),
                                  record.digest.size());
    const std::string_view previous =
        record.previous.has_value()
            ? std::string_view(reinterpret_cast<const char*>(record.previous->digest.data()),
                               record.previous->digest.size())
            : std::string_view();
    if (digest != l.digest || previous != l.previous_digest) {
      if (absl::Status s = impl_->DeleteDigests(l); !s.ok()) return s;
      if (absl::Status s = impl_->InsertDigests(record, l.pk); !s.ok()) return s;
    }
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
  }
  // A callback may drop the last reference to this store: keep the notifier.
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return stored;
}

absl::Status SqliteKeyStore::TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                           absl::Duration min_advance) {
  if (updates.empty()) return absl::OkStatus();
  const std::int64_t advance_us = std::max<std::int64_t>(0, absl::ToInt64Microseconds(min_advance));
  std::lock_guard<std::mutex> lock(impl_->mu);
  SqliteDb& db = *impl_->db;
  WriteTransaction tx(&db);
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  // Forward only, and only by at least min_advance; no version, no change
  // row: usage is not verification state (key_store.h).
  for (const LastUsedUpdate& u : updates) {
    absl::StatusOr<Statement> up = db.Prepare(  // cached by the connection
        "UPDATE keys SET last_used_us = ?2 WHERE id = ?1 AND "
        "(last_used_us IS NULL OR (?2 > last_used_us AND ?2 - last_used_us >= ?3))");
    if (!up.ok()) return up.status();
    up->BindText(1, u.key_id);
    up->BindInt(2, internal::TimeToMicros(u.last_used));
    up->BindInt(3, advance_us);
    if (absl::Status s = up->Run(); !s.ok()) return s;
  }
  return tx.Commit();
}

absl::Status SqliteKeyStore::Delete(std::string_view id,
                                    std::optional<std::uint64_t> expected_version,
                                    const AuditNote& note) {
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kDelete); !s.ok()) {
    return s;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    SqliteDb& db = *impl_->db;
    WriteTransaction tx(&db);
    if (absl::Status s = tx.Begin(); !s.ok()) return s;
    absl::StatusOr<std::optional<Impl::Located>> loc = impl_->Locate(id);
    if (!loc.ok()) return loc.status();
    if (!loc->has_value()) return impl_->NotFound(id);
    const Impl::Located& l = **loc;
    if (expected_version.has_value() && *expected_version != l.version) {
      return impl_->VersionConflict(id, *expected_version, l.version);
    }
    if (absl::Status s = impl_->UnindexName(l.pk, l.name_lower); !s.ok()) return s;
    if (absl::Status s = impl_->DeleteDigests(l); !s.ok()) return s;
    {
      absl::StatusOr<Statement> del = db.Prepare("DELETE FROM keys WHERE pk = ?1");
      if (!del.ok()) return del.status();
      del->BindInt(1, l.pk);
      if (absl::Status s = del->Run(); !s.ok()) return s;
    }
    // key_pk 0: a tombstone (it joins no key).
    absl::StatusOr<std::int64_t> seq = internal::AppendNextChange(*impl_->db, id, 0, l.change_seq);
    if (!seq.ok()) return seq.status();
    if (absl::Status s = internal::AppendAuditRow(
            db,
            MakeAuditEvent(note, static_cast<std::uint64_t>(*seq), id, l.owner, 0, l.webhook_url));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
  }
  // A callback may drop the last reference to this store: keep the notifier.
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return absl::OkStatus();
}

absl::StatusOr<AuditPage> SqliteKeyStore::ReadAudit(const AuditQuery& query) {
  if (absl::Status s = ValidateAuditQuery(query); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(impl_->mu);
  return internal::ReadAuditRows(*impl_->db, query);
}

absl::StatusOr<std::uint64_t> SqliteKeyStore::AuditCursor(std::string_view consumer) {
  if (absl::Status s = ValidateAuditConsumer(consumer); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(impl_->mu);
  return internal::ReadAuditCursor(*impl_->db, consumer);
}

absl::Status SqliteKeyStore::AckAudit(std::string_view consumer, std::uint64_t sequence) {
  if (absl::Status s = ValidateAuditConsumer(consumer); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(impl_->mu);
  SqliteDb& db = *impl_->db;
  WriteTransaction tx(&db);
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  absl::StatusOr<std::int64_t> last =
      db.QueryInt("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)",
                  "reading the last sequence");
  if (!last.ok()) return last.status();
  if (sequence > static_cast<std::uint64_t>(*last)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence: ", sequence, " is beyond the last one (", *last, ")"));
  }
  if (absl::Status s = internal::WriteAuditCursor(db, consumer, sequence); !s.ok()) return s;
  return tx.Commit();
}

absl::StatusOr<ListPage> SqliteKeyStore::List(const ListOptions& options) {
  if (options.limit < 1 || options.limit > kMaxListLimit) {
    return absl::InvalidArgumentError(absl::StrCat("limit: must be between 1 and ", kMaxListLimit));
  }
  absl::StatusOr<std::string> after = internal::DecodeListCursor(options.cursor);
  if (!after.ok()) return after.status();
  std::lock_guard<std::mutex> lock(impl_->mu);
  return internal::ListKeys(*impl_->db, options.filter, *after, options.limit, impl_->options.path);
}

absl::StatusOr<ChangeBatch> SqliteKeyStore::ChangesSince(std::uint64_t after, std::size_t limit) {
  // One change row per key id (schema.cc): a live key's row is joined by its
  // pk (a rowid lookup); a tombstone (key_pk 0) joins nothing and reads as a
  // delete.
  static const std::string sql = absl::StrCat(
      "SELECT c.sequence, c.key_id, k.pk IS NOT NULL, ", kRecordColumns,
      " FROM changes c LEFT JOIN keys k ON k.pk = c.key_pk AND k.change_seq = c.sequence"
      " WHERE c.sequence > ?1 ORDER BY c.sequence LIMIT ?2");
  const std::size_t capped = std::min<std::size_t>(limit, 1'000'000'000);
  ChangeBatch batch;
  batch.next_sequence = after;
  // Rows that cannot be decoded (edited by hand): reported after the lock
  // is released.
  std::vector<absl::Status> corrupt;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    absl::StatusOr<Statement> q = impl_->db->Prepare(sql);
    if (!q.ok()) return q.status();
    const std::uint64_t max_after = static_cast<std::uint64_t>(INT64_MAX);
    q->BindInt(1, static_cast<std::int64_t>(std::min(after, max_after)));
    q->BindInt(2, static_cast<std::int64_t>(capped) + 1);
    while (true) {
      absl::StatusOr<bool> row = q->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      if (batch.changes.size() == capped) {
        batch.more = true;
        break;
      }
      Change c;
      c.sequence = static_cast<std::uint64_t>(q->Int(0));
      c.key_id = std::string(q->Text(1));
      if (q->Int(2) != 0) {
        absl::StatusOr<KeyRecord> r = impl_->Decode(*q, 3);
        if (r.ok()) {
          c.record = *std::move(r);
        } else {
          // Fail closed without stopping the feed: the key reads as deleted
          // (a follower drops it), the changes after it still flow.
          corrupt.push_back(r.status());
        }
      }
      batch.next_sequence = c.sequence;
      batch.changes.push_back(std::move(c));
    }
  }
  if (!corrupt.empty()) {
    impl_->corrupt_rows.fetch_add(corrupt.size(), std::memory_order_relaxed);
    if (impl_->options.on_corrupt_row) {
      for (const absl::Status& s : corrupt) impl_->options.on_corrupt_row(s);
    }
  }
  return batch;
}

absl::StatusOr<std::uint64_t> SqliteKeyStore::LastSequence() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  absl::StatusOr<Statement> q =
      impl_->db->Prepare("SELECT seq FROM sqlite_sequence WHERE name = 'changes'");
  if (!q.ok()) return q.status();
  absl::StatusOr<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::uint64_t{0};
  return static_cast<std::uint64_t>(q->Int(0));
}

absl::StatusOr<std::unique_ptr<Subscription>> SqliteKeyStore::Subscribe(
    std::function<void()> on_change) {
  return impl_->notifier->Subscribe(std::move(on_change));
}

absl::Status SqliteKeyStore::AwaitSubscribers() {
  const std::shared_ptr<Notifier> notifier = impl_->notifier;
  notifier->Committed();
  return absl::OkStatus();
}

absl::Status SqliteKeyStore::CheckIntegrity() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  SqliteDb& db = *impl_->db;
  absl::StatusOr<Statement> q = db.Prepare("PRAGMA integrity_check");
  if (!q.ok()) return q.status();
  std::string report;
  int lines = 0;
  while (true) {
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    const std::string_view line = q->Text(0);
    if (line == "ok") continue;
    if (++lines <= 10) absl::StrAppend(&report, lines > 1 ? "; " : "", std::string(line));
  }
  if (lines > 0) {
    return absl::DataLossError(
        absl::StrCat("sqlite ", impl_->options.path, ": integrity check failed: ", report));
  }
  // Every key row must decode: a row edited by hand into something the
  // store cannot read fails closed in the change feed (ChangesSince), and
  // this is where an operator finds it.
  {
    static const std::string sql = absl::StrCat("SELECT ", kRecordColumns, " FROM keys k");
    absl::StatusOr<Statement> rows = db.Prepare(sql);
    if (!rows.ok()) return rows.status();
    std::string bad;
    int count = 0;
    while (true) {
      absl::StatusOr<bool> row = rows->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      absl::StatusOr<KeyRecord> r = impl_->Decode(*rows, 0);
      if (r.ok()) continue;
      if (++count <= 10) {
        absl::StrAppend(&bad, count > 1 ? "; " : "", std::string(r.status().message()));
      }
    }
    if (count > 0) {
      return absl::DataLossError(absl::StrCat(count, " key row(s) cannot be decoded: ", bad));
    }
  }
  // The name index must agree with the keys table (it is maintained by
  // explicit statements in the same transaction; this catches a torn update of either).
  if (absl::Status s = db.Exec("INSERT INTO key_names(key_names) VALUES ('integrity-check')",
                               "name index integrity check");
      !s.ok()) {
    if (s.code() == absl::StatusCode::kDataLoss || s.code() == absl::StatusCode::kInternal) {
      return absl::DataLossError(s.message());
    }
    return s;
  }
  return absl::OkStatus();
}

std::size_t internal::SqliteKeyStoreTestPeer::StatementCacheSize(SqliteKeyStore& store) {
  std::lock_guard<std::mutex> lock(store.impl_->mu);
  return store.impl_->db->statement_cache_size();
}

std::uint64_t SqliteKeyStore::corrupt_rows_skipped() const noexcept {
  return impl_->corrupt_rows.load(std::memory_order_relaxed);
}

absl::StatusOr<std::uint64_t> SqliteKeyStore::Count() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  absl::StatusOr<std::int64_t> n = impl_->db->QueryInt("SELECT count(*) FROM keys", "count");
  if (!n.ok()) return n.status();
  return static_cast<std::uint64_t>(*n);
}

}  // namespace keygate
