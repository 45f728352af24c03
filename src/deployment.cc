// Validation of deployment settings (deployment.h).

#include "keygate/deployment.h"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "keygate/token.h"

namespace keygate {
namespace {

constexpr std::size_t kMaxEnvironmentNameLength = 32;
// More environments than this is a configuration mistake, and the hot path
// scans the list by tag.
constexpr std::size_t kMaxEnvironments = 64;

}  // namespace

bool IsValidEnvironmentName(std::string_view s) noexcept {
  if (s.empty() || s.size() > kMaxEnvironmentNameLength) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<std::shared_ptr<const Deployment>> Deployment::Create(DeploymentOptions options) {
  // Messages quote names and tags only after they passed their charset check,
  // so a token pasted into the wrong field is never echoed.
  if (!IsValidPrefix(options.token_prefix)) {
    return absl::InvalidArgumentError("token_prefix: must be 2-10 characters of [a-z0-9]");
  }
  if (options.environments.empty()) {
    return absl::InvalidArgumentError("environments: must not be empty");
  }
  if (options.environments.size() > kMaxEnvironments) {
    return absl::InvalidArgumentError(
        absl::StrCat("environments: at most ", kMaxEnvironments, " entries"));
  }
  for (std::size_t i = 0; i < options.environments.size(); ++i) {
    const EnvironmentSpec& env = options.environments[i];
    const std::string field = absl::StrCat("environments[", i, "]");
    if (!IsValidEnvironmentName(env.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".name: must be 1-32 characters of [a-z0-9_-]"));
    }
    if (!IsValidEnvTag(env.tag)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".tag: must be 1-16 characters of [a-z0-9]"));
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (options.environments[j].name == env.name) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".name: duplicate '", env.name, "'"));
      }
      if (options.environments[j].tag == env.tag) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".tag: duplicate '", env.tag, "'"));
      }
    }
    if (env.default_rate_limit.has_value()) {
      absl::Status s = ValidateRateLimitPolicy(*env.default_rate_limit,
                                               absl::StrCat(field, ".default_rate_limit"));
      if (!s.ok()) return s;
    }
  }
  if (options.pepper.has_value() && options.pepper->size() < kMinPepperSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("pepper: must be at least ", kMinPepperSize, " bytes"));
  }

  absl::StatusOr<std::shared_ptr<const TokenHasher>> hasher = TokenHasher::Create(options.pepper);
  if (!hasher.ok()) {
    if (hasher.status().code() == absl::StatusCode::kInvalidArgument) {
      return absl::InvalidArgumentError(absl::StrCat("pepper: ", hasher.status().message()));
    }
    return hasher.status();
  }

  std::shared_ptr<Deployment> d(new Deployment());
  d->prefix_ = std::move(options.token_prefix);
  d->envs_ = std::move(options.environments);
  d->scopes_ = options.scopes ? std::move(options.scopes) : ScopeRegistry::Default();
  d->hasher_ = *std::move(hasher);
  // The pepper now lives only inside the hasher; wipe our copy.
  if (options.pepper.has_value()) options.pepper->Clear();
  return std::shared_ptr<const Deployment>(std::move(d));
}

const EnvironmentSpec* Deployment::FindEnvironment(std::string_view name) const noexcept {
  for (const EnvironmentSpec& env : envs_) {
    if (env.name == name) return &env;
  }
  return nullptr;
}

absl::StatusOr<const EnvironmentSpec*> Deployment::Environment(std::string_view name) const {
  if (name.empty()) return absl::InvalidArgumentError("environment: must not be empty");
  if (const EnvironmentSpec* env = FindEnvironment(name); env != nullptr) return env;
  if (IsValidEnvironmentName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment: unknown environment '", std::string(name), "'"));
  }
  return absl::InvalidArgumentError("environment: unknown environment");
}

const EnvironmentSpec* Deployment::FindEnvironmentByTag(std::string_view tag) const noexcept {
  for (const EnvironmentSpec& env : envs_) {
    if (env.tag == tag) return &env;
  }
  return nullptr;
}

}  // namespace keygate
