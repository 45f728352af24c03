// UTF-8 decoding for validation (private): well-formed per RFC 3629, so no
// overlong forms, no surrogates (U+D800-DFFF) and nothing above U+10FFFF.

#ifndef KEYGATE_SRC_INTERNAL_UTF8_H_
#define KEYGATE_SRC_INTERNAL_UTF8_H_

#include <cstddef>
#include <string_view>

namespace keygate::internal {

// Decodes the sequence at `s[*pos]`: on success stores the code point in
// `*cp`, advances `*pos` past it and returns true; on an ill-formed or
// truncated sequence returns false and leaves both untouched.
// Precondition: *pos < s.size().
inline bool NextCodePoint(std::string_view s, std::size_t* pos, char32_t* cp) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const std::size_t i = *pos;
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    *cp = b0;
    *pos = i + 1;
    return true;
  }
  std::size_t n = 0;
  char32_t v = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2;
    v = b0 & 0x1F;
    min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3;
    v = b0 & 0x0F;
    min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4;
    v = b0 & 0x07;
    min = 0x10000;
  } else {
    return false;  // a continuation byte, or 0xF8-0xFF
  }
  if (s.size() - i < n) return false;
  for (std::size_t k = 1; k < n; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xC0) != 0x80) return false;
    v = (v << 6) | (b & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return false;
  *cp = v;
  *pos = i + n;
  return true;
}

inline bool IsValidUtf8(std::string_view s) noexcept {
  std::size_t pos = 0;
  char32_t cp = 0;
  while (pos < s.size()) {
    if (!NextCodePoint(s, &pos, &cp)) return false;
  }
  return true;
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_UTF8_H_
