// Validation of deployment settings (deployment.h).

#include "keygate/deployment.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "keygate/token.h"

namespace keygate {
namespace {

constexpr std::size_t kMaxEnvironmentNameLength = 32;
// More environments than this is a configuration mistake, and the hot path
// scans the list by tag.
constexpr std::size_t kMaxEnvironments = 64;

// What a file that is not a regular one is, for the refusal.
const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Closes a descriptor when it goes out of scope.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Wipes a buffer that held pepper bytes when it goes out of scope.
struct WipeOnExit {
  char* data;
  std::size_t size;
  ~WipeOnExit() { OPENSSL_cleanse(data, size); }
};

}  // namespace

absl::StatusOr<PepperFile> ReadPepperFile(const std::string& path,
                                          const PepperFileOptions& options) {
  const auto error = [&path](absl::StatusCode code, absl::string_view reason) {
    return absl::Status(code, absl::StrCat("pepper file ", path, ": ", reason));
  };
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ELOOP) {
      return error(absl::StatusCode::kFailedPrecondition,
                   "is a symbolic link (pass its target; linked directories in the path are "
                   "fine)");
    }
    const std::string cause = absl::StrCat("cannot open: ", std::strerror(err));
    if (err == ENOENT) return error(absl::StatusCode::kNotFound, cause);
    if (err == EACCES || err == EPERM) return error(absl::StatusCode::kPermissionDenied, cause);
    return error(absl::StatusCode::kUnavailable, cause);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return error(absl::StatusCode::kUnavailable, absl::StrCat("fstat: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return error(absl::StatusCode::kFailedPrecondition,
                 absl::StrCat("is ", FileKind(st.st_mode), ", not a regular file"));
  }
  const auto too_big = [&] {
    return error(absl::StatusCode::kFailedPrecondition,
                 absl::StrCat("is larger than ", kMaxPepperFileSize,
                              " bytes; a pepper file holds only the pepper"));
  };
  if (st.st_size > static_cast<off_t>(kMaxPepperFileSize)) return too_big();
  PepperFile result;
  const mode_t shared = st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH);
  if (shared != 0) {
    const std::string what = absl::StrFormat(
        "is %s by group or others (mode %04o)",
        (shared & (S_IRGRP | S_IROTH)) != 0
            ? ((shared & (S_IWGRP | S_IWOTH)) != 0 ? "readable and writable" : "readable")
            : "writable",
        st.st_mode & 07777);
    if (!options.allow_group_or_world_access) {
      return error(absl::StatusCode::kFailedPrecondition,
                   absl::StrCat(what, "; make it private to its owner (chmod 600)"));
    }
    result.warnings.push_back(absl::StrCat("pepper file ", path, ": ", what,
                                           "; read anyway (group or world access allowed)"));
  }
  // One byte more than the limit: a file that grew since fstat is refused too.
  char buffer[kMaxPepperFileSize + 1];
  const WipeOnExit wipe{buffer, sizeof buffer};
  std::size_t size = 0;
  while (size < sizeof buffer) {
    const ssize_t n = ::read(fd.get(), buffer + size, sizeof buffer - size);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return error(absl::StatusCode::kUnavailable, absl::StrCat("read: ", std::strerror(errno)));
    }
    size += static_cast<std::size_t>(n);
  }
  if (size > kMaxPepperFileSize) return too_big();
  if (size > 0 && buffer[size - 1] == '\n') {
    --size;
    if (size > 0 && buffer[size - 1] == '\r') --size;  // "\r\n"; a lone '\r' is pepper
  }
  if (size < kMinPepperSize) {
    return error(absl::StatusCode::kFailedPrecondition,
                 absl::StrCat("holds ", size, " bytes; a pepper needs at least ", kMinPepperSize));
  }
  result.pepper = Secret(std::string_view(buffer, size));
  return result;
}

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
