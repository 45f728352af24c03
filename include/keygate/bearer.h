// keygate/bearer.h: parsing `Authorization: Bearer <token>` (RFC 6750 2.1,
// RFC 9110 11.6.2).
//
// Rules: the scheme is case-insensitive ("bearer", "BEARER"); one or more
// spaces separate it from exactly one b64token (1*( ALPHA / DIGIT / "-" / "."
// / "_" / "~" / "+" / "/" ) *"="); surrounding spaces/tabs (OWS) are ignored;
// nothing else may follow. The header value is capped at
// kMaxAuthorizationLength bytes.
//
// Example:
//
//   std::string_view token;
//   switch (keygate::ParseBearer(header_value, &token)) {
//     case keygate::BearerParse::kOk: ...
//   }
//
// Thread safety: pure functions. Cost: one pass, no allocation (~10 ns).

#ifndef KEYGATE_BEARER_H_
#define KEYGATE_BEARER_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace keygate {

inline constexpr std::size_t kMaxAuthorizationLength = 1024;

enum class BearerParse : std::uint8_t {
  kOk = 0,
  kMissing,      // empty (or only whitespace): no credentials -> 401, no error code
  kWrongScheme,  // another auth-scheme (Basic, Digest, a bare token): no Bearer
                 // credentials, so also 401 with no error code (RFC 6750 3.1:
                 // "attempted using an unsupported authentication method")
  kMalformed,    // Bearer with no token, two tokens, bad characters, too long,
                 // or no valid scheme at all -> 400 invalid_request
};

// Extracts the token from one Authorization header value. On kOk, `*token`
// views into `header`.
BearerParse ParseBearer(std::string_view header, std::string_view* token) noexcept;

// True if `s` matches b64token.
bool IsB64Token(std::string_view s) noexcept;

}  // namespace keygate

#endif  // KEYGATE_BEARER_H_
