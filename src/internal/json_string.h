// Private JSON string encoding shared by the core's HTTP error bodies, the
// SQLite store's JSON columns and the CLI's --json output.
#ifndef KEYGATE_SRC_INTERNAL_JSON_STRING_H_
#define KEYGATE_SRC_INTERNAL_JSON_STRING_H_

#include <string>
#include <string_view>

namespace keygate::internal {

// Appends `s` as a JSON string literal (quotes included), always valid JSON
// and valid UTF-8: each invalid UTF-8 sequence becomes \ufffd (U+FFFD, the
// replacement character); control characters (C0, DEL and the C1 range
// U+0080-U+009F, which some terminals act on) are escaped; any other valid
// UTF-8 passes through unchanged. For output that leaves the process (HTTP
// bodies, the CLI's --json).
void AppendJsonString(std::string* out, std::string_view s);
std::string JsonString(std::string_view s);

// As AppendJsonString, but bytes >= 0x80 pass through unchanged whether or
// not they are valid UTF-8, so that a decoder reads back exactly the bytes
// given (storage that must round-trip arbitrary strings, such as the SQLite
// store's JSON columns). The output is valid JSON only for valid UTF-8 input.
void AppendJsonStringPreservingBytes(std::string* out, std::string_view s);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_JSON_STRING_H_
