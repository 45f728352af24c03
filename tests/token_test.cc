// Token format: generation, parsing, checksum and randomness.
#include "keygate/token.h"

#include <zlib.h>

#include <array>
#include <cmath>
#include <random>
#include <string>
#include <unordered_set>

#include "catch.h"
#include "internal/base62.h"
#include "internal/crc32.h"

namespace keygate {
namespace {

using internal::Base62Decode;
using internal::Base62EncodeFixed;
using internal::Crc32;

std::string Reveal(const Secret& s) { return std::string(s.Reveal(InsecureSecretAccess::Get())); }

constexpr std::string_view kAlphabet =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

TEST_CASE("CRC-32 matches the IEEE check value and zlib", "[token][crc]") {
  CHECK(Crc32("123456789") == 0xCBF43926u);
  CHECK(Crc32("") == 0u);
  std::mt19937_64 rng(42);
  for (int len = 0; len < 200; ++len) {
    std::string s(static_cast<std::size_t>(len), '\0');
    for (char& c : s) c = static_cast<char>(rng());
    const auto z = static_cast<std::uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
    REQUIRE(Crc32(s) == z);
  }
}

TEST_CASE("Known-answer tokens from fixed secrets", "[token][kat]") {
  const std::string zeros(32, '\0');
  auto t0 = TokenFromBytes("kg", "live", zeros);
  REQUIRE(t0.ok());
  CHECK(Reveal(*t0) == "kg_live_00000000000000000000000000000000000000000000iucAc");

  const std::string ones(32, '\xFF');
  auto t1 = TokenFromBytes("kg", "live", ones);
  REQUIRE(t1.ok());
  // 2^256 - 1 in base62 is 43 digits: the format's fixed width is exact.
  CHECK(Reveal(*t1) == "kg_live_yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp12YxnP0");

  CHECK(TokenFromBytes("kg", "live", "short").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(TokenFromBytes("KG", "live", zeros).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(TokenFromBytes("kg", "", zeros).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Generated tokens round-trip through the parser", "[token]") {
  for (std::string_view env : {"live", "test", "a", "preview0123456789"}) {
    if (!IsValidEnvTag(env)) continue;
    auto token = GenerateToken("kg", env);
    REQUIRE(token.ok());
    const std::string t = Reveal(*token);
    CHECK(t.size() == 2 + 1 + env.size() + 1 + kSecretChars + kCheckChars);
    TokenView v;
    REQUIRE(ParseToken(t, &v, "kg") == TokenError::kNone);
    CHECK(v.prefix == "kg");
    CHECK(v.env_tag == env);
    CHECK(v.secret.size() == kSecretChars);
    CHECK(v.check.size() == kCheckChars);
    CHECK(ValidateToken(t, "kg").ok());
  }
  auto longest = GenerateToken("abcdefghij", "abcdefghijklmnop");
  REQUIRE(longest.ok());
  CHECK(Reveal(*longest).size() == kMaxTokenLength);
  CHECK(ParseToken(Reveal(*longest), nullptr) == TokenError::kNone);
}

TEST_CASE("Parser rejects each kind of malformed token", "[token]") {
  auto token = TokenFromBytes("kg", "live", std::string(32, '\x11'));
  REQUIRE(token.ok());
  const std::string t = Reveal(*token);
  CHECK(ParseToken(t, nullptr, "kg") == TokenError::kNone);
  CHECK(ParseToken(t, nullptr, "sk") == TokenError::kPrefix);
  CHECK(ParseToken(t.substr(1), nullptr) != TokenError::kNone);
  CHECK(ParseToken(t + "A", nullptr) == TokenError::kLength);
  CHECK(ParseToken(t.substr(0, t.size() - 1), nullptr) == TokenError::kLength);
  CHECK(ParseToken("", nullptr) == TokenError::kLength);
  CHECK(ParseToken(std::string(200, 'a'), nullptr) == TokenError::kLength);

  std::string bad_charset = t;
  bad_charset[20] = '-';
  CHECK(ParseToken(bad_charset, nullptr) == TokenError::kCharset);
  std::string upper_prefix = t;
  upper_prefix[0] = 'K';
  CHECK(ParseToken(upper_prefix, nullptr) == TokenError::kPrefix);
  std::string no_env_sep = t;
  no_env_sep[7] = 'x';  // "kg_livex...": env runs into the secret
  CHECK(ParseToken(no_env_sep, nullptr) != TokenError::kNone);
  std::string bad_check = t;
  bad_check.back() = bad_check.back() == 'A' ? 'B' : 'A';
  CHECK(ParseToken(bad_check, nullptr) == TokenError::kChecksum);

  // The status never echoes the token.
  const absl::Status s = ValidateToken(bad_check);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find(bad_check.substr(8, 20)) == std::string::npos);
  CHECK(std::string(s.message()).find("checksum") != std::string::npos);
}

TEST_CASE("Every single-character mutation of a token is rejected", "[token][checksum]") {
  auto token = GenerateToken("kg", "live");
  REQUIRE(token.ok());
  const std::string t = Reveal(*token);
  std::string alphabet(kAlphabet);
  alphabet += "_-=+/. \t\x01\xff";
  std::size_t mutations = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    for (char c : alphabet) {
      if (c == t[i]) continue;
      std::string m = t;
      m[i] = c;
      ++mutations;
      INFO("position " << i << " replaced by char code " << static_cast<int>(c));
      REQUIRE(ParseToken(m, nullptr) != TokenError::kNone);
    }
  }
  CHECK(mutations > t.size() * 60);
}

TEST_CASE("100k generated tokens are distinct and their symbols uniform", "[token][random]") {
  constexpr int kTokens = 100'000;
  std::unordered_set<std::string> seen;
  seen.reserve(kTokens);
  // counts over secret positions 1..42 (position 0 holds the top ~5.93 bits
  // of the 256-bit number, so its last symbol values are rarer by design).
  std::array<std::uint64_t, 62> counts{};
  std::array<std::uint64_t, 62> first{};
  for (int i = 0; i < kTokens; ++i) {
    auto token = GenerateToken("kg", "live");
    REQUIRE(token.ok());
    std::string t = Reveal(*token);
    TokenView v;
    REQUIRE(ParseToken(t, &v) == TokenError::kNone);
    ++first[kAlphabet.find(v.secret[0])];
    for (std::size_t p = 1; p < v.secret.size(); ++p) ++counts[kAlphabet.find(v.secret[p])];
    REQUIRE(seen.insert(std::move(t)).second);
  }
  const double n = static_cast<double>(kTokens) * (kSecretChars - 1);
  const double expected = n / 62.0;
  double chi2 = 0;
  for (std::uint64_t c : counts)
    chi2 += (static_cast<double>(c) - expected) * (static_cast<double>(c) - expected) / expected;
  // 61 degrees of freedom: P(chi2 > 200) is about 1e-16, so a fair encoder
  // never fails. A biased one (e.g. byte % 62) gives chi2 near 28,000 at this
  // sample size.
  INFO("chi-square = " << chi2);
  CHECK(chi2 < 200.0);
  // 2^256 / 62^42 = 60.9...: the leading digit is 0..60 and never 61.
  CHECK(first[61] == 0);
  for (int d = 0; d < 60; ++d) CHECK(first[static_cast<std::size_t>(d)] > 0);
}

TEST_CASE("Base62 helpers", "[token][base62]") {
  CHECK(Base62EncodeFixed(0, 6) == "000000");
  CHECK(Base62EncodeFixed(61, 2) == "0z");
  CHECK(Base62EncodeFixed(62, 2) == "10");
  // Too wide for its width: the low digits, as documented.
  CHECK(Base62EncodeFixed(62 * 62, 2) == "00");
  CHECK(Base62EncodeFixed(62 * 62 + 63, 2) == "11");
  std::uint64_t v = 0;
  REQUIRE(Base62Decode("10", &v));
  CHECK(v == 62);
  REQUIRE(Base62Decode(Base62EncodeFixed(0xFFFFFFFFu, 6), &v));
  CHECK(v == 0xFFFFFFFFu);
  CHECK_FALSE(Base62Decode("a-b", &v));
  CHECK_FALSE(Base62Decode(std::string(12, 'z'), &v));  // 62^12 > 2^64
}

TEST_CASE("Prefix and environment tag rules", "[token]") {
  CHECK(IsValidPrefix("kg"));
  CHECK(IsValidPrefix("abcdefghij"));
  CHECK_FALSE(IsValidPrefix("k"));
  CHECK_FALSE(IsValidPrefix("abcdefghijk"));
  CHECK_FALSE(IsValidPrefix("Kg"));
  CHECK_FALSE(IsValidPrefix("k_"));
  CHECK(IsValidEnvTag("a"));
  CHECK(IsValidEnvTag("live2"));
  CHECK_FALSE(IsValidEnvTag(""));
  CHECK_FALSE(IsValidEnvTag("abcdefghijklmnopq"));
  CHECK(GenerateToken("kg", "LIVE").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("The display hint reveals no secret characters", "[token][hint]") {
  auto token = GenerateToken("kg", "test");
  REQUIRE(token.ok());
  const std::string t = Reveal(*token);
  const std::string hint = TokenHint(t);
  CHECK(hint == "kg_test_..." + t.substr(t.size() - 4));
  // The last 4 characters lie inside the 6-character checksum.
  CHECK(hint.find(t.substr(8, kSecretChars)) == std::string::npos);
  CHECK(TokenHint("garbage") == "(malformed)");
}

}  // namespace
}  // namespace keygate
