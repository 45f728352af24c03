// keygate/bearer.h: parsing `Authorization: Bearer <token>` (RFC 6750 2.1, RFC 9110 11.6.2).
// The scheme is case-insensitive; one or more spaces separate it from exactly one b64token
// (1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="); surrounding OWS is ignored;
// nothing else may follow; the value is capped at kMaxAuthorizationLength bytes.
// Thread safety: pure functions. Cost: one pass, no allocation (~10 ns).
//
// Example:
//   std::string_view token;
//   if (keygate::ParseBearer(header_value, &token) == keygate::BearerParse::kOk) { ... }

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
  kWrongScheme,  // another scheme (Basic, a bare token): also 401, no error code (RFC 6750 3.1)
  kMalformed,    // no token, two, bad characters, too long, no valid scheme: 400 invalid_request
};

// Extracts the token from one Authorization header value; on kOk `*token` views `header`.
BearerParse ParseBearer(std::string_view header, std::string_view* token) noexcept;

bool IsB64Token(std::string_view s) noexcept;  // `s` matches b64token

}  // namespace keygate

#endif  // KEYGATE_BEARER_H_
