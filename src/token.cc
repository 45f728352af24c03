#include "keygate/token.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "boost/multiprecision/cpp_int.hpp"

#include "internal/base62.h"
#include "internal/canonical_token.h"
#include "internal/charclass.h"
#include "internal/crc32.h"

namespace keygate {
namespace {

using internal::Base62Decode;
using internal::Crc32;
using internal::kBase62Alphabet;
using internal::kBase62Digit;

// CRC-32 tables for slicing-by-16: kCrcTables[0] is the classic byte table;
// kCrcTables[k][b] is the CRC of byte b followed by k zero bytes. Slicing-by-8
// is 5-6x faster than zlib's byte-at-a-time loop on tokens (performance.md);
// 16 bytes a step halves the dependent steps again (the verifier's 48-byte
// body: 3 instead of 6).
constexpr std::array<std::array<std::uint32_t, 256>, 16> MakeCrcTables() {
  std::array<std::array<std::uint32_t, 256>, 16> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (std::size_t k = 1; k < 16; ++k) {
    for (std::size_t i = 0; i < 256; ++i) {
      t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
    }
  }
  return t;
}

constexpr auto kCrcTables = MakeCrcTables();

inline std::uint32_t Load32Le(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

inline bool IsLowerAlnum(char c) noexcept {
  return internal::HasClass(c, internal::kClassLowerAlnum);
}

bool AllLowerAlnum(std::string_view s) noexcept {
  for (char c : s) {
    if (!IsLowerAlnum(c)) return false;
  }
  return true;
}

// Writes `value` (< 2^256) as kSecretChars base62 digits, most significant
// first. Exact conversion: every 256-bit value maps to a distinct string.
void EncodeSecret(const unsigned char bytes[32], char out[kSecretChars]) {
  using boost::multiprecision::uint256_t;
  uint256_t n;
  boost::multiprecision::import_bits(n, bytes, bytes + 32, 8, /*msv_first=*/true);
  for (std::size_t i = kSecretChars; i-- > 0;) {
    const auto digit = static_cast<unsigned>(n % 62u);
    out[i] = kBase62Alphabet[digit];
    n /= 62u;
  }
  // 62^43 > 2^256, so n is now zero: nothing of the secret is left behind.
}

}  // namespace

namespace internal {

std::uint32_t Crc32Update(std::uint32_t reg, std::string_view data) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t n = data.size();
  std::uint32_t crc = reg;
  while (n >= 16) {
    const std::uint32_t w0 = Load32Le(p) ^ crc;
    const std::uint32_t w1 = Load32Le(p + 4);
    const std::uint32_t w2 = Load32Le(p + 8);
    const std::uint32_t w3 = Load32Le(p + 12);
    crc = kCrcTables[15][w0 & 0xFF] ^ kCrcTables[14][(w0 >> 8) & 0xFF] ^
          kCrcTables[13][(w0 >> 16) & 0xFF] ^ kCrcTables[12][w0 >> 24] ^ kCrcTables[11][w1 & 0xFF] ^
          kCrcTables[10][(w1 >> 8) & 0xFF] ^ kCrcTables[9][(w1 >> 16) & 0xFF] ^
          kCrcTables[8][w1 >> 24] ^ kCrcTables[7][w2 & 0xFF] ^ kCrcTables[6][(w2 >> 8) & 0xFF] ^
          kCrcTables[5][(w2 >> 16) & 0xFF] ^ kCrcTables[4][w2 >> 24] ^ kCrcTables[3][w3 & 0xFF] ^
          kCrcTables[2][(w3 >> 8) & 0xFF] ^ kCrcTables[1][(w3 >> 16) & 0xFF] ^
          kCrcTables[0][w3 >> 24];
    p += 16;
    n -= 16;
  }
  while (n >= 8) {
    const std::uint32_t one = Load32Le(p) ^ crc;
    const std::uint32_t two = Load32Le(p + 4);
    crc = kCrcTables[7][one & 0xFF] ^ kCrcTables[6][(one >> 8) & 0xFF] ^
          kCrcTables[5][(one >> 16) & 0xFF] ^ kCrcTables[4][one >> 24] ^ kCrcTables[3][two & 0xFF] ^
          kCrcTables[2][(two >> 8) & 0xFF] ^ kCrcTables[1][(two >> 16) & 0xFF] ^
          kCrcTables[0][two >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = (crc >> 8) ^ kCrcTables[0][(crc ^ *p++) & 0xFF];
  return crc;
}

std::uint32_t Crc32(std::string_view data) noexcept { return ~Crc32Update(0xFFFFFFFFu, data); }

std::string Base62EncodeFixed(std::uint64_t value, std::size_t width) {
  std::string out(width, '0');
  for (std::size_t i = width; i-- > 0 && value != 0;) {
    out[i] = kBase62Alphabet[value % 62];
    value /= 62;
  }
  return out;
}

bool Base62Decode(std::string_view digits, std::uint64_t* value) noexcept {
  std::uint64_t v = 0;
  // No per-digit division: the overflow check is two flag tests.
  for (char c : digits) {
    const unsigned d = kBase62Digit[static_cast<unsigned char>(c)];
    if (d == kNotBase62) return false;
    if (__builtin_mul_overflow(v, std::uint64_t{62}, &v) ||
        __builtin_add_overflow(v, std::uint64_t{d}, &v)) {
      return false;
    }
  }
  *value = v;
  return true;
}

}  // namespace internal

bool IsValidPrefix(std::string_view s) noexcept {
  return s.size() >= kMinPrefixLength && s.size() <= kMaxPrefixLength && AllLowerAlnum(s);
}

bool IsValidEnvTag(std::string_view s) noexcept {
  return s.size() >= kMinEnvTagLength && s.size() <= kMaxEnvTagLength && AllLowerAlnum(s);
}

TokenError ParseToken(std::string_view token, TokenView* out,
                      std::string_view expected_prefix) noexcept {
  const std::size_t n = token.size();
  if (n < kMinTokenLength || n > kMaxTokenLength) return TokenError::kLength;

  // <prefix>_ : the prefix holds no '_', so the first '_' ends it.
  std::size_t i = 0;
  while (i < n && i <= kMaxPrefixLength && IsLowerAlnum(token[i])) ++i;
  if (i < kMinPrefixLength || i > kMaxPrefixLength || token[i] != '_') return TokenError::kPrefix;
  const std::string_view prefix = token.substr(0, i);
  if (!expected_prefix.empty() && prefix != expected_prefix) return TokenError::kPrefix;

  // <env>_
  const std::size_t env_begin = i + 1;
  std::size_t j = env_begin;
  while (j < n && j - env_begin <= kMaxEnvTagLength && IsLowerAlnum(token[j])) ++j;
  const std::size_t env_len = j - env_begin;
  if (env_len < kMinEnvTagLength || env_len > kMaxEnvTagLength || j >= n || token[j] != '_') {
    return TokenError::kEnvTag;
  }

  // <secret><check>: exactly 49 base62 characters.
  const std::size_t body = j + 1;
  if (n - body != kSecretChars + kCheckChars) return TokenError::kLength;
  unsigned bad = 0;
  for (std::size_t k = body; k < n; ++k) {
    bad |= kBase62Digit[static_cast<unsigned char>(token[k])];  // kNotBase62 has bit 7 set
  }
  if ((bad & 0x80u) != 0) return TokenError::kCharset;

  const std::string_view check = token.substr(n - kCheckChars);
  std::uint64_t expected = 0;
  if (!Base62Decode(check, &expected) || expected != Crc32(token.substr(0, n - kCheckChars))) {
    return TokenError::kChecksum;
  }
  if (out != nullptr) {
    out->prefix = prefix;
    out->env_tag = token.substr(env_begin, env_len);
    out->secret = token.substr(body, kSecretChars);
    out->check = check;
  }
  return TokenError::kNone;
}

std::string_view TokenErrorName(TokenError error) noexcept {
  switch (error) {
    case TokenError::kNone:
      return "ok";
    case TokenError::kLength:
      return "wrong length";
    case TokenError::kPrefix:
      return "missing or wrong prefix";
    case TokenError::kEnvTag:
      return "missing or malformed environment tag";
    case TokenError::kCharset:
      return "non-base62 character";
    case TokenError::kChecksum:
      return "bad checksum";
  }
  return "unknown error";
}

absl::Status ValidateToken(std::string_view token, std::string_view expected_prefix) {
  const TokenError e = ParseToken(token, nullptr, expected_prefix);
  if (e == TokenError::kNone) return absl::OkStatus();
  const std::string_view reason = TokenErrorName(e);
  return absl::InvalidArgumentError(
      absl::StrCat("token: malformed (", absl::string_view(reason.data(), reason.size()), ")"));
}

absl::StatusOr<Secret> TokenFromBytes(std::string_view prefix, std::string_view env_tag,
                                      std::string_view secret32) {
  if (!IsValidPrefix(prefix)) {
    return absl::InvalidArgumentError("token_prefix: must be 2-10 characters of [a-z0-9]");
  }
  if (!IsValidEnvTag(env_tag)) {
    return absl::InvalidArgumentError("env_tag: must be 1-16 characters of [a-z0-9]");
  }
  if (secret32.size() != 32) {
    return absl::InvalidArgumentError("secret: must be exactly 32 bytes");
  }
  std::array<char, kMaxTokenLength> buf{};
  std::size_t n = 0;
  std::memcpy(buf.data(), prefix.data(), prefix.size());
  n += prefix.size();
  buf[n++] = '_';
  std::memcpy(buf.data() + n, env_tag.data(), env_tag.size());
  n += env_tag.size();
  buf[n++] = '_';
  EncodeSecret(reinterpret_cast<const unsigned char*>(secret32.data()), buf.data() + n);
  n += kSecretChars;
  std::uint32_t crc = Crc32(std::string_view(buf.data(), n));
  for (std::size_t i = kCheckChars; i-- > 0;) {
    buf[n + i] = kBase62Alphabet[crc % 62];
    crc /= 62;
  }
  n += kCheckChars;
  Secret token(std::string_view(buf.data(), n));
  OPENSSL_cleanse(buf.data(), buf.size());
  return token;
}

absl::StatusOr<Secret> GenerateToken(std::string_view prefix, std::string_view env_tag) {
  std::array<unsigned char, 32> bytes{};
  if (RAND_priv_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    return absl::InternalError("token: the CSPRNG failed (RAND_priv_bytes)");
  }
  absl::StatusOr<Secret> token = TokenFromBytes(
      prefix, env_tag, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return token;
}

std::string TokenHint(std::string_view token) {
  TokenView v;
  if (ParseToken(token, &v) != TokenError::kNone) return "(malformed)";
  return absl::StrCat(absl::string_view(v.prefix.data(), v.prefix.size()), "_",
                      absl::string_view(v.env_tag.data(), v.env_tag.size()), "_...",
                      absl::string_view(token.data() + token.size() - 4, 4));
}

}  // namespace keygate
