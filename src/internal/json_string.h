// Private JSON string encoding shared by the core's HTTP error bodies, the
// SQLite store's JSON columns and the CLI's --json output.
#ifndef KEYGATE_SRC_INTERNAL_JSON_STRING_H_
#define KEYGATE_SRC_INTERNAL_JSON_STRING_H_

#include <string>
#include <string_view>

namespace keygate::internal {

// Appends `s` as a JSON string literal (quotes included). Bytes >= 0x80 pass
// through unchanged (UTF-8 in, UTF-8 out); control characters and DEL are
// escaped.
void AppendJsonString(std::string* out, std::string_view s);
std::string JsonString(std::string_view s);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_JSON_STRING_H_
