// How error messages name a key (private): "key key_0Q3..." for an id of the
// generated shape, "key (not a key id)" for anything else, which may be a
// token pasted in the wrong place and must not reach a log (key.h,
// IsGeneratedKeyId).

#ifndef KEYGATE_SRC_INTERNAL_KEY_LABEL_H_
#define KEYGATE_SRC_INTERNAL_KEY_LABEL_H_

#include <string>
#include <string_view>

#include "keygate/key.h"

namespace keygate::internal {

inline std::string KeyLabel(std::string_view id) {
  if (!IsGeneratedKeyId(id)) return "key (not a key id)";
  std::string out = "key ";
  out.append(id);
  return out;
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_KEY_LABEL_H_
