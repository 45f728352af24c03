// WebhookDispatcher beyond the audit log's lifecycle events: keys' own signing secrets and their
// rotation, key.expiring, key.rate_limited from a real Verifier's denials, and a state file of
// the first version carried over.

#include <sqlite3.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/verifier.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "test_util.h"
#include "webhook_dispatcher_fixture.h"

namespace keygate {
namespace {

using testing::Eventually;
using testing::MustOk;
using testing::Seen;
using testing::TypeOf;
using testing::WebhookFixture;

bool SignedBy(const Seen& s, const WebhookSecret& secret) {
  return VerifyWebhookSignature({secret}, s.id, s.timestamp, s.signature, s.body, absl::Now()).ok();
}

std::vector<Seen> SeenOfType(const WebhookFixture& f, const std::string& type) {
  std::vector<Seen> out;
  for (const Seen& s : f.receiver.seen()) {
    if (TypeOf(s) == type) out.push_back(s);
  }
  return out;
}

TEST_CASE("WebhookDispatcher signs with a key's own secret, both during a rotation's overlap",
          "[webhooks][dispatcher][secrets]") {
  WebhookFixture f(/*per_key_secrets=*/true);
  WebhookDispatcherOptions o = f.Options();
  o.secrets.clear();  // no deployment secret: only keys' own sign
  o.envelope = f.envelope;
  f.StartDispatcher(o);

  const CreatedKey k = f.Create("own", "/ok");
  REQUIRE(k.webhook_secret.has_value());
  const WebhookSecret first = *k.webhook_secret;
  REQUIRE(Eventually([&] { return f.receiver.seen().size() == 1; }));
  CHECK(SignedBy(f.receiver.seen()[0], first));
  CHECK(!SignedBy(f.receiver.seen()[0], f.secret));

  // A roll is not sent; the next message carries both signatures while the overlap lasts.
  const RolledWebhookSecret second =
      MustOk(f.manager->RollWebhookSecret(k.record.id, absl::Hours(1), "alice"));
  KeyUpdate u;
  u.description = "after the roll";
  REQUIRE(f.manager->Modify(k.record.id, u, second.record.version, "alice").ok());
  REQUIRE(Eventually([&] { return f.receiver.seen().size() == 2; }));
  Seen modified = f.receiver.seen()[1];
  CHECK(TypeOf(modified) == "key.modified");
  CHECK(SignedBy(modified, second.secret));
  CHECK(SignedBy(modified, first));

  // No overlap: the old secret stops signing at once.
  const RolledWebhookSecret third =
      MustOk(f.manager->RollWebhookSecret(k.record.id, absl::ZeroDuration(), "alice"));
  REQUIRE(f.manager->Revoke(k.record.id, "alice").ok());
  REQUIRE(Eventually([&] { return f.receiver.seen().size() == 3; }));
  const Seen revoked = f.receiver.seen()[2];
  CHECK(TypeOf(revoked) == "key.revoked");
  CHECK(SignedBy(revoked, third.secret));
  CHECK(!SignedBy(revoked, second.secret));
  CHECK(!SignedBy(revoked, first));

  // Deleted: its last message is still signed with its secret, as last read.
  REQUIRE(f.manager->Delete(k.record.id, "alice").ok());
  REQUIRE(Eventually([&] { return f.receiver.seen().size() == 4; }));
  CHECK(TypeOf(f.receiver.seen()[3]) == "key.deleted");
  CHECK(SignedBy(f.receiver.seen()[3], third.secret));
  for (const Seen& s : f.receiver.seen()) {
    for (const WebhookSecret* secret : {&first, &second.secret, &third.secret}) {
      const std::string text(secret->text().Reveal(InsecureSecretAccess::Get()));
      CHECK(s.body.find(text) == std::string::npos);
      CHECK(s.body.find(text.substr(6)) == std::string::npos);
    }
  }
}

TEST_CASE(
    "WebhookDispatcher: a key's first own secret overlaps the deployment's; a key gone "
    "before it was read is not signed",
    "[webhooks][dispatcher][secrets]") {
  WebhookFixture f(/*per_key_secrets=*/true);
  WebhookDispatcherOptions o = f.Options();  // the deployment's secret and the envelope
  o.envelope = f.envelope;
  // The file exists, at the log's end; nothing reads the changes below until the next start.
  f.StartDispatcher(o);
  f.dispatcher.reset();
  const CreatedKey gone = f.Create("gone", "/gone-key");
  REQUIRE(gone.webhook_secret.has_value());
  REQUIRE(f.manager->Delete(gone.record.id, "alice").ok());
  // A key created without a URL, given one later: no secret of its own until rolled.
  const CreatedKey later = f.Create("later", "");
  KeyUpdate u;
  u.webhook_url = f.receiver.Url("localhost", "/ok");
  const KeyRecord with_url = MustOk(f.manager->Modify(later.record.id, u, 1, "alice"));
  CHECK(with_url.sealed_webhook_secret.empty());
  const RolledWebhookSecret own =
      MustOk(f.manager->RollWebhookSecret(later.record.id, absl::Hours(1), "alice"));
  CHECK(own.previous_until > absl::Now());
  REQUIRE(f.manager->Revoke(later.record.id, "alice").ok());
  f.StartDispatcher(o);

  // Its messages after the roll carry both signatures: its receiver still holds the deployment's.
  REQUIRE(Eventually([&] { return SeenOfType(f, "key.revoked").size() == 1; }));
  const Seen revoked = SeenOfType(f, "key.revoked")[0];
  CHECK(SignedBy(revoked, own.secret));
  CHECK(SignedBy(revoked, f.secret));
  // The key deleted unread: whether it had a secret of its own is unknown, so nothing goes.
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> log = f.Log(gone.record.id);
    return log.size() == 2 && log[0].state == WebhookDelivery::State::kFailed &&
           log[1].state == WebhookDelivery::State::kFailed;
  }));
  CHECK_THAT(f.Log(gone.record.id)[1].attempts[0].error,
             Catch::Contains("the key was gone before the dispatcher first read it"));
  for (const Seen& s : f.receiver.seen()) CHECK(s.path != "/gone-key");
}

TEST_CASE("WebhookDispatcher does not send what it cannot sign, and says why",
          "[webhooks][dispatcher][secrets]") {
  WebhookFixture f;  // keys get no secret of their own
  WebhookDispatcherOptions o = f.Options();
  o.secrets.clear();
  o.envelope = f.envelope;
  f.StartDispatcher(o);
  const CreatedKey k = f.Create("unsigned", "/ok");
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> log = f.Log(k.record.id);
    return log.size() == 1 && log[0].state == WebhookDelivery::State::kFailed;
  }));
  const WebhookDelivery d = f.Log(k.record.id)[0];
  REQUIRE(d.attempts.size() == 3);
  CHECK(d.attempts[0].status == 0);
  CHECK_THAT(d.attempts[0].error, Catch::StartsWith("no signing secret"));
  CHECK(f.receiver.seen().empty());

  // A key with its own secret is never signed with the deployment's: without the envelope that
  // opens it, nothing goes.
  WebhookFixture g(/*per_key_secrets=*/true);
  g.StartDispatcher();  // the deployment's secret, no envelope
  const CreatedKey own = g.Create("own", "/ok");
  REQUIRE(own.webhook_secret.has_value());
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> log = g.Log(own.record.id);
    return log.size() == 1 && log[0].state == WebhookDelivery::State::kFailed;
  }));
  CHECK(g.Log(own.record.id)[0].attempts[0].error ==
        "no signing secret: the key's own is sealed and the dispatcher has no envelope");
  CHECK(g.receiver.seen().empty());
}

TEST_CASE("WebhookDispatcher announces a coming expiry once", "[webhooks][dispatcher][expiring]") {
  WebhookFixture f;
  WebhookDispatcherOptions o = f.Options();
  o.expiring_lead = absl::Hours(1);
  f.StartDispatcher(o);
  const absl::Time soon = absl::Now() + absl::Minutes(30);
  const CreatedKey k = f.Create("expiring", "/ok", soon);
  const CreatedKey later = f.Create("later", "/ok", absl::Now() + absl::Hours(3));
  const CreatedKey silent = f.Create("no-url", "", soon);
  // Start scans once (maybe before, maybe after the creations); this scan finds it if not.
  REQUIRE(MustOk(f.dispatcher->ScanExpiring()) <= 1);
  REQUIRE(Eventually([&] { return SeenOfType(f, "key.expiring").size() == 1; }));
  const Seen e = SeenOfType(f, "key.expiring")[0];
  CHECK(e.id ==
        absl::StrCat("msg_", k.record.id, "_expiring_", absl::ToUnixMicros(*k.record.expires)));
  CHECK(e.body.find(absl::StrCat("\"id\":\"", k.record.id, "\"")) != std::string::npos);
  CHECK(e.body.find("\"expires\":") != std::string::npos);
  CHECK(SignedBy(e, f.secret));
  // Scanned again: known, not queued again.
  CHECK(MustOk(f.dispatcher->ScanExpiring()) == 0);
  // A new expiry, inside the lead, is announced again; a revoked key is not.
  KeyUpdate u;
  u.expires = absl::Now() + absl::Minutes(10);
  REQUIRE(f.manager->Modify(k.record.id, u, 1, "alice").ok());
  CHECK(MustOk(f.dispatcher->ScanExpiring()) == 1);
  KeyUpdate u2;
  u2.expires = absl::Now() + absl::Minutes(20);
  REQUIRE(f.manager->Modify(later.record.id, u2, 1, "alice").ok());
  REQUIRE(f.manager->Revoke(later.record.id, "alice").ok());
  CHECK(MustOk(f.dispatcher->ScanExpiring()) == 0);
  REQUIRE(Eventually([&] { return SeenOfType(f, "key.expiring").size() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(SeenOfType(f, "key.expiring").size() == 2);
  CHECK(f.Log(silent.record.id).empty());
}

TEST_CASE("WebhookDispatcher sends key.rate_limited once per window from a verifier's denials",
          "[webhooks][dispatcher][rate_limited]") {
  WebhookFixture f;
  WebhookDispatcherOptions o = f.Options();
  o.rate_limited_window = absl::Hours(1);
  f.StartDispatcher(o);
  CreateKeyRequest r;
  r.name = "limited";
  r.owner = "alice";
  r.environment = "production";
  r.webhook_url = f.receiver.Url("localhost", "/ok");
  r.rate_limit = RateLimitPolicy{1, absl::Hours(1), 1};  // one request, then denials
  const CreatedKey k = MustOk(f.manager->Create(r, "alice"));
  const CreatedKey other = f.Create("unlimited", "/ok");

  VerifierOptions vo;
  vo.deployment =
      std::shared_ptr<const Deployment>(&f.manager->deployment(), [](const Deployment*) {});
  vo.store = f.store;
  vo.environment = "production";
  vo.usage_flush_interval = absl::ZeroDuration();
  vo.usage_sink = f.dispatcher->RateLimitSink();
  std::unique_ptr<Verifier> v = MustOk(Verifier::Create(std::move(vo)));
  const std::string token(k.token.Reveal(InsecureSecretAccess::Get()));
  const std::string other_token(other.token.Reveal(InsecureSecretAccess::Get()));
  int denied = 0;
  for (int i = 0; i < 5; ++i) {
    denied += v->VerifyToken(token, Requirement::AnyValidKey()).outcome == Outcome::kRateLimited;
    CHECK(v->VerifyToken(other_token, Requirement::AnyValidKey()).outcome == Outcome::kOk);
  }
  REQUIRE(denied == 4);
  REQUIRE(v->FlushUsage().ok());
  REQUIRE(Eventually([&] { return SeenOfType(f, "key.rate_limited").size() == 1; }));
  const Seen limited = SeenOfType(f, "key.rate_limited")[0];
  CHECK(limited.body.find("\"denied\":4") != std::string::npos);
  CHECK(limited.body.find(absl::StrCat("\"id\":\"", k.record.id, "\"")) != std::string::npos);
  CHECK(limited.id.rfind(absl::StrCat("msg_", k.record.id, "_limited_"), 0) == 0);
  CHECK(SignedBy(limited, f.secret));

  // More denials in the same window: coalesced into nothing. Queued here, by this thread (the
  // dispatcher stopped), so that the check does not depend on the reader's timing.
  f.dispatcher->Stop();
  for (int i = 0; i < 100; ++i) (void)v->VerifyToken(token, Requirement::AnyValidKey());
  REQUIRE(v->FlushUsage().ok());
  CHECK(MustOk(f.dispatcher->Ingest()) == 0);
  std::size_t limited_messages = 0;
  for (const WebhookDelivery& d : f.Log(k.record.id))
    limited_messages += d.type == "key.rate_limited";
  CHECK(limited_messages == 1);
  CHECK(f.Log(other.record.id).size() == 1);  // only its creation
  // A report whose first denial is past the window opens a new one.
  KeyUsage next;
  next.key_id = k.record.id;
  next.denied = 3;
  next.first_denied = absl::Now() + absl::Hours(2);
  f.dispatcher->RateLimitSink()->Record({&next, 1});
  CHECK(MustOk(f.dispatcher->Ingest()) == 1);

  // A sink that outlives its dispatcher drops what it gets (ASan and TSan would catch a use of
  // the dispatcher after its end).
  std::shared_ptr<UsageSink> sink = f.dispatcher->RateLimitSink();
  f.dispatcher.reset();
  KeyUsage late;
  late.key_id = k.record.id;
  late.denied = 1;
  late.first_denied = absl::Now();
  sink->Record({&late, 1});
  v->Shutdown();
}

TEST_CASE("WebhookDispatcher carries a first-version state file over",
          "[webhooks][dispatcher][migration]") {
  WebhookFixture f;
  const std::string path = (f.dir / "webhooks.db").string();
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    const std::string url = f.receiver.Url("localhost", "/ok");
    const std::string sql =
        absl::StrCat(R"sql(
CREATE TABLE position (one INTEGER PRIMARY KEY CHECK (one = 1), after INTEGER NOT NULL) STRICT;
CREATE TABLE endpoints (key_id TEXT PRIMARY KEY, url TEXT NOT NULL, key_json TEXT NOT NULL,
  gone_us INTEGER, pending INTEGER NOT NULL, due_us INTEGER NOT NULL) STRICT, WITHOUT ROWID;
CREATE INDEX endpoints_due ON endpoints (due_us) WHERE pending > 0;
CREATE TABLE messages (sequence INTEGER PRIMARY KEY, key_id TEXT NOT NULL, url TEXT NOT NULL,
  type TEXT NOT NULL, payload TEXT NOT NULL, state INTEGER NOT NULL, attempts INTEGER NOT NULL,
  next_us INTEGER NOT NULL) STRICT;
CREATE INDEX messages_key ON messages (key_id, sequence);
CREATE TABLE attempts (id INTEGER PRIMARY KEY, sequence INTEGER NOT NULL, at_us INTEGER NOT NULL,
  status INTEGER NOT NULL, latency_us INTEGER NOT NULL, address TEXT NOT NULL,
  error TEXT NOT NULL) STRICT;
CREATE INDEX attempts_message ON attempts (sequence, id);
INSERT INTO position VALUES (1, 0);
INSERT INTO endpoints VALUES ('key_old', ')sql",
                     url, R"sql(', '{"id":"key_old"}', NULL, 1, 0);
INSERT INTO messages VALUES (7, 'key_old', ')sql",
                     url, R"sql(', 'key.created', '{"type":"key.created"}', 1, 1, 0);
INSERT INTO messages VALUES (9, 'key_old', ')sql",
                     url, R"sql(', 'key.revoked', '{"type":"key.revoked"}', 0, 1, 0);
INSERT INTO attempts VALUES (1, 7, 1000, 204, 5, '127.0.0.1', '');
INSERT INTO attempts VALUES (2, 9, 2000, 500, 5, '127.0.0.1', 'status 500');
PRAGMA user_version = 1;
)sql");
    REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  f.StartDispatcher();
  // The pending message goes, with the webhook-id it had; the delivered one keeps its attempt.
  REQUIRE(Eventually([&] {
    const std::vector<WebhookDelivery> log = f.Log("key_old");
    return log.size() == 2 && log[0].state == WebhookDelivery::State::kDelivered;
  }));
  const std::vector<WebhookDelivery> log = f.Log("key_old");
  CHECK(log[0].id == "msg_key_old_9");
  CHECK(log[0].sequence == 9);
  CHECK(log[0].attempts.size() == 2);
  CHECK(log[1].id == "msg_key_old_7");
  REQUIRE(log[1].attempts.size() == 1);
  CHECK(log[1].attempts[0].status == 204);
  REQUIRE(f.receiver.seen().size() == 1);
  CHECK(f.receiver.seen()[0].id == "msg_key_old_9");
  // New events queue after it.
  const CreatedKey k = f.Create("new", "/ok");
  REQUIRE(Eventually([&] { return f.receiver.seen().size() == 2; }));
  CHECK(f.receiver.seen()[1].id.rfind(absl::StrCat("msg_", k.record.id, "_"), 0) == 0);

  // A file of a later version is refused.
  f.dispatcher.reset();
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "PRAGMA user_version = 3", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  const absl::Status refused = WebhookDispatcher::Create(f.Options()).status();
  CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(refused.message()), Catch::Contains("newer than this keygate's"));
}

}  // namespace
}  // namespace keygate
