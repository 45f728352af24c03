// Encoding and decoding a stored key row (record_row.h), through the stores' shared column
// codec (internal/record_columns.h).

#include "sqlite/record_row.h"

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace keygate::internal {

absl::StatusOr<KeyRecord> DecodeRecord(const Statement& s, int first, std::string_view path) {
  return DecodeRecordColumns(s, first, absl::StrCat("sqlite ", std::string(path)));
}

void BindRecord(Statement& s, const KeyRecord& r) {
  BindRecordColumns(s, r, 1, 28);
  s.BindText(24, ToLowerAscii(r.name));
}

}  // namespace keygate::internal
