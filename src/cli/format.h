// Output helpers for the `keygate` command-line tool: a small streaming JSON
// writer, key records as JSON and as text, times, and redaction of anything
// that could be a token in an error message.
#ifndef KEYGATE_SRC_CLI_FORMAT_H_
#define KEYGATE_SRC_CLI_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

#include "internal/json_writer.h"
#include "internal/text_escape.h"
#include "keygate/key.h"

namespace keygate::cli {

// JSON output is shared with the admin API (internal/json_writer.h).
using internal::JsonTime;
using internal::JsonWriter;
using internal::WriteEventJson;
using internal::WriteRecordJson;

// "2024-05-01T12:00:00Z" (seconds) for people.
std::string HumanTime(absl::Time t);

// `text` made safe to print to a terminal (internal/text_escape.h): a stored
// record may hold any bytes (other code can write the store directly), and
// raw control characters could forge or hide lines ("state: revoked") or
// send terminal escape sequences.
using internal::EscapeText;

// Multi-line "field: value" description of one key (every field escaped).
std::string DescribeRecord(const KeyRecord& r);

// A text table; the first row is the header. Cells are escaped (EscapeText)
// and aligned by code points.
std::string Table(const std::vector<std::vector<std::string>>& rows);

// Replaces every run of 40+ token characters ([A-Za-z0-9_]) with
// "<redacted>": tokens are 53+ characters, key ids 26, so error messages that
// quote user input can never carry a pasted token.
std::string Redact(std::string_view text);

// "30d", "12h", "90m", "45s" (absl durations, plus days) -> duration.
bool ParseDurationWithDays(std::string_view text, absl::Duration* out);

}  // namespace keygate::cli

#endif  // KEYGATE_SRC_CLI_FORMAT_H_
