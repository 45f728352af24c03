// Benchmarks of the SQLite store at scale (issue 4's acceptance figures):
//
//   BM_SqliteInsertBatch     1 M keys inserted in batches (target >= 50 k keys/s)
//   BM_VerifierLoad          a Verifier loads them all from the file (target <= 3 s)
//   BM_ChangeFeedScan        the raw read the Verifier does: ChangesSince into a hash map
//   BM_ListNameSearch        `list` with a name search over 1 M keys (target <= 50 ms)
//   BM_ListNameSearchNaive   baseline: the same search as a LIKE '%...%' table scan
//   BM_GetById/FindByDigest  point reads at 1 M keys
//   BM_InsertOneCommit       one key per transaction, synchronous FULL vs NORMAL
//                            (the fsync per commit that batches amortise)
//
// The 1 M-key database is built once per process by BM_SqliteInsertBatch (run
// it first: it is registered first) in $KEYGATE_BENCH_DIR or $TMPDIR, and
// removed at exit (KEYGATE_BENCH_KEEP=1 keeps it, to inspect with dbstat or
// sqlite3_analyzer). KEYGATE_BENCH_KEYS changes the key count.
//
// Every figure is checked before it is reported: the loaded Verifier must
// accept a sample of the issued tokens, and each search must return what a
// brute-force scan over the generated names returns.

#include <sqlite3.h>
#include <stdlib.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"

#include "keygate/audit.h"
#include "keygate/deployment.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/token.h"
#include "keygate/verifier.h"

namespace keygate {
namespace {

keygate::AuditNote BenchNote() {
  return {keygate::EventType::kCreated, "bench", absl::FromUnixSeconds(1'700'000'000), {}};
}

std::size_t KeyCount() {
  const char* v = std::getenv("KEYGATE_BENCH_KEYS");
  if (v != nullptr && *v != '\0') return std::max<std::size_t>(1000, std::strtoull(v, nullptr, 10));
  return 1'000'000;
}

// Keys per InsertBatch transaction. Each batch of random ids and digests
// dirties pages all over the indexes, which then go through the WAL and the
// checkpoint once per batch: larger batches amortise that (10 k: ~25 k keys/s
// at 1 M keys; 100 k: see the figures).
std::size_t BatchSize() {
  const char* v = std::getenv("KEYGATE_BENCH_BATCH");
  if (v != nullptr && *v != '\0') return std::max<std::size_t>(1, std::strtoull(v, nullptr, 10));
  return 100'000;
}
constexpr std::size_t kSampleEvery = 997;  // tokens kept to check the Verifier

const char* const kServices[] = {
    "billing", "search",  "auth",     "payments", "ledger",  "mailer",   "reports", "export",
    "import",  "gateway", "checkout", "catalog",  "orders",  "invoices", "metrics", "alerts",
    "backup",  "sync",    "webhooks", "profile",  "storage", "media",    "ingest",  "etl",
    "pricing", "tax",     "shipping", "support",  "crm",     "analytics"};
const char* const kPurposes[] = {"ci",      "deploy", "nightly", "staging-copy", "cron",
                                 "monitor", "batch",  "partner", "integration",  "dashboard",
                                 "lambda",  "worker", "script",  "terraform",    "mobile-app"};

// Deterministic names: "<service>-<purpose> <n>", e.g. "billing-ci 48213".
std::string NameFor(std::size_t i) {
  const std::size_t s = (i * 2654435761u) % std::size(kServices);
  const std::size_t p = (i / 7) % std::size(kPurposes);
  return absl::StrCat(kServices[s], "-", kPurposes[p], " ", i);
}

struct Fixture {
  std::string dir;
  std::string path;
  std::shared_ptr<const Deployment> deployment;
  std::vector<std::string> sample_tokens;  // every kSampleEvery-th key's token
  std::vector<std::string> sample_ids;
  std::vector<Digest> sample_digests;
  std::size_t keys = 0;
  double insert_seconds = 0;
  double insert_cpu_seconds = 0;  // of the inserting thread (all SQLite work runs on it)
  bool built = false;

  ~Fixture() {
    // KEYGATE_BENCH_KEEP=1 leaves the database for inspection (sqlite3_analyzer, dbstat).
    const char* keep = std::getenv("KEYGATE_BENCH_KEEP");
    if (keep != nullptr && std::string_view(keep) == "1") {
      std::cerr << "kept " << path << "\n";
      return;
    }
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
};

// CPU time of the calling thread: on a shared machine, wall time also counts
// other processes' turns; this is what the work costs on a core of its own.
double ThreadCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

Fixture& F() {
  static Fixture f;
  return f;
}

std::string RandomId(std::mt19937_64& rng) {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string id = "key_";
  for (int i = 0; i < 22; ++i) id.push_back(kAlphabet[rng() % 62]);
  return id;
}

// Ids grow with creation time (8 base62 characters of a counter, then 14
// random), the shape of KeyManager's ids ("key_" + creation ms + random).
// KEYGATE_BENCH_SORTABLE_IDS=0 makes them fully random instead, to measure
// what insert locality is worth.
bool SortableIds() {
  const char* v = std::getenv("KEYGATE_BENCH_SORTABLE_IDS");
  return v == nullptr || *v == '\0' || std::string_view(v) != "0";
}

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

// Builds the database: real tokens (CSPRNG, hashed with the deployment's
// hasher), realistic records, inserted BatchSize() at a time. Only InsertBatch is
// timed.
void BuildDatabase(benchmark::State& state) {
  Fixture& f = F();
  const char* base = std::getenv("KEYGATE_BENCH_DIR");
  if (base == nullptr || *base == '\0') base = std::getenv("TMPDIR");
  std::string tmpl =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/keygate-bench-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  f.dir = tmpl;
  f.path = f.dir + "/bench.db";
  f.deployment = *Deployment::Create({});
  SqliteOptions o;
  o.path = f.path;
  if (const char* c = std::getenv("KEYGATE_BENCH_CACHE_KIB"); c != nullptr && *c != '\0') {
    o.cache_kib = std::strtoull(c, nullptr, 10);
  }
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return;
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
      r.id = SortableIds() ? SortableId(i, rng) : RandomId(rng);
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
    const absl::Status s = (*store)->InsertBatch(batch, BenchNote());
    inserting += absl::Now() - start;
    f.insert_cpu_seconds += ThreadCpuSeconds() - cpu_start;
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
  }
  f.insert_seconds = absl::ToDoubleSeconds(inserting);
  f.built = true;
}

void BM_SqliteInsertBatch(benchmark::State& state) {
  for (auto _ : state) {
    BuildDatabase(state);
    state.SetIterationTime(F().insert_seconds);
  }
  state.counters["keys"] = static_cast<double>(F().keys);
  state.counters["batch"] = static_cast<double>(BatchSize());
  state.counters["keys_per_s"] = static_cast<double>(F().keys) / F().insert_seconds;
  state.counters["keys_per_cpu_s"] = static_cast<double>(F().keys) / F().insert_cpu_seconds;
  std::error_code ec;
  state.counters["db_MiB"] =
      static_cast<double>(std::filesystem::file_size(F().path, ec)) / (1024.0 * 1024.0);
}
BENCHMARK(BM_SqliteInsertBatch)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

std::shared_ptr<SqliteKeyStore> OpenFixture(benchmark::State& state) {
  if (!F().built) {
    state.SkipWithError("run BM_SqliteInsertBatch first (it builds the database)");
    return nullptr;
  }
  SqliteOptions o;
  o.path = F().path;
  if (const char* c = std::getenv("KEYGATE_BENCH_READ_CACHE_KIB"); c != nullptr && *c != '\0') {
    o.cache_kib = std::strtoull(c, nullptr, 10);
  }
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return nullptr;
  }
  return *store;
}

void BM_VerifierLoad(benchmark::State& state) {
  std::shared_ptr<SqliteKeyStore> store = OpenFixture(state);
  if (store == nullptr) return;
  std::size_t loaded = 0;
  for (auto _ : state) {
    VerifierOptions vo;
    vo.deployment = F().deployment;
    vo.store = store;
    vo.environment = "production";
    vo.follow_changes = false;
    vo.record_usage = false;
    vo.feed_batch = static_cast<std::size_t>(state.range(0));
    vo.expected_keys = F().keys;
    absl::StatusOr<std::unique_ptr<Verifier>> v = Verifier::Create(std::move(vo));
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
    state.ResumeTiming();
  }
  state.counters["keys"] = static_cast<double>(loaded);
  state.counters["sampled_ok"] = static_cast<double>(F().sample_tokens.size());
}
BENCHMARK(BM_VerifierLoad)->Arg(1000)->Iterations(3)->Unit(benchmark::kMillisecond);

// The store read alone: what any follower pays (baseline for the load).
void BM_ChangeFeedScan(benchmark::State& state) {
  std::shared_ptr<SqliteKeyStore> store = OpenFixture(state);
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
BENCHMARK(BM_ChangeFeedScan)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond);

struct Search {
  const char* needle;
  const char* what;
};
const Search kSearches[] = {
    {"worker 700007", "one match"}, {"payments-ci 1", "rare (~100)"},
    {"ledger-", "common (3%)"},     {"-", "everything"},
    {"ci", "2 chars, dense"},       {"zq", "2 chars, no match (scan)"},
    {"no such key", "no match"},
};

std::size_t BruteForceCount(std::string_view needle, std::size_t limit) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < F().keys && n <= limit; ++i) {
    if (NameFor(i).find(needle) != std::string::npos) ++n;
  }
  return n;
}

void BM_ListNameSearch(benchmark::State& state) {
  std::shared_ptr<SqliteKeyStore> store = OpenFixture(state);
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
}
BENCHMARK(BM_ListNameSearch)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6}, {50}})
    ->Args({2, 1000})
    ->Args({1, 1000})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5);

// Baseline: the obvious implementation, a LIKE scan in id order.
void BM_ListNameSearchNaive(benchmark::State& state) {
  if (!F().built) {
    state.SkipWithError("run BM_SqliteInsertBatch first");
    return;
  }
  const Search& s = kSearches[state.range(0)];
  sqlite3* db = nullptr;
  sqlite3_open_v2(F().path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db,
                     "SELECT id, name FROM keys WHERE name LIKE '%' || ?1 || '%' ORDER BY id "
                     "LIMIT 50",
                     -1, &stmt, nullptr);
  int rows = 0;
  for (auto _ : state) {
    sqlite3_bind_text(stmt, 1, s.needle, -1, SQLITE_STATIC);
    rows = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) ++rows;
    sqlite3_reset(stmt);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  state.SetLabel(absl::StrCat("\"", s.needle, "\" ", s.what));
  state.counters["returned"] = rows;
}
BENCHMARK(BM_ListNameSearchNaive)->DenseRange(0, 6)->Unit(benchmark::kMillisecond)->MinTime(0.5);

void BM_GetById(benchmark::State& state) {
  std::shared_ptr<SqliteKeyStore> store = OpenFixture(state);
  if (store == nullptr || F().sample_ids.empty()) return;
  std::size_t i = 0;
  for (auto _ : state) {
    absl::StatusOr<KeyRecord> r = store->Get(F().sample_ids[i++ % F().sample_ids.size()]);
    if (!r.ok()) state.SkipWithError("get failed");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_GetById)->Unit(benchmark::kMicrosecond);

void BM_FindByDigest(benchmark::State& state) {
  std::shared_ptr<SqliteKeyStore> store = OpenFixture(state);
  if (store == nullptr || F().sample_digests.empty()) return;
  std::size_t i = 0;
  for (auto _ : state) {
    absl::StatusOr<KeyRecord> r =
        store->FindByDigest(F().sample_digests[i++ % F().sample_digests.size()]);
    if (!r.ok()) state.SkipWithError("find failed");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_FindByDigest)->Unit(benchmark::kMicrosecond);

// One key per transaction: each commit waits for an fsync of the WAL (FULL)
// or not (NORMAL). Why imports use InsertBatch.
void BM_InsertOneCommit(benchmark::State& state) {
  const auto sync = static_cast<SqliteSynchronous>(state.range(0));
  std::string tmpl = absl::StrCat(F().dir.empty() ? "/tmp" : F().dir, "/one-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  SqliteOptions o;
  o.path = tmpl + "/one.db";
  o.synchronous = sync;
  std::shared_ptr<SqliteKeyStore> store = *SqliteKeyStore::Create(o);
  std::mt19937_64 rng(7);
  std::size_t i = 0;
  for (auto _ : state) {
    KeyRecord r;
    r.id = RandomId(rng);
    r.name = NameFor(i++);
    r.owner = "bench";
    r.kind = KeyKind::kGeneral;
    r.environment = "production";
    r.state = KeyState::kActive;
    for (std::size_t b = 0; b < r.digest.size(); ++b)
      r.digest[b] = static_cast<std::uint8_t>(rng());
    r.hint = "kg_live_...bench";
    if (!store->Insert(r, BenchNote()).ok()) state.SkipWithError("insert failed");
  }
  store.reset();
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  state.SetLabel(sync == SqliteSynchronous::kFull ? "synchronous=FULL" : "synchronous=NORMAL");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_InsertOneCommit)
    ->Arg(static_cast<int>(SqliteSynchronous::kFull))
    ->Arg(static_cast<int>(SqliteSynchronous::kNormal))
    ->Iterations(300)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace keygate

BENCHMARK_MAIN();
