// Key ids in the bundled stores (private): what an id may be (CheckRecordId),
// and how error messages name a key: "key key_0Q3..." for an id of the
// generated shape, "key (not a key id)" for anything else, which may be a
// token pasted in the wrong place and must not reach a log (key.h,
// IsGeneratedKeyId).

#ifndef KEYGATE_SRC_INTERNAL_KEY_LABEL_H_
#define KEYGATE_SRC_INTERNAL_KEY_LABEL_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "keygate/key.h"

namespace keygate::internal {

// What every bundled store checks of a record's id before writing it.
inline absl::Status CheckRecordId(std::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError("id: must not be empty");
  if (id.size() > kKeyIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("id: longer than ", kKeyIdLength,
                     " bytes (a verdict carries the id inline; see kKeyIdLength)"));
  }
  return absl::OkStatus();
}

inline std::string KeyLabel(std::string_view id) {
  if (!IsGeneratedKeyId(id)) return "key (not a key id)";
  std::string out = "key ";
  out.append(id);
  return out;
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_KEY_LABEL_H_
