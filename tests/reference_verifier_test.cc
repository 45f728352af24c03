// ReferenceVerifier: every verdict, the order of checks, and fail-closed
// behaviour. The hot-path Verifier is tested against these same answers.

#include "keygate/reference_verifier.h"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/clock.h"
#include "keygate/deployment.h"
#include "keygate/http.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/token.h"
#include "outage_key_store.h"
#include "test_util.h"

namespace keygate {
namespace {

using testing::StatusText;
using testing::Text;

std::shared_ptr<const ScopeRegistry> AppScopes() {
  auto r = ScopeRegistry::Builder()
               .Add("read:projects")
               .Add("write:projects", {"read:projects"})
               .Add("read:projects/*")
               .Build();
  REQUIRE_OK(r);
  return *r;
}

struct Fixture {
  Fixture() {
    DeploymentOptions o;
    o.scopes = AppScopes();
    auto d = Deployment::Create(std::move(o));
    REQUIRE_OK(d);
    deployment = *d;
    KeyManager::Options mo;
    mo.deployment = deployment;
    mo.store = store;
    mo.clock = clock;
    manager = keygate::testing::MustOk(KeyManager::Create(std::move(mo)));
    auto v = ReferenceVerifier::Create(
        {.deployment = deployment, .store = store, .environment = "production"});
    REQUIRE_OK(v);
    verifier = *std::move(v);
  }

  CreatedKey Create(std::vector<std::string> scopes = {"read:all"},
                    std::string environment = "production") {
    CreateKeyRequest r;
    r.name = "test key";
    r.owner = "alice";
    r.environment = std::move(environment);
    r.scopes = std::move(scopes);
    absl::StatusOr<CreatedKey> k = manager->Create(r, "alice");
    REQUIRE_OK(k);
    return *std::move(k);
  }

  Requirement Needs(std::string_view scope, const RequireOptions& options = {}) const {
    return testing::MustRequire(deployment->scopes(), {scope}, options);
  }

  Verdict Verify(const std::string& token,
                 const Requirement& req = Requirement::AnyValidKey()) const {
    return verifier->Verify("Bearer " + token, req, clock->Now());
  }

  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<testing::OutageKeyStore> store = std::make_shared<testing::OutageKeyStore>();
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
  std::unique_ptr<KeyManager> manager;
  std::unique_ptr<ReferenceVerifier> verifier;
};

// A well-formed token of this deployment that was never issued.
std::string NeverIssued(std::string_view tag = "live") {
  absl::StatusOr<Secret> t = GenerateToken("kg", tag);
  REQUIRE_OK(t);
  return Text(*t);
}

TEST_CASE("Reference verifier accepts a valid key and names it", "[verifier][reference]") {
  Fixture f;
  CreatedKey k = f.Create({"read:all"});
  const Verdict v = f.Verify(Text(k.token), f.Needs(kScopeReadAll));
  CHECK(v.outcome == Outcome::kOk);
  CHECK(v.ok());
  CHECK(v.key() == k.record.id);
  CHECK_FALSE(v.rate.applies());  // the reference path does not rate-limit

  // The bare-token entry point and the record out-parameter.
  std::optional<KeyRecord> record;
  const Verdict bare =
      f.verifier->VerifyToken(Text(k.token), f.Needs(kScopeReadAll), f.clock->Now(), &record);
  CHECK(bare.outcome == Outcome::kOk);
  REQUIRE(record.has_value());
  CHECK(*record == k.record);
  CHECK(f.verifier->VerifyToken(Text(k.token), Requirement::AnyValidKey(), f.clock->Now()).ok());
}

TEST_CASE("Reference verifier: missing and malformed Authorization headers",
          "[verifier][reference][bearer]") {
  Fixture f;
  CreatedKey k = f.Create();
  const absl::Time now = f.clock->Now();
  for (const char* missing : {"", "   ", "\t"}) {
    INFO("'" << missing << "'");
    const Verdict v = f.verifier->Verify(missing, Requirement::AnyValidKey(), now);
    CHECK(v.outcome == Outcome::kMissing);
    CHECK(v.key().empty());
  }
  const std::string t = Text(k.token);
  // Another scheme, or a bare token, is no Bearer credential: 401 with no
  // error code (RFC 6750 3.1), like a missing header.
  for (const std::string& other : {"Basic " + t, "Token " + t, t, std::string("Digest a=b")}) {
    const Verdict v = f.verifier->Verify(other, Requirement::AnyValidKey(), now);
    CHECK(v.outcome == Outcome::kMissing);
    CHECK(v.key().empty());
  }
  const std::vector<std::string> bad_headers = {
      "Bearer",       "Bearer  ",     "Bearer " + t + " " + t, "Bearer " + t + ",",
      "Bearer\t" + t, "Bea\"rer " + t};
  for (const std::string& bad : bad_headers) {
    const Verdict v = f.verifier->Verify(bad, Requirement::AnyValidKey(), now);
    CHECK(v.outcome == Outcome::kInvalidRequest);
    CHECK(v.key().empty());
  }
  // The scheme is case-insensitive.
  CHECK(f.verifier->Verify("bEaReR " + t, Requirement::AnyValidKey(), now).ok());
}

TEST_CASE("Reference verifier: malformed tokens are rejected before any lookup",
          "[verifier][reference][malformed]") {
  Fixture f;
  CreatedKey k = f.Create();
  const std::string t = Text(k.token);
  // The store is down: a malformed token must still be answered as
  // malformed, proving that no lookup happened.
  f.store->SetUnavailable(true);
  std::string flipped = t;
  flipped[20] = flipped[20] == 'A' ? 'B' : 'A';  // breaks the checksum
  absl::StatusOr<Secret> other_prefix = TokenFromBytes("zz", "live", std::string(32, '\x07'));
  REQUIRE_OK(other_prefix);
  absl::StatusOr<Secret> unknown_tag = TokenFromBytes("kg", "nope", std::string(32, '\x07'));
  REQUIRE_OK(unknown_tag);
  const std::vector<std::string> bad_tokens = {flipped,
                                               t.substr(0, t.size() - 1),
                                               t + "0",
                                               "kg_live_short",
                                               Text(*other_prefix),
                                               Text(*unknown_tag),
                                               std::string(70, 'a')};
  for (const std::string& bad : bad_tokens) {
    INFO(bad);
    const Verdict v = f.Verify(bad);
    CHECK(v.outcome == Outcome::kMalformed);
    CHECK(v.key().empty());
  }
  f.store->SetUnavailable(false);
  CHECK(f.Verify(t).ok());
}

TEST_CASE("Reference verifier: unknown, deleted and foreign-pepper tokens are unknown",
          "[verifier][reference]") {
  Fixture f;
  CHECK(f.Verify(NeverIssued()).outcome == Outcome::kUnknown);
  CreatedKey k = f.Create();
  REQUIRE_OK(f.manager->Delete(k.record.id, "alice"));
  const Verdict v = f.Verify(Text(k.token));
  CHECK(v.outcome == Outcome::kUnknown);
  CHECK(v.key().empty());

  // Same store, same prefix, different pepper: digests do not match.
  DeploymentOptions peppered;
  peppered.scopes = AppScopes();
  peppered.pepper = Secret(std::string(32, 'p'));
  auto d2 = Deployment::Create(std::move(peppered));
  REQUIRE_OK(d2);
  auto v2 =
      ReferenceVerifier::Create({.deployment = *d2, .store = f.store, .environment = "production"});
  REQUIRE_OK(v2);
  CreatedKey k2 = f.Create();
  CHECK((*v2)->VerifyToken(Text(k2.token), Requirement::AnyValidKey(), f.clock->Now()).outcome ==
        Outcome::kUnknown);
}

TEST_CASE("Reference verifier works with a peppered deployment", "[verifier][reference]") {
  DeploymentOptions o;
  o.pepper = Secret(std::string(48, 'k'));
  auto d = Deployment::Create(std::move(o));
  REQUIRE_OK(d);
  REQUIRE((*d)->hasher().keyed());
  auto store = std::make_shared<MemoryKeyStore>();
  KeyManager::Options mo;
  mo.deployment = *d;
  mo.store = store;
  std::unique_ptr<KeyManager> m_owner = keygate::testing::MustOk(KeyManager::Create(std::move(mo)));
  KeyManager& m = *m_owner;
  CreateKeyRequest r;
  r.name = "n";
  r.owner = "o";
  r.environment = "preview";
  absl::StatusOr<CreatedKey> k = m.Create(r, "o");
  REQUIRE_OK(k);
  auto v = ReferenceVerifier::Create({.deployment = *d, .store = store, .environment = "preview"});
  REQUIRE_OK(v);
  CHECK((*v)->VerifyToken(Text(k->token), Requirement::AnyValidKey(), absl::Now()).ok());
}

TEST_CASE("Reference verifier: revoked keys, and restored ones again",
          "[verifier][reference][revocation]") {
  Fixture f;
  CreatedKey k = f.Create();
  REQUIRE_OK(f.manager->Revoke(k.record.id, "alice"));
  const Verdict v = f.Verify(Text(k.token));
  CHECK(v.outcome == Outcome::kRevoked);
  CHECK(v.key() == k.record.id);  // identified even when denied
  REQUIRE_OK(f.manager->Restore(k.record.id, "alice"));
  CHECK(f.Verify(Text(k.token)).ok());
}

TEST_CASE("Reference verifier: expiry takes effect at the exact instant",
          "[verifier][reference][expiry]") {
  Fixture f;
  CreateKeyRequest r;
  r.name = "short-lived";
  r.owner = "alice";
  r.environment = "production";
  const absl::Time expires = f.clock->Now() + absl::Hours(1);
  r.expires = expires;
  absl::StatusOr<CreatedKey> k = f.manager->Create(r, "alice");
  REQUIRE_OK(k);
  f.clock->Set(expires - absl::Nanoseconds(1));
  CHECK(f.Verify(Text(k->token)).ok());
  f.clock->Set(expires);
  const Verdict v = f.Verify(Text(k->token));
  CHECK(v.outcome == Outcome::kExpired);
  CHECK(v.key() == k->record.id);
}

TEST_CASE("Reference verifier: a rolled secret expires at its grace deadline",
          "[verifier][reference][roll]") {
  Fixture f;
  CreatedKey k = f.Create();
  absl::StatusOr<CreatedKey> rolled = f.manager->Roll(k.record.id, absl::Seconds(30), "alice");
  REQUIRE_OK(rolled);
  const absl::Time deadline = rolled->record.previous->valid_until;
  f.clock->Set(deadline - absl::Nanoseconds(1));
  CHECK(f.Verify(Text(k.token)).ok());
  f.clock->Set(deadline);
  const Verdict v = f.Verify(Text(k.token));
  CHECK(v.outcome == Outcome::kExpired);
  CHECK(v.key() == k.record.id);
  CHECK(f.Verify(Text(rolled->token)).ok());
}

TEST_CASE("Reference verifier: wrong environment by tag and by record",
          "[verifier][reference][environment]") {
  Fixture f;
  CreatedKey preview = f.Create({"read:all"}, "preview");
  Verdict v = f.Verify(Text(preview.token));
  CHECK(v.outcome == Outcome::kWrongEnvironment);
  CHECK(v.key().empty());  // decided from the tag, before any lookup

  // A record whose environment disagrees with its token's tag (possible
  // after an environment was renamed): refused by the record check.
  CreatedKey k = f.Create();
  KeyRecord moved = k.record;
  moved.environment = "preview";
  REQUIRE_OK(f.store->Update(moved, keygate::testing::ModifiedNote()));
  v = f.Verify(Text(k.token));
  CHECK(v.outcome == Outcome::kWrongEnvironment);
  CHECK(v.key() == k.record.id);

  auto preview_verifier = ReferenceVerifier::Create(
      {.deployment = f.deployment, .store = f.store, .environment = "preview"});
  REQUIRE_OK(preview_verifier);
  CHECK((*preview_verifier)
            ->VerifyToken(Text(preview.token), Requirement::AnyValidKey(), f.clock->Now())
            .ok());
}

TEST_CASE("Reference verifier: linked accounts", "[verifier][reference][account]") {
  Fixture f;
  CreateKeyRequest r;
  r.name = "n";
  r.owner = "alice";
  r.environment = "production";
  r.accounts = {"acct_1", "acct_2"};
  absl::StatusOr<CreatedKey> k = f.manager->Create(r, "alice");
  REQUIRE_OK(k);
  CHECK(f.Verify(Text(k->token), testing::MustAnyValidKey({.account = "acct_2"})).ok());
  const Verdict v = f.Verify(Text(k->token), testing::MustAnyValidKey({.account = "acct_3"}));
  CHECK(v.outcome == Outcome::kAccountDenied);
  CHECK(v.key() == k->record.id);
  CHECK(f.Verify(Text(k->token), testing::MustAnyValidKey({.account = ""})).ok());
}

TEST_CASE("Reference verifier: scopes with implications", "[verifier][reference][scope]") {
  Fixture f;
  const std::string read = Text(f.Create({"read:all"}).token);
  const std::string write = Text(f.Create({"write:all"}).token);
  const std::string admin = Text(f.Create({"admin"}).token);
  const std::string none = Text(f.Create({}).token);
  const std::string projects = Text(f.Create({"write:projects"}).token);

  CHECK(f.Verify(read, f.Needs(kScopeReadAll)).ok());
  CHECK(f.Verify(read, f.Needs(kScopeWriteAll)).outcome == Outcome::kInsufficientScope);
  CHECK(f.Verify(write, f.Needs(kScopeWriteAll)).ok());
  CHECK(f.Verify(write, f.Needs(kScopeReadAll)).outcome == Outcome::kInsufficientScope);
  CHECK(f.Verify(admin, f.Needs(kScopeReadAll)).ok());
  CHECK(f.Verify(admin, f.Needs(kScopeWriteAll)).ok());
  CHECK(f.Verify(admin, f.Needs(kScopeAdmin)).ok());
  CHECK(f.Verify(none, f.Needs(kScopeReadAll)).outcome == Outcome::kInsufficientScope);
  CHECK(f.Verify(none, Requirement::AnyValidKey()).ok());  // a route that needs no scope
  CHECK(f.Verify(projects, f.Needs("read:projects")).ok());
  CHECK(f.Verify(projects, f.Needs(kScopeReadAll)).outcome == Outcome::kInsufficientScope);
  // Both bits required.
  const Requirement both =
      testing::MustRequire(f.deployment->scopes(), {kScopeReadAll, kScopeWriteAll});
  CHECK(f.Verify(read, both).outcome == Outcome::kInsufficientScope);
  CHECK(f.Verify(admin, both).ok());
}

TEST_CASE("Reference verifier: a custom ScopeEvaluator decides", "[verifier][reference][scope]") {
  Fixture f;
  CreatedKey k = f.Create({"read:projects/*"});
  Requirement req = testing::MustForEvaluator("read:projects/42");
  CHECK(f.Verify(Text(k.token), req).outcome == Outcome::kInsufficientScope);
  auto pattern =
      ReferenceVerifier::Create({.deployment = f.deployment,
                                 .store = f.store,
                                 .environment = "production",
                                 .scope_evaluator = std::make_shared<PatternScopeEvaluator>()});
  REQUIRE_OK(pattern);
  CHECK((*pattern)->Verify("Bearer " + Text(k.token), req, f.clock->Now()).ok());
  req = testing::MustForEvaluator("write:projects/42");
  CHECK((*pattern)->Verify("Bearer " + Text(k.token), req, f.clock->Now()).outcome ==
        Outcome::kInsufficientScope);
}

TEST_CASE("Reference verifier: a scope removed from the registry grants nothing",
          "[verifier][reference][scope]") {
  Fixture f;
  CreatedKey k = f.Create({"read:all", "read:projects"});
  // The same deployment settings, minus the application's scopes.
  auto plain = Deployment::Create({});
  REQUIRE_OK(plain);
  auto v = ReferenceVerifier::Create(
      {.deployment = *plain, .store = f.store, .environment = "production"});
  REQUIRE_OK(v);
  const Requirement read = testing::MustRequire((*plain)->scopes(), {kScopeReadAll});
  CHECK((*v)->VerifyToken(Text(k.token), read, f.clock->Now()).outcome ==
        Outcome::kInsufficientScope);
  CHECK((*v)->VerifyToken(Text(k.token), Requirement::AnyValidKey(), f.clock->Now()).ok());
  CHECK(f.Verify(Text(k.token), f.Needs(kScopeReadAll)).ok());
}

TEST_CASE("Reference verifier fails closed when the store is down",
          "[verifier][reference][unavailable]") {
  Fixture f;
  CreatedKey k = f.Create();
  f.store->SetUnavailable(true);
  const Verdict v = f.Verify(Text(k.token));
  CHECK(v.outcome == Outcome::kUnavailable);
  CHECK(v.key().empty());
  CHECK(DecideHttp(v, Requirement::AnyValidKey()).status == 503);
  CHECK(f.Verify(NeverIssued()).outcome == Outcome::kUnavailable);
}

TEST_CASE("Reference verifier applies the checks in the documented order",
          "[verifier][reference][order]") {
  Fixture f;
  const auto read = f.Needs(kScopeReadAll);
  const auto write = f.Needs(kScopeWriteAll);

  SECTION("rolled secret past grace beats revoked (5 before 6)") {
    CreatedKey k = f.Create();
    REQUIRE_OK(f.manager->Roll(k.record.id, absl::Seconds(1), "alice"));
    REQUIRE_OK(f.manager->Revoke(k.record.id, "alice"));
    f.clock->Advance(absl::Seconds(2));
    CHECK(f.Verify(Text(k.token)).outcome == Outcome::kExpired);
  }
  SECTION("revoked beats expired (6 before 7)") {
    CreateKeyRequest r;
    r.name = "n";
    r.owner = "alice";
    r.environment = "production";
    r.expires = f.clock->Now() + absl::Seconds(1);
    absl::StatusOr<CreatedKey> k = f.manager->Create(r, "alice");
    REQUIRE_OK(k);
    REQUIRE_OK(f.manager->Revoke(k->record.id, "alice"));
    f.clock->Advance(absl::Seconds(2));
    CHECK(f.Verify(Text(k->token)).outcome == Outcome::kRevoked);
  }
  SECTION("expired beats wrong environment of the record (7 before 8)") {
    CreateKeyRequest r;
    r.name = "n";
    r.owner = "alice";
    r.environment = "production";
    r.expires = f.clock->Now() + absl::Seconds(1);
    absl::StatusOr<CreatedKey> k = f.manager->Create(r, "alice");
    REQUIRE_OK(k);
    KeyRecord moved = k->record;
    moved.environment = "preview";
    REQUIRE_OK(f.store->Update(moved, keygate::testing::ModifiedNote()));
    f.clock->Advance(absl::Seconds(2));
    CHECK(f.Verify(Text(k->token)).outcome == Outcome::kExpired);
  }
  SECTION("wrong environment beats account and scope (8 before 9, 10)") {
    CreatedKey k = f.Create({});
    KeyRecord moved = k.record;
    moved.environment = "preview";
    REQUIRE_OK(f.store->Update(moved, keygate::testing::ModifiedNote()));
    const Requirement req = f.Needs(kScopeWriteAll, {.account = "acct_x"});
    CHECK(f.Verify(Text(k.token), req).outcome == Outcome::kWrongEnvironment);
  }
  SECTION("account beats scope (9 before 10)") {
    CreatedKey k = f.Create({});
    const Requirement req = f.Needs(kScopeWriteAll, {.account = "acct_x"});
    CHECK(f.Verify(Text(k.token), req).outcome == Outcome::kAccountDenied);
  }
  SECTION("revoked beats insufficient scope") {
    CreatedKey k = f.Create({"read:all"});
    REQUIRE_OK(f.manager->Revoke(k.record.id, "alice"));
    CHECK(f.Verify(Text(k.token), write).outcome == Outcome::kRevoked);
    CHECK(f.Verify(Text(k.token), read).outcome == Outcome::kRevoked);
  }
  SECTION("a token of another environment is refused even if revoked (3 before 6)") {
    CreatedKey k = f.Create({}, "preview");
    REQUIRE_OK(f.manager->Revoke(k.record.id, "alice"));
    const Verdict v = f.Verify(Text(k.token));
    CHECK(v.outcome == Outcome::kWrongEnvironment);
    CHECK(v.key().empty());
  }
}

TEST_CASE("ReferenceVerifier::Create validates its arguments", "[verifier][reference]") {
  Fixture f;
  auto store = std::make_shared<MemoryKeyStore>();
  auto bad_env = ReferenceVerifier::Create(
      {.deployment = f.deployment, .store = store, .environment = "staging"});
  CHECK(bad_env.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bad_env.status().message().substr(0, 12) == "environment:");
  CHECK(ReferenceVerifier::Create(
            {.deployment = nullptr, .store = store, .environment = "production"})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(ReferenceVerifier::Create(
            {.deployment = f.deployment, .store = nullptr, .environment = "production"})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace keygate
