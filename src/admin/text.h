// Small text helpers of the admin API for std::string_view (Debian's Abseil has a string_view of
// its own, which absl::StrCat and friends take).
#ifndef KEYGATE_SRC_ADMIN_TEXT_H_
#define KEYGATE_SRC_ADMIN_TEXT_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"

namespace keygate::admin_internal {

inline absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view SV(absl::string_view s) { return {s.data(), s.size()}; }
bool ConsumePrefix(std::string_view* s, std::string_view prefix);
std::string_view Trim(std::string_view s);                      // ASCII whitespace, both ends
bool EqualsIgnoreCase(std::string_view a, std::string_view b);  // ASCII
std::vector<std::string_view> SplitOn(std::string_view s, char separator);  // keeps empty parts
bool ParseDecimal(std::string_view s, std::uint64_t* out);  // 1-20 digits, no sign or overflow

}  // namespace keygate::admin_internal

#endif  // KEYGATE_SRC_ADMIN_TEXT_H_
