// The admin API (keygate::admin) through the real HTTP stack: a cpp-httplib TLS server (as
// `keygate serve` runs it) in this process, a keep-alive TLS client on loopback, the SQLite store
// holding KEYGATE_BENCH_KEYS keys (default 100,000). Targets (issue 17): list and name search
// p99 <= 20 ms, create p99 <= 10 ms.
//   BM_AdminMe            GET /me: authentication and HTTP alone, the floor of every route
//   BM_AdminList          GET /keys?limit=50 (the console's first page)
//   BM_AdminSearch/<n>    GET /keys?name=<needle>&limit=50: a needle in every name / in 3 % /
//                         in one name / in none (the whole table is searched)
//   BM_AdminCreate        POST /keys (a commit each: synchronous=FULL, one fsync)
// Latency counters p50/p99/p999 in ns per request (bench_latency.h); the figures in the closing
// note come from --benchmark_min_time=2.

#include <httplib.h>
#include <stdlib.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"

#include "bench_latency.h"
#include "internal/self_signed_cert.h"
#include "keygate/admin/admin_api.h"
#include "keygate/admin/httplib.h"
#include "keygate/audit.h"
#include "keygate/deployment.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/token.h"

namespace keygate {
namespace {

std::size_t KeyCount() {
  const char* v = std::getenv("KEYGATE_BENCH_KEYS");
  if (v != nullptr && *v != '\0') return std::strtoull(v, nullptr, 10);
  return 100'000;
}

const char* const kServices[] = {"billing", "search",  "auth",    "payments", "ledger", "mailer",
                                 "reports", "export",  "import",  "gateway",  "orders", "tax",
                                 "catalog", "metrics", "alerts",  "backup",   "sync",   "media",
                                 "ingest",  "pricing", "support", "crm",      "etl",    "profile",
                                 "storage", "invoice", "cart",    "shipping", "crypto", "fraud"};

// Everything the benchmarks share, built once: the store, the server and a connected client.
struct Fixture {
  Fixture() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "keygate-admin-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return;
    dir = tmpl;
    auto d = Deployment::Create({});
    SqliteOptions so;
    so.path = dir + "/keys.db";
    absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(so);
    if (!d.ok() || !store.ok()) return;
    deployment = *d;
    // KEYGATE_BENCH_KEYS keys, 10,000 a transaction; names "<service>-<n>".
    std::vector<KeyRecord> batch;
    const absl::Time now = TruncateToMicros(absl::Now());
    for (std::size_t i = 0; i < KeyCount();) {
      batch.clear();
      for (; batch.size() < 10'000 && i < KeyCount(); ++i) {
        absl::StatusOr<Secret> token = GenerateToken("kg", "live");
        const std::string_view t = token->Reveal(InsecureSecretAccess::Get());
        KeyRecord r;
        const std::string digits = std::to_string(i);
        r.id = absl::StrCat("key_", std::string(22 - digits.size(), '0'), digits);
        r.name = absl::StrCat(kServices[i % std::size(kServices)], "-", i);
        r.owner = absl::StrCat("user", i % 5000);
        r.kind = KeyKind::kGeneral;
        r.environment = "production";
        r.scopes = {"read:all"};
        r.state = KeyState::kActive;
        r.created = now;
        r.updated = now;
        r.digest = *deployment->hasher().Hash(t);
        r.hint = TokenHint(t);
        batch.push_back(std::move(r));
      }
      if (!(*store)->InsertBatch(batch, {EventType::kCreated, "bench", now, {}}).ok()) return;
    }
    KeyManager::Options mo;
    mo.deployment = deployment;
    mo.store = *store;
    std::shared_ptr<KeyManager> manager = *KeyManager::Create(std::move(mo));
    CreateKeyRequest admin;
    admin.name = "admin";
    admin.owner = "alice";
    admin.environment = "production";
    admin.scopes = {"admin"};
    auto created = manager->Create(admin, "bench");
    if (!created.ok()) return;
    authorization = "Bearer " + std::string(created->token.Reveal(InsecureSecretAccess::Get()));

    HttpAuthOptions ao;
    ao.verifier = AdaptVerifier(*ReferenceVerifier::Create(
        {.deployment = deployment, .store = *store, .environment = "production"}));
    AdminApi::Options o;
    o.manager = manager;
    o.authenticator = *HttpAuthenticator::Create(std::move(ao));
    api = *AdminApi::Create(std::move(o));

    auto pem = internal::MakeSelfSignedCertificate("keygate bench", 1);
    if (!pem.ok()) return;
    std::filesystem::path cert = std::filesystem::path(dir) / "cert.pem";
    std::filesystem::path key = std::filesystem::path(dir) / "key.pem";
    std::FILE* c = std::fopen(cert.c_str(), "w");
    std::FILE* k = std::fopen(key.c_str(), "w");
    if (c == nullptr || k == nullptr) return;
    std::fwrite(pem->certificate.data(), 1, pem->certificate.size(), c);
    std::fwrite(pem->private_key.data(), 1, pem->private_key.size(), k);
    std::fclose(c);
    std::fclose(k);
    server = std::make_unique<httplib::SSLServer>(cert.c_str(), key.c_str());
    server->set_tcp_nodelay(true);  // as keygate serve: no Nagle delay between header and body
    MountAdminApi(*server, api);
    port = server->bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server->listen_after_bind(); });
    while (!server->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    client = std::make_unique<httplib::SSLClient>("127.0.0.1", port);
    client->enable_server_certificate_verification(false);
    client->set_keep_alive(true);
    client->set_tcp_nodelay(true);
    ok = true;
  }
  ~Fixture() {
    client.reset();
    if (server) server->stop();
    if (thread.joinable()) thread.join();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }

  std::string dir;
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<const AdminApi> api;
  std::unique_ptr<httplib::SSLServer> server;
  std::unique_ptr<httplib::SSLClient> client;
  std::thread thread;
  int port = 0;
  std::string authorization;
  bool ok = false;
};

Fixture& F() {
  static Fixture f;
  return f;
}

// Times `request` (returning the status) per iteration; a status other than `expected` fails.
template <typename Request>
void Run(benchmark::State& state, int expected, Request request) {
  Fixture& f = F();
  if (!f.ok) {
    state.SkipWithError("fixture failed");
    return;
  }
  bench::Latencies latencies;
  for (auto _ : state) {
    const std::uint64_t start = bench::Ticks();
    const int status = request(f);
    latencies.Add(bench::Ticks() - start);
    if (status != expected) {
      state.SkipWithError(absl::StrCat("status ", status, ", expected ", expected).c_str());
      return;
    }
  }
  latencies.Report(state);
  state.counters["keys"] = static_cast<double>(KeyCount());
}

int Get(Fixture& f, const std::string& path) {
  auto r = f.client->Get(path, {{"Authorization", f.authorization}});
  return r ? r->status : -1;
}

void BM_AdminMe(benchmark::State& state) {
  Run(state, 200, [](Fixture& f) { return Get(f, "/admin/api/v1/me"); });
}
BENCHMARK(BM_AdminMe)->Unit(benchmark::kMicrosecond);

void BM_AdminList(benchmark::State& state) {
  Run(state, 200, [](Fixture& f) { return Get(f, "/admin/api/v1/keys?limit=50"); });
}
BENCHMARK(BM_AdminList)->Unit(benchmark::kMicrosecond);

void BM_AdminSearch(benchmark::State& state) {
  // "-" is in every name; "billing" in one name of 30; "-4242" in a few; "zq" in none.
  static const char* const kNeedles[] = {"-", "billing", "-4242", "zq"};
  const std::string path =
      absl::StrCat("/admin/api/v1/keys?limit=50&name=", kNeedles[state.range(0)]);
  state.SetLabel(kNeedles[state.range(0)]);
  Run(state, 200, [&path](Fixture& f) { return Get(f, path); });
}
BENCHMARK(BM_AdminSearch)->DenseRange(0, 3)->Unit(benchmark::kMicrosecond);

void BM_AdminCreate(benchmark::State& state) {
  std::uint64_t n = 0;
  Run(state, 201, [&n](Fixture& f) {
    const std::string body =
        absl::StrCat(R"({"name":"bench-create-)", n++, R"(","environment":"production"})");
    auto r = f.client->Post("/admin/api/v1/keys", {{"Authorization", f.authorization}}, body,
                            "application/json");
    return r ? r->status : -1;
  });
}
BENCHMARK(BM_AdminCreate)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace keygate

BENCHMARK_MAIN();
