// Text for people's screens and logs (private): control characters made
// visible, so that a stored value can neither forge lines nor drive a
// terminal. Used by the CLI's output, operator<< of KeyRecord and Event.

#ifndef KEYGATE_SRC_INTERNAL_TEXT_ESCAPE_H_
#define KEYGATE_SRC_INTERNAL_TEXT_ESCAPE_H_

#include <string>
#include <string_view>

namespace keygate::internal {

// `text` with '\\', \n, \r and \t escaped by name; other C0 controls, DEL
// and each byte of an invalid UTF-8 sequence as \xNN; C1 controls
// (U+0080-U+009F), bidirectional controls and U+2028/U+2029 as \uNNNN. Other
// valid UTF-8 passes through, so the result is valid UTF-8 without controls.
std::string EscapeText(std::string_view text);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_TEXT_ESCAPE_H_
