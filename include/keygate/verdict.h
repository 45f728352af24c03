// keygate/verdict.h: the result of verifying one request.
//
// A `Verdict` is small and trivially copyable: the hot path returns it by
// value without allocating. Outcomes that a client must not be able to tell
// apart (malformed, unknown, revoked, expired, wrong environment) stay
// distinct here for the server's logs and metrics; http.h maps them to one
// and the same 401.
//
// Thread safety: plain value type.

#ifndef KEYGATE_VERDICT_H_
#define KEYGATE_VERDICT_H_

#include <cstdint>
#include <cstring>
#include <ostream>
#include <string_view>
#include <type_traits>

#include "keygate/key.h"

namespace keygate {

enum class Outcome : std::uint8_t {
  kOk = 0,
  kMissing,            // no Bearer credentials: none at all, or another scheme (Basic)
  kInvalidRequest,     // bad Authorization syntax, non-Bearer scheme, two headers,
                       // token in the query string
  kMalformed,          // not a well-formed token of this deployment (no hashing done)
  kUnknown,            // well-formed, but no such key
  kRevoked,            // the key is blocked
  kExpired,            // past the key's expiry, or a rolled secret past its grace
  kWrongEnvironment,   // a key of another environment
  kAccountDenied,      // the key is not linked to the required account
  kInsufficientScope,  // valid key without the required scope
  kRateLimited,        // over the key's rate limit
  kDeniedByIp,         // client address not allowed
  kInsecureTransport,  // plain HTTP
  kUnavailable,        // store/limiter/crypto unavailable: fail closed
};

std::string_view OutcomeName(Outcome outcome) noexcept;  // "ok", "revoked", ...

// Rate-limit state reported with a verdict (all zero when no limit applies).
struct RateLimitStatus {
  std::uint64_t limit = 0;          // requests allowed per window (the policy's rate)
  std::uint64_t remaining = 0;      // requests that could be made right now (<= burst)
  std::int64_t window_ns = 0;       // the policy window (period)
  std::int64_t reset_ns = 0;        // until the limit is fully replenished
  std::int64_t retry_after_ns = 0;  // when denied: until a retry can succeed
  bool applies() const noexcept { return limit != 0; }
};

namespace internal {
struct VerdictAccess;  // not API: keygate's verifiers fill the key id in place
}  // namespace internal

// The decision on one request. `outcome` and `rate` are plain fields; the key id is held inline
// (at most kKeyIdLength bytes), so a Verdict is trivially copyable and never allocates.
class [[nodiscard]] Verdict {
 public:
  Outcome outcome = Outcome::kUnavailable;  // fail closed by default

 private:  // declared here, between the public fields, so that a Verdict stays 72 bytes
  friend struct internal::VerdictAccess;
  std::uint8_t key_size_ = 0;
  char key_[kKeyIdLength] = {};

 public:
  RateLimitStatus rate;

  bool ok() const noexcept { return outcome == Outcome::kOk; }
  // The id of the key, set once the key is identified (even when denied); empty before. A view
  // into this Verdict.
  std::string_view key() const noexcept { return {key_, key_size_}; }
  // Sets the key id; keeps at most kKeyIdLength bytes (the verifiers never report a longer id).
  void set_key(std::string_view id) noexcept {
    key_size_ = static_cast<std::uint8_t>(id.size() < kKeyIdLength ? id.size() : kKeyIdLength);
    if (key_size_ != 0) std::memcpy(key_, id.data(), key_size_);  // an empty id may be null
  }
};

static_assert(std::is_trivially_copyable_v<Verdict>);
static_assert(sizeof(Verdict) <= 72, "a Verdict is returned by value on the hot path");

// "Verdict(revoked, key_...)". Never a token.
std::ostream& operator<<(std::ostream& os, const Verdict& v);
std::ostream& operator<<(std::ostream& os, Outcome outcome);

}  // namespace keygate

#endif  // KEYGATE_VERDICT_H_
