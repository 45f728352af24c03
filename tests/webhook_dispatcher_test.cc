// WebhookDispatcher (keygate/webhooks/webhook_dispatcher.h): keys' lifecycle events reach a real
// HTTPS receiver signed, in order per key, at least once; failing, exhausted and gone endpoints
// follow the schedule; a restart resumes from the state file.

#include "keygate/webhooks/webhook_dispatcher.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/webhook_signature.h"
#include "test_util.h"
#include "webhook_dispatcher_fixture.h"
#include "webhook_receiver.h"

namespace keygate {
namespace {

using testing::MustOk;
using testing::Seen;
using testing::WebhookFixture;
using Fixture = WebhookFixture;
using testing::Eventually;
using testing::TypeOf;

TEST_CASE("WebhookDispatcher delivers a key's lifecycle in order, signed, without secrets",
          "[webhooks][dispatcher]") {
  Fixture f;
  // Changes before the first start are not sent (the log's end is where a new file starts).
  f.Create("before", "/ok");
  f.StartDispatcher();
  const CreatedKey k = f.Create("svc", "/ok");
  f.Create("no-webhook", "");
  KeyUpdate u;
  u.description = "changed";
  REQUIRE(f.manager->Modify(k.record.id, u, 1, "bob").ok());
  REQUIRE(f.manager->Revoke(k.record.id, "bob").ok());
  REQUIRE(f.manager->Restore(k.record.id, "bob").ok());
  const CreatedKey rolled = MustOk(f.manager->Roll(k.record.id, absl::ZeroDuration(), "bob"));
  REQUIRE(f.manager->Delete(k.record.id, "bob").ok());

  REQUIRE(Eventually([&] { return f.receiver.seen().size() >= 6; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // nothing more comes
  const std::vector<Seen> seen = f.receiver.seen();
  REQUIRE(seen.size() == 6);
  std::vector<std::string> types;
  for (const Seen& s : seen) {
    types.push_back(TypeOf(s));
    INFO(s.body);
    CHECK(VerifyWebhookSignature({f.secret}, s.id, s.timestamp, s.signature, s.body, absl::Now())
              .ok());
    CHECK(s.id.rfind(absl::StrCat("msg_", k.record.id, "_"), 0) == 0);
    CHECK(s.body.find(k.record.id) != std::string::npos);
    CHECK(s.body.find(std::string(k.token.Reveal(InsecureSecretAccess::Get()))) ==
          std::string::npos);
    CHECK(s.body.find(std::string(rolled.token.Reveal(InsecureSecretAccess::Get()))) ==
          std::string::npos);
  }
  CHECK(types == std::vector<std::string>{"key.created", "key.modified", "key.revoked",
                                          "key.restored", "key.rolled", "key.deleted"});
  CHECK(seen[1].body.find("\"changed_fields\":[\"description\"]") != std::string::npos);
  CHECK(seen[1].body.find("\"actor\":\"bob\"") != std::string::npos);
  // The deletion carries the key as last read (at least its id, if it was gone before any read).
  CHECK(seen[5].body.find(absl::StrCat("\"id\":\"", k.record.id, "\"")) != std::string::npos);
  const std::vector<WebhookDelivery> log = f.Log(k.record.id);
  REQUIRE(log.size() == 6);
  for (const WebhookDelivery& d : log) {
    CHECK(d.state == WebhookDelivery::State::kDelivered);
    REQUIRE(d.attempts.size() == 1);
    CHECK(d.attempts[0].status == 204);
  }
  CHECK(log.front().type == "key.deleted");  // newest first
  CHECK(f.dispatcher->last_error().ok());
}

TEST_CASE("WebhookDispatcher retries with the same webhook-id, the key's next message waiting",
          "[webhooks][dispatcher]") {
  Fixture f;
  f.StartDispatcher();
  f.receiver.set_fail_next(2);
  const CreatedKey k = f.Create("flaky", "/flaky");
  KeyUpdate u;
  u.description = "second";
  REQUIRE(f.manager->Modify(k.record.id, u, 1, "alice").ok());
  REQUIRE(Eventually([&] { return f.receiver.seen().size() >= 4; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::vector<Seen> seen = f.receiver.seen();
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].id == seen[1].id);
  CHECK(seen[1].id == seen[2].id);
  CHECK(TypeOf(seen[2]) == "key.created");
  CHECK(TypeOf(seen[3]) == "key.modified");
  const std::vector<WebhookDelivery> log = f.Log(k.record.id);
  REQUIRE(log.size() == 2);
  REQUIRE(log[1].attempts.size() == 3);
  CHECK(log[1].attempts[0].status == 500);
  CHECK(log[1].attempts[1].status == 500);
  CHECK(log[1].attempts[2].status == 204);
  CHECK(log[1].attempts[0].error == "status 500");
  // The waits follow the schedule (20 ms, then 40 ms, +-20%).
  CHECK(log[1].attempts[1].at - log[1].attempts[0].at >= absl::Milliseconds(16));
  CHECK(log[1].attempts[2].at - log[1].attempts[1].at >= absl::Milliseconds(32));
  CHECK(log[1].state == WebhookDelivery::State::kDelivered);
}

TEST_CASE("WebhookDispatcher fails a message after the schedule and goes on; 410 disables",
          "[webhooks][dispatcher]") {
  Fixture f;
  f.StartDispatcher();
  // Always 500: three attempts (the first and two retries), then failed; the next message
  // (to a new URL) is delivered.
  const CreatedKey k = f.Create("down", "/fail");
  f.SetUrl(k.record.id, "/ok");
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> log = f.Log(k.record.id);
    return log.size() == 2 && log[0].state == WebhookDelivery::State::kDelivered;
  }));
  std::vector<WebhookDelivery> log = f.Log(k.record.id);
  CHECK(log[1].state == WebhookDelivery::State::kFailed);
  CHECK(log[1].attempts.size() == 3);
  CHECK(log[0].url == f.receiver.Url("localhost", "/ok"));

  // 410: the endpoint is disabled; what follows for the same URL is skipped, not sent.
  const CreatedKey g = f.Create("gone", "/gone");
  REQUIRE(Eventually([&] {
    return f.Log(g.record.id).size() == 1 &&
           f.Log(g.record.id)[0].state == WebhookDelivery::State::kFailed;
  }));
  REQUIRE(f.manager->Revoke(g.record.id, "alice").ok());
  REQUIRE(Eventually([&] { return f.Log(g.record.id).size() == 2; }));
  log = f.Log(g.record.id);
  CHECK(log[0].state == WebhookDelivery::State::kSkipped);
  CHECK(log[0].attempts.empty());
  // A new URL enables it again.
  f.SetUrl(g.record.id, "/ok");
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> l = f.Log(g.record.id);
    return l.size() == 3 && l[0].state == WebhookDelivery::State::kDelivered;
  }));
  std::size_t gone_requests = 0;
  for (const Seen& s : f.receiver.seen()) gone_requests += s.path == "/gone";
  CHECK(gone_requests == 1);
}

TEST_CASE("WebhookDispatcher: a 410 from a key's old URL leaves its new URL enabled",
          "[webhooks][dispatcher]") {
  Fixture f;
  f.StartDispatcher();
  f.dispatcher.reset();  // the file exists, its position before the changes below
  const CreatedKey k = f.Create("moved", "/gone");
  f.SetUrl(k.record.id, "/ok");
  f.StartDispatcher();  // reads both before the first attempt
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> l = f.Log(k.record.id);
    return l.size() == 2 && l[0].state != WebhookDelivery::State::kPending &&
           l[1].state != WebhookDelivery::State::kPending;
  }));
  const std::vector<WebhookDelivery> log = f.Log(k.record.id);
  CHECK(log[1].state == WebhookDelivery::State::kFailed);  // 410 at /gone
  CHECK(log[0].state == WebhookDelivery::State::kDelivered);
  CHECK(log[0].url == f.receiver.Url("localhost", "/ok"));
}

TEST_CASE("WebhookDispatcher resumes from its state file after a stop", "[webhooks][dispatcher]") {
  Fixture f;
  // Twenty retries 100 ms apart: the first message is still pending when the dispatcher stops,
  // even on a slow machine, and due again soon after the restart.
  WebhookDispatcherOptions o = f.Options();
  o.retry_schedule = std::vector<absl::Duration>(20, absl::Milliseconds(100));
  f.StartDispatcher(o);
  f.receiver.set_fail_next(1000000);
  const CreatedKey k = f.Create("resume", "/flaky");
  REQUIRE(Eventually([&] { return !f.receiver.seen().empty(); }));
  f.dispatcher->Stop();
  // Committed while no dispatcher runs.
  KeyUpdate u;
  u.description = "while stopped";
  REQUIRE(f.manager->Modify(k.record.id, u, 1, "alice").ok());
  f.receiver.set_fail_next(0);
  f.dispatcher.reset();
  f.StartDispatcher();
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> log = f.Log(k.record.id);
    return log.size() == 2 && log[0].state == WebhookDelivery::State::kDelivered &&
           log[1].state == WebhookDelivery::State::kDelivered;
  }));
  CHECK(f.dispatcher->Start().code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("WebhookDispatcher::Create refuses options that cannot work", "[webhooks][dispatcher]") {
  Fixture f;
  const auto message = [](WebhookDispatcherOptions o) {
    return std::string(WebhookDispatcher::Create(std::move(o)).status().message());
  };
  WebhookDispatcherOptions o = f.Options();
  o.store = nullptr;
  CHECK(message(o) == "store: must be set");
  o = f.Options();
  o.secrets.clear();
  CHECK(message(o) == "secrets: at least one unless envelope is set");
  o = f.Options();
  o.expiring_lead = absl::Hours(24 * 366);
  CHECK(message(o) == "expiring_lead: must be 0 to 365 days");
  o = f.Options();
  o.expiring_scan_interval = absl::Milliseconds(10);
  CHECK(message(o) == "expiring_scan_interval: must be 1 s to 1 day");
  o = f.Options();
  o.rate_limited_window = absl::ZeroDuration();
  CHECK(message(o) == "rate_limited_window: must be 1 s to 30 days");
  o = f.Options();
  o.retry_schedule.clear();
  CHECK(message(o) == "retry_schedule: 1 to 20 delays");
  o = f.Options();
  o.threads = 0;
  CHECK(message(o) == "threads: must be 1 to 64");
  o = f.Options();
  o.jitter = 1.5;
  CHECK(message(o) == "jitter: must be in [0, 1)");
  o = f.Options();
  o.sender.connect_timeout = absl::ZeroDuration();
  CHECK_THAT(message(o), Catch::StartsWith("sender.connect_timeout: "));
}

}  // namespace
}  // namespace keygate
