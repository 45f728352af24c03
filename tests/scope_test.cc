// Scope registry, closure masks and evaluators.
#include "keygate/scope.h"

#include <random>
#include <string>
#include <vector>

#include "catch.h"
#include "test_util.h"

namespace keygate {
namespace {

ScopeMask Mask(const ScopeRegistry& r, std::initializer_list<std::string_view> names) {
  auto m = r.Compile(names);
  REQUIRE(m.ok());
  return *m;
}

TEST_CASE("Built-in scopes: admin implies read and write, write does not imply read", "[scope]") {
  auto r = ScopeRegistry::Default();
  const ScopeMask read = Mask(*r, {"read:all"});
  const ScopeMask write = Mask(*r, {"write:all"});
  const ScopeMask admin = Mask(*r, {"admin"});
  CHECK(MaskAllows(admin, read));
  CHECK(MaskAllows(admin, write));
  CHECK(MaskAllows(admin, admin));
  CHECK_FALSE(MaskAllows(write, read));
  CHECK_FALSE(MaskAllows(read, write));
  CHECK_FALSE(MaskAllows(read | write, admin));
  CHECK(MaskAllows(read | write, read | write));
  CHECK(r->Expand(admin) == std::vector<std::string>{"read:all", "write:all", "admin"});
}

TEST_CASE("Unknown scopes are reported by name", "[scope][validation]") {
  auto r = ScopeRegistry::Default();
  auto m = r->Compile({"read:all", "delete:everything"});
  REQUIRE(m.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(m.status().message()) == "scopes: unknown scope 'delete:everything'");
  CHECK(r->MaskOf("nope") == 0);
}

TEST_CASE("Names that are not scope names are never quoted in errors", "[scope][secrets]") {
  // A token pasted where a scope name belongs (upper case, 40+ characters).
  const std::string pasted = "kg_live_7Hq2VbXk9LmN3pQrS4tUvW5xYz6A1bC2dE3fG4hJ5k";
  REQUIRE_FALSE(IsValidScopeName(pasted));
  CHECK(IsValidScopeName("read:projects/*"));
  CHECK_FALSE(IsValidScopeName(std::string(65, 'a')));
  auto r = ScopeRegistry::Default();
  const std::vector<std::string> names{"read:all", pasted};
  auto m = r->Compile(names);
  CHECK(std::string(m.status().message()) == "scopes: unknown scope");
  auto built = ScopeRegistry::Builder().Add(pasted).Build();
  CHECK(built.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(built.status().message()).find(pasted) == std::string::npos);
  auto implied = ScopeRegistry::Builder().Add("a", {pasted}).Build();
  CHECK(std::string(implied.status().message()) ==
        "scope 'a': implies unknown scope (implied scopes must be registered first)");
}

TEST_CASE("Applications extend the registry with implications", "[scope]") {
  auto r = ScopeRegistry::Builder()
               .Add("read:projects")
               .Add("write:projects", {"read:projects"})
               .Add("projects:owner", std::vector<std::string>{"write:projects", "read:all"})
               .Build();
  REQUIRE(r.ok());
  const ScopeRegistry& reg = **r;
  CHECK(MaskAllows(Mask(reg, {"projects:owner"}), Mask(reg, {"read:projects"})));
  CHECK(MaskAllows(Mask(reg, {"projects:owner"}), Mask(reg, {"read:all"})));
  CHECK_FALSE(MaskAllows(Mask(reg, {"projects:owner"}), Mask(reg, {"write:all"})));
  CHECK_FALSE(MaskAllows(Mask(reg, {"admin"}), Mask(reg, {"read:projects"})));
  CHECK(reg.names().size() == 6);
}

TEST_CASE("Registry builder rejects bad definitions", "[scope][validation]") {
  auto dup = ScopeRegistry::Builder().Add("admin").Build();
  CHECK(dup.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(dup.status().message()).find("'admin'") != std::string::npos);
  auto bad_name = ScopeRegistry::Builder().Add("read:x").Add("Read All").Build();
  CHECK(bad_name.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(bad_name.status().message()) ==
        "scopes: the name of Add() call #2 must be 1-64 characters of [a-z0-9:_./*-]");
  auto forward = ScopeRegistry::Builder().Add("a", {"b"}).Add("b").Build();
  CHECK(forward.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(forward.status().message()).find("unknown scope 'b'") != std::string::npos);
  ScopeRegistry::Builder many;
  for (int i = 0; i < 62; ++i) many.Add("s" + std::to_string(i));
  CHECK(many.Build().status().code() == absl::StatusCode::kResourceExhausted);
  ScopeRegistry::Builder exactly;
  for (int i = 0; i < 61; ++i) exactly.Add("s" + std::to_string(i));
  CHECK(exactly.Build().ok());  // 3 built-ins + 61 = 64
}

TEST_CASE("A key passes a check exactly for the scopes its grants reach", "[scope][property]") {
  // s_i implies s_(i/2): a tree, checked against a brute-force reachability.
  constexpr int kN = 20;
  ScopeRegistry::Builder b;
  for (int i = 0; i < kN; ++i) {
    std::vector<std::string> implies;
    if (i > 0) implies.push_back("s" + std::to_string(i / 2));
    b.Add("s" + std::to_string(i), implies);
  }
  auto r = b.Build();
  REQUIRE(r.ok());
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> granted;
    std::vector<bool> reach(kN, false);
    for (int i = 0; i < kN; ++i) {
      if (rng() % 5 != 0) continue;
      granted.push_back("s" + std::to_string(i));
      for (int j = i;; j /= 2) {
        reach[static_cast<std::size_t>(j)] = true;
        if (j == 0) break;
      }
    }
    const ScopeMask g = *(*r)->Compile(granted);
    const int want = static_cast<int>(rng() % kN);
    INFO("want s" << want);
    CHECK(MaskAllows(g, (*r)->MaskOf("s" + std::to_string(want))) ==
          reach[static_cast<std::size_t>(want)]);
  }
}

TEST_CASE("Mask evaluator is the default check", "[scope][evaluator]") {
  auto r = ScopeRegistry::Default();
  MaskScopeEvaluator e;
  const Requirement req = testing::MustRequire(*r, {"write:all"});
  CHECK(e.Allows({Mask(*r, {"admin"}), {}}, req));
  CHECK_FALSE(e.Allows({Mask(*r, {"read:all"}), {}}, req));
  CHECK(e.Allows({0, {}}, Requirement::AnyValidKey()));  // nothing required
}

TEST_CASE("A misspelled scope fails at route set-up, never as an open route", "[scope]") {
  auto r = ScopeRegistry::Default();
  absl::StatusOr<Requirement> typo = r->Require({"read:al"});
  REQUIRE_FALSE(typo.ok());
  CHECK(typo.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(typo.status().message() == "scopes: unknown scope 'read:al'");
  // One unknown name among known ones fails the whole requirement.
  CHECK_FALSE(r->Require({"read:all", "wrte:all"}).ok());
  // No scope at all is not a requirement: that route says AnyValidKey().
  absl::StatusOr<Requirement> none = r->Require(absl::Span<const std::string>());
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().message() == "scopes: empty (use Requirement::AnyValidKey())");
  // A token pasted in place of a scope name is never echoed.
  absl::StatusOr<Requirement> pasted = r->Require({"kg_live_ABCDEFGHIJKLMNOPQRSTUVWXYZ"});
  REQUIRE_FALSE(pasted.ok());
  CHECK(pasted.status().message() == "scopes: unknown scope");
}

TEST_CASE("Require compiles the closure and keeps names, account and cost", "[scope]") {
  auto r = ScopeRegistry::Default();
  const Requirement both =
      testing::MustRequire(*r, {"read:all", "write:all"}, {.account = "acct_1", .cost = 3});
  CHECK(both.scopes() == Mask(*r, {"read:all", "write:all"}));
  CHECK(both.scope_name() == "read:all write:all");
  CHECK(both.account() == "acct_1");
  CHECK(both.cost() == 3);
  MaskScopeEvaluator e;
  CHECK(e.Allows({Mask(*r, {"admin"}), {}}, both));
  CHECK_FALSE(e.Allows({Mask(*r, {"read:all"}), {}}, both));
  const Requirement any = Requirement::AnyValidKey();
  CHECK(any.scopes() == 0);
  CHECK(any.scope_name().empty());
  CHECK(any.account().empty());
  CHECK(any.cost() == 1);
}

TEST_CASE("Requirement options are checked", "[scope]") {
  auto r = ScopeRegistry::Default();
  absl::StatusOr<Requirement> free = r->Require({"read:all"}, {.cost = 0});
  REQUIRE_FALSE(free.ok());
  CHECK(free.status().message() == "cost: 0 is not in 1..1048576");
  CHECK_FALSE(Requirement::AnyValidKey({.cost = kMaxRequestCost + 1}).ok());
  CHECK(Requirement::AnyValidKey({.cost = kMaxRequestCost}).ok());
  const std::string long_account(kMaxAccountLength + 1, 'a');
  absl::StatusOr<Requirement> acct = Requirement::AnyValidKey({.account = long_account});
  REQUIRE_FALSE(acct.ok());
  CHECK(acct.status().message() == "account: longer than 128 bytes");
  CHECK_FALSE(Requirement::ForEvaluator("Read:All").ok());
  CHECK_FALSE(Requirement::ForEvaluator("").ok());
}

TEST_CASE("Mask evaluator refuses a scope required by name alone", "[scope][evaluator]") {
  // A name only a custom evaluator can read: the mask check fails closed.
  auto r = ScopeRegistry::Default();
  MaskScopeEvaluator e;
  const Requirement named = testing::MustForEvaluator("admin");
  CHECK_FALSE(e.Allows({Mask(*r, {"read:all"}), {}}, named));
  CHECK_FALSE(e.Allows({Mask(*r, {"admin"}), {}}, named));
  CHECK_FALSE(MaskSatisfies(Mask(*r, {"admin"}), named));
  const Requirement admin = testing::MustRequire(*r, {"admin"});  // with its bits
  CHECK(e.Allows({Mask(*r, {"admin"}), {}}, admin));
  CHECK_FALSE(e.Allows({Mask(*r, {"write:all"}), {}}, admin));
}

TEST_CASE("Pattern evaluator matches /* grants and denies by default", "[scope][evaluator]") {
  PatternScopeEvaluator e;
  const std::vector<std::string> names = {"read:projects/*", "write:reports"};
  const GrantedScopes granted{0, names};
  auto allows = [&](std::string_view want) {
    return e.Allows(granted, testing::MustForEvaluator(want));
  };
  CHECK(allows("read:projects/42"));
  CHECK(allows("read:projects/42/files"));
  CHECK_FALSE(allows("read:projects/"));
  CHECK_FALSE(allows("read:projectsx"));
  CHECK_FALSE(allows("write:projects/1"));
  CHECK(allows("write:reports"));
  CHECK(e.Allows(granted, Requirement::AnyValidKey()));  // nothing required
  // A mask bit the key lacks, under a name the key does not hold either.
  auto r = ScopeRegistry::Default();
  CHECK_FALSE(e.Allows(granted, testing::MustRequire(*r, {"read:all"})));
}

TEST_CASE("Pattern evaluator needs every scope of a multi-scope requirement",
          "[scope][evaluator]") {
  // The joined names "read:projects/1 delete:all" start with the stem of
  // "read:projects/*": one pattern must not stand for the whole list.
  auto r = ScopeRegistry::Builder()
               .Add("read:projects/*")
               .Add("read:projects/1")
               .Add("delete:all")
               .Build();
  REQUIRE(r.ok());
  PatternScopeEvaluator e;
  const Requirement both = testing::MustRequire(**r, {"read:projects/1", "delete:all"});
  const std::vector<std::string> pattern_only = {"read:projects/*"};
  CHECK_FALSE(e.Allows({(*r)->MaskOf("read:projects/*"), pattern_only}, both));
  const std::vector<std::string> with_delete = {"read:projects/*", "delete:all"};
  CHECK(e.Allows({*(*r)->Compile({"read:projects/*", "delete:all"}), with_delete}, both));
}

}  // namespace
}  // namespace keygate
