// libFuzzer target: the Authorization header parsers. Invariants: an accepted
// header yields a b64token that lies inside the input; parsing is total; the
// verifier's one-pass recogniser (src/internal/canonical_token.h) never
// disagrees with ParseBearer + ParseToken.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "internal/canonical_token.h"
#include "keygate/bearer.h"
#include "keygate/token.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  static const keygate::internal::CanonicalToken canonical("kg", "live");
  std::string_view fast_token;
  const keygate::internal::CanonicalMatch fast = canonical.MatchHeader(in, &fast_token);
  std::string_view token;
  const keygate::BearerParse r = keygate::ParseBearer(in, &token);
  if (r != keygate::BearerParse::kOk) {
    if (fast != keygate::internal::CanonicalMatch::kOther) std::abort();
    return 0;
  }
  if (token.empty() || !keygate::IsB64Token(token)) std::abort();
  if (token.data() < in.data() || token.data() + token.size() > in.data() + in.size()) std::abort();
  if (in.size() > keygate::kMaxAuthorizationLength) std::abort();
  keygate::TokenView v;
  const keygate::TokenError e = keygate::ParseToken(token, &v, "kg");
  switch (fast) {
    case keygate::internal::CanonicalMatch::kOk:
      if (e != keygate::TokenError::kNone || v.env_tag != "live" || fast_token != token) {
        std::abort();
      }
      break;
    case keygate::internal::CanonicalMatch::kBadChecksum:
      if (e != keygate::TokenError::kChecksum) std::abort();
      break;
    case keygate::internal::CanonicalMatch::kOther:
      break;
  }
  return 0;
}
