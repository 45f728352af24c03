// libpq connections with deadlines, and the pool (pg_conn.h).

#include "postgres/pg_conn.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace keygate::internal {
namespace {

std::string Trimmed(const char* message) {
  std::string s = message == nullptr ? "" : message;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  // libpq's messages may span lines ("...failed: FATAL: ..."): one line per error.
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\t', ' ');
  return s;
}

// Maps an SQLSTATE to a status code.
absl::StatusCode CodeOf(std::string_view state) {
  if (state == "23505") return absl::StatusCode::kAlreadyExists;
  const std::string_view cls = state.substr(0, std::min<std::size_t>(2, state.size()));
  // 08: connection exception; 57P0x: the server shutting down or starting; 53: out of
  // resources (too many connections); 57014: statement timeout or cancel.
  if (cls == "08" || cls == "53" || state.rfind("57P0", 0) == 0 || state == "57014" ||
      state == "55P03") {  // 55P03: lock_timeout (another writer held the lock too long)
    return absl::StatusCode::kUnavailable;
  }
  if (cls == "28" || state == "42501") return absl::StatusCode::kPermissionDenied;
  if (cls == "22") return absl::StatusCode::kInvalidArgument;  // data exception
  if (state == "40001" || state == "40P01") return absl::StatusCode::kAborted;
  return absl::StatusCode::kInternal;
}

// libpq's default notice processor prints server notices, and the FATAL that ends an idle
// connection, to the host's stderr; errors reach the caller as statuses instead.
void IgnoreNotice(void*, const char*) {}

}  // namespace

// --- PgResult::Row, PgParams --------------------------------------------------------------

std::string_view PgResult::Row::Text(int col) const {
  if (PQgetisnull(r_, row_, col) != 0) return {};
  return std::string_view(PQgetvalue(r_, row_, col),
                          static_cast<std::size_t>(PQgetlength(r_, row_, col)));
}

std::int64_t PgResult::Row::Int(int col) const {
  if (PQgetisnull(r_, row_, col) != 0 || PQgetlength(r_, row_, col) != 8) return 0;
  const auto* p = reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row_, col));
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];  // network order
  return static_cast<std::int64_t>(v);
}

bool PgResult::Row::Bool(int col) const {
  return PQgetisnull(r_, row_, col) == 0 && PQgetlength(r_, row_, col) == 1 &&
         PQgetvalue(r_, row_, col)[0] != 0;
}

void PgParams::Set(int index, std::string value, bool is_null, int format) {
  const auto i = static_cast<std::size_t>(index - 1);
  if (values_.size() <= i) {
    values_.resize(i + 1);
    null_.resize(i + 1, true);
    lengths_.resize(i + 1, 0);
    formats_.resize(i + 1, 0);
    pointers_.resize(i + 1, nullptr);
  }
  values_[i] = std::move(value);
  null_[i] = is_null;
  formats_[i] = format;
  // Strings may have moved (short-string storage): re-point every parameter.
  for (std::size_t k = 0; k < values_.size(); ++k) {
    pointers_[k] = null_[k] ? nullptr : values_[k].data();
    lengths_[k] = static_cast<int>(values_[k].size());
  }
}

void PgParams::BindText(int index, std::string_view value) {
  // libpq sends a text parameter up to its first NUL: "a\0b" would be read as "a".
  if (value.find('\0') != std::string_view::npos) has_nul_ = true;
  Set(index, std::string(value), false, 0);
}
void PgParams::BindInt(int index, std::int64_t value) { Set(index, absl::StrCat(value), false, 0); }
void PgParams::BindNull(int index) { Set(index, std::string(), true, 0); }
void PgParams::BindBlob(int index, const void* data, std::size_t size) {
  Set(index, std::string(static_cast<const char*>(data), size), false, 1);
}

// --- PgConn --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PgConn>> PgConn::Connect(const std::string& url,
                                                        std::string_view setup,
                                                        std::string_view described,
                                                        absl::Time deadline) {
  // Defaults first: the URL's own parameters, expanded from dbname, override them. Keepalives
  // find a connection a network dropped silently (the LISTEN connection above all).
  const char* const keywords[] = {"keepalives",
                                  "keepalives_idle",
                                  "keepalives_interval",
                                  "keepalives_count",
                                  "dbname",
                                  "fallback_application_name",
                                  nullptr};
  const char* const values[] = {"1", "30", "10", "3", url.c_str(), "keygate", nullptr};
  PGconn* raw = PQconnectStartParams(keywords, values, /*expand_dbname=*/1);
  if (raw == nullptr) return absl::ResourceExhaustedError("postgres: out of memory");
  PQsetNoticeProcessor(raw, &IgnoreNotice, nullptr);
  std::unique_ptr<PgConn> conn(new PgConn(raw, std::string(described)));
  if (PQstatus(raw) == CONNECTION_BAD) return conn->ConnectionError("connecting");
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) return conn->ConnectionError("connecting");
    if (absl::Status s = conn->Wait(st == PGRES_POLLING_WRITING, deadline); !s.ok()) return s;
    st = PQconnectPoll(raw);
  }
  if (PQsetnonblocking(raw, 1) != 0) return conn->ConnectionError("connecting");
  if (!setup.empty()) {
    if (absl::Status s = conn->ExecScript(setup, deadline); !s.ok()) return s;
  }
  return conn;
}

PgConn::~PgConn() { PQfinish(conn_); }

absl::Status PgConn::ConnectionError(std::string_view what) {
  broken_ = true;
  const std::string m = Trimmed(PQerrorMessage(conn_));
  // Authentication failures are not outages: retrying will not help.
  const bool auth = m.find("authentication failed") != std::string::npos ||
                    m.find("no pg_hba.conf entry") != std::string::npos ||
                    m.find("password") != std::string::npos;
  const std::string text = absl::StrCat(described_, ": ", std::string(what), ": ", m);
  return auth ? absl::PermissionDeniedError(text) : absl::UnavailableError(text);
}

absl::Status PgConn::ResultError(const PGresult* r) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const absl::StatusCode code = CodeOf(state == nullptr ? "" : state);
  if (code == absl::StatusCode::kUnavailable) broken_ = true;
  if (code == absl::StatusCode::kAlreadyExists) {
    const char* constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    return absl::AlreadyExistsError(constraint == nullptr ? "" : constraint);
  }
  // Only the primary message: the DETAIL of some errors quotes values.
  return absl::Status(code, absl::StrCat(described_, ": ", Trimmed(primary), " (SQLSTATE ",
                                         state == nullptr ? "?" : state, ")"));
}

bool PgConn::Healthy() {
  if (broken_ || PQstatus(conn_) != CONNECTION_OK) return false;
  // An idle connection has nothing to read unless the server closed it (a restart, a
  // termination): then reading shows it, and it is not handed out.
  pollfd p{PQsocket(conn_), POLLIN, 0};
  if (p.fd < 0) return false;
  if (::poll(&p, 1, 0) > 0) {
    if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) return false;
  }
  return PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

absl::Status PgConn::Wait(bool write, absl::Time deadline) {
  const int fd = PQsocket(conn_);
  if (fd < 0) return ConnectionError("no socket");
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      broken_ = true;
      return absl::UnavailableError(absl::StrCat(described_, ": deadline exceeded"));
    }
    // Waiting to write, also wake to read: libpq may need to read before it can send more.
    pollfd p{fd, static_cast<short>(write ? (POLLOUT | POLLIN) : POLLIN), 0};
    const auto ms = static_cast<int>(std::min<std::int64_t>(
        absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))), 60'000));
    const int rc = ::poll(&p, 1, ms);
    if (rc > 0) return absl::OkStatus();
    if (rc < 0 && errno != EINTR) {
      broken_ = true;
      return absl::UnavailableError(absl::StrCat(described_, ": poll: ", std::strerror(errno)));
    }
  }
}

absl::StatusOr<PgResult> PgConn::Collect(absl::Time deadline) {
  // Send what is buffered, then read until libpq has every result.
  for (;;) {
    const int f = PQflush(conn_);
    if (f == 0) break;
    if (f < 0) return ConnectionError("sending");
    if (absl::Status s = Wait(true, deadline); !s.ok()) return s;
    if (PQconsumeInput(conn_) == 0) return ConnectionError("reading");
  }
  PgResult last;
  absl::Status error;
  for (;;) {
    while (PQisBusy(conn_) != 0) {
      if (absl::Status s = Wait(false, deadline); !s.ok()) return s;
      if (PQconsumeInput(conn_) == 0) return ConnectionError("reading");
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) break;
    PgResult owned(r);
    const ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      return owned;  // the caller streams the copy
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
      if (error.ok()) error = ResultError(r);
    } else {
      last = owned;
    }
  }
  if (PQstatus(conn_) == CONNECTION_BAD) {
    broken_ = true;
    if (error.ok() || error.code() != absl::StatusCode::kUnavailable) {
      return ConnectionError("connection lost");
    }
  }
  if (!error.ok()) return error;
  return last;
}

absl::StatusOr<PgResult> PgConn::Exec(std::string_view sql, const PgParams& params,
                                      absl::Time deadline) {
  if (absl::Status s = Send(sql, params); !s.ok()) return s;
  return Collect(deadline);
}

absl::Status PgConn::Send(std::string_view sql, const PgParams& params) {
  if (broken_) return absl::UnavailableError(absl::StrCat(described_, ": connection lost"));
  if (params.has_nul()) {
    return absl::InvalidArgumentError(
        "a text value holds a NUL byte, which PostgreSQL cannot store");
  }
  const std::string text(sql);
  if (PQsendQueryParams(conn_, text.c_str(), params.size(), nullptr, params.values(),
                        params.lengths(), params.formats(), /*resultFormat=*/1) == 0) {
    return ConnectionError("sending");
  }
  // Start sending now (non-blocking: what does not fit yet goes in Collect), so that the server
  // works while the caller does.
  if (PQflush(conn_) < 0) return ConnectionError("sending");
  return absl::OkStatus();
}

absl::Status PgConn::ExecScript(std::string_view sql, absl::Time deadline) {
  if (broken_) return absl::UnavailableError(absl::StrCat(described_, ": connection lost"));
  const std::string text(sql);
  if (PQsendQuery(conn_, text.c_str()) == 0) return ConnectionError("sending");
  return Collect(deadline).status();
}

absl::Status PgConn::CopyIn(std::string_view sql, std::string_view data, absl::Time deadline) {
  if (broken_) return absl::UnavailableError(absl::StrCat(described_, ": connection lost"));
  const std::string text(sql);
  if (PQsendQuery(conn_, text.c_str()) == 0) return ConnectionError("sending");
  absl::StatusOr<PgResult> start = Collect(deadline);
  if (!start.ok()) return start.status();
  if (start->get() == nullptr || PQresultStatus(start->get()) != PGRES_COPY_IN) {
    broken_ = true;
    return absl::InternalError(absl::StrCat(described_, ": COPY did not start"));
  }
  constexpr std::size_t kChunk = 1 << 18;
  for (std::size_t at = 0; at < data.size();) {
    const std::size_t n = std::min(kChunk, data.size() - at);
    const int rc = PQputCopyData(conn_, data.data() + at, static_cast<int>(n));
    if (rc < 0) return ConnectionError("copying");
    if (rc == 0) {  // would block: let the server drain
      if (absl::Status s = Wait(true, deadline); !s.ok()) return s;
      if (PQconsumeInput(conn_) == 0) return ConnectionError("copying");
      continue;
    }
    at += n;
    // In nonblocking mode libpq buffers what it cannot send: flush as we go, so the batch is
    // not held twice in memory.
    for (;;) {
      const int f = PQflush(conn_);
      if (f == 0) break;
      if (f < 0) return ConnectionError("copying");
      if (absl::Status s = Wait(true, deadline); !s.ok()) return s;
      if (PQconsumeInput(conn_) == 0) return ConnectionError("copying");
    }
  }
  for (;;) {
    const int rc = PQputCopyEnd(conn_, nullptr);
    if (rc < 0) return ConnectionError("copying");
    if (rc == 1) break;
    if (absl::Status s = Wait(true, deadline); !s.ok()) return s;
  }
  return Collect(deadline).status();
}

absl::StatusOr<int> PgConn::ReadNotifications() {
  if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) == CONNECTION_BAD) {
    return ConnectionError("listening");
  }
  int count = 0;
  while (PGnotify* n = PQnotifies(conn_)) {
    ++count;
    PQfreemem(n);
  }
  return count;
}

absl::StatusOr<std::string> DescribePostgresUrl(const std::string& url) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), &err);
  if (opts == nullptr) {
    // libpq's parse errors quote the whole string, password included: not passed on.
    PQfreemem(err);
    return absl::InvalidArgumentError(
        "url: not a PostgreSQL connection string (libpq cannot parse it; see the libpq manual, "
        "\"Connection Strings\")");
  }
  std::string out = "postgres";
  for (const char* want : {"host", "hostaddr", "port", "dbname", "user"}) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (std::strcmp(o->keyword, want) == 0 && o->val != nullptr && *o->val != '\0') {
        absl::StrAppend(&out, " ", want, "=", o->val);
      }
    }
  }
  PQconninfoFree(opts);
  return out;
}

// --- PgPool --------------------------------------------------------------------------------

PgPool::PgPool(std::string url, std::string setup, std::string described, std::size_t size)
    : url_(std::move(url)),
      setup_(std::move(setup)),
      described_(std::move(described)),
      size_(size) {}

PgPool::~PgPool() = default;

void PgPool::Lease::Release() {
  if (conn_ != nullptr) pool_->Return(std::move(conn_));
}

void PgPool::Return(std::unique_ptr<PgConn> conn) {
  std::unique_ptr<PgConn> drop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->broken()) {
      drop = std::move(conn);
      --open_;
    } else {
      idle_.push_back(std::move(conn));
    }
  }
  cv_.notify_one();
}

absl::StatusOr<PgPool::Lease> PgPool::Acquire(absl::Time deadline) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      while (!idle_.empty()) {
        std::unique_ptr<PgConn> c = std::move(idle_.back());
        idle_.pop_back();
        if (c->Healthy()) return Lease(this, std::move(c), /*reused=*/true);
        --open_;  // closed by the server meanwhile: dropped (outside the lock is not needed)
      }
      if (open_ < size_) break;
      if (cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout &&
          idle_.empty() && open_ >= size_) {
        return absl::UnavailableError(
            absl::StrCat(described_, ": deadline exceeded waiting for a pooled connection"));
      }
    }
    ++open_;  // a slot for the connection opened below, outside the lock
  }
  absl::StatusOr<std::unique_ptr<PgConn>> c = PgConn::Connect(url_, setup_, described_, deadline);
  if (!c.ok()) {
    connect_failures_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
    }
    cv_.notify_one();
    return c.status();
  }
  connects_.fetch_add(1, std::memory_order_relaxed);
  return Lease(this, *std::move(c), /*reused=*/false);
}

std::string TextArrayLiteral(const std::vector<std::string>& elements) {
  std::string out = "{";
  for (const std::string& e : elements) {
    if (out.size() > 1) out.push_back(',');
    out.push_back('"');
    for (const char ch : e) {
      if (ch == '"' || ch == '\\') out.push_back('\\');
      out.push_back(ch);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

}  // namespace keygate::internal
