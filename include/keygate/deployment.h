// keygate/deployment.h: the validated, immutable settings one deployment of
// keygate shares between its manager and its verifiers.
//
// A deployment fixes the token prefix, the environments (each with its token
// tag and an optional default rate limit), the scope registry and the
// pepper. Every `KeyManager`, `ReferenceVerifier` and `Verifier` of one
// deployment must share it, or tokens will not verify.
//
// Example:
//
//   keygate::DeploymentOptions opts;               // prefix "kg"
//   opts.environments = {{"preview", "test"}, {"production", "live"}};
//   absl::StatusOr<std::shared_ptr<const keygate::Deployment>> d =
//       keygate::Deployment::Create(std::move(opts));
//
//   absl::StatusOr<keygate::PepperFile> pepper =
//       keygate::ReadPepperFile("/etc/myapp/pepper");  // mode 0600
//   if (pepper.ok()) opts.pepper = std::move(pepper->pepper);
//
// Ownership: shared (`std::shared_ptr<const Deployment>`).
// Thread safety: a `Deployment` is immutable and thread-safe.

#ifndef KEYGATE_DEPLOYMENT_H_
#define KEYGATE_DEPLOYMENT_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include "keygate/digest.h"
#include "keygate/key.h"
#include "keygate/scope.h"
#include "keygate/secret.h"

namespace keygate {

// Whether `name` is 1-32 characters of [a-z0-9_-], the only names an
// error message quotes. Pure; O(size).
bool IsValidEnvironmentName(std::string_view name) noexcept;

struct EnvironmentSpec {
  std::string name;  // 1-32 of [a-z0-9_-], e.g. "production"
  std::string tag;   // 1-16 of [a-z0-9], appears in tokens, e.g. "live"
  std::optional<RateLimitPolicy> default_rate_limit;  // for keys without one
};

struct DeploymentOptions {
  std::string token_prefix = "kg";
  // Default: preview (tag "test") and production (tag "live").
  std::vector<EnvironmentSpec> environments = {{"preview", "test", std::nullopt},
                                               {"production", "live", std::nullopt}};
  // nullptr: ScopeRegistry::Default().
  std::shared_ptr<const ScopeRegistry> scopes;
  // HMAC-SHA256 key for digests, >= 32 bytes; none: plain SHA-256.
  std::optional<Secret> pepper;
};

// The largest pepper file ReadPepperFile reads.
inline constexpr std::size_t kMaxPepperFileSize = 4096;

struct PepperFileOptions {
  // Read a file that group or others may read or write (mode & 0066),
  // refused by default; PepperFile::warnings then says so.
  bool allow_group_or_world_access = false;
};

struct PepperFile {
  Secret pepper;
  // What to tell the operator (never a pepper byte).
  std::vector<std::string> warnings;
};

// Reads a pepper: the file's bytes less one trailing "\n" or "\r\n". The
// last path component must not be a symbolic link; the file is opened
// non-blocking and close-on-exec, then judged by fstat. Errors name the
// path and the reason, never a pepper byte:
//   kNotFound           the file does not exist
//   kPermissionDenied   the file cannot be opened (EACCES)
//   kFailedPrecondition a symbolic link, or not a regular file (a directory,
//                       /dev/zero, a FIFO); over kMaxPepperFileSize or under
//                       kMinPepperSize bytes; group or other access (unless
//                       PepperFileOptions allows it)
//   kUnavailable        any other failure to open or read
// Cost: one open, one fstat, a read of at most kMaxPepperFileSize + 1 bytes.
[[nodiscard]] absl::StatusOr<PepperFile> ReadPepperFile(const std::string& path,
                                                        const PepperFileOptions& options = {});

class Deployment {
 public:
  // Errors: kInvalidArgument naming the field ("token_prefix: ...",
  // "environments[1].tag: duplicate 'live'", "pepper: ...") ; kInternal if
  // OpenSSL is unusable.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const Deployment>> Create(
      DeploymentOptions options);

  const std::string& token_prefix() const noexcept { return prefix_; }
  const std::vector<EnvironmentSpec>& environments() const noexcept { return envs_; }
  const ScopeRegistry& scopes() const noexcept { return *scopes_; }
  const std::shared_ptr<const ScopeRegistry>& scopes_ptr() const noexcept { return scopes_; }
  const TokenHasher& hasher() const noexcept { return *hasher_; }

  // nullptr when unknown.
  const EnvironmentSpec* FindEnvironment(std::string_view name) const noexcept;
  // The environment named `name`, for checking a caller's option or request.
  // Errors: kInvalidArgument "environment: must not be empty",
  // "environment: unknown environment 'x'" (the name quoted only when
  // IsValidEnvironmentName, so a pasted token is never echoed).
  [[nodiscard]] absl::StatusOr<const EnvironmentSpec*> Environment(std::string_view name) const;
  const EnvironmentSpec* FindEnvironmentByTag(std::string_view tag) const noexcept;

 private:
  Deployment() = default;
  std::string prefix_;
  std::vector<EnvironmentSpec> envs_;
  std::shared_ptr<const ScopeRegistry> scopes_;
  std::shared_ptr<const TokenHasher> hasher_;
};

}  // namespace keygate

#endif  // KEYGATE_DEPLOYMENT_H_
