// `keygate serve`: the admin API (keygate::admin) over HTTPS on the database the CLI manages,
// with cpp-httplib, and with --webhook-state a webhook dispatcher on it (commands.h).

#include <httplib.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>

#include <cstddef>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/format.h"

#include "internal/self_signed_cert.h"
#include "keygate/admin/admin_api.h"
#include "keygate/admin/httplib.h"
#include "keygate/http_request.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/scope.h"
#ifdef KEYGATE_HAVE_WEBHOOKS
#include "keygate/webhooks/webhook_dispatcher.h"
#endif

namespace keygate::cli {
namespace {

struct Free {
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Free>;

// Whether the store holds an active key with the admin scope in `env` (the first-run hint).
absl::StatusOr<bool> HasAdminKey(KeyManager& manager, const std::string& env) {
  ListOptions o;
  o.filter.environment = env;
  o.filter.state = KeyState::kActive;
  o.limit = kMaxListLimit;
  for (;;) {
    absl::StatusOr<ListPage> page = manager.List(o);
    if (!page.ok()) return page.status();
    for (const KeyRecord& k : page->keys) {
      for (const std::string& scope : k.scopes) {
        if (scope == kScopeAdmin) return true;
      }
    }
    if (page->next_cursor.empty()) return false;
    o.cursor = page->next_cursor;
  }
}

// SIGINT and SIGTERM stop `server` (waited for on a thread of their own: they are blocked in
// every other thread, httplib's pool included). SIGUSR1 only wakes that thread at the end.
class StopOnSignal {
 public:
  explicit StopOnSignal(httplib::Server* server) {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this, server] {
      int signal = 0;
      sigwait(&signals_, &signal);
      if (signal == SIGUSR1) return;
      std::cerr << "keygate: serve: stopping\n";
      server->stop();
    });
  }
  ~StopOnSignal() {
    // Served to the end without a signal (listen failed, or stopped): wake the waiter.
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
    pthread_sigmask(SIG_UNBLOCK, &signals_, nullptr);
  }

 private:
  sigset_t signals_{};
  std::thread thread_;
};

}  // namespace

int RunServe(const Globals& g, const ServeArgs& a) {
  absl::StatusOr<Session> s = OpenSession(g, /*create_if_missing=*/true);
  if (!s.ok()) return Fail(s.status());
  std::shared_ptr<KeyManager> manager = std::move(s->manager);
  absl::StatusOr<std::unique_ptr<ReferenceVerifier>> verifier = ReferenceVerifier::Create(
      {.deployment = s->deployment, .store = s->store, .environment = a.env});
  if (!verifier.ok()) throw UsageError{absl::StrCat("--env: ", verifier.status().message())};
  HttpAuthOptions auth;
  auth.verifier = AdaptVerifier(*std::move(verifier));
  absl::StatusOr<std::unique_ptr<HttpAuthenticator>> authenticator =
      HttpAuthenticator::Create(std::move(auth));
  if (!authenticator.ok()) return Fail(authenticator.status());
  AdminApi::Options o;
  o.manager = manager;
  o.authenticator = *std::move(authenticator);
  o.base_path = a.base_path;
#ifdef KEYGATE_HAVE_WEBHOOKS
  // Webhooks: a dispatcher on the served store, started once the server listens; the admin API
  // reads its delivery log.
  std::shared_ptr<WebhookDispatcher> dispatcher;
  if (!g.webhook_state.empty()) {
    WebhookRunOptions run{.threads = a.webhook_threads, .ca_file = a.webhook_ca_file};
    if (!ParseDurationWithDays(a.webhook_expiring_lead, &run.expiring_lead)) {
      throw UsageError{"--webhook-expiring-lead: expected a duration such as 0s, 12h or 7d"};
    }
    absl::StatusOr<std::unique_ptr<WebhookDispatcher>> d =
        OpenWebhookDispatcher(g, s->store, g.webhook_secret_per_key ? s->envelope : nullptr, &run);
    if (!d.ok()) return Fail(d.status());
    dispatcher = *std::move(d);
    o.webhook_deliveries = [dispatcher](std::string_view key_id, std::size_t limit) {
      return dispatcher->Deliveries(key_id, limit);
    };
  } else {
    for (const auto& [given, flag] :
         {std::pair<bool, const char*>{a.webhook_threads.has_value(), "--webhook-threads"},
          {!a.webhook_ca_file.empty(), "--webhook-ca-file"},
          {g.webhook_secret_flag, "--webhook-secret-file"}}) {
      if (given) {
        throw UsageError{
            absl::StrCat(flag,
                         ": only with --webhook-state (or $KEYGATE_WEBHOOK_STATE), which turns "
                         "webhooks on")};
      }
    }
  }
#else
  if (!g.webhook_state.empty()) {
    throw UsageError{absl::StrCat(g.webhook_state_source, ": ", kBuiltWithoutWebhooks)};
  }
  if (a.webhook_threads.has_value() || !a.webhook_ca_file.empty()) {
    throw UsageError{
        absl::StrCat(a.webhook_threads.has_value() ? "--webhook-threads" : "--webhook-ca-file",
                     ": ", kBuiltWithoutWebhooks)};
  }
#endif
  absl::StatusOr<std::unique_ptr<AdminApi>> created = AdminApi::Create(std::move(o));
  if (!created.ok()) throw UsageError{absl::StrCat("--", created.status().message())};
  std::shared_ptr<const AdminApi> api = *std::move(created);

  // The certificate: the one given, or a self-signed one for localhost made now.
  std::unique_ptr<httplib::SSLServer> server;
  bool self_signed = false;
  if (!a.cert.empty() || !a.key.empty()) {
    if (a.cert.empty() || a.key.empty()) throw UsageError{"--cert and --key go together"};
    server = std::make_unique<httplib::SSLServer>(a.cert.c_str(), a.key.c_str());
  } else {
    absl::StatusOr<internal::PemPair> pem = internal::MakeSelfSignedCertificate("keygate", 30);
    if (!pem.ok()) return Fail(pem.status());
    Owned<BIO> cert_bio(
        BIO_new_mem_buf(pem->certificate.data(), static_cast<int>(pem->certificate.size())));
    Owned<BIO> key_bio(
        BIO_new_mem_buf(pem->private_key.data(), static_cast<int>(pem->private_key.size())));
    Owned<X509> cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    Owned<EVP_PKEY> key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (!cert || !key) return Fail(absl::InternalError("self-signed certificate: cannot load it"));
    server = std::make_unique<httplib::SSLServer>(cert.get(), key.get());
    self_signed = true;
    if (!a.write_cert.empty()) {
      std::ofstream out(a.write_cert, std::ios::binary | std::ios::trunc);
      out << pem->certificate;
      if (!out.flush()) {
        return Fail(absl::InternalError(absl::StrCat("--write-cert: cannot write ", a.write_cert)));
      }
    }
  }
  if (!server->is_valid()) {
    return Fail(absl::InvalidArgumentError("--cert/--key: cannot load the certificate or key"));
  }
  server->set_payload_max_length(api->options().max_body_bytes);
  server->set_read_timeout(10, 0);
  server->set_write_timeout(10, 0);
  server->set_keep_alive_max_count(100);
  // httplib writes a response's header and body separately: with Nagle's algorithm the body
  // waits for the client's delayed ACK (40 ms a request, measured with admin_bench).
  server->set_tcp_nodelay(true);
  MountAdminApi(*server, api);
  // One line a request: method, path (never the query), status; token-shaped text redacted.
  server->set_logger([](const httplib::Request& req, const httplib::Response& res) {
    // One write per line: httplib's threads log concurrently.
    std::cerr << Redact(absl::StrCat(req.method, " ", EscapeText(req.path), " ", res.status, "\n"));
  });

  const int port = a.port == 0 ? server->bind_to_any_port(a.listen)
                               : (server->bind_to_port(a.listen, a.port) ? a.port : -1);
  if (port <= 0) {
    return Fail(
        absl::UnavailableError(absl::StrCat("serve: cannot listen on ", a.listen, ":", a.port)));
  }
  // After the bind (the socket's creation happens before the thread that may close it, as
  // TSan checks) and before httplib starts its pool (whose threads inherit the blocked signals).
  StopOnSignal stop(server.get());
  const std::string host =
      a.listen.find(':') != std::string::npos ? "[" + a.listen + "]" : a.listen;
  const std::string url = absl::StrCat("https://", host, ":", port, a.base_path, "/");
  if (!a.port_file.empty()) {
    std::ofstream out(a.port_file, std::ios::trunc);
    out << port << "\n";
    if (!out.flush()) {
      return Fail(absl::InternalError(absl::StrCat("--port-file: cannot write ", a.port_file)));
    }
  }
#ifdef KEYGATE_HAVE_WEBHOOKS
  // After the signal mask (the dispatcher's threads inherit it) and once listening is certain.
  if (dispatcher != nullptr) {
    if (absl::Status started = dispatcher->Start(); !started.ok()) {
      return Fail(absl::Status(started.code(),
                               absl::StrCat("webhooks: cannot start: ", started.message())));
    }
  }
#endif
  std::cout << url << std::endl;
  std::cerr << "keygate: serving the admin API at " << url << "api/v1/ (admin keys of environment "
            << a.env << ")\n";
  if (self_signed) {
    std::cerr << "keygate: TLS with a self-signed certificate for localhost"
              << (a.write_cert.empty() ? "" : " (written to " + a.write_cert + ")") << "\n";
  }
  std::cerr << (manager->recoverable_keys()
                    ? "keygate: recoverable keys on: new tokens are also kept encrypted under "
                      "the key-encryption key, and admins can reveal them (audited)\n"
                    : "keygate: recoverable keys off: tokens are kept only as hashes (--kek-file "
                      "turns them on)\n");
#ifdef KEYGATE_HAVE_WEBHOOKS
  if (dispatcher != nullptr) {
    // Where the log is, never a secret.
    std::cerr << "keygate: webhooks on: key events go to the keys' webhook URLs, signed with "
              << (manager->webhook_secret_per_key() ? "each key's own secret"
                                                    : "the deployment's secrets")
              << "; delivery log in " << EscapeText(g.webhook_state)
              << " (keygate webhooks deliveries, GET " << url << "api/v1/webhook-deliveries)\n";
  } else {
    std::cerr << "keygate: webhooks off: nothing is sent to webhook URLs (--webhook-state "
                 "turns them on)\n";
  }
#endif
  absl::StatusOr<bool> has_admin = HasAdminKey(*manager, a.env);
  if (has_admin.ok() && !*has_admin) {
    // A PostgreSQL URL may hold a password: never printed.
    const std::string db = IsPostgresUrl(g.db) ? std::string("URL") : EscapeText(g.db);
    std::cerr << "keygate: no admin key yet; create the first one with\n  keygate --db " << db
              << " create --name admin --owner YOU --env " << a.env << " --scope admin\n";
  }
  const bool served = server->listen_after_bind();
#ifdef KEYGATE_HAVE_WEBHOOKS
  if (dispatcher != nullptr) {
    // Waits for the attempts in flight; what is pending stays in the state file.
    dispatcher->Stop();
    if (absl::Status last = dispatcher->last_error(); !last.ok()) {
      Warn(absl::StrCat("webhooks: last error: ", last.message()));
    }
    std::cerr << "keygate: webhooks stopped (what is pending stays in "
              << EscapeText(g.webhook_state) << " for the next start)\n";
  }
#endif
  if (!served) return Fail(absl::UnavailableError("serve: stopped by error"));
  return kExitOk;
}

}  // namespace keygate::cli
