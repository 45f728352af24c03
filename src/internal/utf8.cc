#include "internal/utf8.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace keygate::internal {

Utf8Step DecodeUtf8(std::string_view s) {
  Utf8Step step;
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) {
    step.code_point = b0;
    step.length = 1;
    step.valid = true;
    return step;
  }
  // Total length and the range allowed for the second byte, which is where
  // overlongs (E0 80-9F, F0 80-8F), surrogates (ED A0-BF) and code points
  // above U+10FFFF (F4 90-BF) are excluded; later bytes are 80-BF.
  std::size_t n = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    step.length = 1;  // a continuation byte, C0/C1 (always overlong) or F5-FF
    return step;
  }
  std::uint32_t cp = b0 & (0xFF >> (n + 1));
  for (std::size_t i = 1; i < n; ++i) {
    if (i >= s.size()) {
      step.length = i;
      return step;
    }
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < lo || b > hi) {
      step.length = i;
      return step;
    }
    cp = (cp << 6) | (b & 0x3F);
    lo = 0x80;
    hi = 0xBF;
  }
  step.code_point = cp;
  step.length = n;
  step.valid = true;
  return step;
}

bool IsValidUtf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Step step = DecodeUtf8(s.substr(i));
    if (!step.valid) return false;
    i += step.length;
  }
  return true;
}

}  // namespace keygate::internal
