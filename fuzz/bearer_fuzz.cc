// libFuzzer target: the Authorization header parser. Invariants: an accepted
// header yields a b64token that lies inside the input; parsing is total.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "keygate/bearer.h"
#include "keygate/token.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view token;
  const keygate::BearerParse r = keygate::ParseBearer(in, &token);
  if (r != keygate::BearerParse::kOk) return 0;
  if (token.empty() || !keygate::IsB64Token(token)) std::abort();
  if (token.data() < in.data() || token.data() + token.size() > in.data() + in.size()) std::abort();
  if (in.size() > keygate::kMaxAuthorizationLength) std::abort();
  keygate::TokenView v;
  (void)keygate::ParseToken(token, &v, "kg");
  return 0;
}
