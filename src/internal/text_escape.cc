#include "internal/text_escape.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "internal/utf8.h"

namespace keygate::internal {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void AppendHexByte(std::string* out, unsigned char b) {
  out->append("\\x");
  out->push_back(kHex[b >> 4]);
  out->push_back(kHex[b & 0xF]);
}

// Format characters that reorder or break the displayed line without being
// controls: bidirectional embeddings, overrides, isolates and marks, and the
// line and paragraph separators.
bool IsLayoutCharacter(std::uint32_t cp) {
  return cp == 0x061C || cp == 0x200E || cp == 0x200F || (cp >= 0x2028 && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

std::string EscapeText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto u = static_cast<unsigned char>(text[i]);
    if (u < 0x80) {
      switch (u) {
        case '\\':
          out.append("\\\\");
          break;
        case '\n':
          out.append("\\n");
          break;
        case '\r':
          out.append("\\r");
          break;
        case '\t':
          out.append("\\t");
          break;
        default:
          if (u < 0x20 || u == 0x7F) {
            AppendHexByte(&out, u);
          } else {
            out.push_back(text[i]);
          }
      }
      ++i;
      continue;
    }
    const Utf8Step step = DecodeUtf8(text.substr(i));
    if (!step.valid) {
      for (std::size_t k = 0; k < step.length; ++k) {
        AppendHexByte(&out, static_cast<unsigned char>(text[i + k]));
      }
    } else if (step.code_point <= 0x9F || IsLayoutCharacter(step.code_point)) {
      out.append("\\u");
      for (int shift = 12; shift >= 0; shift -= 4) {
        out.push_back(kHex[(step.code_point >> shift) & 0xF]);
      }
    } else {
      out.append(text.substr(i, step.length));
    }
    i += step.length;
  }
  return out;
}

}  // namespace keygate::internal
