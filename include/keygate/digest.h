// keygate/digest.h: what is stored at rest instead of a token.
//
// `digest = HMAC-SHA256(pepper, token)` when the deployment configures a
// pepper (32 bytes or more, kept outside the database), else
// `SHA-256(token)`. Tokens carry 256 bits of entropy, so a fast hash is the
// right tool (NIST SP 800-63B 5.1.1.2); no slow KDF is needed.
//
// Cost on the hot path: OpenSSL algorithms are fetched once, when the hasher is
// created; every thread then keeps its own initialised context and only
// re-initialises it per call (about 65 ns for SHA-256, 150 ns for HMAC on a
// 60-byte token on the reference machine). Never the one-shot `SHA256()` /
// `HMAC()` wrappers, which search OpenSSL's provider store on every call.
//
// Example:
//
//   auto hasher = keygate::TokenHasher::Create(/*pepper=*/std::nullopt);
//   keygate::Digest d;
//   if (!(*hasher)->Hash(token, &d)) { /* OpenSSL failure: fail closed */ }
//
// Thread safety: `TokenHasher` is immutable and thread-safe.

#ifndef KEYGATE_DIGEST_H_
#define KEYGATE_DIGEST_H_

#include <array>
#include <cstdint>
#include <cstring>
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

// The first 8 bytes of a digest as an integer: digests are uniformly random,
// so this is a perfect hash-table hash.
inline std::uint64_t DigestPrefix64(const Digest& d) noexcept {
  std::uint64_t v;
  std::memcpy(&v, d.data(), sizeof v);
  return v;
}

// Constant-time digest equality.
bool DigestEquals(const Digest& a, const Digest& b) noexcept;

// Lower-case hex, for storage backends and debugging (digests are not secret).
std::string DigestToHex(const Digest& d);
bool DigestFromHex(std::string_view hex, Digest* out) noexcept;

class TokenHasher {
 public:
  // Errors: kInvalidArgument if the pepper is shorter than kMinPepperSize,
  // kInternal if OpenSSL cannot provide SHA-256 / HMAC.
  static absl::StatusOr<std::shared_ptr<const TokenHasher>> Create(
      const std::optional<Secret>& pepper);

  ~TokenHasher();
  TokenHasher(const TokenHasher&) = delete;
  TokenHasher& operator=(const TokenHasher&) = delete;

  // Computes the digest of `token`. Returns false only if OpenSSL fails (the
  // caller must then fail closed). noexcept, no allocation after the calling
  // thread's first use of this hasher.
  bool Hash(std::string_view token, Digest* out) const noexcept;

  // Convenience for management paths. Errors: kInternal.
  absl::StatusOr<Digest> Hash(std::string_view token) const;

  bool keyed() const noexcept { return keyed_; }

 private:
  struct Impl;
  explicit TokenHasher(std::unique_ptr<Impl> impl, bool keyed);
  std::unique_ptr<Impl> impl_;
  bool keyed_;
};

}  // namespace keygate

#endif  // KEYGATE_DIGEST_H_
