// Strict UTF-8 decoding (private), RFC 3629: overlong forms, surrogates
// (U+D800-U+DFFF) and code points above U+10FFFF are invalid. Shared by the
// JSON writer, KeyManager's text validation and the CLI's text escaping.

#ifndef KEYGATE_SRC_INTERNAL_UTF8_H_
#define KEYGATE_SRC_INTERNAL_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace keygate::internal {

// One step of decoding.
struct Utf8Step {
  std::uint32_t code_point = 0;  // meaningful only when `valid`
  std::size_t length = 0;        // bytes consumed: 1-4, never 0 (s non-empty)
  bool valid = false;
};

// Decodes the character that starts `s` (non-empty). An invalid sequence
// consumes its maximal subpart (the longest prefix that could start a valid
// sequence, at least one byte), so each invalid sequence maps to one
// replacement character, as Unicode recommends (W3C/WHATWG do the same).
Utf8Step DecodeUtf8(std::string_view s);

// True if all of `s` is well-formed UTF-8.
bool IsValidUtf8(std::string_view s);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_UTF8_H_
