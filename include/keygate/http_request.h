// keygate/http_request.h: protecting an HTTP endpoint, independent of the
// server framework.
//
// An `HttpAuthenticator` takes what every HTTP server knows about a request
// (all of its Authorization header values, its query parameter names, whether
// it came over TLS, the client's address) and the route's `Requirement`, and
// returns the verdict together with the complete response decision of
// http.h: status, WWW-Authenticate / Retry-After / RateLimit headers, and the
// JSON error body. Framework adapters (keygate/adapters/beast.h,
// keygate/adapters/httplib.h) are thin layers over it.
//
// Checks, in order (the first that fails decides):
//   1. plain HTTP (`tls` false while `require_tls`) -> kInsecureTransport:
//      403; credentials are never looked at, so a key sent in clear text is
//      never confirmed as valid to an eavesdropper;
//   2. client address outside the `address_filter` -> kDeniedByIp: 403;
//   3. two or more Authorization headers, or a credential in the query string
//      (`access_token`, `api_key`, ...) -> kInvalidRequest: 400
//      invalid_request (RFC 6750 2: one method per request; keys in URLs end
//      up in logs);
//   4. the verifier (any `RequestVerifier`: the hot-path `Verifier`, the
//      `ReferenceVerifier`, or your own).
//   5. optionally (Attribution::kLookup), the key's owner, accounts and
//      metadata for the application's audit log.
// A verifier or lookup that throws, or a failing lookup, fails closed: 503.
//
// Example:
//
//   auto verifier = keygate::Verifier::Create(std::move(verifier_options));
//   keygate::HttpAuthenticator auth(keygate::AdaptVerifier(std::move(*verifier)));
//   const keygate::Requirement kRead = *registry.Require({"read:all"});  // checked at set-up
//
//   std::string_view authorization[] = {header_value};   // all of them
//   keygate::HttpRequestFacts facts;
//   facts.authorization = authorization;
//   facts.raw_query = query;                              // or query_parameter_names
//   facts.tls = connection_is_tls;
//   facts.client_address = peer_ip;
//   keygate::HttpAuthResult r = auth.Check(facts, kRead);
//   if (!r.allowed()) return Send(r.decision.status, r.decision.headers, r.decision.body);
//   Log(r.verdict.key());                                 // never the token
//
// Thread safety: `HttpAuthenticator` is immutable after construction and
// thread-safe if its verifier and lookup are. Cost: the verifier's, plus a
// scan of the query string; an allowed request allocates only for the
// RateLimit headers (when a limit applies) and, with Attribution::kLookup,
// the lookup's result.

#ifndef KEYGATE_HTTP_REQUEST_H_
#define KEYGATE_HTTP_REQUEST_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "keygate/clock.h"
#include "keygate/http.h"
#include "keygate/key.h"
#include "keygate/key_store.h"
#include "keygate/scope.h"
#include "keygate/verdict.h"

namespace keygate {

// Verifies one Authorization header value. Implementations must be
// thread-safe. `ReferenceVerifier` and `Verifier` fit through
// `AdaptVerifier`; implement it directly to plug in anything else.
class RequestVerifier {
 public:
  virtual ~RequestVerifier() = default;
  virtual Verdict Verify(std::string_view authorization, const Requirement& requirement,
                         absl::Time now) const = 0;
};

// Adapts any `V` with `Verdict Verify(std::string_view, const Requirement&,
// absl::Time) const` to RequestVerifier, sharing ownership of it.
template <typename V>
class VerifierAdapter final : public RequestVerifier {
 public:
  explicit VerifierAdapter(std::shared_ptr<V> verifier) : verifier_(std::move(verifier)) {}
  Verdict Verify(std::string_view authorization, const Requirement& requirement,
                 absl::Time now) const override {
    return verifier_->Verify(authorization, requirement, now);
  }

 private:
  std::shared_ptr<V> verifier_;
};

template <typename V>
std::shared_ptr<const RequestVerifier> AdaptVerifier(std::shared_ptr<V> verifier) {
  return std::make_shared<VerifierAdapter<V>>(std::move(verifier));
}
template <typename V>
std::shared_ptr<const RequestVerifier> AdaptVerifier(std::unique_ptr<V> verifier) {
  return AdaptVerifier(std::shared_ptr<V>(std::move(verifier)));
}

// Who an authenticated request acts for, for the application's audit log:
// actions are attributed to the key's owner. Never holds a secret.
struct Principal {
  std::string key_id;
  std::string key_name;
  std::string owner;
  std::string environment;
  std::vector<std::string> scopes;
  std::vector<std::string> accounts;
  std::map<std::string, std::string> metadata;
};

Principal PrincipalFromRecord(const KeyRecord& record);

// Fetches the principal of a verified key id. Must be thread-safe. Errors:
// kNotFound (the key vanished since it was verified: the request is answered
// as an invalid token), anything else (answered 503).
using PrincipalLookup = std::function<absl::StatusOr<Principal>(std::string_view key_id)>;

// A lookup that reads the key from `store` on every call (one indexed read;
// fine for write routes and admin tools, too slow for a hot read route).
PrincipalLookup LookupPrincipalInStore(std::shared_ptr<KeyStore> store);

// Client addresses allowed to use the API (IPv4/IPv6 CIDR blocks).
//
// Thread safety: immutable and thread-safe. Cost: a parse of the address and
// a compare per block; no allocation.
class AddressFilter {
 public:
  // `allowed`: blocks like "10.0.0.0/8", "2001:db8::/32", or single
  // addresses ("127.0.0.1", "::1"). An IPv4 client matches in either
  // notation: "10.1.2.3" and its IPv4-mapped IPv6 form "::ffff:10.1.2.3"
  // (what a dual-stack socket reports) are one address.
  // IPv4-mapped IPv6 blocks are the IPv4 blocks they cover, their prefix
  // length counting the 96 bits of "::ffff:": "::ffff:10.0.0.0/104" is
  // "10.0.0.0/8", "::ffff:0.0.0.0/96" all of IPv4. A mapped block with a
  // prefix shorter than /96 would also take in IPv6 space outside the
  // mapped range, and is refused (write the IPv4 block, and an IPv6 block if
  // that was meant too). Other IPv6 blocks ("::/0" included) match IPv6
  // clients only.
  // Errors: kInvalidArgument "allowed[i]: '<block>' is not an IP address or
  // CIDR block", or "allowed[i]: '<block>' is an IPv4-mapped IPv6 block with
  // a prefix shorter than /96; write it as an IPv4 block (a.b.c.d/n)"; the
  // entry is quoted only if it is made of address characters
  // ([0-9a-fA-F.:/%[]]) and at most 50 of them (shorter than any token),
  // else it is left out ("allowed[i]: not an IP address or CIDR block"): a
  // misplaced option may hold anything, a token included.
  static absl::StatusOr<std::shared_ptr<const AddressFilter>> Create(
      absl::Span<const std::string> allowed);

  // False for an address that does not parse.
  bool Allows(std::string_view address) const noexcept;

 private:
  struct Block {
    bool v6 = false;
    unsigned char bytes[16] = {};
    int prefix_bits = 0;
  };
  AddressFilter() = default;
  std::vector<Block> blocks_;
};

struct HttpAuthOptions {
  // realm, rate-limit policy name, Retry-After of 503s.
  HttpOptions http;
  // Reject plain HTTP (kInsecureTransport). Behind a TLS-terminating proxy,
  // set `HttpRequestFacts::tls` from the proxy's header only when the request
  // really came from that proxy.
  bool require_tls = true;
  // Query parameters that carry a credential; their presence (with any value)
  // is a 400. Matched after percent-decoding, ASCII case-insensitively.
  std::vector<std::string> credential_query_parameters = {"access_token", "api_key"};
  // nullptr: every address is allowed.
  std::shared_ptr<const AddressFilter> address_filter;
  // Used by Attribution::kLookup. Empty: kLookup fails closed (503).
  PrincipalLookup principal_lookup;
  // nullptr: SystemClock.
  std::shared_ptr<const Clock> clock;
};

// What a request tells about its credentials. Views must outlive the Check
// call.
struct HttpRequestFacts {
  // Every Authorization header field value, in the order received (an
  // adapter may stop collecting at two: two or more is always a 400).
  absl::Span<const std::string_view> authorization;
  // Query parameter names, percent-decoded, for frameworks that parse them.
  absl::Span<const std::string_view> query_parameter_names;
  // The raw query (after '?', without a fragment, not decoded), for
  // frameworks that give the request target (QueryOfTarget). Both may be set.
  std::string_view raw_query;
  // The request arrived over TLS.
  bool tls = false;
  // The client's IP address as text ("127.0.0.1", "::1").
  std::string_view client_address;
};

enum class Attribution : std::uint8_t {
  kKeyIdOnly = 0,  // the verdict's key id is enough (no extra work)
  kLookup,         // also fetch the Principal through options.principal_lookup
};

struct HttpAuthResult {
  // What the verifier (or a pre-check) decided. `verdict.key()` is the key
  // id to log; log `OutcomeName(verdict.outcome)` for the precise reason.
  Verdict verdict;
  // The response: when !allowed, send exactly this; when allowed, add its
  // headers (RateLimit) to the application's response.
  HttpDecision decision;
  // Set when allowed with Attribution::kLookup.
  std::optional<Principal> principal;

  bool allowed() const noexcept { return decision.allowed; }
};

// True if `name` (percent-decoded) is one of `credential_names` (ASCII
// case-insensitive).
bool IsCredentialParameter(std::string_view name,
                           absl::Span<const std::string> credential_names) noexcept;
// True if the raw query string names one of `credential_names`. Parameter
// names are percent-decoded ('+' is a space) before comparing.
bool QueryCarriesCredential(std::string_view raw_query,
                            absl::Span<const std::string> credential_names) noexcept;
// The raw query of a request target, for HttpRequestFacts::raw_query: the
// part after the first '?', up to a '#' ("/p?a=1#f" -> "a=1"; "/p" -> "").
// The adapters all use it, so that every framework decides on the same text.
std::string_view QueryOfTarget(std::string_view target) noexcept;

class HttpAuthenticator {
 public:
  // `verifier` must not be null (a null verifier makes every check answer
  // 503, fail closed).
  explicit HttpAuthenticator(std::shared_ptr<const RequestVerifier> verifier);
  HttpAuthenticator(std::shared_ptr<const RequestVerifier> verifier, HttpAuthOptions options);

  // Runs the checks of the file comment against `requirement`.
  HttpAuthResult Check(const HttpRequestFacts& request, const Requirement& requirement,
                       Attribution attribution = Attribution::kKeyIdOnly) const;

  const HttpAuthOptions& options() const noexcept { return options_; }

 private:
  std::shared_ptr<const RequestVerifier> verifier_;
  HttpAuthOptions options_;
};

}  // namespace keygate

#endif  // KEYGATE_HTTP_REQUEST_H_
