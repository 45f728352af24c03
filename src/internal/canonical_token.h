// The verifier's single-pass recogniser for the one header shape that real
// clients send (private).
//
// `Authorization: Bearer <prefix>_<env>_<43 base62><6 base62 checksum>`,
// with exactly one space, no surrounding whitespace, and the prefix and
// environment tag of the verifier's own environment. For that shape,
// ParseBearer + ParseToken + the environment comparison reach a fixed
// conclusion, and this recogniser reaches the same one in one pass:
//   - the scheme: one 8-byte load, case folded on its six letters;
//   - "<prefix>_<env>_": one comparison with the verifier's own;
//   - the 49 base62 characters: 16 at a time with SSE2 (baseline x86-64);
//     the byte-class table elsewhere;
//   - the checksum: the CRC-32 register after "<prefix>_<env>_" is the same
//     for every token of this environment, so only the 43 secret characters
//     (and 5 bytes of the head, to make whole 8-byte steps) are folded in.
// Anything else (other spacing, another scheme's spelling, another
// environment, a stray character, a different length) answers kOther, and
// the caller takes the general path, which gives the exact verdict (400 vs
// 401, wrong environment vs malformed). So the recogniser changes costs,
// never outcomes; tests/canonical_token_test.cc and the parser fuzzer hold it
// to that.
//
// Cost: ~15-25 ns for a 64-byte header on the reference machine (the CRC's
// dependent table lookups are most of it), against ~90 ns for the general
// path.
#ifndef KEYGATE_SRC_INTERNAL_CANONICAL_TOKEN_H_
#define KEYGATE_SRC_INTERNAL_CANONICAL_TOKEN_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "internal/crc32.h"
#include "keygate/token.h"

namespace keygate::internal {

enum class CanonicalMatch : std::uint8_t {
  kOk,           // well formed, this environment, checksum right
  kBadChecksum,  // all of the above but the checksum: malformed, for certain
  kOther,        // not the canonical shape: use the general parsers
};

class CanonicalToken {
 public:
  static constexpr std::size_t kMaxHead = kMaxPrefixLength + 1 + kMaxEnvTagLength + 1;
  static_assert(kMaxHead <= 32);

  // With an invalid `prefix` or `env_tag` (IsValidPrefix / IsValidEnvTag)
  // nothing matches: every input answers kOther.
  CanonicalToken(std::string_view prefix, std::string_view env_tag) noexcept;

  // A bare token.
  CanonicalMatch MatchToken(std::string_view token) const noexcept;

  // An Authorization header value; on kOk, `*token` views the token in it.
  CanonicalMatch MatchHeader(std::string_view header, std::string_view* token) const noexcept;

 private:
  // True if the 32 bytes at `p` start with the head.
  bool HeadMatches(const char* p) const noexcept;

  // The head, zero-padded to 32 bytes, and a mask of its bytes: every token
  // of the right length is at least 32 bytes long (1 + 1 + 1 + 1 + 49), so
  // the comparison is two 16-byte loads, not a length-dependent memcmp.
  alignas(16) unsigned char head_[32] = {};
  alignas(16) unsigned char head_mask_[32] = {};
  std::size_t head_len_ = 0;
  // The CRC register after all but the last kCrcOverlap bytes of the head:
  // the check then runs over those bytes and the secret, 48 bytes, whole
  // 8-byte steps with no byte-at-a-time tail (the head is >= 5 bytes).
  static constexpr std::size_t kCrcOverlap = 5;
  static_assert((kCrcOverlap + kSecretChars) % 8 == 0);
  std::uint32_t head_crc_ = 0;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_CANONICAL_TOKEN_H_
