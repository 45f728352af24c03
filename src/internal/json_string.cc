#include "internal/json_string.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "internal/utf8.h"

namespace keygate::internal {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void AppendUnicodeEscape(std::string* out, std::uint32_t cp) {
  out->append("\\u");
  for (int shift = 12; shift >= 0; shift -= 4) out->push_back(kHex[(cp >> shift) & 0xF]);
}

// Escapes of the ASCII characters JSON needs escaped; false for any other.
bool AppendAsciiEscape(std::string* out, unsigned char u) {
  switch (u) {
    case '"':
      out->append("\\\"");
      return true;
    case '\\':
      out->append("\\\\");
      return true;
    case '\n':
      out->append("\\n");
      return true;
    case '\r':
      out->append("\\r");
      return true;
    case '\t':
      out->append("\\t");
      return true;
    default:
      if (u < 0x20 || u == 0x7F) {
        AppendUnicodeEscape(out, u);
        return true;
      }
      return false;
  }
}

}  // namespace

void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  std::size_t i = 0;
  while (i < s.size()) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x80) {
      if (!AppendAsciiEscape(out, u)) out->push_back(s[i]);
      ++i;
      continue;
    }
    const Utf8Step step = DecodeUtf8(s.substr(i));
    if (!step.valid) {
      out->append("\\ufffd");
    } else if (step.code_point <= 0x9F) {
      AppendUnicodeEscape(out, step.code_point);  // C1 control
    } else {
      out->append(s.substr(i, step.length));
    }
    i += step.length;
  }
  out->push_back('"');
}

std::string JsonString(std::string_view s) {
  std::string out;
  AppendJsonString(&out, s);
  return out;
}

void AppendJsonStringPreservingBytes(std::string* out, std::string_view s) {
  out->push_back('"');
  for (const char c : s) {
    if (!AppendAsciiEscape(out, static_cast<unsigned char>(c))) out->push_back(c);
  }
  out->push_back('"');
}

}  // namespace keygate::internal
