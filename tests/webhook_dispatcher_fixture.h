// The webhook dispatcher tests' fixture: a memory store and its KeyManager (webhook hosts on
// loopback allowed), a real local HTTPS receiver (webhook_receiver.h) and dispatcher options
// that reach it.
#ifndef KEYGATE_TESTS_WEBHOOK_DISPATCHER_FIXTURE_H_
#define KEYGATE_TESTS_WEBHOOK_DISPATCHER_FIXTURE_H_

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/envelope.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "test_util.h"
#include "webhook_receiver.h"

namespace keygate::testing {

inline std::string TypeOf(const Seen& s) {
  const std::string key = "\"type\":\"";
  const std::size_t at = s.body.find(key);
  if (at == std::string::npos) return "";
  const std::size_t start = at + key.size();
  return s.body.substr(start, s.body.find('"', start) - start);
}

// Waits up to 20 s for `done`.
inline bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 2000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

struct WebhookFixture {
  explicit WebhookFixture(bool per_key_secrets = false) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "keygate_webhooks_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    KeyManager::Options m;
    m.deployment = MustOk(Deployment::Create({}));
    m.store = store;
    m.allow_internal_webhook_hosts = true;
    if (per_key_secrets) {
      m.envelope = envelope;
      m.webhook_secret_per_key = true;
    }
    manager = MustOk(KeyManager::Create(std::move(m)));
  }
  ~WebhookFixture() {
    dispatcher.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  WebhookDispatcherOptions Options() const {
    WebhookDispatcherOptions o;
    o.store = store;
    o.state_path = (dir / "webhooks.db").string();
    o.secrets = {secret};
    o.sender.allow_internal_hosts = true;
    o.sender.ca_file = receiver.ca_file();
    o.sender.resolver = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
      return std::vector<std::string>{"127.0.0.1"};
    };
    o.threads = 2;
    o.retry_schedule = {absl::Milliseconds(20), absl::Milliseconds(40)};
    o.poll_interval = absl::Milliseconds(20);
    return o;
  }
  void StartDispatcher(std::optional<WebhookDispatcherOptions> options = std::nullopt) {
    dispatcher = MustOk(WebhookDispatcher::Create(options.value_or(Options())));
    REQUIRE(dispatcher->Start().ok());
  }

  CreatedKey Create(const std::string& name, const std::string& path,
                    std::optional<absl::Time> expires = std::nullopt) {
    CreateKeyRequest r;
    r.name = name;
    r.owner = "alice";
    r.environment = "production";
    if (!path.empty()) r.webhook_url = receiver.Url("localhost", path);
    r.expires = expires;
    return MustOk(manager->Create(r, "alice"));
  }
  KeyRecord SetUrl(const std::string& id, const std::string& path) {
    KeyUpdate u;
    u.webhook_url = receiver.Url("localhost", path);
    return MustOk(manager->Modify(id, u, MustOk(manager->Get(id)).version, "alice"));
  }
  std::vector<WebhookDelivery> Log(const std::string& id) const {
    return MustOk(dispatcher->Deliveries(id, 100));
  }

  std::filesystem::path dir;
  std::shared_ptr<MemoryKeyStore> store = std::make_shared<MemoryKeyStore>();
  std::unique_ptr<KeyManager> manager;
  Receiver receiver;
  WebhookSecret secret = MustOk(WebhookSecret::Generate());  // the deployment's
  std::shared_ptr<const Envelope> envelope =
      MustOk(Envelope::FromKeys(Secret(std::string(32, 'k')), {}));
  std::unique_ptr<WebhookDispatcher> dispatcher;
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_WEBHOOK_DISPATCHER_FIXTURE_H_
