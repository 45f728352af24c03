// The hash-table hash of a digest (private).
#ifndef KEYGATE_SRC_INTERNAL_DIGEST_PREFIX_H_
#define KEYGATE_SRC_INTERNAL_DIGEST_PREFIX_H_

#include <cstdint>
#include <cstring>

#include "keygate/digest.h"

namespace keygate::internal {

// The first 8 bytes of a digest as an integer: digests are uniformly random,
// so this is a perfect hash-table hash.
inline std::uint64_t DigestPrefix64(const Digest& d) noexcept {
  std::uint64_t v;
  std::memcpy(&v, d.data(), sizeof v);
  return v;
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_DIGEST_PREFIX_H_
