// Webhook delivery (keygate::webhooks) end to end, for issue 18's targets: a SQLite key store
// (synchronous=FULL, as shipped), a WebhookDispatcher with its state file, and an HTTPS receiver
// (cpp-httplib, an ECDSA P-256 certificate for localhost, 128 server threads, a listen backlog of
// 511 and 100 requests per connection, as nginx before 1.19.10) in this process on 127.0.0.1. The
// sender checks the address as in production: "localhost" goes through a resolver (one that answers
// 127.0.0.1), internal hosts allowed, the receiver's certificate verified. `reuse:0` runs set
// WebhookSenderOptions::connection_lifetime to zero: a TLS handshake per attempt.
//   BM_SenderPost/reuse:R/threads:N
//                               baseline: WebhookSender::Send to the receiver alone (address
//                               check, TLS, one POST) from N threads: the floor of a delivery's
//                               latency and the ceiling of the dispatcher's throughput
//   BM_CommitToDelivery         KeyManager::Create of a key with a webhook URL, one at a time:
//                               ms from Create returning to the receiver having the request
//                               (target p50 <= 200 ms, p99 <= 1 s); `commit_*` is Create itself
//   BM_Throughput/threads:T/reuse:R
//                               KEYGATE_BENCH_KEYS keys (default 5,000), one InsertBatch, one
//                               event each; the dispatcher (T workers) ingests them, then
//                               delivers until the receiver has every one (target >= 1,000/s)
//   BM_BacklogMemory/<events>   <events> keys' events (1,000 and KEYGATE_BENCH_EVENTS, default
//                               100,000) for a port that refuses connections: peak RSS growth
//                               over the RSS before Start while the dispatcher ingests them and
//                               works the backlog for KEYGATE_BENCH_SECONDS (default 10)
// KEYGATE_BENCH_SAMPLES sets BM_CommitToDelivery's deliveries (default 300). Latency counters are
// in ms; a figure that cannot be trusted (a lost or duplicated delivery, a store error) fails
// the benchmark with SkipWithError.

#include <httplib.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"

#include "internal/self_signed_cert.h"
#include "keygate/audit.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/secret.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/token.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "keygate/webhooks/webhook_sender.h"

namespace keygate {
namespace {

using Clock = std::chrono::steady_clock;

std::size_t EnvSize(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  if (v != nullptr && *v != '\0') return std::strtoull(v, nullptr, 10);
  return fallback;
}
std::size_t Samples() { return EnvSize("KEYGATE_BENCH_SAMPLES", 300); }
std::size_t Keys() { return EnvSize("KEYGATE_BENCH_KEYS", 5'000); }
std::size_t Events() { return EnvSize("KEYGATE_BENCH_EVENTS", 100'000); }
std::size_t WorkSeconds() { return EnvSize("KEYGATE_BENCH_SECONDS", 10); }

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// p50, p99 and max of `ms` as counters "<prefix>p50_ms", ...
void ReportMs(benchmark::State& state, std::vector<double> ms, const std::string& prefix = "") {
  if (ms.empty()) return;
  std::sort(ms.begin(), ms.end());
  const auto pct = [&ms](double p) {
    return ms[std::min(ms.size() - 1,
                       static_cast<std::size_t>(p * static_cast<double>(ms.size())))];
  };
  using C = benchmark::Counter;
  state.counters[prefix + "p50_ms"] = C(pct(0.50), C::kAvgThreads);
  state.counters[prefix + "p99_ms"] = C(pct(0.99), C::kAvgThreads);
  state.counters[prefix + "max_ms"] = C(ms.back(), C::kAvgThreads);
}

// A fresh directory, removed at the end.
struct ScratchDir {
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "keygate-hooks-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path;
};

// cpp-httplib 0.11 listens with a backlog of 5: 16 or 64 workers connecting at once would wait
// for SYN retransmissions (~0.5-1 s). Listening again on its socket sets nginx's default, 511.
bool RaiseBacklog(int port) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const int fd = std::atoi(entry.path().filename().c_str());
    int listening = 0;
    socklen_t size = sizeof listening;
    sockaddr_in bound{};
    socklen_t bound_size = sizeof bound;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0 && listening != 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_size) == 0 &&
        bound.sin_family == AF_INET && ntohs(bound.sin_port) == port) {
      return ::listen(fd, 511) == 0;
    }
  }
  return false;
}

// The receiver's paths: each counts its requests and keeps their arrival times and webhook-ids.
enum Path : std::uint8_t { kPost = 0, kLatency = 1, kThroughput = 2, kPaths = 3 };
constexpr const char* kPathNames[kPaths] = {"/post", "/latency", "/throughput"};

class Receiver {
 public:
  Receiver() {
    auto pem = internal::MakeSelfSignedCertificate("keygate webhook bench", 1);
    if (!pem.ok() || dir_.path.empty()) return;
    ca_file_ = dir_.path + "/cert.pem";
    const std::string key = dir_.path + "/key.pem";
    std::ofstream(ca_file_) << pem->certificate;
    std::ofstream(key) << pem->private_key;
    server_ = std::make_unique<httplib::SSLServer>(ca_file_.c_str(), key.c_str());
    if (!server_->is_valid()) return;
    // More threads than the dispatcher has workers at most: a kept connection holds one.
    server_->new_task_queue = [] { return new httplib::ThreadPool(128); };
    server_->set_tcp_nodelay(true);
    server_->set_keep_alive_max_count(100);
    for (int p = 0; p < kPaths; ++p) {
      server_->Post(kPathNames[p], [this, p](const httplib::Request& req, httplib::Response& res) {
        const Clock::time_point now = Clock::now();
        {
          std::lock_guard<std::mutex> lock(mu_);
          Log& log = logs_[p];
          log.arrivals.push_back(now);
          log.ids.insert(req.get_header_value("webhook-id"));
        }
        cv_.notify_all();
        res.status = 204;
      });
    }
    port_ = server_->bind_to_any_port("127.0.0.1");
    if (port_ <= 0 || !RaiseBacklog(port_)) return;
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ok_ = true;
  }
  ~Receiver() {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  bool ok() const { return ok_; }
  const std::string& ca_file() const { return ca_file_; }
  std::string Url(Path p) const { return absl::StrCat("https://localhost:", port_, kPathNames[p]); }

  // Forgets what `p` received.
  void Clear(Path p) {
    std::lock_guard<std::mutex> lock(mu_);
    logs_[p] = Log{};
  }
  std::size_t Count(Path p) const {
    std::lock_guard<std::mutex> lock(mu_);
    return logs_[p].arrivals.size();
  }
  std::size_t Distinct(Path p) const {
    std::lock_guard<std::mutex> lock(mu_);
    return logs_[p].ids.size();
  }
  // When request `n` (from 0) to `p` arrived, waiting up to `timeout` for it.
  std::optional<Clock::time_point> Arrival(Path p, std::size_t n, Clock::duration timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    const Log& log = logs_[p];
    if (!cv_.wait_for(lock, timeout, [&log, n] { return log.arrivals.size() > n; })) {
      return std::nullopt;
    }
    return log.arrivals[n];
  }

 private:
  struct Log {
    std::vector<Clock::time_point> arrivals;
    std::set<std::string> ids;
  };
  ScratchDir dir_;
  std::string ca_file_;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;
  bool ok_ = false;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Log logs_[kPaths];
};

Receiver& TheReceiver() {
  static Receiver r;
  return r;
}

WebhookSenderOptions SenderOptions(bool reuse) {
  WebhookSenderOptions o;
  if (!reuse) o.connection_lifetime = absl::ZeroDuration();
  o.allow_internal_hosts = true;
  o.ca_file = TheReceiver().ca_file();
  o.resolver = [](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
    if (host == "localhost") return std::vector<std::string>{"127.0.0.1"};
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host));
  };
  return o;
}

const WebhookSecret& SigningSecret() {
  static const WebhookSecret s = *WebhookSecret::Generate();
  return s;
}

// A SQLite store and a dispatcher on it, each in `dir`. The dispatcher's state file is new, so
// it starts at the log's end: only what is written after this is sent.
struct Pipeline {
  Pipeline(int threads, bool reuse) {
    if (dir.path.empty()) return;
    auto d = Deployment::Create({});
    SqliteOptions so;
    so.path = dir.path + "/keys.db";
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> s = SqliteKeyStore::Create(so);
    if (!d.ok() || !s.ok()) {
      error = !d.ok() ? d.status() : s.status();
      return;
    }
    deployment = *d;
    store = *s;
    WebhookDispatcherOptions o;
    o.store = store;
    o.state_path = state_path();
    o.secrets = {SigningSecret()};
    o.sender = SenderOptions(reuse);
    o.threads = threads;
    absl::StatusOr<std::unique_ptr<WebhookDispatcher>> w = WebhookDispatcher::Create(std::move(o));
    if (!w.ok()) {
      error = w.status();
      return;
    }
    dispatcher = *std::move(w);
  }
  ~Pipeline() {
    if (dispatcher) dispatcher->Stop();
  }
  bool ok() const { return dispatcher != nullptr; }
  std::string state_path() const { return dir.path + "/webhooks.db"; }

  // `n` keys whose webhook URL is `url`, 10,000 a transaction: one key.created event each.
  absl::Status InsertKeys(std::size_t n, const std::string& url) {
    const absl::Time now = TruncateToMicros(absl::Now());
    std::vector<KeyRecord> batch;
    for (std::size_t i = 0; i < n;) {
      batch.clear();
      for (; batch.size() < 10'000 && i < n; ++i) {
        absl::StatusOr<Secret> token = GenerateToken("kg", "live");
        if (!token.ok()) return token.status();
        const std::string_view t = token->Reveal(InsecureSecretAccess::Get());
        absl::StatusOr<Digest> digest = deployment->hasher().Hash(t);
        if (!digest.ok()) return digest.status();
        KeyRecord r;
        const std::string digits = std::to_string(inserted++);
        r.id = absl::StrCat("key_", std::string(22 - digits.size(), '0'), digits);
        r.name = absl::StrCat("hook-", digits);
        r.owner = "alice";
        r.kind = KeyKind::kGeneral;
        r.environment = "production";
        r.scopes = {"read:all"};
        r.state = KeyState::kActive;
        r.created = now;
        r.updated = now;
        r.digest = *digest;
        r.hint = TokenHint(t);
        r.webhook_url = url;
        batch.push_back(std::move(r));
      }
      if (absl::Status s = store->InsertBatch(batch, {EventType::kCreated, "bench", now, {}});
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  ScratchDir dir;
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<SqliteKeyStore> store;
  std::unique_ptr<WebhookDispatcher> dispatcher;
  absl::Status error = absl::InternalError("no scratch directory");
  std::size_t inserted = 0;
};

// ---- Baseline: the sender alone ----------------------------------------------------------------

void BM_SenderPost(benchmark::State& state) {
  Receiver& r = TheReceiver();
  static std::unique_ptr<WebhookSender> sender;
  if (state.thread_index() == 0) {
    if (!r.ok()) {
      state.SkipWithError("receiver failed to start");
    } else {
      absl::StatusOr<std::unique_ptr<WebhookSender>> s =
          WebhookSender::Create(SenderOptions(state.range(0) != 0));
      if (!s.ok()) state.SkipWithError(std::string(s.status().message()).c_str());
      if (s.ok()) sender = *std::move(s);
    }
  }
  // The harness starts every thread's loop together, after thread 0's set-up.
  std::vector<double> ms;
  WebhookMessage m;
  m.url = r.Url(kPost);
  m.body = R"({"type":"key.created","timestamp":"2026-01-01T00:00:00Z","data":{}})";
  std::uint64_t n = 0;
  for ([[maybe_unused]] auto _ : state) {
    if (sender == nullptr) {
      state.SkipWithError("no sender");
      break;
    }
    m.id = absl::StrCat("msg_", state.thread_index(), "_", n++);
    m.timestamp = absl::ToUnixSeconds(absl::Now());
    absl::StatusOr<std::string> signature =
        WebhookSignatureHeader({SigningSecret()}, m.id, m.timestamp, m.body);
    m.signature = signature.ok() ? *std::move(signature) : "";
    const Clock::time_point start = Clock::now();
    const WebhookAttempt a = sender->Send(m);
    ms.push_back(Ms(Clock::now() - start));
    if (a.result != WebhookResult::kDelivered) {
      state.SkipWithError(absl::StrCat("not delivered: ", a.error).c_str());
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  ReportMs(state, std::move(ms));
}
BENCHMARK(BM_SenderPost)
    ->ArgName("reuse")
    ->Arg(1)
    ->Arg(0)
    ->Threads(1)
    ->Threads(4)
    ->Threads(16)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- Commit to delivery ------------------------------------------------------------------------

void BM_CommitToDelivery(benchmark::State& state) {
  Receiver& r = TheReceiver();
  if (!r.ok()) {
    state.SkipWithError("receiver failed to start");
    return;
  }
  Pipeline p(WebhookDispatcherOptions{}.threads, /*reuse=*/true);
  if (!p.ok()) {
    state.SkipWithError(p.error.ToString().c_str());
    return;
  }
  KeyManager::Options mo;
  mo.deployment = p.deployment;
  mo.store = p.store;
  mo.allow_internal_webhook_hosts = true;
  absl::StatusOr<std::unique_ptr<KeyManager>> manager = KeyManager::Create(std::move(mo));
  if (!manager.ok() || !p.dispatcher->Start().ok()) {
    state.SkipWithError("manager or dispatcher failed to start");
    return;
  }
  r.Clear(kLatency);
  std::vector<double> delivery_ms;
  std::vector<double> commit_ms;
  std::size_t early = 0;  // delivered before Create returned (counted as 0 ms)
  std::size_t n = 0;
  for ([[maybe_unused]] auto _ : state) {
    CreateKeyRequest req;
    req.name = absl::StrCat("svc-", n);
    req.owner = "alice";
    req.environment = "production";
    req.scopes = {"read:all"};
    req.webhook_url = r.Url(kLatency);
    const Clock::time_point start = Clock::now();
    absl::StatusOr<CreatedKey> created = (*manager)->Create(req, "alice");
    const Clock::time_point committed = Clock::now();
    if (!created.ok()) {
      state.SkipWithError(created.status().ToString().c_str());
      return;
    }
    const std::optional<Clock::time_point> arrived =
        r.Arrival(kLatency, n++, std::chrono::seconds(30));
    if (!arrived.has_value()) {
      state.SkipWithError("no delivery within 30 s");
      return;
    }
    const Clock::duration latency = std::max(*arrived - committed, Clock::duration::zero());
    if (*arrived < committed) ++early;
    state.SetIterationTime(Seconds(latency));
    delivery_ms.push_back(Ms(latency));
    commit_ms.push_back(Ms(committed - start));
  }
  p.dispatcher->Stop();
  if (r.Count(kLatency) != n || r.Distinct(kLatency) != n) {
    state.SkipWithError(absl::StrCat(r.Count(kLatency), " requests, ", r.Distinct(kLatency),
                                     " distinct ids for ", n, " events")
                            .c_str());
    return;
  }
  ReportMs(state, std::move(delivery_ms));
  ReportMs(state, std::move(commit_ms), "commit_");
  state.counters["delivered_before_commit_returned"] = static_cast<double>(early);
}
BENCHMARK(BM_CommitToDelivery)
    ->Iterations(static_cast<benchmark::IterationCount>(Samples()))
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- Throughput --------------------------------------------------------------------------------

void BM_Throughput(benchmark::State& state) {
  Receiver& r = TheReceiver();
  const std::size_t n = Keys();
  for ([[maybe_unused]] auto _ : state) {
    Pipeline p(static_cast<int>(state.range(0)), state.range(1) != 0);
    if (!r.ok() || !p.ok()) {
      state.SkipWithError(r.ok() ? p.error.ToString().c_str() : "receiver failed to start");
      return;
    }
    r.Clear(kThroughput);
    if (absl::Status s = p.InsertKeys(n, r.Url(kThroughput)); !s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<std::size_t> queued = p.dispatcher->Ingest();
    const Clock::time_point t1 = Clock::now();
    if (!queued.ok() || *queued != n) {
      state.SkipWithError(absl::StrCat("ingest: ", queued.ok() ? absl::StrCat(*queued, " queued")
                                                               : queued.status().ToString())
                              .c_str());
      return;
    }
    if (!p.dispatcher->Start().ok()) {
      state.SkipWithError("dispatcher failed to start");
      return;
    }
    const std::optional<Clock::time_point> last =
        r.Arrival(kThroughput, n - 1, std::chrono::minutes(5));
    p.dispatcher->Stop();
    if (!last.has_value()) {
      state.SkipWithError(
          absl::StrCat("only ", r.Count(kThroughput), " of ", n, " delivered within 5 min")
              .c_str());
      return;
    }
    if (r.Distinct(kThroughput) != n) {
      state.SkipWithError(
          absl::StrCat(r.Distinct(kThroughput), " distinct ids for ", n, " events").c_str());
      return;
    }
    state.SetIterationTime(Seconds(*last - t0));
    state.counters["deliveries_per_s"] = static_cast<double>(n) / Seconds(*last - t1);
    state.counters["ingest_per_s"] = static_cast<double>(n) / Seconds(t1 - t0);
    state.counters["end_to_end_per_s"] = static_cast<double>(n) / Seconds(*last - t0);
    state.counters["duplicates"] = static_cast<double>(r.Count(kThroughput) - n);
  }
  state.counters["keys"] = static_cast<double>(n);
}
BENCHMARK(BM_Throughput)
    ->ArgNames({"threads", "reuse"})
    ->Args({4, 1})
    ->Args({16, 1})
    ->Args({64, 1})
    ->Args({4, 0})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- Memory under a backlog --------------------------------------------------------------------

// A /proc/self/status field in KiB ("VmRSS", "VmHWM"); -1 when absent.
long StatusKib(std::string_view field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > field.size() && line.compare(0, field.size(), field) == 0 &&
        line[field.size()] == ':') {
      return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
    }
  }
  return -1;
}

// Resets VmHWM to the current RSS (Linux 4.0+); false when the kernel refuses.
bool ResetPeak() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

// Samples VmRSS every 2 ms while alive (VmHWM alone misses nothing, but may not be resettable).
class RssSampler {
 public:
  RssSampler() : thread_([this] { Run(); }) {}
  ~RssSampler() { Stop(); }
  RssSampler(const RssSampler&) = delete;
  RssSampler& operator=(const RssSampler&) = delete;
  long Stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
    return max_kib_;
  }

 private:
  void Run() {
    while (!done_) {
      max_kib_ = std::max(max_kib_.load(), StatusKib("VmRSS"));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  std::atomic<bool> done_{false};
  std::atomic<long> max_kib_{0};
  std::thread thread_;
};

// SELECT count(*) ... on the dispatcher's state file, read-only; -1 on error.
std::int64_t CountRows(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  std::int64_t n = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      n = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return n;
}

void BM_BacklogMemory(benchmark::State& state) {
  const auto events = static_cast<std::size_t>(state.range(0));
  for ([[maybe_unused]] auto _ : state) {
    Pipeline p(WebhookDispatcherOptions{}.threads, /*reuse=*/true);
    if (!p.ok()) {
      state.SkipWithError(p.error.ToString().c_str());
      return;
    }
    // A dead endpoint: a port bound but never listening refuses every connection.
    const int dead = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (dead < 0 || ::bind(dead, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(dead, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      state.SkipWithError("cannot bind a dead port");
      if (dead >= 0) ::close(dead);
      return;
    }
    const std::string url = absl::StrCat("https://localhost:", ntohs(addr.sin_port), "/hook");
    if (absl::Status s = p.InsertKeys(events, url); !s.ok()) {
      ::close(dead);
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    // What inserting freed goes back to the system, so that the dispatcher's growth shows.
    ::malloc_trim(0);
    const long base_kib = StatusKib("VmRSS");
    const bool hwm = ResetPeak();
    const long base_hwm_kib = StatusKib("VmHWM");
    RssSampler sampler;
    const Clock::time_point t0 = Clock::now();
    absl::Status started = p.dispatcher->Start();
    absl::StatusOr<std::size_t> ingested = p.dispatcher->Ingest();  // takes turns with the reader
    const Clock::time_point t1 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(WorkSeconds()));
    p.dispatcher->Stop();
    const long sampled_kib = sampler.Stop();
    const long peak_kib = std::max(sampled_kib, hwm ? StatusKib("VmHWM") : 0L);
    ::close(dead);
    if (!started.ok() || !ingested.ok()) {
      state.SkipWithError((started.ok() ? ingested.status() : started).ToString().c_str());
      return;
    }
    const std::int64_t queued = CountRows(p.state_path(), "SELECT count(*) FROM messages");
    const std::int64_t pending =
        CountRows(p.state_path(), "SELECT count(*) FROM messages WHERE state = 0");
    const std::int64_t attempts = CountRows(p.state_path(), "SELECT count(*) FROM attempts");
    if (queued != static_cast<std::int64_t>(events)) {
      state.SkipWithError(absl::StrCat(queued, " messages queued for ", events, " events").c_str());
      return;
    }
    std::uintmax_t on_disk = 0;
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::error_code ec;
      const std::uintmax_t size = std::filesystem::file_size(p.state_path() + suffix, ec);
      if (!ec) on_disk += size;
    }
    state.SetIterationTime(Seconds(Clock::now() - t0));
    state.counters["events"] = static_cast<double>(events);
    state.counters["rss_before_mib"] = static_cast<double>(base_kib) / 1024.0;
    state.counters["peak_growth_mib"] = static_cast<double>(peak_kib - base_kib) / 1024.0;
    state.counters["hwm_reset"] = hwm && base_hwm_kib <= base_kib + 1024 ? 1 : 0;
    state.counters["ingest_s"] = Seconds(t1 - t0);
    state.counters["attempts"] = static_cast<double>(attempts);
    state.counters["attempts_per_s"] = static_cast<double>(attempts) / Seconds(Clock::now() - t0);
    state.counters["pending_at_stop"] = static_cast<double>(pending);
    state.counters["state_file_mib"] = static_cast<double>(on_disk) / (1024.0 * 1024.0);
  }
}
BENCHMARK(BM_BacklogMemory)
    ->ArgName("events")
    ->Arg(1'000)
    ->Arg(static_cast<std::int64_t>(Events()))
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kSecond);

}  // namespace
}  // namespace keygate

BENCHMARK_MAIN();
