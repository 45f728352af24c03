// keygate/digest.h: what is stored at rest instead of a token.
//
// `digest = HMAC-SHA256(pepper, token)` when the deployment configures a
// pepper (32 bytes or more, kept outside the database), else
// `SHA-256(token)`. Tokens carry 256 bits of entropy, so a fast hash is the
// right tool (NIST SP 800-63B 5.1.1.2); no slow KDF is needed.
//
// Cost on the hot path: the hasher drives OpenSSL's SHA-256 block function
// (SHA-NI where the CPU has it) directly, padding the message itself, and
// keeps HMAC's inner and outer chaining values from creation, so a call is
// just the block operations: 2 for SHA-256 of a 57-byte token, 3 for HMAC
// (about 85 and 130 ns on the reference machine, bench/README.md). The EVP
// interface costs 2x that even with pre-fetched algorithms and a reused
// context (it frees and re-allocates its provider context on every
// re-initialisation); the one-shot `SHA256()` / `HMAC()` wrappers 3-10x.
// The block function is OpenSSL's default implementation, not a FIPS
// provider's: a deployment that must use a FIPS-validated module needs a
// hasher built on EVP with that provider (not offered yet).
//
// Example:
//
//   auto hasher = keygate::TokenHasher::Create(/*pepper=*/std::nullopt);
//   keygate::Digest d;
//   (*hasher)->Hash(token, &d);
//
// Thread safety: `TokenHasher` is immutable and thread-safe.

#ifndef KEYGATE_DIGEST_H_
#define KEYGATE_DIGEST_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "keygate/secret.h"

namespace keygate {

inline constexpr std::size_t kDigestSize = 32;
using Digest = std::array<std::uint8_t, kDigestSize>;

// Minimum pepper length in bytes.
inline constexpr std::size_t kMinPepperSize = 32;

// Constant-time digest equality.
bool DigestEquals(const Digest& a, const Digest& b) noexcept;

// Lower-case hex, for storage backends and debugging (digests are not secret).
std::string DigestToHex(const Digest& d);
bool DigestFromHex(std::string_view hex, Digest* out) noexcept;

class TokenHasher {
 public:
  // Errors: kInvalidArgument if the pepper is shorter than kMinPepperSize.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const TokenHasher>> Create(
      const std::optional<Secret>& pepper);

  ~TokenHasher();
  TokenHasher(const TokenHasher&) = delete;
  TokenHasher& operator=(const TokenHasher&) = delete;

  // Computes the digest of `token`. No allocation, no lock, no shared
  // writes. Returns true; the bool remains so that a future hasher that can
  // fail (an external FIPS module, say) need not change callers, which must
  // fail closed on false.
  bool Hash(std::string_view token, Digest* out) const noexcept;

  // Convenience for management paths. Errors: kInternal (never, today).
  [[nodiscard]] absl::StatusOr<Digest> Hash(std::string_view token) const;

  bool keyed() const noexcept { return keyed_; }

 private:
  struct Impl;
  explicit TokenHasher(std::unique_ptr<Impl> impl, bool keyed);
  std::unique_ptr<Impl> impl_;
  bool keyed_;
};

}  // namespace keygate

#endif  // KEYGATE_DIGEST_H_
