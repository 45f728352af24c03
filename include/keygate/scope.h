// keygate/scope.h: named permissions, their implications, and how a key's
// scopes are checked against what a route requires.
//
// A `ScopeRegistry` knows every scope a deployment uses. It is preloaded with
// the three scopes of the product documents:
//   read:all   read access to all resources
//   write:all  create/update access to non-administrative resources
//   admin      everything; implies read:all and write:all
// (write:all does NOT imply read:all). Applications add their own scopes
// through the builder; a scope may imply scopes registered before it, so
// implication graphs are acyclic by construction.
//
// Each scope gets one bit. A set of scope names compiles to the bitmask of its
// implication closure, so the hot-path check is `(granted & required) ==
// required`: one AND and one compare. Up to 64 scopes per deployment.
//
// Example:
//
//   auto registry = keygate::ScopeRegistry::Builder()
//                       .Add("read:projects")
//                       .Add("write:projects", {"read:projects"})
//                       .Build();
//   absl::StatusOr<keygate::Requirement> read =
//       (*registry)->Require({"read:projects"}, {.cost = 1});  // per route
//   if (!read.ok()) return read.status();  // a misspelled scope fails here
//
// Thread safety: a built `ScopeRegistry` is immutable and thread-safe; the
// Builder is not. `ScopeEvaluator` implementations must be thread-safe.

#ifndef KEYGATE_SCOPE_H_
#define KEYGATE_SCOPE_H_

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace keygate {

using ScopeMask = std::uint64_t;

inline constexpr std::size_t kMaxScopes = 64;
inline constexpr std::size_t kMaxScopeNameLength = 64;

inline constexpr std::string_view kScopeReadAll = "read:all";
inline constexpr std::string_view kScopeWriteAll = "write:all";
inline constexpr std::string_view kScopeAdmin = "admin";

// Whether `name` is a well-formed scope name: 1-64 characters of
// [a-z0-9:_./*-]. Only such names are ever quoted in an error message: no
// upper case, so a token pasted in their place is never echoed. Pure;
// O(size).
bool IsValidScopeName(std::string_view name) noexcept;

// Per-route settings of a Requirement besides its scopes.
struct RequireOptions {
  // If non-empty, the key must link this account (at most 128 bytes, as
  // key.h's kMaxAccountLength; copied).
  std::string_view account = {};
  // Rate-limit cost of one request: 1 .. kMaxRequestCost.
  std::uint32_t cost = 1;
};

inline constexpr std::uint32_t kMaxRequestCost = 1u << 20;

class Requirement;

class ScopeRegistry {
 public:
  class Builder {
   public:
    // Starts with read:all, write:all and admin registered.
    Builder();
    // Registers `name` (1-64 of [a-z0-9:_./*-]) implying `implies`, each of
    // which must already be registered. Errors are reported by Build().
    Builder& Add(std::string_view name, std::initializer_list<std::string_view> implies = {});
    Builder& Add(std::string_view name, const std::vector<std::string>& implies);
    // Errors: kInvalidArgument "scope '<name>': <reason>" (bad name,
    // duplicate, unknown implied scope), kResourceExhausted (> 64 scopes).
    [[nodiscard]] absl::StatusOr<std::shared_ptr<const ScopeRegistry>> Build();

   private:
    std::vector<std::pair<std::string, std::vector<std::string>>> entries_;
  };

  // The registry with only the three built-in scopes.
  static std::shared_ptr<const ScopeRegistry> Default();

  // The closure mask of the named scopes. Errors: kInvalidArgument
  // "scopes: unknown scope '<name>'".
  [[nodiscard]] absl::StatusOr<ScopeMask> Compile(absl::Span<const std::string> names) const;
  [[nodiscard]] absl::StatusOr<ScopeMask> Compile(
      std::initializer_list<std::string_view> names) const;

  // What a route needs: every named scope (at least one, each registered),
  // with `options`. A misspelled scope is an error here, at route set-up,
  // never an open route. Errors: kInvalidArgument "scopes: unknown scope
  // '<name>'", "scopes: empty (use Requirement::AnyValidKey())", or naming
  // "account" / "cost".
  [[nodiscard]] absl::StatusOr<Requirement> Require(std::initializer_list<std::string_view> names,
                                                    const RequireOptions& options = {}) const;
  [[nodiscard]] absl::StatusOr<Requirement> Require(absl::Span<const std::string> names,
                                                    const RequireOptions& options = {}) const;

  // The closure mask of one scope, or 0 when unknown.
  ScopeMask MaskOf(std::string_view name) const noexcept;
  bool Contains(std::string_view name) const noexcept;

  // Registered names in registration order (bit i = names()[i]).
  const std::vector<std::string>& names() const noexcept { return names_; }

  // The names whose own bit is set in `mask`, in registration order.
  std::vector<std::string> Expand(ScopeMask mask) const;

 private:
  ScopeRegistry() = default;
  std::vector<std::string> names_;
  std::vector<ScopeMask> closure_;  // closure_[i] includes bit i
};

// Tells whether `granted` contains every bit of `required`. The hot-path
// default.
inline constexpr bool MaskAllows(ScopeMask granted, ScopeMask required) noexcept {
  return (granted & required) == required;
}

// What a route needs: a scope mask, the names it was built from (quoted in
// 403 answers and read by custom evaluators), an optional linked account and
// the request's rate-limit cost. There is no public way to build one with a
// zero mask by accident: it comes from `ScopeRegistry::Require` (scopes that
// must be registered), `Requirement::AnyValidKey()` (explicitly no scope) or
// `Requirement::ForEvaluator()` (a name only a custom evaluator can match;
// the default mask check refuses it). Built once per route, not per request.
//
// Copyable, immutable, thread-safe to share. The accessors are the
// verifiers' hot path: inline loads.
class Requirement {
 public:
  // Any valid key of the environment passes; no scope is checked.
  static Requirement AnyValidKey() { return Requirement(); }
  // The same with an account and a cost. Errors: kInvalidArgument naming
  // "account" or "cost".
  [[nodiscard]] static absl::StatusOr<Requirement> AnyValidKey(const RequireOptions& options);

  // A requirement the mask check cannot satisfy, for a custom evaluator
  // (`PatternScopeEvaluator`: "read:projects/42"). Under the default
  // `MaskScopeEvaluator` every key is refused (403): fail closed.
  // Errors: kInvalidArgument naming "scope", "account" or "cost".
  [[nodiscard]] static absl::StatusOr<Requirement> ForEvaluator(std::string_view scope_name,
                                                                const RequireOptions& options = {});

  // Every bit required (closure not needed).
  ScopeMask scopes() const noexcept { return scopes_; }
  // The required scope names, space-separated (RFC 6750's scope syntax);
  // empty for AnyValidKey.
  std::string_view scope_name() const noexcept { return scope_name_; }
  // The account the key must link; empty for none.
  std::string_view account() const noexcept { return account_; }
  std::uint32_t cost() const noexcept { return cost_; }

 private:
  friend class ScopeRegistry;
  Requirement() = default;
  [[nodiscard]] static absl::Status SetOptions(const RequireOptions& options, Requirement& r);

  ScopeMask scopes_ = 0;
  std::string scope_name_;
  std::string account_;
  std::uint32_t cost_ = 1;
};

// A key's scopes as seen by an evaluator.
struct GrantedScopes {
  ScopeMask mask = 0;                   // closure of the key's scopes
  absl::Span<const std::string> names;  // as stored on the key
};

// Decides whether granted scopes satisfy a requirement, for rules a mask
// cannot express. Must be thread-safe, noexcept and allocation-free: it runs
// on the hot path.
class ScopeEvaluator {
 public:
  virtual ~ScopeEvaluator() = default;
  virtual bool Allows(const GrantedScopes& granted, const Requirement& required) const noexcept = 0;
};

// The default mask check of a whole requirement: every bit of
// `required.scopes`, and a requirement that names a scope without setting a
// bit is refused (see Requirement). Two compares; the verifiers' hot path.
inline bool MaskSatisfies(ScopeMask granted, const Requirement& required) noexcept {
  return MaskAllows(granted, required.scopes()) &&
         (required.scopes() != 0 || required.scope_name().empty());
}

// The default: MaskSatisfies(granted.mask, required), that is
// `(granted.mask & required.scopes()) == required.scopes()`, refusing a
// requirement that names a scope with no bits set.
class MaskScopeEvaluator final : public ScopeEvaluator {
 public:
  bool Allows(const GrantedScopes& granted, const Requirement& required) const noexcept override {
    return MaskSatisfies(granted.mask, required);
  }
};

// Mask check first (when the requirement has bits); then an exact name match
// of `scope_name`; then a granted scope that ends in `/*` matches a
// required `scope_name` with that prefix: granted `read:projects/*` allows
// required `read:projects/42` and `read:projects/42/files`.
class PatternScopeEvaluator final : public ScopeEvaluator {
 public:
  bool Allows(const GrantedScopes& granted, const Requirement& required) const noexcept override;
};

}  // namespace keygate

#endif  // KEYGATE_SCOPE_H_
