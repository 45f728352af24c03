// PostgresKeyStore's state, shared by its reads (postgres_key_store.cc) and writes (writes.cc).
// Private to keygate::postgres.
#ifndef KEYGATE_SRC_POSTGRES_STORE_IMPL_H_
#define KEYGATE_SRC_POSTGRES_STORE_IMPL_H_

#include <atomic>
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
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "internal/json_collections.h"
#include "internal/key_label.h"
#include "internal/record_columns.h"
#include "keygate/audit.h"
#include "keygate/change_notifier.h"
#include "keygate/postgres/postgres_key_store.h"
#include "postgres/listener.h"
#include "postgres/pg_conn.h"

namespace keygate {
namespace internal {

// The characters of `s`: UTF-8 sequences (a lead byte and its continuation bytes) if `utf8`,
// else bytes.
inline std::vector<std::string_view> DbChars(std::string_view s, bool utf8) {
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = 1;
    while (utf8 && i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80) ++n;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace internal

struct PostgresKeyStore::Impl {
  PostgresOptions options;
  std::string described;
  std::string schema;   // quoted
  std::string channel;  // the NOTIFY channel
  std::string setup;    // per-connection SET statements
  std::unique_ptr<internal::PgPool> pool;
  std::shared_ptr<ChangeNotifier> notifier = std::make_shared<ChangeNotifier>();
  std::shared_ptr<internal::ListenerCounters> listener_counters =
      std::make_shared<internal::ListenerCounters>();
  std::mutex listener_mu;
  std::unique_ptr<internal::Listener> listener;  // guarded by listener_mu; from Subscribe
  std::atomic<std::uint64_t> deadlines{0};
  std::atomic<std::uint64_t> corrupt_rows{0};
  std::function<void()> before_commit;  // tests only (PostgresTestPeer), set before any call
  // The next page of the change feed, sent when a full page came back (ChangesSince), and the
  // connection it runs on. Declared after `pool`, to which its lease returns.
  struct FeedAhead {
    std::mutex mu;
    std::optional<internal::PgPool::Lease> lease;  // guarded by mu
    std::uint64_t after = 0;
    std::size_t limit = 0;
    absl::Time sent;
  } feed_ahead;

  // SQL with $S replaced by the schema.
  std::string Sql(std::string_view text) const {
    return absl::StrReplaceAll(absl::string_view(text.data(), text.size()), {{"$S", schema}});
  }
  std::string insert_key_sql, update_key_sql, delete_key_sql, log_sql, get_sql, find_sql,
      changes_sql;

  absl::Time Deadline() const { return absl::Now() + options.call_timeout; }

  // Whether the database counts characters as UTF-8 sequences (its encoding is UTF8) rather
  // than bytes (internal::DbChars); name_trigrams (schema.cc) is cut in the database's
  // characters. Set by Create.
  bool utf8 = true;

  absl::Status Counted(absl::Status s) {
    if (s.code() == absl::StatusCode::kUnavailable &&
        s.message().find("deadline exceeded") != absl::string_view::npos) {
      deadlines.fetch_add(1, std::memory_order_relaxed);
    }
    return s;
  }

  // A failure a new connection may not have: the pooled one was closed under us (a server
  // restart) before the call could do anything.
  static bool WorthRetrying(const internal::PgPool::Lease& lease, const absl::Status& s) {
    return lease.reused() && s.code() == absl::StatusCode::kUnavailable &&
           s.message().find("deadline exceeded") == absl::string_view::npos;
  }

  // A pooled connection in a transaction.
  absl::StatusOr<internal::PgPool::Lease> Begin(absl::Time deadline) {
    for (int attempt = 0;; ++attempt) {
      absl::StatusOr<internal::PgPool::Lease> lease = pool->Acquire(deadline);
      if (!lease.ok()) return lease.status();
      absl::Status s = (*lease)->ExecScript("BEGIN", deadline);
      if (s.ok()) return lease;
      if (attempt > 0 || !WorthRetrying(*lease, s)) return s;
    }  // the failed connection is dropped here, before the next Acquire
  }

  // Runs `body` in a transaction on a pooled connection: COMMIT when it succeeds, ROLLBACK
  // otherwise (a broken connection is dropped instead). A COMMIT that fails may have committed:
  // the error says so, and this process's subscribers are woken all the same.
  absl::Status InTransaction(absl::Time deadline,
                             const std::function<absl::Status(internal::PgConn&)>& body) {
    absl::StatusOr<internal::PgPool::Lease> lease = Begin(deadline);
    if (!lease.ok()) return Counted(lease.status());
    internal::PgConn& c = **lease;
    absl::Status s = body(c);
    if (s.ok()) {
      if (before_commit) before_commit();
      absl::Status commit = c.ExecScript("COMMIT", deadline);
      if (!commit.ok() && commit.code() == absl::StatusCode::kUnavailable) {
        Notify();
        return Counted(absl::UnavailableError(
            absl::StrCat(commit.message(), " (during COMMIT: the write may have been applied)")));
      }
      return Counted(commit);
    }
    if (!c.broken()) {
      if (!c.ExecScript("ROLLBACK", deadline).ok()) c.set_broken();
    }
    return Counted(s);
  }

  // One statement outside a transaction. Only for statements that may run twice (reads, and
  // idempotent writes): one retry on a new connection when a pooled one turned out closed.
  // `keep`: where the connection goes after a success (else back to the pool).
  absl::StatusOr<internal::PgResult> Query(const std::string& sql, const internal::PgParams& params,
                                           std::optional<internal::PgPool::Lease>* keep = nullptr) {
    const absl::Time deadline = Deadline();
    for (int attempt = 0;; ++attempt) {
      absl::StatusOr<internal::PgPool::Lease> lease = pool->Acquire(deadline);
      if (!lease.ok()) return Counted(lease.status());
      absl::StatusOr<internal::PgResult> r = (*lease)->Exec(sql, params, deadline);
      if (r.ok()) {
        if (keep != nullptr) keep->emplace(*std::move(lease));
        return r;
      }
      if (attempt > 0 || !WorthRetrying(*lease, r.status())) return Counted(r.status());
    }
  }

  // ChangesSince's parameters: after `after`, `limit` + 1 rows (one more says more follow).
  static internal::PgParams FeedParams(std::uint64_t after, std::size_t limit) {
    internal::PgParams p;
    p.BindInt(1, static_cast<std::int64_t>(after));
    p.BindInt(2, static_cast<std::int64_t>(limit) + 1);
    return p;
  }

  // The page sent ahead for `after`, if it is usable: for this cursor and limit, younger than
  // poll_interval, and full (the caller reads on: the feed's last page is always read during
  // its call). Any other is drained and dropped. `*lease` then holds its connection.
  std::optional<internal::PgResult> TakeFeedAhead(std::uint64_t after, std::size_t limit,
                                                  std::optional<internal::PgPool::Lease>* lease) {
    bool matches = false;
    {
      std::lock_guard<std::mutex> lock(feed_ahead.mu);
      if (!feed_ahead.lease.has_value()) return std::nullopt;
      matches = feed_ahead.after == after && feed_ahead.limit == limit &&
                absl::Now() - feed_ahead.sent < options.poll_interval;
      lease->emplace(std::move(*feed_ahead.lease));
      feed_ahead.lease.reset();
    }
    absl::StatusOr<internal::PgResult> r = (**lease)->Collect(Deadline());
    if (matches && r.ok() && r->rows() > static_cast<int>(limit)) return *std::move(r);
    lease->reset();  // back to the pool, or dropped if the read failed
    return std::nullopt;
  }

  // Sends the query of the page after `after` on `*lease` and keeps both for the next call.
  void SendFeedAhead(std::uint64_t after, std::size_t limit,
                     std::optional<internal::PgPool::Lease>* lease) {
    if (!(**lease)->Send(changes_sql, FeedParams(after, limit)).ok()) return;
    std::lock_guard<std::mutex> lock(feed_ahead.mu);
    if (feed_ahead.lease.has_value()) {
      // Another caller's page is ahead; this one's result is pending, so the connection
      // cannot go back to the pool.
      (**lease)->set_broken();
      return;
    }
    feed_ahead.lease.emplace(std::move(**lease));
    feed_ahead.after = after;
    feed_ahead.limit = limit;
    feed_ahead.sent = absl::Now();
    lease->reset();
  }

  absl::Status NotFound(std::string_view id) const {
    return absl::NotFoundError(absl::StrCat(internal::KeyLabel(id), ": not found"));
  }
  absl::Status VersionConflict(std::string_view id, std::uint64_t expected,
                               std::uint64_t stored) const {
    return absl::AbortedError(absl::StrCat(internal::KeyLabel(id), ": version conflict (expected ",
                                           expected, ", stored ", stored, ")"));
  }
  // A unique violation (its message: the constraint) as the contract's kAlreadyExists.
  absl::Status Conflict(const absl::Status& s, const KeyRecord& r) const {
    if (s.code() != absl::StatusCode::kAlreadyExists) return s;
    const std::string_view constraint(s.message().data(), s.message().size());
    if (constraint == "keys_one_active_personal") {
      return absl::AlreadyExistsError(absl::StrCat(internal::KeyLabel(r.id), ": owner '", r.owner,
                                                   "' already has an active personal key in "
                                                   "environment '",
                                                   r.environment, "'"));
    }
    if (constraint == "digests_pkey") {
      return absl::AlreadyExistsError(
          absl::StrCat(internal::KeyLabel(r.id), ": digest already in use by another key"));
    }
    return absl::AlreadyExistsError(absl::StrCat(internal::KeyLabel(r.id), ": already exists"));
  }

  absl::StatusOr<KeyRecord> Decode(const internal::PgResult::Row& row, int first) const {
    return internal::DecodeRecordColumns(row, first, described);
  }

  // The digests of `r` into the digests table.
  absl::Status InsertDigests(internal::PgConn& c, const KeyRecord& r, absl::Time deadline) {
    internal::PgParams p;
    p.BindText(1, r.id);
    p.BindBlob(2, r.digest.data(), r.digest.size());
    std::string sql = Sql("INSERT INTO $S.digests (digest, key_id) VALUES ($2, $1)");
    if (r.previous.has_value() && r.previous->digest != r.digest) {
      p.BindBlob(3, r.previous->digest.data(), r.previous->digest.size());
      sql += ", ($3, $1)";
    }
    absl::StatusOr<internal::PgResult> res = c.Exec(sql, p, deadline);
    return res.ok() ? absl::OkStatus() : Conflict(res.status(), r);
  }

  // Appends the audit entry of a write whose key statement (`written`: insert_key_sql,
  // update_key_sql or delete_key_sql) returned its sequence, and queues the NOTIFY.
  absl::Status AppendLog(internal::PgConn& c, const AuditNote& note, std::string_view id,
                         std::string_view owner, std::uint64_t version,
                         std::string_view webhook_url, const internal::PgResult& written,
                         absl::Time deadline) {
    if (written.rows() != 1) return absl::InternalError(absl::StrCat(described, ": no sequence"));
    const Event e = MakeAuditEvent(note, 0, id, owner, version, webhook_url);
    internal::PgParams p;
    p.BindText(1, id);
    p.BindInt(2, internal::TimeToMicros(e.at));
    p.BindInt(3, static_cast<std::int64_t>(e.type));
    p.BindText(4, e.actor);
    p.BindText(5, e.owner);
    p.BindText(6, internal::EncodeJsonStringArray(e.changed_fields));
    p.BindInt(7, static_cast<std::int64_t>(e.version));
    p.BindInt(8, written.row(0).Int(0));
    p.BindText(9, channel);
    p.BindText(10, e.webhook_url);
    return c.Exec(log_sql, p, deadline).status();
  }

  struct Located {
    std::uint64_t version = 0;
    std::string owner;
    std::string digest;
    std::string previous_digest;
    std::string webhook_url;
  };
  // The key's row, locked to the end of the transaction.
  absl::StatusOr<std::optional<Located>> Lock(internal::PgConn& c, std::string_view id,
                                              absl::Time deadline) {
    internal::PgParams p;
    p.BindText(1, id);
    absl::StatusOr<internal::PgResult> r =
        c.Exec(Sql("SELECT version, owner, digest, previous_digest, webhook_url FROM $S.keys "
                   "WHERE id = $1 FOR UPDATE"),
               p, deadline);
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return std::optional<Located>();
    const internal::PgResult::Row row = r->row(0);
    Located l;
    l.version = static_cast<std::uint64_t>(row.Int(0));
    l.owner = std::string(row.Text(1));
    l.digest = std::string(row.Blob(2));
    if (!row.IsNull(3)) l.previous_digest = std::string(row.Blob(3));
    l.webhook_url = std::string(row.Text(4));
    return std::optional<Located>(std::move(l));
  }

  void Notify() {
    // A callback may drop the last reference to this store: keep the notifier.
    const std::shared_ptr<ChangeNotifier> n = notifier;
    n->Notify();
  }
};

}  // namespace keygate

#endif  // KEYGATE_SRC_POSTGRES_STORE_IMPL_H_
