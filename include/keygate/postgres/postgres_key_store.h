// keygate/postgres/postgres_key_store.h: a `KeyStore` on PostgreSQL, one set of keys for a fleet
// of servers; target `keygate::postgres` (libpq).
//
// Every server keeps its own `Verifier` (a replica in memory, verifying without a round trip) and
// follows the store's change feed: writes notify through LISTEN/NOTIFY on a dedicated connection,
// and the store also wakes its subscribers every `poll_interval` in case a notification was lost.
// The feed has no gaps: sequence numbers are taken in commit order (a row lock held to commit),
// so a reader of `ChangesSince` never passes a change that commits later with a smaller number.
// Only digests and display hints are stored, never a token.
//
// Connections: a pool of at most `pool_size`, opened on demand; each call has a deadline of
// `call_timeout` (waiting for a connection, connecting, and every statement; the server's
// `statement_timeout` too), after which it returns kUnavailable and the connection is dropped. A
// server that is down gives kUnavailable within the deadline; the next call connects again. The
// URL's libpq parameters (sslmode, sslrootcert, passfile, ...) pass through; a password never
// appears in an error (errors name the database by host, port, database and user).
// Schema: versioned migrations under a transaction-scoped advisory lock, each in a transaction,
// run by `Create` (so several servers may start at once); a newer schema is refused. Tables live
// in `schema` (created if missing); name search uses the pg_trgm extension (Debian:
// postgresql-contrib), created in `public` when the database lacks it.
// Name search (`List` with `name_contains`): a needle of three characters or more is answered
// through a trigram index. One of one or two characters has no trigram: the first 10,000 keys
// past the cursor are searched for a page, and if they hold fewer matches, the index is asked
// for the runs of three characters that hold the needle (a table of every name's runs, kept
// by a trigger); a needle that more than 512 runs hold is searched for in id order.
// Ownership: `Create` returns a unique_ptr (a shared_ptr converts from it); the store owns its
// connections and, from the first `Subscribe`, a listener thread (the destructor waits for it:
// at most call_timeout while it is connecting); subscriptions may outlive the store and are then
// inert. Thread safety: thread-safe. Cost: a read is one round trip (a name search of one or
// two characters up to three, a few ms at a million keys); a write one transaction of
// 4-6 statements (about 1 ms on a Unix socket; writers commit one at a time);
// `InsertBatch` streams with COPY. A full page of `ChangesSince` sends the next page's query at
// once, on a pooled connection held until the next `ChangesSince` (which drops that page if it
// is for another cursor or older than `poll_interval`). Design: docs/design.md, "The PostgreSQL
// store".
//
// Example:
//   keygate::PostgresOptions o;
//   o.url = "postgresql://keygate@db.internal/keys?sslmode=verify-full";
//   absl::StatusOr<std::unique_ptr<keygate::PostgresKeyStore>> store =
//       keygate::PostgresKeyStore::Create(o);
//   if (!store.ok()) { /* store.status() names the database and the cause */ }

#ifndef KEYGATE_POSTGRES_POSTGRES_KEY_STORE_H_
#define KEYGATE_POSTGRES_POSTGRES_KEY_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "keygate/key_store.h"

namespace keygate {

namespace internal {
struct PostgresTestPeer;  // not API: keygate's own tests only (src/postgres/)
}  // namespace internal

struct PostgresOptions {
  // A libpq connection URI ("postgresql://...", "postgres://...") or key=value string.
  std::string url;
  // The schema holding keygate's tables: [a-z_][a-z0-9_]*, at most 48 bytes.
  std::string schema = "keygate";
  std::size_t pool_size = 4;  // 1 .. 64 connections for calls (the listener has its own)
  // Deadline of one call: 10 ms .. 10 min. InsertBatch allows this per 10,000 records.
  absl::Duration call_timeout = absl::Seconds(5);
  // Deadline of the schema migration Create may run (0 .. 24 h). Migrations block writes while
  // they run: building the name index of a version 1 schema takes about a minute per million
  // keys; numbering a version 2 schema's keys rewrites every key row (45 s per million);
  // version 4 reads every name once (a few seconds per million).
  absl::Duration migration_timeout = absl::Minutes(10);
  // How often subscribers are woken without a notification (the safety net); 10 ms .. 1 h.
  absl::Duration poll_interval = absl::Seconds(1);
  // LISTEN for notifications. false: poll only (a pooler in transaction mode, such as
  // PgBouncer's, cannot deliver NOTIFY); subscribers then learn of other servers' writes within
  // poll_interval.
  bool listen = true;
  // The listener's reconnect backoff: doubling from the first to the cap, with full jitter.
  absl::Duration reconnect_backoff = absl::Milliseconds(100);
  absl::Duration reconnect_backoff_max = absl::Seconds(5);
  // Called once per undecodable row read by ChangesSince, on that thread, with kDataLoss naming
  // the key id and column, never a value. Empty: only counted.
  std::function<void(const absl::Status&)> on_corrupt_row;
  // Called by the listener thread when its connection fails or is restored (kOk), to log.
  std::function<void(const absl::Status&)> on_listener_status;
};

// Counters, for monitoring.
struct PostgresStoreStats {
  std::uint64_t connects = 0;            // pool connections opened
  std::uint64_t connect_failures = 0;    // pool connections that failed or timed out
  std::uint64_t deadlines_exceeded = 0;  // calls cut at call_timeout
  std::uint64_t listener_connects = 0;   // LISTEN connections established
  std::uint64_t notifications = 0;       // NOTIFY messages received
  std::uint64_t polls = 0;               // wake-ups by poll_interval
  std::uint64_t corrupt_rows = 0;        // undecodable rows read by ChangesSince
};

class PostgresKeyStore final : public KeyStore {
 public:
  using Options = PostgresOptions;

  static constexpr int kSchemaVersion = 6;

  // Validates `options`, connects, and creates or migrates the schema. Errors:
  //   kInvalidArgument    empty or unparsable url, bad schema name, option out of range
  //   kUnavailable        the server cannot be reached within call_timeout
  //   kPermissionDenied   authentication or privilege failure
  //   kFailedPrecondition a newer schema version; pg_trgm not installed
  //   kInternal           any other server error
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<PostgresKeyStore>> Create(Options options);

  ~PostgresKeyStore() override;
  PostgresKeyStore(const PostgresKeyStore&) = delete;
  PostgresKeyStore& operator=(const PostgresKeyStore&) = delete;

  // KeyStore (key_store.h). Any method may also return kUnavailable (server down, deadline) or
  // kInternal; Get, FindByDigest and List return kDataLoss for an undecodable row.
  [[nodiscard]] absl::Status Insert(const KeyRecord& record, const AuditNote& note) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> Get(std::string_view id) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> FindByDigest(const Digest& digest) override;
  [[nodiscard]] absl::StatusOr<KeyRecord> Update(const KeyRecord& record,
                                                 const AuditNote& note) override;
  [[nodiscard]] absl::Status Delete(std::string_view id,
                                    std::optional<std::uint64_t> expected_version,
                                    const AuditNote& note) override;
  [[nodiscard]] absl::StatusOr<ListPage> List(const ListOptions& options) override;
  // One statement per call; no version bump, change-log row or notification.
  [[nodiscard]] absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                           absl::Duration min_advance) override;
  [[nodiscard]] absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after,
                                                         std::size_t limit) override;
  [[nodiscard]] absl::StatusOr<std::uint64_t> LastSequence() override;
  [[nodiscard]] absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& query) override;
  [[nodiscard]] absl::StatusOr<std::uint64_t> AuditCursor(std::string_view consumer) override;
  [[nodiscard]] absl::Status AckAudit(std::string_view consumer, std::uint64_t sequence) override;
  // Callbacks run after this object's own writes (before they return), on a NOTIFY from any
  // writer, after the listener reconnects, and every poll_interval.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change) override;
  [[nodiscard]] absl::Status AwaitSubscribers() override;

  // Inserts `records` in ONE transaction through COPY, all or nothing, numbered in id order in
  // the change log, each with an audit entry from `note` (kCreated). Errors as Insert, naming
  // the first conflicting id.
  [[nodiscard]] absl::Status InsertBatch(absl::Span<const KeyRecord> records,
                                         const AuditNote& note);

  [[nodiscard]] absl::StatusOr<std::uint64_t> Count();  // the number of stored keys

  PostgresStoreStats Stats() const;
  // The database as errors name it: "postgres host=... port=... dbname=... user=...".
  const std::string& description() const noexcept;
  const PostgresOptions& options() const noexcept;

 private:
  friend struct internal::PostgresTestPeer;
  struct Impl;
  explicit PostgresKeyStore(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_POSTGRES_POSTGRES_KEY_STORE_H_
