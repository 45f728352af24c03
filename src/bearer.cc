#include "keygate/bearer.h"

#include "internal/charclass.h"

namespace keygate {
namespace {

inline bool IsOws(char c) noexcept { return c == ' ' || c == '\t'; }

inline bool IsB64Char(char c) noexcept { return internal::HasClass(c, internal::kClassB64); }

inline char Lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

// RFC 9110 5.6.2 tchar: what an auth-scheme is made of.
bool IsTokenChar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  for (char t : std::string_view("!#$%&'*+-.^_`|~")) {
    if (c == t) return true;
  }
  return false;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

}  // namespace

bool IsB64Token(std::string_view s) noexcept {
  // 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=". The loop
  // exits once, at the end, so its branch is predictable.
  std::size_t i = 0;
  while (i < s.size() && IsB64Char(s[i])) ++i;
  if (i == 0) return false;
  while (i < s.size() && s[i] == '=') ++i;
  return i == s.size();
}

BearerParse ParseBearer(std::string_view header, std::string_view* token) noexcept {
  if (header.size() > kMaxAuthorizationLength) return BearerParse::kMalformed;
  std::size_t b = 0;
  std::size_t e = header.size();
  while (b < e && IsOws(header[b])) ++b;
  while (e > b && IsOws(header[e - 1])) --e;
  if (b == e) return BearerParse::kMissing;
  const std::string_view v = header.substr(b, e - b);

  std::size_t sp = 0;
  while (sp < v.size() && v[sp] != ' ') ++sp;
  const std::string_view scheme = v.substr(0, sp);
  if (!EqualsIgnoreCase(scheme, "Bearer")) {
    // Another scheme (Basic, Digest, a bare token) is a request without
    // Bearer credentials; anything that is not a scheme at all is malformed.
    for (char c : scheme) {
      if (!IsTokenChar(c)) return BearerParse::kMalformed;
    }
    return BearerParse::kWrongScheme;
  }
  std::size_t t = sp;
  while (t < v.size() && v[t] == ' ') ++t;      // 1*SP
  if (t == sp) return BearerParse::kMalformed;  // "Bearer" alone
  const std::string_view tok = v.substr(t);
  if (!IsB64Token(tok)) return BearerParse::kMalformed;  // also catches a second token
  *token = tok;
  return BearerParse::kOk;
}

}  // namespace keygate
