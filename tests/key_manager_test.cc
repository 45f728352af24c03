// KeyManager: validation, token hand-out, events, lifecycle and concurrency.

#include "keygate/key_manager.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "catch.h"
#include "internal/base62.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/envelope.h"
#include "keygate/event_sink.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/token.h"
#include "keygate/webhook_signature.h"
#include "outage_key_store.h"
#include "test_util.h"

namespace keygate {
namespace {

using testing::StatusText;

// A view into the secret itself: TokenViews parsed from it stay valid.
std::string_view Text(const Secret& s) { return s.Reveal(InsecureSecretAccess::Get()); }

// A fresh deployment, memory store, event collector and fake clock.
struct Fixture {
  explicit Fixture(DeploymentOptions options = {}) {
    auto d = Deployment::Create(std::move(options));
    REQUIRE_OK(d);
    deployment = *d;
    KeyManager::Options o;
    o.deployment = deployment;
    o.store = store;
    o.clock = clock;
    manager = keygate::testing::MustOk(KeyManager::Create(std::move(o)));
  }

  CreateKeyRequest Request(std::string name = "ci-pipeline") const {
    CreateKeyRequest r;
    r.name = std::move(name);
    r.owner = "alice";
    r.environment = "production";
    r.scopes = {"read:all"};
    return r;
  }

  CreatedKey MustCreate(const CreateKeyRequest& r) {
    absl::StatusOr<CreatedKey> k = manager->Create(r, "alice");
    REQUIRE_OK(k);
    return *std::move(k);
  }

  // Another manager on the same store and clock; with `envelope`, recoverable keys are on.
  std::unique_ptr<KeyManager> ManagerWith(std::shared_ptr<const Envelope> envelope) const {
    KeyManager::Options o;
    o.deployment = deployment;
    o.store = store;
    o.clock = clock;
    o.envelope = std::move(envelope);
    return keygate::testing::MustOk(KeyManager::Create(std::move(o)));
  }

  std::uint64_t LastSequence() {
    absl::StatusOr<std::uint64_t> s = store->LastSequence();
    REQUIRE_OK(s);
    return *s;
  }

  Outcome Verify(const Secret& token, std::string_view env = "production",
                 const Requirement& req = Requirement::AnyValidKey()) {
    auto v = ReferenceVerifier::Create(
        {.deployment = deployment, .store = store, .environment = std::string(env)});
    REQUIRE_OK(v);
    return (*v)->VerifyToken(Text(token), req, clock->Now()).outcome;
  }

  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<testing::OutageKeyStore> store = std::make_shared<testing::OutageKeyStore>();
  std::shared_ptr<testing::AuditView> events = std::make_shared<testing::AuditView>(store);
  // Whole seconds plus 0.5 µs: times written must come out at microseconds.
  std::shared_ptr<FakeClock> clock =
      std::make_shared<FakeClock>(absl::FromUnixSeconds(1'700'000'000) + absl::Nanoseconds(500));
  std::unique_ptr<KeyManager> manager;
};

// Everything a log line or API answer could carry about a key.
std::string Stringified(const Fixture& f, const std::vector<absl::Status>& statuses = {}) {
  std::ostringstream os;
  for (const Event& e : f.events->Events()) os << e << "\n";
  ListOptions all;
  all.limit = kMaxListLimit;
  absl::StatusOr<ListPage> page = f.store->List(all);
  if (page.ok()) {
    for (const KeyRecord& r : page->keys) {
      os << r << "\n" << r.name << r.description << r.hint << DigestToHex(r.digest) << "\n";
      for (const auto& [k, v] : r.metadata) os << k << "=" << v << "\n";
    }
  }
  for (const absl::Status& s : statuses) os << s << "\n";
  return os.str();
}

// --- Creation ---------------------------------------------------------------

TEST_CASE("KeyManager creates a key and returns a verifiable token", "[manager][create]") {
  Fixture f;
  CreateKeyRequest req = f.Request();
  req.description = "deploys from CI";
  req.expires = f.clock->Now() + absl::Hours(24);
  req.rate_limit = RateLimitPolicy{100, absl::Seconds(1), 20};
  req.webhook_url = "https://hooks.example.com/keys";
  req.accounts = {"acct_1"};
  req.metadata = {{"team", "platform"}};
  CreatedKey k = f.MustCreate(req);

  const KeyRecord& r = k.record;
  CHECK(r.id.size() == kKeyIdLength);
  CHECK(r.id.rfind("key_", 0) == 0);
  CHECK(r.name == "ci-pipeline");
  CHECK(r.description == "deploys from CI");
  CHECK(r.owner == "alice");
  CHECK(r.kind == KeyKind::kGeneral);
  CHECK(r.environment == "production");
  CHECK(r.scopes == std::vector<std::string>{"read:all"});
  CHECK(r.state == KeyState::kActive);
  CHECK(r.version == 1);
  CHECK(r.rate_limit == req.rate_limit);
  CHECK(r.webhook_url == req.webhook_url);
  CHECK(r.accounts == req.accounts);
  CHECK(r.metadata == req.metadata);
  CHECK_FALSE(r.previous.has_value());
  CHECK_FALSE(r.last_used.has_value());
  // Times are written at microsecond precision.
  CHECK(r.created == absl::FromUnixSeconds(1'700'000'000));
  CHECK(r.updated == r.created);
  CHECK(r.expires == TruncateToMicros(*req.expires));

  // The token has the deployment's format and the environment's tag...
  TokenView view;
  REQUIRE(ParseToken(Text(k.token), &view, "kg") == TokenError::kNone);
  CHECK(view.env_tag == "live");
  // ...and only its digest and hint are stored.
  absl::StatusOr<Digest> digest = f.deployment->hasher().Hash(Text(k.token));
  REQUIRE_OK(digest);
  CHECK(r.digest == *digest);
  CHECK(r.hint == TokenHint(Text(k.token)));
  absl::StatusOr<KeyRecord> stored = f.manager->Get(r.id);
  REQUIRE_OK(stored);
  CHECK(*stored == r);
  CHECK(f.Verify(k.token) == Outcome::kOk);

  const std::vector<Event> events = f.events->Events();
  REQUIRE(events.size() == 1);
  CHECK(events[0].type == EventType::kCreated);
  CHECK(events[0].actor == "alice");
  CHECK(events[0].key_id == r.id);
  CHECK(events[0].owner == "alice");
  CHECK(events[0].version == 1);
  CHECK(events[0].at == r.created);
  CHECK(events[0].changed_fields ==
        std::vector<std::string>{"name", "description", "owner", "kind", "environment", "scopes",
                                 "expires", "rate_limit", "webhook_url", "accounts", "metadata"});
}

TEST_CASE("KeyManager mints a distinct token and id for every key", "[manager][create]") {
  Fixture f;
  std::set<std::string> ids;
  std::set<std::string> tokens;
  for (int i = 0; i < 50; ++i) {
    CreatedKey k = f.MustCreate(f.Request(absl::StrCat("key ", i)));
    ids.insert(k.record.id);
    tokens.insert(std::string(Text(k.token)));
  }
  CHECK(ids.size() == 50);
  CHECK(tokens.size() == 50);
}

TEST_CASE("Key ids are key_, the creation time, and 14 unbiased random base62 characters",
          "[manager][create][random]") {
  Fixture f;
  const std::string alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::map<char, int> counts;
  const int keys = 3000;
  const std::string time_part = internal::Base62EncodeFixed(
      static_cast<std::uint64_t>(absl::ToUnixMillis(f.clock->Now())), 8);
  for (int i = 0; i < keys; ++i) {
    absl::StatusOr<CreatedKey> k = f.manager->Create(f.Request(), "alice");
    REQUIRE_OK(k);
    const std::string& id = k->record.id;
    REQUIRE(id.size() == kKeyIdLength);
    REQUIRE(id.substr(0, 4) == "key_");
    REQUIRE(id.substr(4, 8) == time_part);
    for (char c : id.substr(12)) {
      REQUIRE(alphabet.find(c) != std::string::npos);
      counts[c]++;
    }
  }
  REQUIRE(counts.size() == 62);
  // A plain `byte % 62` would make '0'..'7' 25% more frequent than the rest
  // (5/256 against 4/256); rejection sampling keeps them level.
  double low = 0;
  double rest = 0;
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    (i < 8 ? low : rest) += counts[alphabet[i]];
  }
  // Bounds 10 standard deviations out: a fair generator breaks them with
  // probability below 1e-20 per run (42,000 symbols). `% 62` puts the ratio
  // near 1.25, about 6 standard deviations past the upper bound.
  const double ratio = (low / 8) / (rest / 54);
  INFO("ratio " << ratio);
  CHECK(ratio > 0.85);
  CHECK(ratio < 1.15);
  const double mean = keys * 14.0 / 62;
  for (const auto& [c, n] : counts) {
    INFO("symbol " << c << " count " << n);
    CHECK(n > mean * 0.6);
    CHECK(n < mean * 1.4);
  }
}

TEST_CASE("Key ids sort in creation order", "[manager][create]") {
  Fixture f;
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(f.MustCreate(f.Request(absl::StrCat("key ", i))).record.id);
    f.clock->Advance(absl::Milliseconds(1));
  }
  CHECK(std::is_sorted(ids.begin(), ids.end()));
}

TEST_CASE("KeyManager returns no token when the store rejects the record",
          "[manager][create][secret]") {
  Fixture f;
  f.store->SetUnavailable(true);
  absl::StatusOr<CreatedKey> k = f.manager->Create(f.Request(), "alice");
  CHECK(k.status().code() == absl::StatusCode::kUnavailable);
  f.store->SetUnavailable(false);
  CHECK(f.events->Events().empty());
  CHECK(f.LastSequence() == 0);

  // A rejected personal duplicate gives no token either.
  CreateKeyRequest personal = f.Request("personal");
  personal.kind = KeyKind::kPersonal;
  f.MustCreate(personal);
  absl::StatusOr<CreatedKey> dup = f.manager->Create(personal, "alice");
  CHECK(dup.status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(f.events->Events().size() == 1);
}

TEST_CASE("Tokens appear only in CreatedKey, never in records, events or errors",
          "[manager][secret][redaction]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  absl::StatusOr<CreatedKey> rolled = f.manager->Roll(k.record.id, absl::Hours(1), "alice");
  REQUIRE_OK(rolled);
  REQUIRE_OK(f.manager->Revoke(k.record.id, "bob"));
  REQUIRE_OK(f.manager->Restore(k.record.id, "bob"));
  const std::string t1(Text(k.token));
  const std::string t2(Text(rolled->token));

  // Tokens pasted into the wrong fields come back in no error message.
  std::vector<absl::Status> errors;
  CreateKeyRequest bad = f.Request();
  bad.environment = t1;
  errors.push_back(f.manager->Create(bad, "alice").status());
  bad = f.Request();
  bad.scopes = {t1};
  errors.push_back(f.manager->Create(bad, "alice").status());
  bad = f.Request();
  bad.webhook_url = "http://example.com/?key=" + t1;
  errors.push_back(f.manager->Create(bad, "alice").status());
  bad = f.Request();
  bad.name = t1 + "\n";
  errors.push_back(f.manager->Create(bad, "alice").status());
  bad = f.Request();
  bad.accounts = {t1, t1};
  errors.push_back(f.manager->Create(bad, "alice").status());
  bad = f.Request();
  bad.metadata = {{t1 + t1, "x"}};
  errors.push_back(f.manager->Create(bad, "alice").status());
  KeyUpdate upd;
  upd.scopes = std::vector<std::string>{t2};
  errors.push_back(f.manager->Modify(k.record.id, upd, 4, "alice").status());
  for (const absl::Status& s : errors) REQUIRE_FALSE(s.ok());

  const std::string text = Stringified(f, errors);
  CHECK(text.find(t1) == std::string::npos);
  CHECK(text.find(t2) == std::string::npos);
  // Not even the secret part alone (the hint shows 4 characters, no more).
  CHECK(text.find(t1.substr(t1.size() - 20)) == std::string::npos);
  CHECK(text.find(t2.substr(t2.size() - 20)) == std::string::npos);
  // Events carry no digest either.
  std::ostringstream ev;
  for (const Event& e : f.events->Events()) ev << e;
  CHECK(ev.str().find(DigestToHex(k.record.digest)) == std::string::npos);
  CHECK(ev.str().find(DigestToHex(rolled->record.digest)) == std::string::npos);
  // And the token type itself refuses to print.
  std::ostringstream tok;
  tok << k.token;
  CHECK(tok.str().find(t1) == std::string::npos);
}

// --- Validation -------------------------------------------------------------

// Expects Create(req) to fail with kInvalidArgument naming `field`, and to
// leave no trace.
void ExpectInvalid(Fixture& f, const CreateKeyRequest& req, std::string_view field) {
  const std::uint64_t seq_before = f.LastSequence();
  const std::size_t events_before = f.events->Events().size();
  absl::StatusOr<CreatedKey> k = f.manager->Create(req, "alice");
  INFO("expected field " << field << ", got " << k.status());
  REQUIRE(k.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(k.status().message());
  CHECK(message.rfind(absl::StrCat(std::string(field), ":"), 0) == 0);
  CHECK(f.manager->ValidateCreate(req).code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.LastSequence() == seq_before);
  CHECK(f.events->Events().size() == events_before);
}

void ExpectValid(Fixture& f, const CreateKeyRequest& req) {
  absl::StatusOr<CreatedKey> k = f.manager->Create(req, "alice");
  REQUIRE_OK(k);
}

TEST_CASE("Create validates the name", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.name = "";
  ExpectInvalid(f, r, "name");
  r.name = std::string(kMaxNameLength + 1, 'n');
  ExpectInvalid(f, r, "name");
  r.name = "tab\there";
  ExpectInvalid(f, r, "name");
  r.name = std::string("nul\0inside", 10);
  ExpectInvalid(f, r, "name");
  r.name = "del\x7f";
  ExpectInvalid(f, r, "name");
  r.name = std::string(kMaxNameLength, 'n');
  ExpectValid(f, r);
  r.name = "caf\xc3\xa9 \xe2\x9c\x93";  // UTF-8 is fine
  ExpectValid(f, r);
}

TEST_CASE("Create validates the description", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.description = std::string(kMaxDescriptionLength + 1, 'd');
  ExpectInvalid(f, r, "description");
  r.description = std::string(kMaxDescriptionLength, 'd');
  ExpectValid(f, r);
  r.description = "";
  ExpectValid(f, r);
}

TEST_CASE("Create validates the owner", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.owner = "";
  ExpectInvalid(f, r, "owner");
  r.owner = std::string(kMaxOwnerLength + 1, 'o');
  ExpectInvalid(f, r, "owner");
  r.owner = "ali\nce";
  ExpectInvalid(f, r, "owner");
  r.owner = std::string(kMaxOwnerLength, 'o');
  ExpectValid(f, r);
}

TEST_CASE("Create validates the kind", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.kind = KeyKind::kUnspecifiedDoNotUse;
  ExpectInvalid(f, r, "kind");
  r.kind = static_cast<KeyKind>(9);
  ExpectInvalid(f, r, "kind");
}

TEST_CASE("Create validates the environment", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.environment = "";
  ExpectInvalid(f, r, "environment");
  r.environment = "staging";
  ExpectInvalid(f, r, "environment");
  absl::Status s = f.manager->ValidateCreate(r);
  CHECK(s.message() == "environment: unknown environment 'staging'");
  r.environment = "live";  // a tag is not a name
  ExpectInvalid(f, r, "environment");
  r.environment = "preview";
  ExpectValid(f, r);
}

TEST_CASE("Create validates the scopes", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.scopes = {"read:all", "write:everything"};
  ExpectInvalid(f, r, "scopes");
  CHECK(f.manager->ValidateCreate(r).message() == "scopes: unknown scope 'write:everything'");
  r.scopes = {"read:all", "read:all"};
  ExpectInvalid(f, r, "scopes");
  r.scopes = std::vector<std::string>(kMaxScopesPerKey + 1, "read:all");
  ExpectInvalid(f, r, "scopes");
  r.scopes = {""};
  ExpectInvalid(f, r, "scopes");
  r.scopes = {};
  ExpectValid(f, r);
  r.scopes = {"admin", "read:all", "write:all"};
  ExpectValid(f, r);
}

TEST_CASE("Create accepts the application's own scopes", "[manager][validation]") {
  DeploymentOptions o;
  auto registry = ScopeRegistry::Builder().Add("read:projects").Build();
  REQUIRE_OK(registry);
  o.scopes = *registry;
  Fixture f(std::move(o));
  CreateKeyRequest r = f.Request();
  r.scopes = {"read:projects"};
  ExpectValid(f, r);
}

TEST_CASE("Create validates the expiry", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  const absl::Time now = f.clock->Now();
  r.expires = now - absl::Seconds(1);
  ExpectInvalid(f, r, "expires");
  r.expires = now;
  ExpectInvalid(f, r, "expires");
  // Stored at microseconds: now + 0.4 µs would be stored at or before now.
  r.expires = now + absl::Nanoseconds(400);
  ExpectInvalid(f, r, "expires");
  r.expires = absl::InfiniteFuture();
  ExpectInvalid(f, r, "expires");
  r.expires = now + absl::Microseconds(1);
  ExpectValid(f, r);
  r.expires = std::nullopt;
  ExpectValid(f, r);
}

TEST_CASE("Create validates the rate limit", "[manager][validation][ratelimit]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  auto with = [&](std::uint64_t rate, absl::Duration period, std::uint32_t burst) {
    r.rate_limit = RateLimitPolicy{rate, period, burst};
    return r;
  };
  ExpectInvalid(f, with(0, absl::Seconds(1), 1), "rate_limit.rate");
  ExpectInvalid(f, with(kMaxRateLimitRate + 1, absl::Hours(1), 1), "rate_limit.rate");
  ExpectInvalid(f, with(10, absl::Microseconds(999), 1), "rate_limit.period");
  ExpectInvalid(f, with(10, absl::Hours(24) + absl::Nanoseconds(1), 1), "rate_limit.period");
  ExpectInvalid(f, with(10, absl::ZeroDuration(), 1), "rate_limit.period");
  ExpectInvalid(f, with(10, absl::Seconds(1), 0), "rate_limit.burst");
  ExpectInvalid(f, with(10, absl::Seconds(1), kMaxRateLimitBurst + 1), "rate_limit.burst");
  // More than one request per nanosecond cannot be represented.
  ExpectInvalid(f, with(kMaxRateLimitRate, absl::Milliseconds(1), 1), "rate_limit.rate");
  ExpectValid(f, with(1, absl::Milliseconds(1), 1));
  ExpectValid(f, with(kMaxRateLimitRate, absl::Seconds(1), kMaxRateLimitBurst));
  ExpectValid(f, with(1, absl::Hours(24), 1));
}

TEST_CASE("Create validates the webhook URL", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  for (const char* bad :
       {"http://example.com/hook", "ftp://example.com", "example.com", "https://", "https:///path",
        "https://:443/", "https://exa mple.com", "https://example.com/\n",
        "https://user:pw@example.com/", "https://example.com:0/", "https://example.com:99999/",
        "https://example.com:/", "https://example.com:8x/", "https://[::1/", "https://[]/"}) {
    INFO(bad);
    r.webhook_url = bad;
    ExpectInvalid(f, r, "webhook_url");
  }
  r.webhook_url = "https://example.com/" + std::string(kMaxWebhookUrlLength, 'a');
  ExpectInvalid(f, r, "webhook_url");
  r.webhook_url = "http://example.com";
  CHECK(f.manager->ValidateCreate(r).message() == "webhook_url: must use https");
  // Hosts that are not a DNS name, IPv4 address or bracketed IPv6 literal.
  for (const char* bad :
       {"https://host:443:443/", "https://::1/", "https://a:b:8443/", "https://[zz]/",
        "https://[::1/", "https://exa\"mple.com/", "https://exa<mple>.com/",
        "https://caf\xc3\xa9.com/", "https://a..b/", "https://.example.com/",
        "https://-a.example.com/", "https://[::1]x/", "https://localhost../",
        "https://127.0.0.1../", "https://example.com../", "https://./"}) {
    INFO(bad);
    r.webhook_url = bad;
    ExpectInvalid(f, r, "webhook_url");
  }
  for (const char* good :
       {"https://example.com", "https://hooks.example.com:8443/k?x=1#f", "HTTPS://EXAMPLE.COM/",
        "https://93.184.216.34/", "https://[2001:db8::1]/", "https://[2606:4700::6810:85e5]:8443/",
        "https://xn--caf-dma.example/", "https://my_host.example.com./",
        "https://localhost.example.com/", "https://notlocalhost/", "https://172.32.0.1/",
        "https://100.128.0.1/", "https://[::ffff:93.184.216.34]/"}) {
    INFO(good);
    r.webhook_url = good;
    ExpectValid(f, r);
  }
  r.webhook_url = "";
  ExpectValid(f, r);
}

TEST_CASE("Webhook URLs may not name internal hosts unless allowed", "[manager][validation]") {
  // Whoever delivers webhooks would call these for any key owner (SSRF):
  // loopback, private, link-local (cloud metadata), reserved, in every
  // spelling an HTTP client reads as an address.
  const std::vector<std::string> internal = {"https://127.0.0.1/",
                                             "https://127.255.0.9:8443/x",
                                             "https://10.0.0.1",
                                             "https://172.16.0.1/",
                                             "https://172.31.255.255/",
                                             "https://192.168.1.1/",
                                             "https://169.254.169.254/",
                                             "https://100.64.0.1/",
                                             "https://0.0.0.0/",
                                             "https://224.0.0.1/",
                                             "https://255.255.255.255/",
                                             "https://198.18.0.1/",
                                             "https://[::1]:8443/hook",
                                             "https://[::]/",
                                             "https://[fe80::1]/",
                                             "https://[fd00::1]/",
                                             "https://[fc12:3456::1]/",
                                             "https://[ff02::1]/",
                                             "https://[::ffff:127.0.0.1]/",
                                             "https://[::ffff:169.254.169.254]/",
                                             "https://[64:ff9b::a00:1]/",
                                             "https://[64:ff9b:1::5db8:d822]/",
                                             "https://[::ffff:0:7f00:1]/",
                                             "https://[::127.0.0.1]/",
                                             "https://localhost/",
                                             "https://LocalHost:8080/",
                                             "https://localhost./",
                                             "https://api.localhost/",
                                             "https://10.0.0.1./"};
  // Non-canonical numeric hosts, which clients read as IPv4 addresses:
  // refused whatever the option says, since the check could not see them.
  const std::vector<std::string> numeric = {"https://127.1/",      "https://2130706433/",
                                            "https://0x7f.0.0.1/", "https://0177.0.0.1/",
                                            "https://1.2.3.4.5/",  "https://example.123/"};
  {
    Fixture f;
    CreateKeyRequest r = f.Request();
    for (const std::string& url : internal) {
      INFO(url);
      r.webhook_url = url;
      ExpectInvalid(f, r, "webhook_url");
      const std::string m(f.manager->ValidateCreate(r).message());
      CHECK(m.find("loopback, private") != std::string::npos);
      CHECK(m.find(url.substr(8)) == std::string::npos);  // the URL is never echoed
    }
    for (const std::string& url : numeric) {
      INFO(url);
      r.webhook_url = url;
      ExpectInvalid(f, r, "webhook_url");
    }
    // Modify checks the same.
    const CreatedKey k = f.MustCreate(f.Request("hooked"));
    KeyUpdate u;
    u.webhook_url = "https://169.254.169.254/latest/meta-data";
    CHECK(f.manager->Modify(k.record.id, u, k.record.version, "alice").status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  {
    Fixture f;
    KeyManager::Options o;
    o.deployment = f.deployment;
    o.store = f.store;
    o.clock = f.clock;
    o.allow_internal_webhook_hosts = true;
    f.manager = keygate::testing::MustOk(KeyManager::Create(std::move(o)));
    CreateKeyRequest r = f.Request();
    for (const std::string& url : internal) {
      INFO(url);
      r.webhook_url = url;
      ExpectValid(f, r);
    }
    for (const std::string& url : numeric) {
      INFO(url);
      r.webhook_url = url;
      ExpectInvalid(f, r, "webhook_url");
    }
  }
}

TEST_CASE("Text fields are UTF-8 without control characters", "[manager][validation]") {
  Fixture f;
  // Each of these would forge or hide a line in `keygate show` or a log.
  const std::vector<std::string> bad_text = {
      "a\rb",
      "a\x1b[8mb",
      "a\x7f",
      "a\xc2\x9b"
      "31mb",              // CR, ESC, DEL, C1 CSI (U+009B)
      "caf\xe9",           // Latin-1, not UTF-8
      "\xc0\xaf",          // overlong '/'
      "\xed\xa0\x80",      // a surrogate
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "abc\xe2\x82",       // truncated
  };
  for (const std::string& text : bad_text) {
    INFO(absl::CHexEscape(text));
    CreateKeyRequest r = f.Request();
    r.name = text;
    ExpectInvalid(f, r, "name");
    r = f.Request();
    r.owner = text;
    ExpectInvalid(f, r, "owner");
    r = f.Request();
    r.description = text;
    ExpectInvalid(f, r, "description");
    r = f.Request();
    r.accounts = {text};
    ExpectInvalid(f, r, "accounts[0]");
    r = f.Request();
    r.metadata = {{"k", text}};
    ExpectInvalid(f, r, "metadata['k']");
  }
  // Newlines and tabs only in descriptions; any valid UTF-8 anywhere.
  CreateKeyRequest r = f.Request();
  r.description = "line one\n\tline two";
  ExpectValid(f, r);
  r.name = "line one\nline two";
  ExpectInvalid(f, r, "name");
  r.name = "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x94\x91";  // "café ✓ 🔑"
  r.metadata = {{"\xc3\xa9quipe", "plateforme \xc3\xa9"}};
  ExpectValid(f, r);
}

TEST_CASE("Create validates linked accounts", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.accounts = {"a", ""};
  ExpectInvalid(f, r, "accounts[1]");
  r.accounts = {std::string(kMaxAccountLength + 1, 'a')};
  ExpectInvalid(f, r, "accounts[0]");
  r.accounts = {"a\tb"};
  ExpectInvalid(f, r, "accounts[0]");
  r.accounts = {"a", "b", "a"};
  ExpectInvalid(f, r, "accounts[2]");
  r.accounts.clear();
  for (std::size_t i = 0; i <= kMaxAccounts; ++i) r.accounts.push_back(absl::StrCat("acct", i));
  ExpectInvalid(f, r, "accounts");
  r.accounts.pop_back();
  ExpectValid(f, r);
}

TEST_CASE("Create validates metadata", "[manager][validation]") {
  Fixture f;
  CreateKeyRequest r = f.Request();
  r.metadata = {{"", "v"}};
  ExpectInvalid(f, r, "metadata keys");
  r.metadata = {{std::string(kMaxMetadataKeyLength + 1, 'k'), "v"}};
  ExpectInvalid(f, r, "metadata keys");
  r.metadata = {{"k\n", "v"}};
  ExpectInvalid(f, r, "metadata keys");
  // A value names its entry by key, or by position when the key is long
  // enough to be a pasted token.
  r.metadata = {{"k", std::string(kMaxMetadataValueLength + 1, 'v')}};
  ExpectInvalid(f, r, "metadata['k']");
  r.metadata = {{"a", "ok"}, {"team", "x\ry"}};
  ExpectInvalid(f, r, "metadata['team']");
  const std::string long_key(kMaxMetadataKeyLength, 'k');
  r.metadata = {{"a", "ok"}, {long_key, "\x1b[8m"}};
  ExpectInvalid(f, r, "metadata entry 1 (in key order)");
  CHECK(f.manager->ValidateCreate(r).message().find(long_key) == std::string::npos);
  r.metadata.clear();
  for (std::size_t i = 0; i <= kMaxMetadataEntries; ++i) r.metadata[absl::StrCat("k", i)] = "v";
  ExpectInvalid(f, r, "metadata");
  r.metadata.erase(r.metadata.begin());
  ExpectValid(f, r);
  r.metadata = {
      {std::string(kMaxMetadataKeyLength, 'k'), std::string(kMaxMetadataValueLength, 'v')}};
  ExpectValid(f, r);
}

TEST_CASE("Every mutation validates the actor", "[manager][validation]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  for (const std::string& actor : {std::string(), std::string(129, 'a'), std::string("a\nb")}) {
    CHECK(f.manager->Create(f.Request(), actor).status().code() == kInvalid);
    CHECK(f.manager->ProvisionPersonalKey("bob", "production", {}, actor).status().code() ==
          kInvalid);
    KeyUpdate u;
    u.name = "x";
    CHECK(f.manager->Modify(k.record.id, u, 1, actor).status().code() == kInvalid);
    CHECK(f.manager->Revoke(k.record.id, actor).status().code() == kInvalid);
    CHECK(f.manager->Restore(k.record.id, actor).status().code() == kInvalid);
    CHECK(f.manager->Roll(k.record.id, absl::ZeroDuration(), actor).status().code() == kInvalid);
    absl::Status del = f.manager->Delete(k.record.id, actor);
    CHECK(del.code() == kInvalid);
    CHECK(del.message().substr(0, 6) == "actor:");
  }
  CHECK(f.events->Events().size() == 1);
}

TEST_CASE("A manager is not built without a deployment or store", "[manager]") {
  Fixture f;
  KeyManager::Options no_deployment;
  no_deployment.store = f.store;
  absl::StatusOr<std::unique_ptr<KeyManager>> a = KeyManager::Create(no_deployment);
  CHECK(a.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(a.status().message() == "deployment: must be set");
  KeyManager::Options no_store;
  no_store.deployment = f.deployment;
  absl::StatusOr<std::unique_ptr<KeyManager>> b = KeyManager::Create(no_store);
  CHECK(b.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(b.status().message() == "store: must be set");
}

// --- Personal keys ----------------------------------------------------------

TEST_CASE("Personal keys are provisioned once per owner and environment", "[manager][personal]") {
  Fixture f;
  absl::StatusOr<ProvisionedKey> first =
      f.manager->ProvisionPersonalKey("alice", "production", {"read:all"}, "system");
  REQUIRE_OK(first);
  CHECK(first->created);
  REQUIRE(first->token.has_value());
  CHECK(first->record.kind == KeyKind::kPersonal);
  CHECK(first->record.name == "personal");
  CHECK(first->record.owner == "alice");
  CHECK(first->record.scopes == std::vector<std::string>{"read:all"});
  CHECK(f.Verify(*first->token) == Outcome::kOk);

  absl::StatusOr<ProvisionedKey> again =
      f.manager->ProvisionPersonalKey("alice", "production", {"admin"}, "system");
  REQUIRE_OK(again);
  CHECK_FALSE(again->created);
  CHECK_FALSE(again->token.has_value());  // an existing token is never shown again
  CHECK(again->record == first->record);

  absl::StatusOr<ProvisionedKey> preview =
      f.manager->ProvisionPersonalKey("alice", "preview", {}, "system");
  REQUIRE_OK(preview);
  CHECK(preview->created);
  CHECK(preview->record.id != first->record.id);
  absl::StatusOr<ProvisionedKey> bob =
      f.manager->ProvisionPersonalKey("bob", "production", {}, "system");
  REQUIRE_OK(bob);
  CHECK(bob->created);
  CHECK(f.events->Events().size() == 3);

  // A revoked personal key is replaced by a new one.
  REQUIRE_OK(f.manager->Revoke(first->record.id, "alice"));
  absl::StatusOr<ProvisionedKey> replaced =
      f.manager->ProvisionPersonalKey("alice", "production", {}, "system");
  REQUIRE_OK(replaced);
  CHECK(replaced->created);
  CHECK(replaced->record.id != first->record.id);
  // Now restoring the old one would make two active: refused.
  CHECK(f.manager->Restore(first->record.id, "alice").status().code() ==
        absl::StatusCode::kAlreadyExists);

  // An expired personal key is revoked and replaced, not handed back.
  {
    KeyUpdate u;
    u.expires = std::optional<absl::Time>(f.clock->Now() + absl::Minutes(5));
    REQUIRE_OK(f.manager->Modify(replaced->record.id, u, replaced->record.version, "alice"));
    f.clock->Advance(absl::Minutes(5));
    const std::size_t events_before = f.events->Events().size();
    absl::StatusOr<ProvisionedKey> renewed =
        f.manager->ProvisionPersonalKey("alice", "production", {}, "system");
    REQUIRE_OK(renewed);
    CHECK(renewed->created);
    REQUIRE(renewed->token.has_value());
    CHECK(renewed->record.id != replaced->record.id);
    CHECK(f.Verify(*renewed->token) == Outcome::kOk);
    absl::StatusOr<KeyRecord> old = f.manager->Get(replaced->record.id);
    REQUIRE_OK(old);
    CHECK(old->state == KeyState::kRevoked);
    const std::vector<Event> events = f.events->Events();
    REQUIRE(events.size() == events_before + 2);
    CHECK(events[events_before].type == EventType::kRevoked);
    CHECK(events[events_before].actor == "system");
    CHECK(events[events_before + 1].type == EventType::kCreated);
    // Provisioning again returns the new key.
    absl::StatusOr<ProvisionedKey> same =
        f.manager->ProvisionPersonalKey("alice", "production", {}, "system");
    REQUIRE_OK(same);
    CHECK_FALSE(same->created);
    CHECK(same->record.id == renewed->record.id);
  }

  // Inputs are validated like Create's.
  CHECK(f.manager->ProvisionPersonalKey("", "production", {}, "system")
            .status()
            .message()
            .substr(0, 6) == "owner:");
  CHECK(f.manager->ProvisionPersonalKey("carol", "nope", {}, "system")
            .status()
            .message()
            .substr(0, 12) == "environment:");
  CHECK(f.manager->ProvisionPersonalKey("carol", "production", {"nope"}, "system")
            .status()
            .message()
            .substr(0, 7) == "scopes:");
}

// Forwards to a MemoryKeyStore, but answers List slowly, so that concurrent
// provisioners all see "no key yet" and race on Insert.
class SlowListStore final : public KeyStore {
 public:
  absl::Status Insert(const KeyRecord& r, const AuditNote& note) override {
    return inner_.Insert(r, note);
  }
  absl::StatusOr<KeyRecord> Get(std::string_view id) override { return inner_.Get(id); }
  absl::StatusOr<KeyRecord> FindByDigest(const Digest& d) override {
    return inner_.FindByDigest(d);
  }
  absl::StatusOr<KeyRecord> Update(const KeyRecord& r, const AuditNote& note) override {
    return inner_.Update(r, note);
  }
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> v,
                      const AuditNote& note) override {
    return inner_.Delete(id, v, note);
  }
  absl::StatusOr<ListPage> List(const ListOptions& o) override {
    absl::StatusOr<ListPage> page = inner_.List(o);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return page;
  }
  absl::StatusOr<ChangeBatch> ChangesSince(std::uint64_t after, std::size_t limit) override {
    return inner_.ChangesSince(after, limit);
  }
  absl::StatusOr<std::uint64_t> LastSequence() override { return inner_.LastSequence(); }
  absl::StatusOr<AuditPage> ReadAudit(const AuditQuery& q) override { return inner_.ReadAudit(q); }
  absl::StatusOr<std::uint64_t> AuditCursor(std::string_view c) override {
    return inner_.AuditCursor(c);
  }
  absl::Status AckAudit(std::string_view c, std::uint64_t s) override {
    return inner_.AckAudit(c, s);
  }
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::function<void()> cb) override {
    return inner_.Subscribe(std::move(cb));
  }

 private:
  MemoryKeyStore inner_;
};

TEST_CASE("Concurrent personal provisioning creates exactly one key",
          "[manager][personal][concurrent]") {
  Fixture f;
  auto slow = std::make_shared<SlowListStore>();
  {
    KeyManager::Options o;
    o.deployment = f.deployment;
    o.store = slow;
    o.clock = f.clock;
    f.manager = keygate::testing::MustOk(KeyManager::Create(std::move(o)));
    f.events = std::make_shared<testing::AuditView>(slow);
  }
  const int threads = 8;
  const int rounds = 5;
  for (int round = 0; round < rounds; ++round) {
    const std::string owner = absl::StrCat("user", round);
    std::vector<absl::StatusOr<ProvisionedKey>> results(threads, absl::UnknownError("unset"));
    std::atomic<int> ready{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < threads) {
        }
        results[t] = f.manager->ProvisionPersonalKey(owner, "production", {"read:all"}, "system");
      });
    }
    for (std::thread& th : pool) th.join();
    int created = 0;
    int tokens = 0;
    std::set<std::string> ids;
    for (const auto& r : results) {
      REQUIRE_OK(r);
      created += r->created ? 1 : 0;
      tokens += r->token.has_value() ? 1 : 0;
      ids.insert(r->record.id);
    }
    CHECK(created == 1);
    CHECK(tokens == 1);
    CHECK(ids.size() == 1);
    ListOptions lo;
    lo.filter.owner = owner;
    absl::StatusOr<ListPage> page = f.manager->List(lo);
    REQUIRE_OK(page);
    CHECK(page->keys.size() == 1);
  }
  CHECK(f.events->Events().size() == static_cast<std::size_t>(rounds));
}

// --- Modify -----------------------------------------------------------------

TEST_CASE("Modify changes the given fields, bumps the version and reports them",
          "[manager][modify]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  const Requirement write = testing::MustRequire(f.deployment->scopes(), {kScopeWriteAll});
  REQUIRE(f.Verify(k.token, "production", write) == Outcome::kInsufficientScope);
  f.clock->Advance(absl::Minutes(1));
  KeyUpdate u;
  u.name = "renamed";
  u.scopes = std::vector<std::string>{"read:all", "write:all"};
  u.expires = std::optional<absl::Time>(f.clock->Now() + absl::Hours(1));
  u.metadata = std::map<std::string, std::string>{{"a", "b"}};
  u.description = "";  // unchanged value: not reported
  absl::StatusOr<KeyRecord> m = f.manager->Modify(k.record.id, u, 1, "bob");
  REQUIRE_OK(m);
  CHECK(m->version == 2);
  CHECK(m->name == "renamed");
  CHECK(m->scopes == std::vector<std::string>{"read:all", "write:all"});
  CHECK(m->expires.has_value());
  CHECK(m->metadata.at("a") == "b");
  CHECK(m->created == k.record.created);
  CHECK(m->updated == TruncateToMicros(f.clock->Now()));
  CHECK(m->digest == k.record.digest);  // the token still works
  CHECK(f.Verify(k.token, "production", write) == Outcome::kOk);
  absl::StatusOr<KeyRecord> got = f.manager->Get(k.record.id);
  REQUIRE_OK(got);
  CHECK(*got == *m);

  const std::vector<Event> events = f.events->Events();
  REQUIRE(events.size() == 2);
  CHECK(events[1].type == EventType::kModified);
  CHECK(events[1].actor == "bob");
  CHECK(events[1].owner == "alice");
  CHECK(events[1].version == 2);
  CHECK(events[1].changed_fields ==
        std::vector<std::string>{"name", "scopes", "expires", "metadata"});

  // Clearing optional fields.
  KeyUpdate clear;
  clear.expires = std::optional<absl::Time>();
  clear.rate_limit = std::optional<RateLimitPolicy>();
  absl::StatusOr<KeyRecord> cleared = f.manager->Modify(k.record.id, clear, 2, "bob");
  REQUIRE_OK(cleared);
  CHECK_FALSE(cleared->expires.has_value());
  CHECK(f.events->Events().back().changed_fields == std::vector<std::string>{"expires"});
}

TEST_CASE("Modify with a stale version is aborted and changes nothing", "[manager][modify]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  KeyUpdate u;
  u.name = "first";
  REQUIRE_OK(f.manager->Modify(k.record.id, u, 1, "alice"));
  u.name = "second";
  absl::StatusOr<KeyRecord> stale = f.manager->Modify(k.record.id, u, 1, "alice");
  CHECK(stale.status().code() == absl::StatusCode::kAborted);
  CHECK(stale.status().message().find("version") != std::string_view::npos);
  absl::StatusOr<KeyRecord> got = f.manager->Get(k.record.id);
  REQUIRE_OK(got);
  CHECK(got->name == "first");
  CHECK(got->version == 2);
  CHECK(f.events->Events().size() == 2);

  CHECK(f.manager->Modify("key_missing", u, 1, "alice").status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("Concurrent Modify calls on one version: exactly one wins",
          "[manager][modify][concurrent]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  const int threads = 6;
  std::vector<absl::StatusCode> codes(threads, absl::StatusCode::kUnknown);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      KeyUpdate u;
      u.name = absl::StrCat("writer ", t);
      codes[t] = f.manager->Modify(k.record.id, u, 1, "alice").status().code();
    });
  }
  for (std::thread& th : pool) th.join();
  CHECK(std::count(codes.begin(), codes.end(), absl::StatusCode::kOk) == 1);
  CHECK(std::count(codes.begin(), codes.end(), absl::StatusCode::kAborted) == threads - 1);
  absl::StatusOr<KeyRecord> got = f.manager->Get(k.record.id);
  REQUIRE_OK(got);
  CHECK(got->version == 2);
}

TEST_CASE("Modify validates what it changes, naming the field", "[manager][modify][validation]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  auto expect = [&](const KeyUpdate& u, std::string_view field) {
    absl::StatusOr<KeyRecord> m = f.manager->Modify(k.record.id, u, 1, "alice");
    INFO(m.status());
    REQUIRE(m.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(m.status().message().substr(0, field.size() + 1) ==
          absl::StrCat(std::string(field), ":"));
  };
  KeyUpdate u;
  u.name = "";
  expect(u, "name");
  u = {};
  u.description = std::string(kMaxDescriptionLength + 1, 'd');
  expect(u, "description");
  u = {};
  u.scopes = std::vector<std::string>{"nope"};
  expect(u, "scopes");
  u = {};
  u.expires = std::optional<absl::Time>(f.clock->Now() - absl::Seconds(1));
  expect(u, "expires");
  u = {};
  u.rate_limit = std::optional<RateLimitPolicy>(RateLimitPolicy{0, absl::Seconds(1), 1});
  expect(u, "rate_limit.rate");
  u = {};
  u.webhook_url = "http://example.com";
  expect(u, "webhook_url");
  u = {};
  u.accounts = std::vector<std::string>{""};
  expect(u, "accounts[0]");
  u = {};
  u.metadata = std::map<std::string, std::string>{{"", ""}};
  expect(u, "metadata keys");
  u = {};
  u.description = "line\n\x1b[2J";
  expect(u, "description");
  absl::StatusOr<KeyRecord> got = f.manager->Get(k.record.id);
  REQUIRE_OK(got);
  CHECK(got->version == 1);
}

TEST_CASE("A Modify that changes nothing writes nothing", "[manager][modify]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  KeyUpdate same;
  same.name = k.record.name;
  absl::StatusOr<KeyRecord> m = f.manager->Modify(k.record.id, same, 1, "alice");
  REQUIRE_OK(m);
  CHECK(m->version == 1);
  CHECK(f.events->Events().size() == 1);
  CHECK(f.manager->Modify(k.record.id, same, 5, "alice").status().code() ==
        absl::StatusCode::kAborted);
}

// --- Revoke, restore, delete ------------------------------------------------

TEST_CASE("Revoke and restore are idempotent and verified immediately", "[manager][revoke]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  absl::StatusOr<KeyRecord> r1 = f.manager->Revoke(k.record.id, "bob");
  REQUIRE_OK(r1);
  CHECK(r1->state == KeyState::kRevoked);
  CHECK(r1->version == 2);
  CHECK(f.Verify(k.token) == Outcome::kRevoked);
  absl::StatusOr<KeyRecord> r2 = f.manager->Revoke(k.record.id, "bob");
  REQUIRE_OK(r2);
  CHECK(r2->version == 2);                // no new version...
  CHECK(f.events->Events().size() == 2);  // ...and no event

  absl::StatusOr<KeyRecord> a1 = f.manager->Restore(k.record.id, "bob");
  REQUIRE_OK(a1);
  CHECK(a1->state == KeyState::kActive);
  CHECK(a1->version == 3);
  CHECK(f.Verify(k.token) == Outcome::kOk);
  absl::StatusOr<KeyRecord> a2 = f.manager->Restore(k.record.id, "bob");
  REQUIRE_OK(a2);
  CHECK(a2->version == 3);

  const std::vector<Event> events = f.events->Events();
  REQUIRE(events.size() == 3);
  CHECK(events[1].type == EventType::kRevoked);
  CHECK(events[1].changed_fields == std::vector<std::string>{"state"});
  CHECK(events[1].actor == "bob");
  CHECK(events[2].type == EventType::kRestored);
  CHECK(events[2].version == 3);

  CHECK(f.manager->Revoke("key_missing", "bob").status().code() == absl::StatusCode::kNotFound);
  CHECK(f.manager->Restore("key_missing", "bob").status().code() == absl::StatusCode::kNotFound);
}

// Before each of the next `conflicts` writes (Update or Delete) of a key,
// commits a concurrent edit of that key (a metadata change, which bumps its
// version), so the write the caller built from its earlier read loses the
// compare-and-set. KeyManager's retry loops then run a known number of
// times, without hoping that two threads meet.
class ConflictingStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  absl::StatusOr<KeyRecord> Update(const KeyRecord& r, const AuditNote& note) override {
    Interfere(r.id);
    return ForwardingStore::Update(r, note);
  }
  absl::Status Delete(std::string_view id, std::optional<std::uint64_t> v,
                      const AuditNote& note) override {
    Interfere(id);
    return ForwardingStore::Delete(id, v, note);
  }

  int conflicts = 0;  // edits still to inject; kAlways: before every write
  int edits = 0;      // edits injected so far
  int writes = 0;     // writes the caller attempted
  static constexpr int kAlways = -1;

 private:
  void Interfere(std::string_view id) {
    ++writes;
    if (conflicts == 0) return;
    if (conflicts > 0) --conflicts;
    absl::StatusOr<KeyRecord> current = inner().Get(id);
    REQUIRE_OK(current);
    current->metadata["edit"] = std::to_string(++edits);
    REQUIRE_OK(inner().Update(*current, keygate::testing::ModifiedNote()));
  }
};

// The operations that retry on their own: the three retry loops of
// KeyManager (SetState for revoke and restore, Delete, Roll).
enum class Retrying { kRevoke, kRestore, kDelete, kRoll };

struct RetryCase {
  Retrying op;
  const char* name;
};

const RetryCase kRetryCases[] = {{Retrying::kRevoke, "revoke"},
                                 {Retrying::kRestore, "restore"},
                                 {Retrying::kDelete, "delete"},
                                 {Retrying::kRoll, "roll"}};

// A fixture whose manager writes through a ConflictingStore over its store,
// with one key (revoked first for kRestore, without conflicts).
struct ConflictFixture {
  explicit ConflictFixture(Retrying which) : op(which) {
    conflicting = std::make_shared<ConflictingStore>(f.store);
    KeyManager::Options o;
    o.deployment = f.deployment;
    o.store = conflicting;
    o.clock = f.clock;
    f.manager = keygate::testing::MustOk(KeyManager::Create(std::move(o)));
    key = std::make_unique<CreatedKey>(f.MustCreate(f.Request()));
    if (op == Retrying::kRestore) REQUIRE_OK(f.manager->Revoke(key->record.id, "alice"));
    events_before = f.events->Events().size();
    conflicting->writes = 0;
  }

  absl::Status Run() {
    const std::string& id = key->record.id;
    switch (op) {
      case Retrying::kRevoke:
        return f.manager->Revoke(id, "bob").status();
      case Retrying::kRestore:
        return f.manager->Restore(id, "bob").status();
      case Retrying::kDelete:
        return f.manager->Delete(id, "bob");
      case Retrying::kRoll: {
        absl::StatusOr<CreatedKey> rolled = f.manager->Roll(id, absl::ZeroDuration(), "bob");
        if (rolled.ok()) new_token = std::make_unique<Secret>(std::move(rolled->token));
        return rolled.status();
      }
    }
    return absl::InternalError("unreachable");
  }

  Retrying op;
  Fixture f;
  std::shared_ptr<ConflictingStore> conflicting;
  std::unique_ptr<CreatedKey> key;
  std::unique_ptr<Secret> new_token;
  std::size_t events_before = 0;
};

TEST_CASE("Revoke succeeds despite concurrent edits", "[manager][revoke][concurrent]") {
  for (const RetryCase& c : kRetryCases) {
    INFO(c.name);
    ConflictFixture x(c.op);
    const std::uint64_t version = x.f.manager->Get(x.key->record.id)->version;
    x.conflicting->conflicts = 5;
    REQUIRE_OK(x.Run());
    // It lost the compare-and-set five times, to five edits, and won the sixth.
    CHECK(x.conflicting->edits == 5);
    CHECK(x.conflicting->writes == 6);
    const std::vector<Event> events = x.f.events->Events();
    REQUIRE(events.size() == x.events_before + 1);  // its own event, once
    absl::StatusOr<KeyRecord> got = x.f.store->Get(x.key->record.id);
    if (c.op == Retrying::kDelete) {
      CHECK(got.status().code() == absl::StatusCode::kNotFound);
      CHECK(events.back().type == EventType::kDeleted);
      CHECK(x.f.Verify(x.key->token) == Outcome::kUnknown);
      continue;
    }
    REQUIRE_OK(got);
    // Applied on top of the last edit, which it kept.
    CHECK(got->version == version + 6);
    CHECK(got->metadata.at("edit") == "5");
    CHECK(events.back().version == got->version);
    switch (c.op) {
      case Retrying::kRevoke:
        CHECK(got->state == KeyState::kRevoked);
        CHECK(events.back().type == EventType::kRevoked);
        CHECK(x.f.Verify(x.key->token) == Outcome::kRevoked);
        break;
      case Retrying::kRestore:
        CHECK(got->state == KeyState::kActive);
        CHECK(events.back().type == EventType::kRestored);
        CHECK(x.f.Verify(x.key->token) == Outcome::kOk);
        break;
      case Retrying::kRoll:
        // The token handed out is the one stored (each lost attempt minted
        // one that nobody sees).
        REQUIRE(x.new_token != nullptr);
        CHECK(events.back().type == EventType::kRolled);
        CHECK(x.f.Verify(*x.new_token) == Outcome::kOk);
        CHECK(x.f.Verify(x.key->token) == Outcome::kUnknown);
        break;
      case Retrying::kDelete:
        break;
    }
  }
}

TEST_CASE("Retrying operations give up after too many concurrent changes",
          "[manager][revoke][roll][delete][concurrent]") {
  for (const RetryCase& c : kRetryCases) {
    INFO(c.name);
    int attempts = 0;
    {
      ConflictFixture x(c.op);
      const absl::StatusOr<KeyRecord> before = x.f.store->Get(x.key->record.id);
      REQUIRE_OK(before);
      x.conflicting->conflicts = ConflictingStore::kAlways;
      const absl::Status s = x.Run();
      CHECK(s.code() == absl::StatusCode::kAborted);
      CHECK(std::string(s.message()) ==
            absl::StrCat("key ", x.key->record.id, ": too many concurrent changes; retry"));
      // Every attempt lost to an edit; the operation itself wrote nothing.
      attempts = x.conflicting->writes;
      CHECK(attempts > 1);
      CHECK(x.conflicting->edits == attempts);
      CHECK(x.f.events->Events().size() == x.events_before);
      CHECK(x.new_token == nullptr);
      absl::StatusOr<KeyRecord> after = x.f.store->Get(x.key->record.id);
      REQUIRE_OK(after);
      CHECK(after->state == before->state);
      CHECK(after->digest == before->digest);
      CHECK(after->version == before->version + static_cast<std::uint64_t>(attempts));
    }
    {
      // One conflict fewer than the bound, and the last attempt wins.
      ConflictFixture x(c.op);
      x.conflicting->conflicts = attempts - 1;
      REQUIRE_OK(x.Run());
      CHECK(x.conflicting->writes == attempts);
      CHECK(x.f.events->Events().size() == x.events_before + 1);
    }
  }
}

TEST_CASE("Delete removes the key for good", "[manager][delete]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  REQUIRE(f.Verify(k.token) == Outcome::kOk);
  REQUIRE_OK(f.manager->Delete(k.record.id, "bob"));
  CHECK(f.manager->Get(k.record.id).status().code() == absl::StatusCode::kNotFound);
  CHECK(f.Verify(k.token) == Outcome::kUnknown);
  CHECK(f.manager->Delete(k.record.id, "bob").code() == absl::StatusCode::kNotFound);
  const std::vector<Event> events = f.events->Events();
  REQUIRE(events.size() == 2);
  CHECK(events[1].type == EventType::kDeleted);
  CHECK(events[1].key_id == k.record.id);
  CHECK(events[1].owner == "alice");
  CHECK(events[1].actor == "bob");
  CHECK(events[1].version == 0);
}

// --- Roll ---------------------------------------------------------------------

TEST_CASE("Roll keeps the old token valid until the grace deadline, to the nanosecond",
          "[manager][roll]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  f.clock->Set(absl::FromUnixSeconds(1'700'000'100));  // whole seconds: an exact deadline
  absl::StatusOr<CreatedKey> rolled = f.manager->Roll(k.record.id, absl::Minutes(10), "alice");
  REQUIRE_OK(rolled);
  CHECK(Text(rolled->token) != Text(k.token));
  CHECK(rolled->record.version == 2);
  CHECK(rolled->record.id == k.record.id);
  CHECK(rolled->record.hint == TokenHint(Text(rolled->token)));
  const absl::Time deadline = absl::FromUnixSeconds(1'700'000'100) + absl::Minutes(10);
  REQUIRE(rolled->record.previous.has_value());
  CHECK(rolled->record.previous->valid_until == deadline);
  CHECK(rolled->record.previous->digest == k.record.digest);
  CHECK(rolled->record.previous->hint == k.record.hint);

  CHECK(f.Verify(rolled->token) == Outcome::kOk);
  CHECK(f.Verify(k.token) == Outcome::kOk);
  f.clock->Set(deadline - absl::Nanoseconds(1));
  CHECK(f.Verify(k.token) == Outcome::kOk);
  f.clock->Set(deadline);
  CHECK(f.Verify(k.token) == Outcome::kExpired);
  CHECK(f.Verify(rolled->token) == Outcome::kOk);
  f.clock->Advance(absl::Hours(100));
  CHECK(f.Verify(k.token) == Outcome::kExpired);

  const std::vector<Event> events = f.events->Events();
  REQUIRE(events.size() == 2);
  CHECK(events[1].type == EventType::kRolled);
  CHECK(events[1].version == 2);
}

TEST_CASE("Roll with zero grace forgets the old token at once", "[manager][roll]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  absl::StatusOr<CreatedKey> rolled = f.manager->Roll(k.record.id, absl::ZeroDuration(), "alice");
  REQUIRE_OK(rolled);
  CHECK_FALSE(rolled->record.previous.has_value());
  CHECK(f.Verify(k.token) == Outcome::kUnknown);
  CHECK(f.Verify(rolled->token) == Outcome::kOk);
}

TEST_CASE("Rolling again drops the secret still in its grace period", "[manager][roll]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  absl::StatusOr<CreatedKey> r1 = f.manager->Roll(k.record.id, absl::Hours(1), "alice");
  REQUIRE_OK(r1);
  absl::StatusOr<CreatedKey> r2 = f.manager->Roll(k.record.id, absl::Hours(1), "alice");
  REQUIRE_OK(r2);
  CHECK(f.Verify(k.token) == Outcome::kUnknown);
  CHECK(f.Verify(r1->token) == Outcome::kOk);
  CHECK(f.Verify(r2->token) == Outcome::kOk);
}

TEST_CASE("Roll refuses bad grace periods and revoked keys", "[manager][roll][validation]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  absl::StatusOr<CreatedKey> neg = f.manager->Roll(k.record.id, -absl::Seconds(1), "alice");
  CHECK(neg.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(neg.status().message().substr(0, 6) == "grace:");
  absl::StatusOr<CreatedKey> longer =
      f.manager->Roll(k.record.id, absl::Hours(24 * 30) + absl::Seconds(1), "alice");
  CHECK(longer.status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE_OK(f.manager->Roll(k.record.id, absl::Hours(24 * 30), "alice"));

  REQUIRE_OK(f.manager->Revoke(k.record.id, "alice"));
  absl::StatusOr<KeyRecord> before = f.manager->Get(k.record.id);
  REQUIRE_OK(before);
  CHECK(f.manager->Roll(k.record.id, absl::Hours(1), "alice").status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(f.manager->Roll("key_missing", absl::Hours(1), "alice").status().code() ==
        absl::StatusCode::kNotFound);
  absl::StatusOr<KeyRecord> after = f.manager->Get(k.record.id);
  REQUIRE_OK(after);
  CHECK(*after == *before);
}

TEST_CASE("Roll refuses an expired key: its new token would never work", "[manager][roll]") {
  Fixture f;
  CreateKeyRequest req = f.Request();
  req.expires = f.clock->Now() + absl::Hours(1);
  CreatedKey k = f.MustCreate(req);
  f.clock->Advance(absl::Hours(1));  // expires <= now: expired
  REQUIRE(f.Verify(k.token) == Outcome::kExpired);
  const std::uint64_t seq = f.LastSequence();
  absl::StatusOr<CreatedKey> rolled = f.manager->Roll(k.record.id, absl::Hours(1), "alice");
  CHECK(rolled.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(rolled.status().message()), Catch::Contains("expired"));
  CHECK(f.LastSequence() == seq);  // nothing written
  // With a later expiry it rolls, and the new token works.
  KeyUpdate u;
  u.expires = std::optional<absl::Time>(f.clock->Now() + absl::Hours(2));
  REQUIRE_OK(f.manager->Modify(k.record.id, u, 1, "alice"));
  rolled = f.manager->Roll(k.record.id, absl::Hours(1), "alice");
  REQUIRE_OK(rolled);
  CHECK(f.Verify(rolled->token) == Outcome::kOk);
}

TEST_CASE("Roll returns no token when the store fails", "[manager][roll][secret]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  f.store->SetUnavailable(true);
  CHECK(f.manager->Roll(k.record.id, absl::Hours(1), "alice").status().code() ==
        absl::StatusCode::kUnavailable);
  f.store->SetUnavailable(false);
  CHECK(f.events->Events().size() == 1);
  CHECK(f.Verify(k.token) == Outcome::kOk);
  absl::StatusOr<KeyRecord> got = f.manager->Get(k.record.id);
  REQUIRE_OK(got);
  CHECK(got->version == 1);
}

TEST_CASE("Rolled tokens keep the key's environment tag and the deployment prefix",
          "[manager][roll]") {
  DeploymentOptions o;
  o.token_prefix = "acme";
  o.environments = {{"dev", "d", std::nullopt}, {"prod", "p", std::nullopt}};
  Fixture f(std::move(o));
  CreateKeyRequest r = f.Request();
  r.environment = "dev";
  CreatedKey k = f.MustCreate(r);
  CHECK(Text(k.token).substr(0, 7) == "acme_d_");
  absl::StatusOr<CreatedKey> rolled = f.manager->Roll(k.record.id, absl::Hours(1), "alice");
  REQUIRE_OK(rolled);
  CHECK(Text(rolled->token).substr(0, 7) == "acme_d_");
  CHECK(f.Verify(rolled->token, "dev") == Outcome::kOk);
}

// --- Listing ------------------------------------------------------------------

TEST_CASE("KeyManager lists and searches through the store", "[manager][list]") {
  Fixture f;
  f.MustCreate(f.Request("Deploy Bot"));
  f.MustCreate(f.Request("metrics"));
  CreateKeyRequest bob = f.Request("bob's deploy key");
  bob.owner = "bob";
  f.MustCreate(bob);
  ListOptions o;
  o.filter.name_contains = "DEPLOY";
  absl::StatusOr<ListPage> page = f.manager->List(o);
  REQUIRE_OK(page);
  CHECK(page->keys.size() == 2);
  o.filter.owner = "alice";
  page = f.manager->List(o);
  REQUIRE_OK(page);
  REQUIRE(page->keys.size() == 1);
  CHECK(page->keys[0].name == "Deploy Bot");
  o.limit = 0;
  CHECK(f.manager->List(o).status().code() == absl::StatusCode::kInvalidArgument);
}

// --- Tokens in key fields ----------------------------------------------------

// Where a token can hide in a field's text: alone, inside prose, glued to
// other letters (a scanner's regex matches there too), percent-encoded
// space before it, in a query string.
std::vector<std::string> TokenPlacements(const std::string& token) {
  return {token,
          "copied " + token + " by mistake",
          "x" + token,
          "Bearer%20" + token,
          "t=" + token + "&v=1",
          token + "trailing"};
}

TEST_CASE("KeyManager refuses a token stored in any text field, naming the field",
          "[manager][validation][secret]") {
  Fixture f;
  absl::StatusOr<Secret> own = GenerateToken("kg", "live");
  REQUIRE_OK(own);
  // Another deployment's token is just as secret.
  absl::StatusOr<Secret> foreign = GenerateToken("acme", "prod");
  REQUIRE_OK(foreign);
  std::vector<absl::Status> refusals;
  for (const std::string& token : {std::string(Text(*own)), std::string(Text(*foreign))}) {
    for (const std::string& text : TokenPlacements(token)) {
      INFO(text);
      // Each field of a create request, and the field its error must name.
      const std::vector<std::pair<std::string, std::function<void(CreateKeyRequest&)>>> fields = {
          {"name", [&](CreateKeyRequest& r) { r.name = text; }},
          {"description", [&](CreateKeyRequest& r) { r.description = "line\n" + text; }},
          {"owner", [&](CreateKeyRequest& r) { r.owner = text; }},
          {"accounts[1]",
           [&](CreateKeyRequest& r) {
             r.accounts = {"acct_1", text};
           }},
          {"metadata keys",
           [&](CreateKeyRequest& r) {
             r.metadata = {{text, "v"}};
           }},
          {"metadata['note']",
           [&](CreateKeyRequest& r) {
             r.metadata = {{"note", text}};
           }},
          {"webhook_url",
           [&](CreateKeyRequest& r) { r.webhook_url = "https://hooks.example.com/k?" + text; }},
      };
      for (const auto& [field, set] : fields) {
        INFO(field);
        // A key longer than metadata keys may be is refused for its length.
        if (field == "metadata keys" && text.size() > kMaxMetadataKeyLength) continue;
        CreateKeyRequest req = f.Request();
        set(req);
        absl::Status s = f.manager->Create(req, "alice").status();
        CHECK(s.code() == absl::StatusCode::kInvalidArgument);
        CHECK(std::string(s.message()) ==
              field + ": holds an API token; tokens must not be stored in key fields");
        CHECK(f.manager->ValidateCreate(req).code() == absl::StatusCode::kInvalidArgument);
        refusals.push_back(s);
      }
      absl::Status actor = f.manager->Create(f.Request(), text).status();
      CHECK(actor.code() == absl::StatusCode::kInvalidArgument);
      CHECK(std::string(actor.message()).rfind("actor: holds an API token", 0) == 0);
      refusals.push_back(actor);
    }
  }
  // Nothing was stored or announced, and no message quotes a token.
  CHECK(f.LastSequence() == 0);
  CHECK(f.events->Events().empty());
  const std::string everything = Stringified(f, refusals);
  CHECK(everything.find(Text(*own).substr(8, 20)) == std::string::npos);
  CHECK(everything.find(Text(*foreign).substr(10, 20)) == std::string::npos);
}

TEST_CASE("KeyManager refuses a token in the fields Modify changes",
          "[manager][validation][secret]") {
  Fixture f;
  CreatedKey k = f.MustCreate(f.Request());
  // The key's own token, pasted back into it.
  const std::string token(Text(k.token));
  const std::vector<std::pair<std::string, std::function<void(KeyUpdate&)>>> fields = {
      {"name", [&](KeyUpdate& u) { u.name = "ci " + token; }},
      {"description", [&](KeyUpdate& u) { u.description = token; }},
      {"accounts[0]", [&](KeyUpdate& u) { u.accounts = std::vector<std::string>{token}; }},
      {"metadata keys",
       [&](KeyUpdate& u) {
         u.metadata = std::map<std::string, std::string>{{token, "v"}};
       }},
      {"metadata['t']",
       [&](KeyUpdate& u) {
         u.metadata = std::map<std::string, std::string>{{"t", token}};
       }},
      {"webhook_url", [&](KeyUpdate& u) { u.webhook_url = "https://h.example.com/" + token; }},
  };
  std::vector<absl::Status> refusals;
  for (const auto& [field, set] : fields) {
    INFO(field);
    KeyUpdate u;
    set(u);
    absl::Status s = f.manager->Modify(k.record.id, u, k.record.version, "alice").status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()) ==
          field + ": holds an API token; tokens must not be stored in key fields");
    refusals.push_back(s);
  }
  absl::StatusOr<KeyRecord> stored = f.store->Get(k.record.id);
  REQUIRE_OK(stored);
  CHECK(stored->version == k.record.version);
  CHECK(Stringified(f, refusals).find(token.substr(8, 20)) == std::string::npos);
}

TEST_CASE("KeyManager accepts text shaped like a token whose checksum does not match",
          "[manager][validation]") {
  // The checksum is what tells a token from text of the same shape, as for
  // a secret scanner: such names stay usable.
  Fixture f;
  absl::StatusOr<Secret> token = GenerateToken("kg", "live");
  REQUIRE_OK(token);
  std::string broken(Text(*token));
  broken.back() = broken.back() == 'a' ? 'b' : 'a';
  CHECK(f.manager->Create(f.Request(broken), "alice").ok());
  CHECK(f.manager->Create(f.Request("kg_live_" + std::string(49, 'a')), "alice").ok());
  // Too short a body, or a character outside base62 in it, is no token.
  std::string cut(Text(*token));
  cut.pop_back();
  CHECK(f.manager->Create(f.Request(cut), "alice").ok());
  std::string dashed(Text(*token));
  dashed[20] = '-';
  CHECK(f.manager->Create(f.Request(dashed), "alice").ok());
}

// --- Recoverable keys -------------------------------------------------------

std::shared_ptr<const Envelope> EnvelopeOf(char kek, std::vector<char> previous = {}) {
  std::vector<Secret> old;
  for (char c : previous) old.emplace_back(std::string(32, c));
  return keygate::testing::MustOk(Envelope::FromKeys(Secret(std::string(32, kek)), old));
}

TEST_CASE("KeyManager keeps tokens hash-only unless recoverable keys are on",
          "[manager][recoverable]") {
  Fixture f;
  CHECK(!f.manager->recoverable_keys());
  CreatedKey k = f.MustCreate(f.Request());
  CHECK(k.record.sealed_token.empty());
  absl::StatusOr<RevealedKey> r = f.manager->RevealToken(k.record.id, "alice");
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(StatusText(r.status()), Catch::Contains("recoverable keys are off"));
  CHECK(f.manager->ResealToken(k.record.id, "alice").status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(f.events->Events().size() == 1);  // created; nothing recorded for the refusals
}

TEST_CASE("KeyManager reveals a recoverable key's current token, recorded first",
          "[manager][recoverable]") {
  Fixture f;
  std::unique_ptr<KeyManager> m = f.ManagerWith(EnvelopeOf('a'));
  CHECK(m->recoverable_keys());
  absl::StatusOr<CreatedKey> k = m->Create(f.Request(), "alice");
  REQUIRE_OK(k);
  const std::string sealed = k->record.sealed_token;
  CHECK(sealed.rfind("kge1.", 0) == 0);
  CHECK(sealed.find(Text(k->token)) == std::string::npos);
  CHECK(*f.store->Get(k->record.id) == k->record);  // stored as returned

  f.clock->Advance(absl::Minutes(1));
  absl::StatusOr<RevealedKey> r = m->RevealToken(k->record.id, "bob");
  REQUIRE_OK(r);
  CHECK(Text(r->token) == Text(k->token));
  CHECK(r->record.version == 2);
  CHECK(r->record.updated == k->record.updated);  // nothing a user set changed
  CHECK(r->record.sealed_token == sealed);
  std::vector<Event> events = f.events->Events();
  REQUIRE(events.size() == 2);
  CHECK(events[1].type == EventType::kRevealed);
  CHECK(events[1].actor == "bob");
  CHECK(events[1].changed_fields.empty());
  CHECK(events[1].version == 2);
  // An actor is required like for any change; nothing is recorded without one.
  CHECK(m->RevealToken(k->record.id, "").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(m->RevealToken("key_000000000000000000000000", "bob").status().code() ==
        absl::StatusCode::kNotFound);

  // A personal key is recoverable too (the seeds' "Show API Key").
  absl::StatusOr<ProvisionedKey> p = m->ProvisionPersonalKey("carol", "production", {}, "carol");
  REQUIRE_OK(p);
  REQUIRE(p->token.has_value());
  r = m->RevealToken(p->record.id, "carol");
  REQUIRE_OK(r);
  CHECK(Text(r->token) == Text(*p->token));

  // A revoked key's token is revealed too; it still does not verify.
  REQUIRE_OK(m->Revoke(k->record.id, "alice"));
  r = m->RevealToken(k->record.id, "alice");
  REQUIRE_OK(r);
  CHECK(f.Verify(r->token) == Outcome::kRevoked);
  CHECK(Stringified(f).find(Text(k->token)) == std::string::npos);
}

TEST_CASE("KeyManager reveals only the token a key has now", "[manager][recoverable]") {
  Fixture f;
  std::unique_ptr<KeyManager> m = f.ManagerWith(EnvelopeOf('a'));
  absl::StatusOr<CreatedKey> k = m->Create(f.Request(), "alice");
  REQUIRE_OK(k);
  const std::string id = k->record.id;
  const std::string first_sealed = k->record.sealed_token;

  // A roll seals the new token; the previous one (still working in its grace) is not revealed.
  absl::StatusOr<CreatedKey> rolled = m->Roll(id, absl::Hours(1), "alice");
  REQUIRE_OK(rolled);
  CHECK(rolled->record.sealed_token != first_sealed);
  absl::StatusOr<RevealedKey> r = m->RevealToken(id, "alice");
  REQUIRE_OK(r);
  CHECK(Text(r->token) == Text(rolled->token));

  // A manager without the envelope rolls it: the sealed copy goes, the key is hash-only.
  absl::StatusOr<CreatedKey> plain_roll = f.manager->Roll(id, absl::ZeroDuration(), "alice");
  REQUIRE_OK(plain_roll);
  CHECK(plain_roll->record.sealed_token.empty());
  r = m->RevealToken(id, "alice");
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(StatusText(r.status()), Catch::Contains("not recoverable"));

  // A sealed copy left behind by a writer that does not know the column (an older keygate
  // rolling the key): refused as stale, not returned.
  KeyRecord stale = *f.store->Get(id);
  stale.sealed_token = rolled->record.sealed_token;
  REQUIRE_OK(f.store->Update(
      stale, AuditNote{EventType::kModified, "test", f.clock->Now(), {"sealed_token"}}));
  r = m->RevealToken(id, "alice");
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(StatusText(r.status()), Catch::Contains("stale"));

  // Another key's sealed copy does not open here (the key id is the associated data).
  absl::StatusOr<CreatedKey> other = m->Create(f.Request("other"), "alice");
  REQUIRE_OK(other);
  KeyRecord moved = *f.store->Get(id);
  moved.sealed_token = other->record.sealed_token;
  REQUIRE_OK(f.store->Update(
      moved, AuditNote{EventType::kModified, "test", f.clock->Now(), {"sealed_token"}}));
  r = m->RevealToken(id, "alice");
  CHECK(r.status().code() == absl::StatusCode::kDataLoss);
  CHECK(StatusText(r.status()).find(Text(other->token)) == std::string::npos);
  // Not an envelope at all: damaged data too, not a caller's mistake.
  KeyRecord garbled = *f.store->Get(id);
  garbled.sealed_token = "not an envelope";
  REQUIRE_OK(f.store->Update(
      garbled, AuditNote{EventType::kModified, "test", f.clock->Now(), {"sealed_token"}}));
  r = m->RevealToken(id, "alice");
  CHECK(r.status().code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(StatusText(r.status()), Catch::Contains("sealed_token: stored copy is damaged"));
  CHECK(m->ResealToken(id, "alice").status().code() == absl::StatusCode::kDataLoss);
  std::vector<Event> events = f.events->Events();
  CHECK(std::count_if(events.begin(), events.end(), [](const Event& e) {
          return e.type == EventType::kRevealed;
        }) == 1);  // refusals record nothing
}

TEST_CASE("KeyManager reseals recoverable keys under a new key-encryption key",
          "[manager][recoverable]") {
  Fixture f;
  std::unique_ptr<KeyManager> old_kek = f.ManagerWith(EnvelopeOf('a'));
  absl::StatusOr<CreatedKey> k = old_kek->Create(f.Request(), "alice");
  REQUIRE_OK(k);
  const std::string id = k->record.id;
  CreatedKey hash_only = f.MustCreate(f.Request("hash-only"));

  // The new KEK alone cannot open what the old one sealed.
  std::unique_ptr<KeyManager> new_only = f.ManagerWith(EnvelopeOf('b'));
  CHECK(new_only->RevealToken(id, "alice").status().code() ==
        absl::StatusCode::kFailedPrecondition);

  // Rotation: the new KEK primary, the old one previous; reseal, then the old one can go.
  std::unique_ptr<KeyManager> rotating = f.ManagerWith(EnvelopeOf('b', {'a'}));
  REQUIRE_OK(rotating->RevealToken(id, "alice"));
  absl::StatusOr<bool> wrote = rotating->ResealToken(id, "ops");
  REQUIRE_OK(wrote);
  CHECK(*wrote);
  const KeyRecord after = *f.store->Get(id);
  CHECK(after.sealed_token != k->record.sealed_token);
  CHECK(after.updated == k->record.updated);
  const Event last = f.events->Events().back();
  CHECK(last.type == EventType::kModified);
  CHECK(last.changed_fields == std::vector<std::string>{"sealed_token"});
  wrote = rotating->ResealToken(id, "ops");  // already under the primary: no write
  REQUIRE_OK(wrote);
  CHECK(!*wrote);
  wrote = rotating->ResealToken(hash_only.record.id, "ops");  // nothing to reseal
  REQUIRE_OK(wrote);
  CHECK(!*wrote);
  absl::StatusOr<RevealedKey> r = new_only->RevealToken(id, "alice");
  REQUIRE_OK(r);
  CHECK(Text(r->token) == Text(k->token));
}

// --- Per-key webhook secrets --------------------------------------------------

std::unique_ptr<KeyManager> PerKeyManager(const Fixture& f, std::shared_ptr<const Envelope> e) {
  KeyManager::Options o;
  o.deployment = f.deployment;
  o.store = f.store;
  o.clock = f.clock;
  o.envelope = std::move(e);
  o.webhook_secret_per_key = true;
  return keygate::testing::MustOk(KeyManager::Create(std::move(o)));
}

// The `webhook-signature` header `secrets` give for a fixed message.
std::string SignedBy(const std::vector<WebhookSecret>& secrets) {
  return keygate::testing::MustOk(WebhookSignatureHeader(secrets, "msg_1", 1700000000, "{}"));
}

TEST_CASE("KeyManager gives a key with a webhook URL its own sealed signing secret",
          "[manager][webhook_secret]") {
  Fixture f;
  KeyManager::Options bad;
  bad.deployment = f.deployment;
  bad.store = f.store;
  bad.webhook_secret_per_key = true;
  absl::StatusOr<std::unique_ptr<KeyManager>> refused = KeyManager::Create(bad);
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(refused.status().message() == "webhook_secret_per_key: needs an envelope");

  // Off (the default): no key gets one, even with an envelope.
  CreateKeyRequest req = f.Request();
  req.webhook_url = "https://hooks.example.com/k";
  absl::StatusOr<CreatedKey> plain = f.ManagerWith(EnvelopeOf('a'))->Create(req, "alice");
  REQUIRE_OK(plain);
  CHECK(!plain->webhook_secret.has_value());
  CHECK(plain->record.sealed_webhook_secret.empty());
  CHECK(!f.manager->webhook_secret_per_key());

  std::shared_ptr<const Envelope> envelope = EnvelopeOf('a');
  std::unique_ptr<KeyManager> m = PerKeyManager(f, envelope);
  CHECK(m->webhook_secret_per_key());
  absl::StatusOr<CreatedKey> k = m->Create(req, "alice");
  REQUIRE_OK(k);
  REQUIRE(k->webhook_secret.has_value());
  const std::string shown(k->webhook_secret->text().Reveal(InsecureSecretAccess::Get()));
  CHECK(shown.rfind("whsec_", 0) == 0);
  // Stored only sealed: the text is nowhere in the record.
  const KeyRecord stored = *f.store->Get(k->record.id);
  CHECK(!stored.sealed_webhook_secret.empty());
  CHECK(stored.sealed_webhook_secret.find(shown.substr(6)) == std::string::npos);
  absl::StatusOr<KeyWebhookSecrets> opened =
      OpenWebhookSecrets(*envelope, stored.id, stored.sealed_webhook_secret);
  REQUIRE_OK(opened);
  CHECK(Text(opened->current.text()) == shown);
  CHECK(!opened->previous.has_value());
  // Bound to its key: another key's id does not open it, nor does the token's sealing.
  CHECK(!OpenWebhookSecrets(*envelope, plain->record.id, stored.sealed_webhook_secret).ok());
  CHECK(!envelope->Open(stored.sealed_webhook_secret, stored.id).ok());

  // No URL: no secret.
  absl::StatusOr<CreatedKey> no_url = m->Create(f.Request("no-url"), "alice");
  REQUIRE_OK(no_url);
  CHECK(!no_url->webhook_secret.has_value());
  CHECK(no_url->record.sealed_webhook_secret.empty());
  CHECK(m->RollWebhookSecret(no_url->record.id, absl::ZeroDuration(), "alice").status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(f.manager->RollWebhookSecret(k->record.id, absl::ZeroDuration(), "alice").status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("KeyManager rolls a webhook secret with an overlap in which both sign",
          "[manager][webhook_secret]") {
  Fixture f;
  std::shared_ptr<const Envelope> envelope = EnvelopeOf('a');
  std::unique_ptr<KeyManager> m = PerKeyManager(f, envelope);
  CreateKeyRequest req = f.Request();
  req.webhook_url = "https://hooks.example.com/k";
  absl::StatusOr<CreatedKey> k = m->Create(req, "alice");
  REQUIRE_OK(k);
  const WebhookSecret first = *k->webhook_secret;
  const std::string id = k->record.id;

  CHECK(m->RollWebhookSecret(id, absl::Hours(24 * 31), "alice").status().code() ==
        absl::StatusCode::kInvalidArgument);
  absl::StatusOr<RolledWebhookSecret> rolled = m->RollWebhookSecret(id, absl::Hours(1), "ops");
  REQUIRE_OK(rolled);
  CHECK(Text(rolled->secret.text()) != Text(first.text()));
  CHECK(rolled->record.version == k->record.version + 1);
  const Event last = f.events->Events().back();
  CHECK(last.type == EventType::kModified);
  CHECK(last.changed_fields == std::vector<std::string>{"webhook_secret"});
  CHECK(last.actor == "ops");

  absl::StatusOr<KeyWebhookSecrets> opened =
      OpenWebhookSecrets(*envelope, id, f.store->Get(id)->sealed_webhook_secret);
  REQUIRE_OK(opened);
  const absl::Time now = f.clock->Now();
  // During the overlap: the new secret first, then the old one.
  CHECK(SignedBy(opened->SigningAt(now)) == SignedBy({rolled->secret, first}));
  // After it: only the new one.
  CHECK(SignedBy(opened->SigningAt(now + absl::Hours(1))) == SignedBy({rolled->secret}));

  // A second roll without overlap drops both older secrets.
  absl::StatusOr<RolledWebhookSecret> again = m->RollWebhookSecret(id, absl::ZeroDuration(), "ops");
  REQUIRE_OK(again);
  opened = OpenWebhookSecrets(*envelope, id, f.store->Get(id)->sealed_webhook_secret);
  REQUIRE_OK(opened);
  CHECK(!opened->previous.has_value());
  CHECK(SignedBy(opened->SigningAt(now)) == SignedBy({again->secret}));

  // A damaged stored value is data loss, and nothing is written.
  KeyRecord damaged = *f.store->Get(id);
  damaged.sealed_webhook_secret = "not sealed";
  REQUIRE_OK(f.store->Update(damaged, keygate::testing::ModifiedNote()));
  const std::uint64_t version = f.store->Get(id)->version;
  CHECK(m->RollWebhookSecret(id, absl::Hours(1), "ops").status().code() ==
        absl::StatusCode::kDataLoss);
  CHECK(f.store->Get(id)->version == version);
}

TEST_CASE("KeyManager reseals webhook secrets with tokens", "[manager][webhook_secret]") {
  Fixture f;
  std::unique_ptr<KeyManager> old_kek = PerKeyManager(f, EnvelopeOf('a'));
  CreateKeyRequest req = f.Request();
  req.webhook_url = "https://hooks.example.com/k";
  absl::StatusOr<CreatedKey> k = old_kek->Create(req, "alice");
  REQUIRE_OK(k);
  const std::string id = k->record.id;
  std::shared_ptr<const Envelope> rotating = EnvelopeOf('b', {'a'});
  std::unique_ptr<KeyManager> m = PerKeyManager(f, rotating);
  absl::StatusOr<bool> wrote = m->ResealToken(id, "ops");
  REQUIRE_OK(wrote);
  CHECK(*wrote);
  CHECK(f.events->Events().back().changed_fields ==
        std::vector<std::string>{"sealed_token", "webhook_secret"});
  // The new KEK alone opens it now, to the same secret.
  const KeyRecord after = *f.store->Get(id);
  absl::StatusOr<KeyWebhookSecrets> opened =
      OpenWebhookSecrets(*EnvelopeOf('b'), id, after.sealed_webhook_secret);
  REQUIRE_OK(opened);
  CHECK(Text(opened->current.text()) == Text(k->webhook_secret->text()));
  wrote = m->ResealToken(id, "ops");
  REQUIRE_OK(wrote);
  CHECK(!*wrote);
}

}  // namespace
}  // namespace keygate
