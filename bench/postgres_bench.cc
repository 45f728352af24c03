// Benchmarks of the PostgreSQL store at scale (issue 15's figures), on a PostgreSQL server that
// the binary starts itself (tests/postgres_server.h: initdb into a temporary directory, a Unix
// socket, fsync on, shared_buffers KEYGATE_BENCH_PG_SHARED_BUFFERS, default 256MB).
//
//   BM_PostgresInsertBatch   1 M keys inserted with InsertBatch (COPY), KEYGATE_BENCH_BATCH per
//                            call (default 100 k) (target >= 20 k keys/s)
//   BM_VerifierLoad          a cold Verifier loads them all through the change feed (<= 5 s)
//   BM_ChangeFeedScan        the raw read the Verifier does: ChangesSince into a hash map
//   BM_ListNameSearch        `List` with a name search (trigram index; needles of one or two
//                            characters through name_trigrams), limit 50 (<= 50 ms)
//   BM_ListNameSearchNoIndex baseline: the store's query with bitmap scans off (no trigram index)
//   BM_GetById/FindByDigest  point reads at 1 M keys (one round trip each)
//   BM_VerifyHit/<store>     Verifier::Verify over the same hot keys on a Verifier loaded from
//                            PostgreSQL (following its feed, listener running) and on one loaded
//                            from a MemoryKeyStore holding the same keys, with BM_HashOnly (the
//                            digest alone) as the floor: the ratio comes from one run
//
// The 1 M-key database is built once per process by BM_PostgresInsertBatch (registered first, so
// it runs first); the server and its directory go at exit. KEYGATE_BENCH_KEYS changes the key
// count. KEYGATE_BENCH_EXPLAIN=1 prints EXPLAIN (ANALYZE, BUFFERS) of every search to stderr.
//
// Every figure is checked before it is reported: the loaded Verifier must accept a sample of the
// issued tokens, each search must return what a brute-force scan over the generated names
// returns, and BM_VerifyHit checks every verdict against the first pass (allowed, or refused
// for its scope: a third of the keys hold only write:all).

#include <libpq-fe.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"

#define KEYGATE_POSTGRES_SERVER_NO_CATCH
#include "bench_latency.h"
#include "keygate/audit.h"
#include "keygate/deployment.h"
#include "keygate/memory_key_store.h"
#include "keygate/postgres/postgres_key_store.h"
#include "keygate/token.h"
#include "keygate/verifier.h"
#include "postgres_server.h"

namespace keygate {
namespace {

AuditNote BenchNote() {
  return {EventType::kCreated, "bench", absl::FromUnixSeconds(1'700'000'000), {}};
}

std::size_t EnvSize(const char* name, std::size_t fallback, std::size_t min) {
  const char* v = std::getenv(name);
  if (v != nullptr && *v != '\0') return std::max<std::size_t>(min, std::strtoull(v, nullptr, 10));
  return fallback;
}

std::size_t KeyCount() { return EnvSize("KEYGATE_BENCH_KEYS", 1'000'000, 1000); }
// Keys per InsertBatch call (one transaction, one COPY). InsertBatch allows its call_timeout
// (5 s) per 10,000 records.
std::size_t BatchSize() { return EnvSize("KEYGATE_BENCH_BATCH", 100'000, 1); }
constexpr std::size_t kSampleEvery = 997;  // tokens kept to check the Verifier

const char* const kServices[] = {
    "billing", "search",  "auth",     "payments", "ledger",  "mailer",   "reports", "export",
    "import",  "gateway", "checkout", "catalog",  "orders",  "invoices", "metrics", "alerts",
    "backup",  "sync",    "webhooks", "profile",  "storage", "media",    "ingest",  "etl",
    "pricing", "tax",     "shipping", "support",  "crm",     "analytics"};
const char* const kPurposes[] = {"ci",      "deploy", "nightly", "staging-copy", "cron",
                                 "monitor", "batch",  "partner", "integration",  "dashboard",
                                 "lambda",  "worker", "script",  "terraform",    "mobile-app"};

// Deterministic names, as sqlite_bench's: "<service>-<purpose> <n>", e.g. "billing-ci 48213".
std::string NameFor(std::size_t i) {
  const std::size_t s = (i * 2654435761u) % std::size(kServices);
  const std::size_t p = (i / 7) % std::size(kPurposes);
  return absl::StrCat(kServices[s], "-", kPurposes[p], " ", i);
}

// Ids grow with creation time (8 base62 characters of a counter, then 14 random), the shape of
// KeyManager's ids.
std::string SortableId(std::size_t i, std::mt19937_64& rng) {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string head(8, '0');
  for (int k = 7; k >= 0 && i > 0; --k, i /= 62)
    head[static_cast<std::size_t>(k)] = kAlphabet[i % 62];
  std::string id = "key_" + head;
  for (int k = 0; k < 14; ++k) id.push_back(kAlphabet[rng() % 62]);
  return id;
}

// CPU time of the calling thread: on a shared machine, wall time also counts other processes'
// turns (and here the server's backend, a process of its own, does most of the work).
double ThreadCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// CPU time of this process, every thread (the Verifier reads the next batch of its feed on a
// thread of its own while it applies one).
double ProcessCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// CPU seconds (user + system) spent so far by the server's processes (the postmaster and every
// live process under it: backends, WAL writer, checkpointer; and the processes that already
// ended, such as parallel query workers, through the postmaster's children's times), from /proc.
double ServerCpuSeconds(pid_t postmaster) {
  std::vector<pid_t> pids = testing::postgres_internal::LiveDescendants(postmaster);
  pids.push_back(postmaster);
  double ticks = 0;
  for (const pid_t p : pids) {
    const std::string stat = testing::ReadFileOrEmpty(absl::StrCat("/proc/", p, "/stat"));
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    const std::vector<std::string> f =
        absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the state (field 3); 16 and
    // 17 (cutime, cstime: children waited for) 14 and 15.
    if (f.size() > 12)
      ticks += std::strtod(f[11].c_str(), nullptr) + std::strtod(f[12].c_str(), nullptr);
    if (p == postmaster && f.size() > 14)
      ticks += std::strtod(f[13].c_str(), nullptr) + std::strtod(f[14].c_str(), nullptr);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct Fixture {
  std::unique_ptr<testing::PostgresServer> server;
  std::string url;
  std::shared_ptr<const Deployment> deployment;
  std::vector<std::string> sample_tokens;  // every kSampleEvery-th key's token (live, active)
  std::vector<std::string> sample_ids;
  std::vector<Digest> sample_digests;
  std::size_t keys = 0;
  double insert_seconds = 0;
  double insert_cpu_seconds = 0;         // of the inserting thread (the client side only)
  double insert_server_cpu_seconds = 0;  // of the server's processes, during InsertBatch calls
  bool built = false;
};

Fixture& F() {
  static Fixture f;
  return f;
}

PostgresOptions StoreOptions() {
  PostgresOptions o;
  o.url = F().url;
  o.call_timeout = absl::Seconds(60);
  return o;
}

absl::StatusOr<std::shared_ptr<PostgresKeyStore>> OpenStore() {
  absl::StatusOr<std::unique_ptr<PostgresKeyStore>> s = PostgresKeyStore::Create(StoreOptions());
  if (!s.ok()) return s.status();
  return std::shared_ptr<PostgresKeyStore>(*std::move(s));
}

// Starts the server and creates the database.
absl::Status StartServer() {
  Fixture& f = F();
  testing::PostgresServer::Options so;
  const char* sb = std::getenv("KEYGATE_BENCH_PG_SHARED_BUFFERS");
  so.settings = {{"shared_buffers", sb != nullptr && *sb != '\0' ? sb : "256MB"},
                 {"max_wal_size", "4GB"}};
  // More settings, "name=value;name=value" (e.g. auto_explain's, with KEYGATE_BENCH_PG_LOG).
  if (const char* more = std::getenv("KEYGATE_BENCH_PG_SETTINGS"); more != nullptr) {
    for (const std::string& kv :
         std::vector<std::string>(absl::StrSplit(more, ';', absl::SkipEmpty()))) {
      const std::size_t eq = kv.find('=');
      if (eq == std::string::npos) return absl::InvalidArgumentError("KEYGATE_BENCH_PG_SETTINGS");
      so.settings.emplace_back(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    }
  }
  absl::StatusOr<std::unique_ptr<testing::PostgresServer>> s =
      testing::PostgresServer::Start(std::move(so));
  if (!s.ok()) return s.status();
  f.server = *std::move(s);
  if (absl::Status st = f.server->CreateDatabase("bench"); !st.ok()) return st;
  f.url = f.server->url("bench");
  return absl::OkStatus();
}

// Builds the database: real tokens (CSPRNG, hashed with the deployment's hasher), realistic
// records, inserted BatchSize() at a time. Only InsertBatch is timed.
void BuildDatabase(benchmark::State& state) {
  Fixture& f = F();
  if (absl::Status st = StartServer(); !st.ok()) {
    state.SkipWithError(st.ToString().c_str());
    return;
  }
  f.deployment = *Deployment::Create({});
  absl::StatusOr<std::shared_ptr<PostgresKeyStore>> store = OpenStore();
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return;
  }
  // KEYGATE_BENCH_PRE_SQL: SQL run on the fresh schema before the insert, for experiments
  // (what an index costs: "DROP INDEX keygate.keys_name_trgm").
  if (const char* sql = std::getenv("KEYGATE_BENCH_PRE_SQL"); sql != nullptr && *sql != '\0') {
    if (absl::StatusOr<std::string> r = f.server->Psql(sql, "bench"); !r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
  }
  f.keys = KeyCount();
  std::mt19937_64 rng(42);
  const absl::Time now = TruncateToMicros(absl::Now());
  absl::Duration inserting;
  const std::size_t batch_size = BatchSize();
  std::vector<KeyRecord> batch;
  batch.reserve(batch_size);
  for (std::size_t i = 0; i < f.keys;) {
    batch.clear();
    for (; batch.size() < batch_size && i < f.keys; ++i) {
      const bool live = (i % 5) != 0;
      absl::StatusOr<Secret> token = GenerateToken("kg", live ? "live" : "test");
      const std::string_view t = token->Reveal(InsecureSecretAccess::Get());
      KeyRecord r;
      r.id = SortableId(i, rng);
      r.name = NameFor(i);
      r.owner = absl::StrCat("user", i % 50'000);
      r.kind = KeyKind::kGeneral;
      r.environment = live ? "production" : "preview";
      r.scopes = {(i % 3) == 0 ? "write:all" : "read:all"};
      r.state = (i % 50) == 0 ? KeyState::kRevoked : KeyState::kActive;
      r.created = now;
      r.updated = now;
      r.digest = *f.deployment->hasher().Hash(t);
      r.hint = TokenHint(t);
      if (i % kSampleEvery == 0 && live && r.state == KeyState::kActive) {
        f.sample_tokens.emplace_back(t);
        f.sample_ids.push_back(r.id);
        f.sample_digests.push_back(r.digest);
      }
      batch.push_back(std::move(r));
    }
    const absl::Time start = absl::Now();
    const double cpu_start = ThreadCpuSeconds();
    const double server_cpu_start = ServerCpuSeconds(f.server->pid());
    const absl::Status s = (*store)->InsertBatch(batch, BenchNote());
    inserting += absl::Now() - start;
    f.insert_cpu_seconds += ThreadCpuSeconds() - cpu_start;
    f.insert_server_cpu_seconds += ServerCpuSeconds(f.server->pid()) - server_cpu_start;
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
  }
  f.insert_seconds = absl::ToDoubleSeconds(inserting);
  // What a server does after a bulk load (autovacuum would, later): statistics for the planner
  // and the visibility map for index-only scans. Not timed.
  if (absl::StatusOr<std::string> r = f.server->Psql("VACUUM ANALYZE", "bench"); !r.ok()) {
    state.SkipWithError(r.status().ToString().c_str());
    return;
  }
  f.built = true;
}

double DatabaseMiB() {
  absl::StatusOr<std::string> r = F().server->Psql("SELECT pg_database_size('bench')", "bench");
  return r.ok() ? std::strtod(r->c_str(), nullptr) / (1024.0 * 1024.0) : -1;
}

void BM_PostgresInsertBatch(benchmark::State& state) {
  for (auto _ : state) {
    BuildDatabase(state);
    state.SetIterationTime(F().insert_seconds);
  }
  if (!F().built) return;
  state.counters["keys"] = static_cast<double>(F().keys);
  state.counters["batch"] = static_cast<double>(BatchSize());
  state.counters["keys_per_s"] = static_cast<double>(F().keys) / F().insert_seconds;
  state.counters["client_cpu_s"] = F().insert_cpu_seconds;
  state.counters["server_cpu_s"] = F().insert_server_cpu_seconds;
  // What the insert costs on cores of its own: keys per CPU-second of client and server.
  state.counters["keys_per_cpu_s"] =
      static_cast<double>(F().keys) / (F().insert_cpu_seconds + F().insert_server_cpu_seconds);
  state.counters["db_MiB"] = DatabaseMiB();
}
BENCHMARK(BM_PostgresInsertBatch)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

std::shared_ptr<PostgresKeyStore> OpenFixture(benchmark::State& state) {
  if (!F().built) {
    state.SkipWithError("run BM_PostgresInsertBatch first (it builds the database)");
    return nullptr;
  }
  absl::StatusOr<std::shared_ptr<PostgresKeyStore>> store = OpenStore();
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return nullptr;
  }
  return *store;
}

VerifierOptions LoadOptions(std::shared_ptr<KeyStore> store, std::size_t feed_batch) {
  VerifierOptions vo;
  vo.deployment = F().deployment;
  vo.store = std::move(store);
  vo.environment = "production";
  vo.follow_changes = false;
  vo.record_usage = false;
  vo.feed_batch = feed_batch;
  vo.expected_keys = F().keys;
  return vo;
}

// Verifier::Create from a fresh store (a new connection: nothing cached on the client) until it
// has loaded every key; the server's buffers are warm after the first iteration.
void BM_VerifierLoad(benchmark::State& state) {
  if (!F().built) {
    state.SkipWithError("run BM_PostgresInsertBatch first (it builds the database)");
    return;
  }
  std::size_t loaded = 0;
  double server_cpu = 0;
  double client_cpu = 0;
  for (auto _ : state) {
    std::shared_ptr<PostgresKeyStore> store = OpenFixture(state);
    if (store == nullptr) return;
    const double server_start = ServerCpuSeconds(F().server->pid());
    const double client_start = ProcessCpuSeconds();
    absl::StatusOr<std::unique_ptr<Verifier>> v =
        Verifier::Create(LoadOptions(store, static_cast<std::size_t>(state.range(0))));
    client_cpu += ProcessCpuSeconds() - client_start;
    server_cpu += ServerCpuSeconds(F().server->pid()) - server_start;
    if (!v.ok()) {
      state.SkipWithError(v.status().ToString().c_str());
      return;
    }
    state.PauseTiming();
    loaded = (*v)->Stats().keys;
    for (const std::string& t : F().sample_tokens) {
      if ((*v)->VerifyToken(t, Requirement::AnyValidKey()).outcome != Outcome::kOk) {
        state.SkipWithError("a sampled token did not verify after the load");
        return;
      }
    }
    v->reset();  // not part of the load
    store.reset();
    state.ResumeTiming();
  }
  state.counters["keys"] = static_cast<double>(loaded);
  state.counters["sampled_ok"] = static_cast<double>(F().sample_tokens.size());
  // Per load, CPU seconds of this process and of the server's processes: the load's cost on
  // cores of its own (the wall time also counts other processes' turns).
  const double n = static_cast<double>(state.iterations());
  state.counters["client_cpu_s"] = client_cpu / n;
  state.counters["server_cpu_s"] = server_cpu / n;
  if (loaded != F().keys) state.SkipWithError("the verifier did not load every key");
}
BENCHMARK(BM_VerifierLoad)
    ->Arg(1000)  // the Verifier's default feed_batch, and its maximum
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The store read alone: what any follower pays (baseline for the load).
void BM_ChangeFeedScan(benchmark::State& state) {
  std::shared_ptr<PostgresKeyStore> store = OpenFixture(state);
  if (store == nullptr) return;
  std::size_t n = 0;
  for (auto _ : state) {
    absl::flat_hash_map<std::string, KeyRecord> replica;
    replica.reserve(F().keys);
    std::uint64_t after = 0;
    for (;;) {
      absl::StatusOr<ChangeBatch> b =
          store->ChangesSince(after, static_cast<std::size_t>(state.range(0)));
      if (!b.ok()) {
        state.SkipWithError(b.status().ToString().c_str());
        return;
      }
      for (Change& c : b->changes) {
        if (c.record.has_value()) replica[c.key_id] = std::move(*c.record);
      }
      after = b->next_sequence;
      if (!b->more) break;
    }
    n = replica.size();
  }
  state.counters["keys"] = static_cast<double>(n);
  if (n != F().keys) state.SkipWithError("the feed did not return every key");
}
BENCHMARK(BM_ChangeFeedScan)->Arg(1000)->Iterations(1)->Unit(benchmark::kMillisecond);

struct Search {
  const char* needle;
  const char* what;
};
const Search kSearches[] = {
    {"worker 700007", "one match"},
    {"payments-ci 1", "rare (~100)"},
    {"ledger-", "common (3%)"},
    {"-", "everything"},
    {"ci", "2 chars, dense"},
    {"zq", "2 chars, no match"},
    {"bx", "2 chars, no match, both held"},
    {" 0", "2 chars, one match"},
    {"q", "1 char, no match"},
    {"no such key", "no match"},
};

std::size_t BruteForceCount(std::string_view needle, std::size_t limit) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < F().keys && n <= limit; ++i) {
    if (NameFor(i).find(needle) != std::string::npos) ++n;
  }
  return n;
}

// A direct libpq connection to the bench database, for the baseline and EXPLAIN.
struct Conn {
  PGconn* c = nullptr;
  explicit Conn(const std::string& url) : c(PQconnectdb(url.c_str())) {}
  ~Conn() { PQfinish(c); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  bool ok() const { return PQstatus(c) == CONNECTION_OK; }
  // Runs `sql` with text parameters; the rows, or -1 on an error (printed).
  int Exec(const std::string& sql, const std::vector<std::string>& params = {},
           std::string* text = nullptr) {
    std::vector<const char*> values;
    for (const std::string& p : params) values.push_back(p.c_str());
    PGresult* r = PQexecParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
    const ExecStatusType st = PQresultStatus(r);
    int rows = -1;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
      rows = PQntuples(r);
      if (text != nullptr) {
        for (int i = 0; i < rows; ++i) absl::StrAppend(text, PQgetvalue(r, i, 0), "\n");
      }
    } else {
      std::fprintf(stderr, "postgres_bench: %s: %s", sql.c_str(), PQresultErrorMessage(r));
    }
    PQclear(r);
    return rows;
  }
};

// The store's List query for a name search (src/postgres/postgres_key_store.cc), with every
// column of keys (the store names them one by one).
constexpr char kSearchSql[] =
    "SELECT k.* FROM keygate.keys k WHERE k.id > $1 AND k.name_lower LIKE $2 ESCAPE '\\' "
    "ORDER BY k.id LIMIT $3";

std::string LikePattern(std::string_view needle) {
  std::string p = "%";
  for (const char ch : needle) {
    if (ch == '%' || ch == '_' || ch == '\\') p.push_back('\\');
    p.push_back(static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch));
  }
  return p + "%";
}

// Once per search shape (the benchmark function runs several times).
void Explain(const Search& s, std::size_t limit) {
  const char* e = std::getenv("KEYGATE_BENCH_EXPLAIN");
  if (e == nullptr || std::string_view(e) != "1") return;
  static std::set<std::pair<const Search*, std::size_t>> done;
  if (!done.emplace(&s, limit).second) return;
  Conn conn(F().url);
  std::string plan;
  conn.Exec(absl::StrCat("EXPLAIN (ANALYZE, BUFFERS) ", kSearchSql),
            {"", LikePattern(s.needle), std::to_string(limit + 1)}, &plan);
  std::fprintf(stderr, "--- EXPLAIN search \"%s\" limit %zu\n%s", s.needle, limit, plan.c_str());
}

void BM_ListNameSearch(benchmark::State& state) {
  std::shared_ptr<PostgresKeyStore> store = OpenFixture(state);
  if (store == nullptr) return;
  const Search& s = kSearches[state.range(0)];
  ListOptions o;
  o.filter.name_contains = s.needle;
  o.limit = static_cast<std::size_t>(state.range(1));
  std::size_t got = 0;
  for (auto _ : state) {
    absl::StatusOr<ListPage> page = store->List(o);
    if (!page.ok()) {
      state.SkipWithError(page.status().ToString().c_str());
      return;
    }
    got = page->keys.size();
    benchmark::DoNotOptimize(page->keys.data());
  }
  // The page is as full as the brute-force count says it must be.
  const std::size_t expected = std::min(BruteForceCount(s.needle, o.limit), o.limit);
  if (got != expected) state.SkipWithError("search returned the wrong number of keys");
  state.SetLabel(absl::StrCat("\"", s.needle, "\" ", s.what));
  state.counters["returned"] = static_cast<double>(got);
  Explain(s, o.limit);
}
BENCHMARK(BM_ListNameSearch)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {50}})
    ->Args({2, 1000})
    ->Args({1, 1000})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(0.5);

// Baseline: the same query with bitmap scans (the trigram index's only access path) off, so
// the planner walks the primary key in id order or scans the table.
void BM_ListNameSearchNoIndex(benchmark::State& state) {
  if (!F().built) {
    state.SkipWithError("run BM_PostgresInsertBatch first");
    return;
  }
  const Search& s = kSearches[state.range(0)];
  Conn conn(F().url);
  if (!conn.ok() || conn.Exec("SET enable_bitmapscan = off") < 0) {
    state.SkipWithError("cannot connect");
    return;
  }
  const std::vector<std::string> params = {"", LikePattern(s.needle), "51"};
  int rows = 0;
  for (auto _ : state) {
    rows = conn.Exec(kSearchSql, params);
    if (rows < 0) {
      state.SkipWithError("query failed");
      return;
    }
  }
  state.SetLabel(absl::StrCat("\"", s.needle, "\" ", s.what));
  state.counters["returned"] = std::min(rows, 50);
}
BENCHMARK(BM_ListNameSearchNoIndex)
    ->DenseRange(0, 9)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(0.5);

void BM_GetById(benchmark::State& state) {
  std::shared_ptr<PostgresKeyStore> store = OpenFixture(state);
  if (store == nullptr || F().sample_ids.empty()) return;
  std::size_t i = 0;
  for (auto _ : state) {
    absl::StatusOr<KeyRecord> r = store->Get(F().sample_ids[i++ % F().sample_ids.size()]);
    if (!r.ok()) state.SkipWithError("get failed");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_GetById)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_FindByDigest(benchmark::State& state) {
  std::shared_ptr<PostgresKeyStore> store = OpenFixture(state);
  if (store == nullptr || F().sample_digests.empty()) return;
  std::size_t i = 0;
  for (auto _ : state) {
    absl::StatusOr<KeyRecord> r =
        store->FindByDigest(F().sample_digests[i++ % F().sample_digests.size()]);
    if (!r.ok()) state.SkipWithError("find failed");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_FindByDigest)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---------------------------------------------------------------------------
// The hot path: a Verifier loaded from PostgreSQL against one loaded from memory
// ---------------------------------------------------------------------------

// The verifiers of BM_VerifyHit, built on first use: `postgres` follows the store's feed as a
// server's does (listener thread and polling running); `memory` holds the same keys, copied
// from the PostgreSQL store's feed into a MemoryKeyStore.
struct HotWorld {
  std::shared_ptr<PostgresKeyStore> pg_store;
  std::unique_ptr<Verifier> postgres;
  std::unique_ptr<Verifier> memory;
  std::vector<std::string> headers;  // "Bearer <token>" of the sampled keys, shuffled
  std::string error;
};

HotWorld& Hot() {
  static HotWorld w = [] {
    HotWorld h;
    absl::StatusOr<std::shared_ptr<PostgresKeyStore>> store = OpenStore();
    if (!store.ok()) {
      h.error = store.status().ToString();
      return h;
    }
    h.pg_store = *store;
    auto memory = std::make_shared<MemoryKeyStore>();
    for (std::uint64_t after = 0;;) {
      absl::StatusOr<ChangeBatch> b = h.pg_store->ChangesSince(after, 10'000);
      if (!b.ok()) {
        h.error = b.status().ToString();
        return h;
      }
      for (const Change& c : b->changes) {
        if (!c.record.has_value()) continue;
        if (absl::Status s = memory->Insert(*c.record, BenchNote()); !s.ok()) {
          h.error = s.ToString();
          return h;
        }
      }
      after = b->next_sequence;
      if (!b->more) break;
    }
    for (int which = 0; which < 2; ++which) {
      VerifierOptions vo;
      vo.deployment = F().deployment;
      vo.environment = "production";
      vo.usage_flush_interval = absl::ZeroDuration();
      vo.expected_keys = F().keys;
      vo.follow_changes = true;
      if (which == 0) {
        vo.store = h.pg_store;
      } else {
        vo.store = memory;
      }
      absl::StatusOr<std::unique_ptr<Verifier>> v = Verifier::Create(std::move(vo));
      if (!v.ok()) {
        h.error = v.status().ToString();
        return h;
      }
      (which == 0 ? h.postgres : h.memory) = *std::move(v);
    }
    for (const std::string& t : F().sample_tokens) h.headers.push_back("Bearer " + t);
    std::mt19937_64 rng(7);
    std::shuffle(h.headers.begin(), h.headers.end(), rng);
    return h;
  }();
  return w;
}

Requirement ReadAll() {
  absl::StatusOr<Requirement> r = F().deployment->scopes().Require({"read:all"});
  if (!r.ok()) std::abort();
  return *std::move(r);
}

// Every 4th call timed with rdtsc for p50/p99 (bench_latency.h), as verifier_bench does.
void BM_VerifyHit(benchmark::State& state, bool postgres) {
  if (!F().built) {
    state.SkipWithError("run BM_PostgresInsertBatch first");
    return;
  }
  HotWorld& h = Hot();
  if (!h.error.empty() || h.headers.empty()) {
    state.SkipWithError(h.error.empty() ? "no sampled tokens" : h.error.c_str());
    return;
  }
  const Verifier& v = postgres ? *h.postgres : *h.memory;
  const Requirement read = ReadAll();
  // The sampled keys' scopes are read:all or write:all; write:all keys are refused read:all
  // (kInsufficientScope), the same on both verifiers: the check is against the first pass.
  std::vector<Outcome> expected;
  for (const std::string& hd : h.headers) expected.push_back(v.Verify(hd, read).outcome);
  const std::size_t ok =
      static_cast<std::size_t>(std::count(expected.begin(), expected.end(), Outcome::kOk));
  bench::Latencies lat;
  std::size_t i = 0;
  std::uint64_t n = 0;
  std::uint64_t wrong = 0;
  for (auto _ : state) {
    const std::size_t k = i;
    if (++i == h.headers.size()) i = 0;
    if (++n % 4 == 0) {
      const std::uint64_t t0 = bench::Ticks();
      const Verdict verdict = v.Verify(h.headers[k], read);
      const std::uint64_t t1 = bench::Ticks();
      benchmark::DoNotOptimize(verdict);
      lat.Add(t1 - t0);
      wrong += verdict.outcome != expected[k];
    } else {
      const Verdict verdict = v.Verify(h.headers[k], read);
      benchmark::DoNotOptimize(verdict);
      wrong += verdict.outcome != expected[k];
    }
  }
  // Every sampled token is live and active: each is either allowed or lacks the scope.
  for (const Outcome o : expected) {
    if (o != Outcome::kOk && o != Outcome::kInsufficientScope) {
      state.SkipWithError("a sampled token was refused for another reason than its scope");
      return;
    }
  }
  if (wrong != 0) {
    state.SkipWithError("a verdict changed during the run");
    return;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["hot_keys"] = static_cast<double>(h.headers.size());
  state.counters["allowed_share"] = static_cast<double>(ok) / static_cast<double>(h.headers.size());
  lat.Report(state);
}

// The floor: the digest alone, as the verifier computes it.
void BM_HashOnly(benchmark::State& state) {
  if (!F().built) {
    state.SkipWithError("run BM_PostgresInsertBatch first");
    return;
  }
  const TokenHasher& hasher = F().deployment->hasher();
  std::size_t i = 0;
  for (auto _ : state) {
    Digest d;
    const std::string& t = F().sample_tokens[i];
    if (++i == F().sample_tokens.size()) i = 0;
    benchmark::DoNotOptimize(hasher.Hash(t, &d));
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// The ratio postgres / memory on one machine shared with other processes: rounds of four blocks
// (memory, postgres, postgres, memory: ABBA, so that a drift in the machine's speed cancels),
// each block a fixed number of calls timed by this thread's CPU clock; the median of the
// rounds' ratios, with the lowest and highest. One iteration is all the rounds.
void BM_VerifyHitRatio(benchmark::State& state) {
  if (!F().built) {
    state.SkipWithError("run BM_PostgresInsertBatch first");
    return;
  }
  HotWorld& h = Hot();
  if (!h.error.empty() || h.headers.empty()) {
    state.SkipWithError(h.error.empty() ? "no sampled tokens" : h.error.c_str());
    return;
  }
  const Requirement read = ReadAll();
  constexpr int kRounds = 30;
  constexpr std::size_t kCalls = 100'000;
  std::size_t i = 0;
  std::uint64_t wrong = 0;
  const auto block = [&](const Verifier& v, const Verifier& other) {
    const double t0 = ThreadCpuSeconds();
    for (std::size_t n = 0; n < kCalls; ++n) {
      const Verdict verdict = v.Verify(h.headers[i], read);
      benchmark::DoNotOptimize(verdict);
      if (n % 1024 == 0) wrong += verdict.outcome != other.Verify(h.headers[i], read).outcome;
      if (++i == h.headers.size()) i = 0;
    }
    return ThreadCpuSeconds() - t0;
  };
  std::vector<double> ratios;
  double memory_s = 0;
  double postgres_s = 0;
  for (auto _ : state) {
    ratios.clear();
    for (int r = 0; r < kRounds; ++r) {
      const double a1 = block(*h.memory, *h.postgres);
      const double b1 = block(*h.postgres, *h.memory);
      const double b2 = block(*h.postgres, *h.memory);
      const double a2 = block(*h.memory, *h.postgres);
      ratios.push_back((b1 + b2) / (a1 + a2));
      memory_s += a1 + a2;
      postgres_s += b1 + b2;
    }
  }
  if (wrong != 0) {
    state.SkipWithError("the two verifiers disagreed on a verdict");
    return;
  }
  std::sort(ratios.begin(), ratios.end());
  const double calls = static_cast<double>(state.iterations()) * kRounds * 2 * kCalls;
  state.counters["ratio_median"] = ratios[ratios.size() / 2];
  state.counters["ratio_min"] = ratios.front();
  state.counters["ratio_max"] = ratios.back();
  state.counters["memory_cpu_ns"] = memory_s / calls * 1e9;
  state.counters["postgres_cpu_ns"] = postgres_s / calls * 1e9;
}

void Register() {
  benchmark::RegisterBenchmark("BM_HashOnly", BM_HashOnly);
  benchmark::RegisterBenchmark("BM_VerifyHit/memory", BM_VerifyHit, false);
  benchmark::RegisterBenchmark("BM_VerifyHit/postgres", BM_VerifyHit, true);
  benchmark::RegisterBenchmark("BM_VerifyHitRatio", BM_VerifyHitRatio)
      ->Iterations(1)
      ->Unit(benchmark::kSecond);
}

}  // namespace
}  // namespace keygate

int main(int argc, char** argv) {
  keygate::Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // KEYGATE_BENCH_PG_LOG=path keeps a copy of the server's log. The server and its directory go
  // with the fixture (a static), at exit.
  const char* log = std::getenv("KEYGATE_BENCH_PG_LOG");
  if (log != nullptr && *log != '\0' && keygate::F().server != nullptr) {
    std::error_code ec;
    std::filesystem::copy_file(keygate::F().server->log_path(), log,
                               std::filesystem::copy_options::overwrite_existing, ec);
  }
  return 0;
}
