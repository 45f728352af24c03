// libFuzzer target: the token parser. Invariants checked on every input:
// a token the parser accepts re-encodes to itself (its checksum is the CRC of
// its text, its pieces are in place), and parsing never reads out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "internal/base62.h"
#include "internal/crc32.h"
#include "keygate/token.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  keygate::TokenView v;
  if (keygate::ParseToken(in, &v) != keygate::TokenError::kNone) return 0;
  const std::string_view head = in.substr(0, in.size() - keygate::kCheckChars);
  if (keygate::internal::Base62EncodeFixed(keygate::internal::Crc32(head), keygate::kCheckChars) !=
      v.check) {
    std::abort();
  }
  if (!keygate::IsValidPrefix(v.prefix) || !keygate::IsValidEnvTag(v.env_tag)) std::abort();
  if (v.secret.size() != keygate::kSecretChars) std::abort();
  if (v.prefix.data() != in.data()) std::abort();
  (void)keygate::TokenHint(in);
  return 0;
}
