// Percent-decoding (RFC 3986 2.1) shared by the admin API's query parser, the Redis URL parser
// and the request check's credential scan.
#ifndef KEYGATE_SRC_INTERNAL_PERCENT_H_
#define KEYGATE_SRC_INTERNAL_PERCENT_H_

#include <string>
#include <string_view>

namespace keygate::internal {

// The value of a hex digit ([0-9a-fA-F]), or -1. Inline: the request check's query scan uses it.
constexpr int HexDigitValue(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes (and '+' as a space when `plus_is_space`, as in
// application/x-www-form-urlencoded) into *out. Strict: false on a '%' not followed by two hex
// digits (*out then holds a prefix).
bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_PERCENT_H_
