// Private character-class table for the parsers on the hot path.
//
// A chain of range comparisons per character ((c >= 'A' && c <= 'Z') || ...)
// branches on the character's class, which is random in a token's secret: the
// mispredictions made IsB64Token cost ~110 ns on 57-byte tokens. One table
// load per character is branch-free (~20 ns); see bench/verifier_bench.cc
// BM_ParseHeader.
#ifndef KEYGATE_SRC_INTERNAL_CHARCLASS_H_
#define KEYGATE_SRC_INTERNAL_CHARCLASS_H_

#include <array>
#include <cstdint>

namespace keygate::internal {

inline constexpr std::uint8_t kClassB64 = 1;         // RFC 6750 b64token body characters
inline constexpr std::uint8_t kClassLowerAlnum = 2;  // [a-z0-9]: prefixes and env tags

constexpr std::array<std::uint8_t, 256> MakeCharClasses() {
  std::array<std::uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const bool lower = c >= 'a' && c <= 'z';
    const bool upper = c >= 'A' && c <= 'Z';
    const bool digit = c >= '0' && c <= '9';
    std::uint8_t v = 0;
    if (lower || upper || digit || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' ||
        c == '/') {
      v |= kClassB64;
    }
    if (lower || digit) v |= kClassLowerAlnum;
    t[static_cast<std::size_t>(c)] = v;
  }
  return t;
}

inline constexpr std::array<std::uint8_t, 256> kCharClass = MakeCharClasses();

inline bool HasClass(char c, std::uint8_t cls) noexcept {
  return (kCharClass[static_cast<unsigned char>(c)] & cls) != 0;
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_CHARCLASS_H_
