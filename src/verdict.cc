#include "keygate/verdict.h"

#include <ostream>

namespace keygate {

std::string_view OutcomeName(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kMissing:
      return "missing";
    case Outcome::kInvalidRequest:
      return "invalid_request";
    case Outcome::kMalformed:
      return "malformed";
    case Outcome::kUnknown:
      return "unknown";
    case Outcome::kRevoked:
      return "revoked";
    case Outcome::kExpired:
      return "expired";
    case Outcome::kWrongEnvironment:
      return "wrong_environment";
    case Outcome::kAccountDenied:
      return "account_denied";
    case Outcome::kInsufficientScope:
      return "insufficient_scope";
    case Outcome::kRateLimited:
      return "rate_limited";
    case Outcome::kDeniedByIp:
      return "denied_by_ip";
    case Outcome::kInsecureTransport:
      return "insecure_transport";
    case Outcome::kUnavailable:
      return "unavailable";
  }
  return "invalid_outcome";
}

std::ostream& operator<<(std::ostream& os, Outcome outcome) { return os << OutcomeName(outcome); }

std::ostream& operator<<(std::ostream& os, const Verdict& v) {
  os << "Verdict(" << OutcomeName(v.outcome);
  if (!v.key().empty()) os << ", " << v.key();
  return os << ")";
}

}  // namespace keygate
