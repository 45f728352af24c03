// In-place access to a Verdict's key id, for the hot path (private).
#ifndef KEYGATE_SRC_INTERNAL_VERDICT_ACCESS_H_
#define KEYGATE_SRC_INTERNAL_VERDICT_ACCESS_H_

#include <cstddef>
#include <cstdint>

#include "keygate/key.h"
#include "keygate/verdict.h"

namespace keygate::internal {

struct VerdictAccess {
  // The key id buffer of `v`: kKeyIdLength bytes, to be filled before SetKeySize.
  static char* KeyBuffer(Verdict& v) noexcept { return v.key_; }
  // Marks the first `size` (<= kKeyIdLength) bytes of the buffer as the key id.
  static void SetKeySize(Verdict& v, std::size_t size) noexcept {
    v.key_size_ = static_cast<std::uint8_t>(size < kKeyIdLength ? size : kKeyIdLength);
  }
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_VERDICT_ACCESS_H_
