#include "keygate/scope.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "keygate/key.h"

namespace keygate {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsScopeChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ':' || c == '_' || c == '.' ||
         c == '/' || c == '*' || c == '-';
}

// Quotes `name` in an error only when it is a well-formed scope name.
std::string Quoted(std::string_view name) {
  return IsValidScopeName(name) ? absl::StrCat(" '", AV(name), "'") : std::string();
}

}  // namespace

bool IsValidScopeName(std::string_view name) noexcept {
  return !name.empty() && name.size() <= kMaxScopeNameLength &&
         std::all_of(name.begin(), name.end(), IsScopeChar);
}

ScopeRegistry::Builder::Builder() {
  Add(kScopeReadAll);
  Add(kScopeWriteAll);
  Add(kScopeAdmin, {kScopeReadAll, kScopeWriteAll});
}

ScopeRegistry::Builder& ScopeRegistry::Builder::Add(
    std::string_view name, std::initializer_list<std::string_view> implies) {
  std::vector<std::string> v;
  v.reserve(implies.size());
  for (std::string_view s : implies) v.emplace_back(s);
  entries_.emplace_back(std::string(name), std::move(v));
  return *this;
}

ScopeRegistry::Builder& ScopeRegistry::Builder::Add(std::string_view name,
                                                    const std::vector<std::string>& implies) {
  entries_.emplace_back(std::string(name), implies);
  return *this;
}

absl::StatusOr<std::shared_ptr<const ScopeRegistry>> ScopeRegistry::Builder::Build() {
  if (entries_.size() > kMaxScopes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "scopes: at most ", kMaxScopes, " scopes per deployment, got ", entries_.size()));
  }
  std::shared_ptr<ScopeRegistry> r(new ScopeRegistry());
  for (const auto& [name, implies] : entries_) {
    if (!IsValidScopeName(name)) {
      return absl::InvalidArgumentError(absl::StrCat("scopes: the name of Add() call #",
                                                     r->names_.size() - 2,
                                                     " must be 1-64 characters of [a-z0-9:_./*-]"));
    }
    if (r->Contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("scope '", name, "': registered twice"));
    }
    const std::size_t bit = r->names_.size();
    ScopeMask closure = ScopeMask{1} << bit;
    for (const std::string& implied : implies) {
      const ScopeMask m = r->MaskOf(implied);
      if (m == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("scope '", name, "': implies unknown scope", Quoted(implied),
                         " (implied scopes must be registered first)"));
      }
      closure |= m;
    }
    r->names_.push_back(name);
    r->closure_.push_back(closure);
  }
  return std::shared_ptr<const ScopeRegistry>(std::move(r));
}

std::shared_ptr<const ScopeRegistry> ScopeRegistry::Default() {
  static const auto* const registry = new std::shared_ptr<const ScopeRegistry>(*Builder().Build());
  return *registry;
}

ScopeMask ScopeRegistry::MaskOf(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return closure_[i];
  }
  return 0;
}

bool ScopeRegistry::Contains(std::string_view name) const noexcept { return MaskOf(name) != 0; }

absl::StatusOr<ScopeMask> ScopeRegistry::Compile(absl::Span<const std::string> names) const {
  ScopeMask mask = 0;
  for (const std::string& n : names) {
    const ScopeMask m = MaskOf(n);
    if (m == 0) return absl::InvalidArgumentError(absl::StrCat("scopes: unknown scope", Quoted(n)));
    mask |= m;
  }
  return mask;
}

absl::StatusOr<ScopeMask> ScopeRegistry::Compile(
    std::initializer_list<std::string_view> names) const {
  ScopeMask mask = 0;
  for (std::string_view n : names) {
    const ScopeMask m = MaskOf(n);
    if (m == 0) {
      return absl::InvalidArgumentError(absl::StrCat("scopes: unknown scope", Quoted(n)));
    }
    mask |= m;
  }
  return mask;
}

absl::StatusOr<Requirement> ScopeRegistry::Require(std::initializer_list<std::string_view> names,
                                                   const RequireOptions& options) const {
  std::vector<std::string> copy(names.begin(), names.end());
  return Require(absl::MakeConstSpan(copy), options);
}

absl::StatusOr<Requirement> ScopeRegistry::Require(absl::Span<const std::string> names,
                                                   const RequireOptions& options) const {
  if (names.empty()) {
    return absl::InvalidArgumentError("scopes: empty (use Requirement::AnyValidKey())");
  }
  absl::StatusOr<ScopeMask> mask = Compile(names);
  if (!mask.ok()) return mask.status();
  Requirement r;
  if (absl::Status s = Requirement::SetOptions(options, r); !s.ok()) return s;
  r.scopes_ = *mask;
  r.scope_name_ = absl::StrJoin(names, " ");
  return r;
}

absl::Status Requirement::SetOptions(const RequireOptions& options, Requirement& r) {
  if (options.account.size() > kMaxAccountLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("account: longer than ", kMaxAccountLength, " bytes"));
  }
  if (options.cost < 1 || options.cost > kMaxRequestCost) {
    return absl::InvalidArgumentError(
        absl::StrCat("cost: ", options.cost, " is not in 1..", kMaxRequestCost));
  }
  r.account_ = std::string(options.account);
  r.cost_ = options.cost;
  return absl::OkStatus();
}

absl::StatusOr<Requirement> Requirement::AnyValidKey(const RequireOptions& options) {
  Requirement r;
  if (absl::Status s = SetOptions(options, r); !s.ok()) return s;
  return r;
}

absl::StatusOr<Requirement> Requirement::ForEvaluator(std::string_view scope_name,
                                                      const RequireOptions& options) {
  if (!IsValidScopeName(scope_name)) {
    return absl::InvalidArgumentError("scope: not a scope name (1-64 of [a-z0-9:_./*-])");
  }
  Requirement r;
  if (absl::Status s = SetOptions(options, r); !s.ok()) return s;
  r.scope_name_ = std::string(scope_name);
  return r;
}

std::vector<std::string> ScopeRegistry::Expand(ScopeMask mask) const {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (mask & (ScopeMask{1} << i)) out.push_back(names_[i]);
  }
  return out;
}

namespace {

// Whether one granted name covers one required scope name: equal, or a
// granted "read:projects/*" for "read:projects/<anything non-empty>".
bool Covers(std::string_view granted, std::string_view want) noexcept {
  if (granted == want) return true;
  if (granted.size() >= 2 && granted.substr(granted.size() - 2) == "/*") {
    const std::string_view stem = granted.substr(0, granted.size() - 1);  // keeps the '/'
    return want.size() > stem.size() && want.substr(0, stem.size()) == stem;
  }
  return false;
}

}  // namespace

bool PatternScopeEvaluator::Allows(const GrantedScopes& granted,
                                   const Requirement& required) const noexcept {
  // Deny by default: a zero mask only means "nothing required" when no scope
  // name is required either.
  if (required.scopes() != 0 && MaskAllows(granted.mask, required.scopes())) return true;
  std::string_view want = required.scope_name();
  if (want.empty()) return required.scopes() == 0;
  // Every required name (Require joins several with spaces) must be covered
  // by some granted name: one pattern never stands for the whole list.
  while (!want.empty()) {
    const std::size_t space = want.find(' ');
    const std::string_view one = want.substr(0, space);
    want = space == std::string_view::npos ? std::string_view() : want.substr(space + 1);
    bool covered = false;
    for (const std::string& g : granted.names) {
      if (Covers(g, one)) {
        covered = true;
        break;
      }
    }
    if (!covered) return false;
  }
  return true;
}

}  // namespace keygate
