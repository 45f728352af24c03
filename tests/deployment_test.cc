// Deployment::Create: validated, immutable settings.

#include "keygate/deployment.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "catch.h"
#include "keygate/token.h"

namespace keygate {
namespace {

// Expects Create to fail with kInvalidArgument whose message starts with
// `field` followed by a colon.
void ExpectInvalid(DeploymentOptions o, std::string_view field) {
  auto d = Deployment::Create(std::move(o));
  INFO("expected " << field << ", got " << d.status());
  REQUIRE(d.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(d.status().message());
  CHECK(message.rfind(absl::StrCat(std::string(field), ":"), 0) == 0);
}

TEST_CASE("Default deployment: prefix kg, preview/test and production/live, built-in scopes",
          "[deployment]") {
  auto d = Deployment::Create({});
  REQUIRE(d.ok());
  const Deployment& dep = **d;
  CHECK(dep.token_prefix() == "kg");
  REQUIRE(dep.environments().size() == 2);
  CHECK(dep.environments()[0].name == "preview");
  CHECK(dep.environments()[0].tag == "test");
  CHECK(dep.environments()[1].name == "production");
  CHECK(dep.environments()[1].tag == "live");
  CHECK(dep.scopes().Contains("admin"));
  CHECK(dep.scopes().names().size() == 3);
  CHECK(dep.scopes_ptr() != nullptr);
  CHECK_FALSE(dep.hasher().keyed());

  REQUIRE(dep.FindEnvironment("production") != nullptr);
  CHECK(dep.FindEnvironment("production")->tag == "live");
  REQUIRE(dep.FindEnvironmentByTag("test") != nullptr);
  CHECK(dep.FindEnvironmentByTag("test")->name == "preview");
  CHECK(dep.FindEnvironment("live") == nullptr);  // tags are not names
  CHECK(dep.FindEnvironmentByTag("production") == nullptr);
  CHECK(dep.FindEnvironment("") == nullptr);
}

TEST_CASE("Deployment with a pepper uses HMAC digests", "[deployment][digest]") {
  DeploymentOptions o;
  o.pepper = Secret(std::string(kMinPepperSize, 'p'));
  auto d = Deployment::Create(o);
  REQUIRE(d.ok());
  CHECK((*d)->hasher().keyed());
  auto plain = Deployment::Create({});
  REQUIRE(plain.ok());
  auto a = (*d)->hasher().Hash("kg_live_x");
  auto b = (*plain)->hasher().Hash("kg_live_x");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a != *b);

  o.pepper = Secret(std::string(kMinPepperSize - 1, 'p'));
  ExpectInvalid(o, "pepper");
}

TEST_CASE("Deployment validates the token prefix", "[deployment][validation]") {
  for (const char* bad : {"", "k", "KG", "k_g", "abcdefghijk", "kg-1"}) {
    INFO(bad);
    DeploymentOptions o;
    o.token_prefix = bad;
    ExpectInvalid(o, "token_prefix");
  }
  for (const char* good : {"ab", "acme", "abcdefghij", "x9"}) {
    DeploymentOptions o;
    o.token_prefix = good;
    CHECK(Deployment::Create(o).ok());
  }
}

TEST_CASE("Deployment validates environments", "[deployment][validation]") {
  DeploymentOptions o;
  o.environments.clear();
  ExpectInvalid(o, "environments");

  auto with = [](std::vector<EnvironmentSpec> envs) {
    DeploymentOptions d;
    d.environments = std::move(envs);
    return d;
  };
  ExpectInvalid(with({{"", "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{"Prod", "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{"pro d", "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{std::string(33, 'e'), "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{"ok", "a", std::nullopt}, {"prod", "", std::nullopt}}),
                "environments[1].tag");
  ExpectInvalid(with({{"prod", "LIVE", std::nullopt}}), "environments[0].tag");
  ExpectInvalid(with({{"prod", "li_ve", std::nullopt}}), "environments[0].tag");
  ExpectInvalid(with({{"prod", std::string(kMaxEnvTagLength + 1, 't'), std::nullopt}}),
                "environments[0].tag");
  ExpectInvalid(with({{"prod", "a", std::nullopt}, {"prod", "b", std::nullopt}}),
                "environments[1].name");
  ExpectInvalid(with({{"prod", "a", std::nullopt}, {"dev", "a", std::nullopt}}),
                "environments[1].tag");
  auto dup =
      Deployment::Create(with({{"prod", "live", std::nullopt}, {"dev", "live", std::nullopt}}));
  CHECK(dup.status().message() == "environments[1].tag: duplicate 'live'");

  ExpectInvalid(with({{"prod", "p", RateLimitPolicy{0, absl::Seconds(1), 1}}}),
                "environments[0].default_rate_limit.rate");
  ExpectInvalid(with({{"prod", "p", RateLimitPolicy{5, absl::Seconds(1), 0}}}),
                "environments[0].default_rate_limit.burst");
  ExpectInvalid(with({{"prod", "p", RateLimitPolicy{5, absl::Hours(48), 1}}}),
                "environments[0].default_rate_limit.period");

  auto ok = Deployment::Create(with({{"my_env-1", "e1", RateLimitPolicy{5, absl::Seconds(1), 2}},
                                     {std::string(32, 'x'), std::string(16, 't'), std::nullopt}}));
  REQUIRE(ok.ok());
  REQUIRE((*ok)->FindEnvironment("my_env-1") != nullptr);
  CHECK((*ok)->FindEnvironment("my_env-1")->default_rate_limit ==
        RateLimitPolicy{5, absl::Seconds(1), 2});
}

TEST_CASE("Deployment keeps the application's scope registry", "[deployment][scope]") {
  auto registry = ScopeRegistry::Builder().Add("read:projects").Build();
  REQUIRE(registry.ok());
  DeploymentOptions o;
  o.scopes = *registry;
  auto d = Deployment::Create(o);
  REQUIRE(d.ok());
  CHECK((*d)->scopes().Contains("read:projects"));
  CHECK((*d)->scopes_ptr() == *registry);
}

TEST_CASE("Deployment errors never echo a token pasted into a field",
          "[deployment][validation][secret]") {
  auto token = GenerateToken("kg", "live");
  REQUIRE(token.ok());
  const std::string t(token->Reveal(InsecureSecretAccess::Get()));
  DeploymentOptions o;
  o.token_prefix = t;
  auto a = Deployment::Create(o);
  CHECK(std::string(a.status().message()).find(t) == std::string::npos);
  o = {};
  o.environments = {{t, "live", std::nullopt}};
  auto b = Deployment::Create(o);
  CHECK_FALSE(b.ok());
  CHECK(std::string(b.status().message()).find(t) == std::string::npos);
  o = {};
  o.environments = {{"prod", t, std::nullopt}};
  auto c = Deployment::Create(o);
  CHECK_FALSE(c.ok());
  CHECK(std::string(c.status().message()).find(t) == std::string::npos);
  // Looking an environment up by a caller's name: known, unknown, pasted.
  auto d = Deployment::Create({});
  REQUIRE(d.ok());
  auto prod = (*d)->Environment("production");
  REQUIRE(prod.ok());
  CHECK((*prod)->tag == "live");
  CHECK((*d)->Environment("").status().message() == "environment: must not be empty");
  CHECK((*d)->Environment("moon").status().message() == "environment: unknown environment 'moon'");
  CHECK((*d)->Environment(t).status().message() == "environment: unknown environment");
}

}  // namespace
}  // namespace keygate
