// A dispatching process for webhook_crash_test (not a test itself).
//
//   webhook_test_helper <key db> <state file> <ca file> <secret>
//       Runs a WebhookDispatcher over the SQLite key store <key db>, its state in <state file>,
//       trusting <ca file> for the receiver on 127.0.0.1 (any host name resolves there), signing
//       with the whsec_ <secret> (a test's throwaway), until it is killed.
//
// Exit status: 1 usage, 2 setup error (message on stderr). Killed with SIGKILL when its parent
// dies.

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: webhook_test_helper <key db> <state file> <ca file> <secret>\n";
    return 1;
  }
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) return 1;
  keygate::SqliteOptions so;
  so.path = argv[1];
  so.poll_interval = absl::Milliseconds(5);
  auto store = keygate::SqliteKeyStore::Create(so);
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    return 2;
  }
  keygate::WebhookDispatcherOptions o;
  o.store = std::shared_ptr<keygate::KeyStore>(*std::move(store));
  o.state_path = argv[2];
  auto secret = keygate::WebhookSecret::Parse(argv[4]);
  if (!secret.ok()) {
    std::cerr << secret.status() << "\n";
    return 2;
  }
  o.secrets = {*secret};
  o.sender.allow_internal_hosts = true;
  o.sender.ca_file = argv[3];
  o.sender.resolver = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return std::vector<std::string>{"127.0.0.1"};
  };
  o.threads = 2;
  o.retry_schedule = {absl::Milliseconds(10), absl::Milliseconds(20), absl::Milliseconds(40)};
  o.poll_interval = absl::Milliseconds(10);
  auto dispatcher = keygate::WebhookDispatcher::Create(std::move(o));
  if (!dispatcher.ok()) {
    std::cerr << dispatcher.status() << "\n";
    return 2;
  }
  if (absl::Status s = (*dispatcher)->Start(); !s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  for (;;) ::pause();
}
