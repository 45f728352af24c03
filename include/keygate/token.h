// keygate/token.h: the public API-token format, its generation and parsing. A token is
// `<prefix>_<env>_<secret><check>` (`kg_live_2Lk...`, 77 characters at most):
//   prefix  2-10 of [a-z0-9], per deployment (default "kg"), for secret scanners
//   env     1-16 of [a-z0-9], the tag of the environment the key works in
//   secret  32 CSPRNG bytes as one 256-bit big-endian number in base62 (0-9A-Za-z, most
//           significant first), zero-padded to 43 characters: exact, no modulo bias
//   check   CRC-32 (as zlib's crc32) of every character before it, base62, 6 characters
// The checksum is a filter, not proof: typos and random strings fail without hashing or lookup.
// Thread safety: all functions are thread-safe.
//
// Example:
//   absl::StatusOr<keygate::Secret> token = keygate::GenerateToken("kg", "live");
//   keygate::TokenView view;
//   if (keygate::ParseToken(token->Reveal(keygate::InsecureSecretAccess::Get()),
//                           &view) == keygate::TokenError::kNone) { ... }

#ifndef KEYGATE_TOKEN_H_
#define KEYGATE_TOKEN_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "keygate/secret.h"

namespace keygate {

inline constexpr std::size_t kMinPrefixLength = 2;
inline constexpr std::size_t kMaxPrefixLength = 10;
inline constexpr std::size_t kMinEnvTagLength = 1;
inline constexpr std::size_t kMaxEnvTagLength = 16;
inline constexpr std::size_t kSecretChars = 43;
inline constexpr std::size_t kCheckChars = 6;
inline constexpr std::size_t kMaxTokenLength =
    kMaxPrefixLength + 1 + kMaxEnvTagLength + 1 + kSecretChars + kCheckChars;
inline constexpr std::size_t kMinTokenLength =
    kMinPrefixLength + 1 + kMinEnvTagLength + 1 + kSecretChars + kCheckChars;

// Why a string is not a well-formed token; HTTP clients see every one as `invalid_token`.
enum class TokenError : std::uint8_t {
  kNone = 0,
  kLength,    // shorter than kMinTokenLength or longer than kMaxTokenLength
  kPrefix,    // missing or malformed prefix (or not the expected one)
  kEnvTag,    // missing or malformed environment tag
  kCharset,   // a character of the secret or check is not base62
  kChecksum,  // the CRC-32 does not match
};

// Pieces of a parsed token; views into the parsed string.
struct TokenView {
  std::string_view prefix;
  std::string_view env_tag;
  std::string_view secret;  // kSecretChars base62 characters
  std::string_view check;   // kCheckChars base62 characters
};

// Validates structure, charset, checksum and (when not empty) `expected_prefix`. No hashing, no
// allocation; ~20 ns for a 60-byte token.
TokenError ParseToken(std::string_view token, TokenView* out,
                      std::string_view expected_prefix = {}) noexcept;

// ParseToken as a status: kInvalidArgument "token: <reason>" (never echoes the token).
[[nodiscard]] absl::Status ValidateToken(std::string_view token,
                                         std::string_view expected_prefix = {});

// A short human-readable reason for a TokenError ("bad checksum", ...).
std::string_view TokenErrorName(TokenError error) noexcept;

// True if `s` is a valid prefix (2-10 of [a-z0-9]) / env tag (1-16 of [a-z0-9]).
bool IsValidPrefix(std::string_view s) noexcept;
bool IsValidEnvTag(std::string_view s) noexcept;

// A new token with 256 bits from RAND_priv_bytes. Errors: kInvalidArgument (bad prefix or env
// tag), kInternal (the CSPRNG failed).
[[nodiscard]] absl::StatusOr<Secret> GenerateToken(std::string_view prefix,
                                                   std::string_view env_tag);

// Builds a token from a given 32-byte secret (known-answer tests, imports).
[[nodiscard]] absl::StatusOr<Secret> TokenFromBytes(std::string_view prefix,
                                                    std::string_view env_tag,
                                                    std::string_view secret32);

// The non-secret display hint kept at rest: "<prefix>_<env>_...<last 4>".
std::string TokenHint(std::string_view token);

}  // namespace keygate

#endif  // KEYGATE_TOKEN_H_
