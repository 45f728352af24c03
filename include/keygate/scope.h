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
//   absl::StatusOr<keygate::ScopeMask> m = (*registry)->Compile({"admin"});
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
    absl::StatusOr<std::shared_ptr<const ScopeRegistry>> Build();

   private:
    std::vector<std::pair<std::string, std::vector<std::string>>> entries_;
  };

  // The registry with only the three built-in scopes.
  static std::shared_ptr<const ScopeRegistry> Default();

  // The closure mask of the named scopes. Errors: kInvalidArgument
  // "scopes: unknown scope '<name>'".
  absl::StatusOr<ScopeMask> Compile(absl::Span<const std::string> names) const;
  absl::StatusOr<ScopeMask> Compile(std::initializer_list<std::string_view> names) const;

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

// What a route needs. Built once per route (not per request); the views must
// outlive the calls that use the requirement.
//
// `scopes` is what the default mask check reads. A requirement that names a
// scope but sets no bits (`scopes == 0`, `scope_name` non-empty) is refused
// by the mask check, not waved through: the name is something only a custom
// evaluator (PatternScopeEvaluator, say) can check, and a route that forgot
// to compile its scope must fail closed (403), not open.
struct Requirement {
  ScopeMask scopes = 0;         // every bit required (closure not needed)
  std::string_view scope_name;  // named in 403 responses; used by evaluators
  std::string_view account;     // if non-empty, the key must link this account
  std::uint32_t cost = 1;       // rate-limit cost of the request
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
inline constexpr bool MaskSatisfies(ScopeMask granted, const Requirement& required) noexcept {
  return MaskAllows(granted, required.scopes) &&
         (required.scopes != 0 || required.scope_name.empty());
}

// The default: MaskSatisfies(granted.mask, required), that is
// `(granted.mask & required.scopes) == required.scopes`, refusing a
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
