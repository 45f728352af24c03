// The linearizability checker (linearizability.h) on hand-built histories:
// the ones a correct system can produce pass, and each way a verifier can
// break its revocation promise is reported.

#include "linearizability.h"

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

#include "catch.h"
#include "keygate/verdict.h"

namespace keygate::linearizability {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);
const absl::Time kLater = kT0 + absl::Hours(2);  // past every deadline below
const absl::Time kDeadline = kT0 + absl::Hours(1);

// Tokens stand for real ones; the checker only compares them.
const std::string kA1 = "token-a1";
const std::string kA2 = "token-a2";
const std::string kA3 = "token-a3";
const std::string kB1 = "token-b1";

// A history built by hand: each operation with explicit call and return
// ticks.
class Builder {
 public:
  Builder& Add(Op op, Tick call, Tick ret) {
    op.call = call;
    op.ret = ret;
    ops_.push_back(std::move(op));
    return *this;
  }
  // A verification of `token` (issued to `key`) that answered `outcome`.
  Builder& Verify(const std::string& key, const std::string& token, Outcome outcome, Tick call,
                  Tick ret, absl::Time now = kT0, std::string scope = "") {
    Op op = Op::Verify(key, token, std::move(scope), now);
    op.outcome = outcome;
    op.verdict_key = outcome == Outcome::kUnknown ? "" : key;
    return Add(std::move(op), call, ret);
  }
  CheckResult Check(const CheckOptions& options = {}) const {
    return linearizability::Check(ops_, options);
  }
  std::vector<Op>& ops() { return ops_; }

 private:
  std::vector<Op> ops_;
};

// key_a created at ticks 1-2 with token kA1 and scope read:all.
Builder Created() {
  Builder b;
  b.Add(Op::Create("key_a", kA1, {"read:all"}), 1, 2);
  return b;
}

void RequireLinearizable(const Builder& b) {
  const CheckResult r = b.Check();
  INFO(r.failure);
  REQUIRE(r.linearizable);
  CHECK_FALSE(r.inconclusive);
}

// Not linearizable, for a reason the checker found (not a budget).
std::string RequireViolation(const Builder& b) {
  const CheckResult r = b.Check();
  INFO(r.failure);
  REQUIRE_FALSE(r.linearizable);
  CHECK_FALSE(r.inconclusive);
  CHECK_FALSE(r.failure.empty());
  return r.failure;
}

TEST_CASE("Linearizability: a sequential life of a key passes", "[linearizability]") {
  Builder b = Created();
  b.Verify("key_a", kA1, Outcome::kOk, 3, 4, kT0, "read:all")
      .Add(Op::Revoke("key_a"), 5, 6)
      .Verify("key_a", kA1, Outcome::kRevoked, 7, 8)
      .Add(Op::Restore("key_a"), 9, 10)
      .Verify("key_a", kA1, Outcome::kOk, 11, 12)
      .Add(Op::Roll("key_a", kA2, kDeadline), 13, 14)
      .Verify("key_a", kA1, Outcome::kOk, 15, 16)  // in its grace period
      .Verify("key_a", kA1, Outcome::kOk, 17, 18, kDeadline - absl::Nanoseconds(1))
      .Verify("key_a", kA1, Outcome::kExpired, 19, 20, kDeadline)  // to the nanosecond
      .Verify("key_a", kA2, Outcome::kOk, 21, 22)
      .Add(Op::Roll("key_a", kA3, std::nullopt), 23, 24)  // zero grace
      .Verify("key_a", kA2, Outcome::kUnknown, 25, 26)
      .Verify("key_a", kA1, Outcome::kUnknown, 27, 28)  // replaced as previous
      .Add(Op::Modify("key_a", std::vector<std::string>{"write:all"}), 29, 30)
      .Verify("key_a", kA3, Outcome::kInsufficientScope, 31, 32, kT0, "read:all")
      .Verify("key_a", kA3, Outcome::kOk, 33, 34, kT0, "write:all")
      .Add(Op::Modify("key_a", std::nullopt, std::optional<absl::Time>(kDeadline)), 35, 36)
      .Verify("key_a", kA3, Outcome::kOk, 37, 38)
      .Verify("key_a", kA3, Outcome::kExpired, 39, 40, kLater)
      .Add(Op::Revoke("key_a"), 41, 42)
      .Verify("key_a", kA3, Outcome::kRevoked, 43, 44, kLater)  // revoked before expired
      .Add(Op::Delete("key_a"), 45, 46)
      .Verify("key_a", kA3, Outcome::kUnknown, 47, 48);
  RequireLinearizable(b);
  const CheckResult r = b.Check();
  CHECK(r.keys == 1);
  CHECK(r.operations == 24);
  CHECK(r.verifications == 15);
}

TEST_CASE("Linearizability: a verify concurrent with a revoke may answer either way",
          "[linearizability]") {
  for (Outcome seen : {Outcome::kOk, Outcome::kRevoked}) {
    Builder b = Created();
    b.Add(Op::Revoke("key_a"), 10, 20).Verify("key_a", kA1, seen, 15, 25);
    RequireLinearizable(b);
  }
  // Two verifies inside the revoke, one after the other: ok then revoked.
  Builder b = Created();
  b.Add(Op::Revoke("key_a"), 10, 20)
      .Verify("key_a", kA1, Outcome::kOk, 11, 12)
      .Verify("key_a", kA1, Outcome::kRevoked, 13, 14);
  RequireLinearizable(b);
}

TEST_CASE("Linearizability: an accept after the revoke returned is a violation",
          "[linearizability]") {
  Builder b = Created();
  b.Add(Op::Revoke("key_a"), 3, 4).Verify("key_a", kA1, Outcome::kOk, 5, 6);
  const std::string failure = RequireViolation(b);
  CHECK(failure.find("key key_a") != std::string::npos);
  CHECK(failure.find("-> ok") != std::string::npos);
  CHECK(failure.find("the model answers revoked") != std::string::npos);
  CHECK(failure.find(kA1) == std::string::npos);  // tokens are named, not shown
}

TEST_CASE("Linearizability: a revoked key reported as unknown is a violation",
          "[linearizability]") {
  Builder b = Created();
  b.Add(Op::Revoke("key_a"), 3, 4).Verify("key_a", kA1, Outcome::kUnknown, 5, 6);
  const std::string failure = RequireViolation(b);
  CHECK(failure.find("-> unknown") != std::string::npos);
}

TEST_CASE("Linearizability: a verdict cannot flip back once a later one saw the change",
          "[linearizability]") {
  // Both verifies overlap the revoke, but the second starts after the first
  // answered revoked: the revoke had taken effect.
  Builder b = Created();
  b.Add(Op::Revoke("key_a"), 10, 30)
      .Verify("key_a", kA1, Outcome::kRevoked, 11, 12)
      .Verify("key_a", kA1, Outcome::kOk, 13, 14);
  RequireViolation(b);
}

TEST_CASE("Linearizability: a deleted or rolled-out token that comes back is a violation",
          "[linearizability]") {
  SECTION("deleted, accepted after a later operation on another key") {
    Builder b = Created();
    b.Add(Op::Create("key_b", kB1, {"read:all"}), 3, 4)
        .Add(Op::Delete("key_a"), 5, 6)
        .Verify("key_a", kA1, Outcome::kUnknown, 7, 8)
        .Add(Op::Revoke("key_b"), 9, 10)
        .Verify("key_b", kB1, Outcome::kRevoked, 11, 12)
        .Verify("key_a", kA1, Outcome::kOk, 13, 14);
    const std::string failure = RequireViolation(b);
    CHECK(failure.find("key key_a") != std::string::npos);
    CHECK(failure.find("deleted") != std::string::npos);
  }
  SECTION("a management call cannot succeed on a deleted key") {
    Builder b = Created();
    b.Add(Op::Delete("key_a"), 3, 4).Add(Op::Revoke("key_a"), 5, 6);
    RequireViolation(b);
  }
  SECTION("rolled with zero grace, accepted after a later operation") {
    Builder b = Created();
    b.Add(Op::Roll("key_a", kA2, std::nullopt), 3, 4)
        .Verify("key_a", kA1, Outcome::kUnknown, 5, 6)
        .Add(Op::Modify("key_a", std::vector<std::string>{"read:all", "write:all"}), 7, 8)
        .Verify("key_a", kA1, Outcome::kOk, 9, 10);
    RequireViolation(b);
  }
  SECTION("rolled past its grace period, accepted") {
    Builder b = Created();
    b.Add(Op::Roll("key_a", kA2, kDeadline), 3, 4)
        .Verify("key_a", kA1, Outcome::kOk, 5, 6, kDeadline, "read:all");
    RequireViolation(b);
  }
  SECTION("a rolled-out token reported as revoked rather than unknown") {
    Builder b = Created();
    b.Add(Op::Roll("key_a", kA2, std::nullopt), 3, 4)
        .Add(Op::Revoke("key_a"), 5, 6)
        .Verify("key_a", kA1, Outcome::kRevoked, 7, 8);
    RequireViolation(b);
  }
}

TEST_CASE("Linearizability: concurrent management calls are ordered by what was seen",
          "[linearizability]") {
  SECTION("revoke and restore overlap: readers afterwards agree on one order") {
    for (Outcome seen : {Outcome::kOk, Outcome::kRevoked}) {
      Builder b = Created();
      b.Add(Op::Revoke("key_a"), 3, 10)
          .Add(Op::Restore("key_a"), 4, 11)
          .Verify("key_a", kA1, seen, 12, 13)
          .Verify("key_a", kA1, seen, 14, 15);
      RequireLinearizable(b);
    }
    Builder b = Created();
    b.Add(Op::Revoke("key_a"), 3, 10)
        .Add(Op::Restore("key_a"), 4, 11)
        .Verify("key_a", kA1, Outcome::kRevoked, 12, 13)
        .Verify("key_a", kA1, Outcome::kOk, 14, 15);
    RequireViolation(b);
  }
  SECTION("a roll needs an active key: it cannot follow an overlapping revoke") {
    // Roll and revoke overlap; the roll succeeded, so it went first, and
    // the new token must then be revoked.
    Builder b = Created();
    b.Add(Op::Roll("key_a", kA2, std::nullopt), 3, 10).Add(Op::Revoke("key_a"), 4, 11);
    Builder good = b;
    good.Verify("key_a", kA2, Outcome::kRevoked, 12, 13);
    RequireLinearizable(good);
    b.Verify("key_a", kA2, Outcome::kOk, 12, 13);
    RequireViolation(b);
  }
  SECTION("a verify during overlapping writes may see any interleaving") {
    Builder b = Created();
    b.Add(Op::Revoke("key_a"), 3, 20)
        .Add(Op::Modify("key_a", std::vector<std::string>{"write:all"}), 4, 21)
        .Add(Op::Restore("key_a"), 5, 22)
        // Modified and restored, not yet revoked.
        .Verify("key_a", kA1, Outcome::kInsufficientScope, 6, 7, kT0, "read:all")
        // Then revoked.
        .Verify("key_a", kA1, Outcome::kRevoked, 8, 9, kT0, "read:all");
    RequireLinearizable(b);
  }
}

TEST_CASE("Linearizability: each replica is checked on its own", "[linearizability]") {
  // The store (replica 1) has the revoke, the verifier (replica 0) not yet:
  // fine while the revoke has not returned.
  Builder b = Created();
  b.Add(Op::Revoke("key_a"), 10, 20)
      .Verify("key_a", kA1, Outcome::kRevoked, 11, 12)
      .Verify("key_a", kA1, Outcome::kOk, 13, 14);
  b.ops()[2].replica = 1;
  RequireLinearizable(b);
  // Within one replica the same answers are a violation.
  b.ops()[2].replica = 0;
  RequireViolation(b);
  // And a replica that has not applied it once the revoke returned.
  Builder late = Created();
  late.Add(Op::Revoke("key_a"), 10, 20)
      .Verify("key_a", kA1, Outcome::kRevoked, 21, 22)
      .Verify("key_a", kA1, Outcome::kOk, 23, 24);
  late.ops()[2].replica = 1;
  const CheckResult r = late.Check();
  CHECK_FALSE(r.linearizable);
  CHECK(r.key == "key_a");
  CHECK(r.replica == 0);
  CHECK(r.failure.find("(replica 0)") != std::string::npos);
  const std::string all = DescribeKey(late.ops(), "key_a", 0);
  CHECK(all.find("revoke [call 10, ret 20]") != std::string::npos);
  CHECK(all.find("verify(token 1, now 2023-11-14T22:13:20+00:00) -> ok [call 23, ret 24]") !=
        std::string::npos);
  CHECK(all.find("-> revoked") == std::string::npos);  // replica 1's
}

TEST_CASE("Linearizability: never-issued tokens must stay unknown", "[linearizability]") {
  Builder b = Created();
  b.Verify("", "never-issued", Outcome::kUnknown, 3, 4);
  RequireLinearizable(b);
  b.Verify("", "never-issued-2", Outcome::kOk, 5, 6);
  CHECK(RequireViolation(b).find("never-issued tokens") != std::string::npos);
}

TEST_CASE("Linearizability: a verdict must name the key its token was issued to",
          "[linearizability]") {
  Builder b = Created();
  b.Add(Op::Create("key_b", kB1, {"read:all"}), 3, 4).Verify("key_a", kA1, Outcome::kOk, 5, 6);
  b.ops().back().verdict_key = "key_b";
  const std::string failure = RequireViolation(b);
  CHECK(failure.find("names key 'key_b'") != std::string::npos);

  CheckOptions lax;
  lax.check_verdict_key = false;
  const CheckResult r = b.Check(lax);
  CHECK(r.linearizable);
}

TEST_CASE("Linearizability: malformed histories are refused", "[linearizability]") {
  SECTION("return before call") {
    Builder b = Created();
    b.Verify("key_a", kA1, Outcome::kOk, 6, 5);
    CHECK(RequireViolation(b).find("malformed") != std::string::npos);
  }
  SECTION("one token issued twice") {
    Builder b = Created();
    b.Add(Op::Create("key_b", kA1, {}), 3, 4);
    CHECK(RequireViolation(b).find("issued twice") != std::string::npos);
  }
  SECTION("a verify recorded under another key than its token's") {
    Builder b = Created();
    b.Add(Op::Create("key_b", kB1, {}), 3, 4).Verify("key_b", kA1, Outcome::kOk, 5, 6);
    CHECK(RequireViolation(b).find("malformed") != std::string::npos);
  }
}

TEST_CASE("Linearizability: custom scope rules", "[linearizability]") {
  Builder b = Created();
  b.Verify("key_a", kA1, Outcome::kOk, 3, 4, kT0, "read:projects");
  RequireViolation(b);  // literally, read:all does not grant read:projects
  CheckOptions o;
  o.scope_allows = [](const std::vector<std::string>& granted, std::string_view required) {
    for (const std::string& g : granted) {
      if (g == required || (g == "read:all" && required.substr(0, 5) == "read:")) return true;
    }
    return false;
  };
  const CheckResult r = b.Check(o);
  INFO(r.failure);
  CHECK(r.linearizable);
}

TEST_CASE("Linearizability: the search gives up, inconclusive, past its budget",
          "[linearizability]") {
  // Twelve overlapping modifies and a verdict that no order explains: the
  // search must try the orders before it can say no.
  Builder b = Created();
  for (Tick i = 0; i < 12; ++i) {
    b.Add(Op::Modify("key_a", std::vector<std::string>{"write:all"}), 10 + i, 100 + i);
  }
  b.Verify("key_a", kA1, Outcome::kRevoked, 200, 201);
  CheckOptions tight;
  tight.max_configurations = 50;
  const CheckResult r = b.Check(tight);
  CHECK_FALSE(r.linearizable);
  CHECK(r.inconclusive);
  CHECK(r.failure.find("inconclusive") != std::string::npos);
  // With room, it proves the violation (the memo keeps it to the subsets).
  const CheckResult full = b.Check();
  CHECK_FALSE(full.linearizable);
  CHECK_FALSE(full.inconclusive);
  CHECK(full.configurations <= (std::size_t{1} << 12) + 2);
}

TEST_CASE("Linearizability: verifications do not multiply the search", "[linearizability]") {
  // 300 writes, each overlapped by 20 verifies that see either side of it:
  // verifications are placed greedily, so the search explores about one
  // configuration per write.
  Builder b = Created();
  Tick t = 10;
  bool revoked = false;
  for (int w = 0; w < 300; ++w) {
    const Tick call = t;
    t += 50;
    b.Add(revoked ? Op::Restore("key_a") : Op::Revoke("key_a"), call, t);
    for (Tick r = 0; r < 20; ++r) {  // one after the other: ten before, ten after
      const bool after = r >= 10;
      b.Verify("key_a", kA1, (revoked != after) ? Outcome::kRevoked : Outcome::kOk,
               call + 1 + 2 * r, call + 2 + 2 * r);
    }
    revoked = !revoked;
    t += 1;
  }
  const CheckResult r = b.Check();
  INFO(r.failure);
  REQUIRE(r.linearizable);
  CHECK(r.configurations <= 2 * 300 + 2);
}

}  // namespace
}  // namespace keygate::linearizability
