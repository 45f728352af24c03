// One libpq connection with a deadline on every operation (postgres_key_store.h), and the pool
// the store's calls borrow connections from. Private to keygate::postgres.
//
// libpq is used asynchronously (PQconnectStartParams, PQsendQueryParams, poll(2) on the socket)
// so that a server that stops answering costs at most the deadline, never a hang. A connection
// that missed a deadline or lost its server is marked broken and closed when returned.
#ifndef KEYGATE_SRC_POSTGRES_PG_CONN_H_
#define KEYGATE_SRC_POSTGRES_PG_CONN_H_

#include <libpq-fe.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace keygate::internal {

// A PGresult, owned. Rows are read in binary format: integers are int8 (bigint) columns.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* r) : r_(r, &PQclear) {}
  int rows() const { return r_ == nullptr ? 0 : PQntuples(r_.get()); }
  PGresult* get() const { return r_.get(); }

  // A row as DecodeRecordColumns (internal/record_columns.h) reads it.
  class Row {
   public:
    Row(const PGresult* r, int row) : r_(r), row_(row) {}
    bool IsNull(int col) const { return PQgetisnull(r_, row_, col) != 0; }
    std::string_view Text(int col) const;
    std::string_view Blob(int col) const { return Text(col); }
    std::int64_t Int(int col) const;  // an int8 column; 0 when NULL or not 8 bytes
    bool Bool(int col) const;

   private:
    const PGresult* r_;
    int row_;
  };
  Row row(int i) const { return Row(r_.get(), i); }

 private:
  std::shared_ptr<PGresult> r_;
};

// Statement parameters ($1, $2, ...), as BindRecordColumns (record_columns.h) sets them: text,
// integers as text, bytea binary, NULL.
class PgParams {
 public:
  void BindText(int index, std::string_view value);
  void BindInt(int index, std::int64_t value);
  void BindNull(int index);
  void BindBlob(int index, const void* data, std::size_t size);

  int size() const { return static_cast<int>(values_.size()); }
  // A text value held a NUL byte, which PostgreSQL text cannot: Exec refuses the statement.
  bool has_nul() const { return has_nul_; }
  const char* const* values() const { return pointers_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  void Set(int index, std::string value, bool is_null, int format);
  std::vector<std::string> values_;
  std::vector<const char*> pointers_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  std::vector<bool> null_;
  bool has_nul_ = false;
};

class PgConn {
 public:
  // Connects and runs `setup` (SET statements). `described` names the database in errors.
  static absl::StatusOr<std::unique_ptr<PgConn>> Connect(const std::string& url,
                                                         std::string_view setup,
                                                         std::string_view described,
                                                         absl::Time deadline);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // One statement with parameters; binary results. Errors (Status()): kAlreadyExists for a
  // unique violation (message: the constraint name), kUnavailable (connection lost, deadline,
  // server shutting down), kPermissionDenied, kInvalidArgument (a value the server refused),
  // kInternal. The connection is broken after kUnavailable.
  absl::StatusOr<PgResult> Exec(std::string_view sql, const PgParams& params, absl::Time deadline);
  absl::StatusOr<PgResult> Exec(std::string_view sql, absl::Time deadline) {
    return Exec(sql, PgParams(), deadline);
  }
  // Exec in two halves: Send queues the statement and returns at once (the server runs it
  // meanwhile); Collect (by the deadline) returns its result, with Exec's errors. Nothing else
  // may run on the connection in between.
  absl::Status Send(std::string_view sql, const PgParams& params);
  absl::StatusOr<PgResult> Collect(absl::Time deadline);
  // Simple-protocol text (several statements, no parameters).
  absl::Status ExecScript(std::string_view sql, absl::Time deadline);
  // COPY ... FROM STDIN with `data` in COPY's text format.
  absl::Status CopyIn(std::string_view sql, std::string_view data, absl::Time deadline);

  // Reads what the socket holds (call when poll(2) says readable) and returns the number of
  // notifications that came. Errors: kUnavailable (connection lost).
  absl::StatusOr<int> ReadNotifications();
  int socket() const { return PQsocket(conn_); }

  bool broken() const { return broken_; }
  // Usable for a new call: connected, idle (no transaction), not closed by the server while it
  // sat in the pool (a restart, pg_terminate_backend). Reads what the socket holds.
  bool Healthy();
  void set_broken() { broken_ = true; }
  // The server process id, for tests (pg_terminate_backend).
  int backend_pid() const { return PQbackendPID(conn_); }

 private:
  PgConn(PGconn* conn, std::string described) : conn_(conn), described_(std::move(described)) {}
  absl::Status Wait(bool write, absl::Time deadline);  // poll(2) on the socket
  absl::Status ConnectionError(std::string_view what);
  absl::Status ResultError(const PGresult* r);

  PGconn* conn_;
  std::string described_;
  bool broken_ = false;
};

// "postgres host=... port=... dbname=... user=..." for `url`, never its password; or
// kInvalidArgument "url: ..." when libpq cannot parse it.
absl::StatusOr<std::string> DescribePostgresUrl(const std::string& url);

// A connection pool. Thread-safe.
class PgPool {
 public:
  PgPool(std::string url, std::string setup, std::string described, std::size_t size);
  ~PgPool();

  class Lease {
   public:
    Lease(PgPool* pool, std::unique_ptr<PgConn> conn, bool reused)
        : pool_(pool), conn_(std::move(conn)), reused_(reused) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() { Release(); }
    // Gives the connection back now (dropped if broken); the lease is then empty.
    void Release();
    PgConn* operator->() const { return conn_.get(); }
    PgConn& operator*() const { return *conn_; }
    // Taken from the pool rather than opened for this call: a failure on it may be the
    // connection's, not the server's (worth one retry on a new one before anything was written).
    bool reused() const { return reused_; }

   private:
    PgPool* pool_;
    std::unique_ptr<PgConn> conn_;
    bool reused_;
  };

  // A connection, idle or new, by `deadline`. Errors: kUnavailable (none free in time, or the
  // server unreachable), others as PgConn::Connect.
  absl::StatusOr<Lease> Acquire(absl::Time deadline);

  std::uint64_t connects() const { return connects_.load(std::memory_order_relaxed); }
  std::uint64_t connect_failures() const {
    return connect_failures_.load(std::memory_order_relaxed);
  }
  const std::string& described() const { return described_; }

 private:
  void Return(std::unique_ptr<PgConn> conn);

  const std::string url_;
  const std::string setup_;
  const std::string described_;
  const std::size_t size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<PgConn>> idle_;  // guarded by mu_
  std::size_t open_ = 0;                       // guarded by mu_: idle + leased + connecting
  std::atomic<std::uint64_t> connects_{0};
  std::atomic<std::uint64_t> connect_failures_{0};
};

// A text[] parameter's value: the array literal {"a","b\\"c"} (each element quoted, '"' and '\\'
// escaped).
std::string TextArrayLiteral(const std::vector<std::string>& elements);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_POSTGRES_PG_CONN_H_
