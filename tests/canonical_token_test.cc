// The verifier's one-pass recogniser (src/internal/canonical_token.h) must
// never reach a different conclusion than the general parsers: it may only
// answer kOther ("ask the general path") where it is unsure.
#include "internal/canonical_token.h"

#include <cctype>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "catch.h"
#include "keygate/bearer.h"
#include "keygate/token.h"
#include "test_util.h"

using keygate::testing::Text;

namespace keygate {
namespace {

using internal::CanonicalMatch;
using internal::CanonicalToken;

// What ParseBearer + ParseToken + the environment comparison conclude.
CanonicalMatch General(std::string_view header, std::string_view prefix, std::string_view env,
                       std::string_view* token) {
  std::string_view t;
  if (ParseBearer(header, &t) != BearerParse::kOk) return CanonicalMatch::kOther;
  TokenView v;
  const TokenError e = ParseToken(t, &v, prefix);
  if (e == TokenError::kChecksum) return CanonicalMatch::kBadChecksum;
  if (e != TokenError::kNone || v.env_tag != env) return CanonicalMatch::kOther;
  *token = t;
  return CanonicalMatch::kOk;
}

// Checks the recogniser against the general path on `header`; returns the
// recogniser's answer.
CanonicalMatch Agree(const CanonicalToken& c, std::string_view header, std::string_view prefix,
                     std::string_view env) {
  std::string_view fast_token;
  std::string_view slow_token;
  const CanonicalMatch fast = c.MatchHeader(header, &fast_token);
  const CanonicalMatch slow = General(header, prefix, env, &slow_token);
  INFO("header length " << header.size());
  if (fast != CanonicalMatch::kOther) {
    REQUIRE(fast == slow);
    if (fast == CanonicalMatch::kOk) {
      CHECK(fast_token.data() == slow_token.data());
      CHECK(fast_token.size() == slow_token.size());
    }
  }
  // The bare-token entry point agrees with ParseToken the same way.
  if (slow != CanonicalMatch::kOther) {
    const std::string_view t = header.substr(header.find(' ') + 1);
    const CanonicalMatch bare = c.MatchToken(t);
    if (bare != CanonicalMatch::kOther) REQUIRE(bare == slow);
  }
  return fast;
}

std::string MakeToken(std::string_view prefix, std::string_view env, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string bytes(32, '\0');
  for (char& b : bytes) b = static_cast<char>(rng());
  return Text(*TokenFromBytes(prefix, env, bytes));
}

TEST_CASE("The canonical header is recognised in any scheme case", "[canonical]") {
  const CanonicalToken c("kg", "live");
  const std::string token = MakeToken("kg", "live", 1);
  for (std::string scheme : {"Bearer", "bearer", "BEARER", "bEaReR"}) {
    const std::string header = scheme + " " + token;
    CHECK(Agree(c, header, "kg", "live") == CanonicalMatch::kOk);
  }
  CHECK(c.MatchToken(token) == CanonicalMatch::kOk);
}

TEST_CASE("Other shapes are left to the general parsers", "[canonical]") {
  const CanonicalToken c("kg", "live");
  const std::string token = MakeToken("kg", "live", 2);
  const std::string test_token = MakeToken("kg", "test", 2);
  const std::string other_prefix = MakeToken("zz", "live", 2);
  const std::vector<std::string> headers = {
      "Bearer  " + token,        // two spaces: valid, but not canonical
      " Bearer " + token,        // OWS
      "Bearer " + token + " ",   // trailing OWS
      "Bearer\t" + token,        // tab is not the separator
      "Bearer " + test_token,    // another environment
      "Bearer " + other_prefix,  // another deployment's prefix
      "Basic  " + token,         // same length, another scheme
      "Bearex " + token,
      std::string("Bearer\0", 7) + token,  // NUL where the space goes
      "Bearer " + token.substr(0, token.size() - 1),
      "Bearer " + token + "=",
      "",
  };
  for (const std::string& h : headers) {
    CHECK(Agree(c, h, "kg", "live") == CanonicalMatch::kOther);
  }
}

TEST_CASE("Every single-byte change of a canonical header agrees with the general path",
          "[canonical]") {
  for (const auto& [prefix, env] : std::vector<std::pair<std::string, std::string>>{
           {"kg", "live"}, {"acme0", "t"}, {"abcdefghij", "abcdefghijklmnop"}}) {
    const CanonicalToken c(prefix, env);
    const std::string header = "Bearer " + MakeToken(prefix, env, prefix.size());
    REQUIRE(Agree(c, header, prefix, env) == CanonicalMatch::kOk);
    int bad_checksum = 0;
    for (std::size_t i = 0; i < header.size(); ++i) {
      for (int b = 0; b < 256; ++b) {
        if (static_cast<char>(b) == header[i]) continue;
        std::string h = header;
        h[i] = static_cast<char>(b);
        const CanonicalMatch m = Agree(c, h, prefix, env);
        if (m == CanonicalMatch::kBadChecksum) ++bad_checksum;
        // A changed byte in the secret or checksum is a checksum failure
        // when it stays base62 (CRC-32 detects every single-byte change).
        if (i >= header.size() - 49 && (std::isalnum(b) != 0)) {
          CHECK(m == CanonicalMatch::kBadChecksum);
        }
      }
    }
    CHECK(bad_checksum == 49 * 61);
  }
}

TEST_CASE("Random headers near the canonical shape agree with the general path", "[canonical]") {
  const CanonicalToken c("kg", "live");
  std::mt19937_64 rng(7);
  const std::string alphabet =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-.~+/= \t\x80\xff";
  int ok = 0;
  for (int n = 0; n < 20000; ++n) {
    std::string h = "Bearer " + MakeToken("kg", "live", rng());
    const int edits = static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % h.size();
      switch (rng() % 3) {
        case 0:
          h[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          h.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          h.erase(at, 1);
      }
    }
    if (Agree(c, h, "kg", "live") == CanonicalMatch::kOk) ++ok;
  }
  CHECK(ok > 0);
}

TEST_CASE("A recogniser without a valid head matches nothing", "[canonical]") {
  const std::string header = "Bearer " + MakeToken("kg", "live", 3);
  for (const CanonicalToken& c : {CanonicalToken("", ""), CanonicalToken("k", "live"),
                                  CanonicalToken("kg", ""), CanonicalToken("KG", "live")}) {
    std::string_view token;
    CHECK(c.MatchHeader(header, &token) == CanonicalMatch::kOther);
    CHECK(c.MatchToken(header.substr(7)) == CanonicalMatch::kOther);
  }
}

TEST_CASE("Crc32Update continues Crc32", "[canonical][crc]") {
  const std::string s = "kg_live_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    const std::uint32_t reg = internal::Crc32Update(0xFFFFFFFFu, s.substr(0, cut));
    CHECK(~internal::Crc32Update(reg, std::string_view(s).substr(cut)) == internal::Crc32(s));
  }
}

}  // namespace
}  // namespace keygate
