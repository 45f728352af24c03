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

// What every bundled store checks of a record before writing it: its id,
// a kind and state that are set (a record left at the enums'
// kUnspecifiedDoNotUse would read back as corrupt) and the sealed values' sizes.
inline absl::Status CheckRecordShape(const KeyRecord& r) {
  if (absl::Status s = CheckRecordId(r.id); !s.ok()) return s;
  if (r.kind != KeyKind::kPersonal && r.kind != KeyKind::kGeneral) {
    return absl::InvalidArgumentError("kind: must be personal or general");
  }
  if (r.state != KeyState::kActive && r.state != KeyState::kRevoked) {
    return absl::InvalidArgumentError("state: must be active or revoked");
  }
  if (r.sealed_token.size() > kMaxSealedTokenLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("sealed_token: longer than ", kMaxSealedTokenLength, " bytes"));
  }
  if (r.sealed_webhook_secret.size() > kMaxSealedWebhookSecretLength) {
    return absl::InvalidArgumentError(absl::StrCat("sealed_webhook_secret: longer than ",
                                                   kMaxSealedWebhookSecretLength, " bytes"));
  }
  return absl::OkStatus();
}

// What Update checks of a record's shape: an id no record can have keeps
// answering kNotFound (key_store.h), so only the kind and state of a
// record whose id could exist are checked here.
inline absl::Status CheckUpdateShape(const KeyRecord& r) {
  if (r.id.empty() || r.id.size() > kKeyIdLength) return absl::OkStatus();
  return CheckRecordShape(r);
}

inline std::string KeyLabel(std::string_view id) {
  if (!IsGeneratedKeyId(id)) return "key (not a key id)";
  std::string out = "key ";
  out.append(id);
  return out;
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_KEY_LABEL_H_
