// keygate/http_request.h: protecting an HTTP endpoint, independent of the server framework.
// An `HttpAuthenticator` takes what every server knows about a request (its Authorization
// values, query, TLS, client address) and the route's `Requirement`, and returns the verdict and
// the complete response decision of http.h. The adapters (keygate/adapters/) are thin layers.
//
// Checks, in order (the first that fails decides):
//   1. plain HTTP while `require_tls` -> kInsecureTransport, 403 (credentials never looked at)
//   2. client address outside `address_filter` -> kDeniedByIp, 403
//   3. two or more Authorization headers, or a credential in the query string (`access_token`,
//      `api_key`, ...) -> kInvalidRequest, 400 invalid_request
//   4. the verifier (any `RequestVerifier`: `Verifier`, `ReferenceVerifier`, your own)
//   5. with Attribution::kLookup, the key's owner, accounts and metadata for the audit log
// A verifier or lookup that throws, or a failing lookup, fails closed: 503.
//
// Thread safety: `HttpAuthenticator` is immutable, thread-safe if its verifier and lookup are.
// Cost: the verifier's plus a scan of the query; an allowed request allocates only the RateLimit
// headers (when a limit applies) and the kLookup result.
//
// Example:
//   auto verifier = keygate::Verifier::Create(std::move(verifier_options));
//   auto auth = keygate::HttpAuthenticator::Create(
//       {.verifier = keygate::AdaptVerifier(std::move(*verifier))});  // checked at set-up
//   const keygate::Requirement kRead = *registry.Require({"read:all"});  // checked at set-up
//   std::string_view authorization[] = {header_value};   // all of them
//   keygate::HttpRequestFacts facts;
//   facts.authorization = authorization;
//   facts.raw_query = query;                              // or query_parameter_names
//   facts.tls = connection_is_tls;
//   facts.client_address = peer_ip;
//   keygate::HttpAuthResult r = (*auth)->Check(facts, kRead);
//   if (!r.allowed()) return Send(r.decision.status, r.decision.headers, r.decision.body);
//   Log(r.verdict.key());                                 // never the token

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

// Verifies one Authorization header value; must be thread-safe. `Verifier` and
// `ReferenceVerifier` fit through `AdaptVerifier`.
class RequestVerifier {
 public:
  virtual ~RequestVerifier() = default;
  virtual Verdict Verify(std::string_view authorization, const Requirement& requirement,
                         absl::Time now) const = 0;
};

// Adapts any `V` with `Verdict Verify(std::string_view, const Requirement&, absl::Time) const`
// to RequestVerifier, sharing ownership of it.
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

// Who an authenticated request acts for (the key's owner), for the audit log. No secrets.
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

// Fetches the principal of a verified key id; thread-safe. Errors: kNotFound (the key vanished:
// answered as an invalid token), anything else (answered 503).
using PrincipalLookup = std::function<absl::StatusOr<Principal>(std::string_view key_id)>;

// Reads the key from `store` on every call (one indexed read: too slow for a hot read route).
PrincipalLookup LookupPrincipalInStore(std::shared_ptr<KeyStore> store);

// Client addresses allowed to use the API (IPv4/IPv6 CIDR blocks). Immutable, thread-safe.
// Cost: a parse of the address and a compare per block; no allocation.
class AddressFilter {
 public:
  // `allowed`: blocks ("10.0.0.0/8", "2001:db8::/32") or addresses ("::1"). An IPv4 client
  // matches in either notation ("10.1.2.3" is "::ffff:10.1.2.3"). An IPv4-mapped block is the
  // IPv4 block it covers ("::ffff:10.0.0.0/104" is "10.0.0.0/8"); other IPv6 blocks ("::/0"
  // too) match IPv6 clients only. Errors: kInvalidArgument "allowed[i]: '<block>' is not an IP
  // address or CIDR block", or "... is an IPv4-mapped IPv6 block with a prefix shorter than
  // /96; write it as an IPv4 block (a.b.c.d/n)"; the entry is quoted only if it is at most 50
  // address characters ([0-9a-fA-F.:/%[]]), else left out (it may hold a token).
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const AddressFilter>> Create(
      absl::Span<const std::string> allowed);

  bool Allows(std::string_view address) const noexcept;  // false if it does not parse

 private:
  struct Block {
    bool v6 = false;
    unsigned char bytes[16] = {};
    int prefix_bits = 0;
  };
  AddressFilter() = default;
  std::vector<Block> blocks_;
};

// HttpAuthenticator's options. Every field has an initializer, so designated initializers may
// leave any out.
struct HttpAuthOptions {
  std::shared_ptr<const RequestVerifier> verifier = nullptr;  // required
  HttpOptions http = {};  // realm, rate-limit policy name, Retry-After of 503s
  // Reject plain HTTP (kInsecureTransport). Behind a TLS-terminating proxy, trust its header
  // for `HttpRequestFacts::tls` only when the request really came from that proxy.
  bool require_tls = true;
  // Query parameters whose presence is a 400; matched percent-decoded, ASCII case-insensitive.
  std::vector<std::string> credential_query_parameters = {"access_token", "api_key"};
  std::shared_ptr<const AddressFilter> address_filter = nullptr;  // null: every address allowed
  PrincipalLookup principal_lookup = {};  // for Attribution::kLookup; empty: kLookup answers 503
  std::shared_ptr<const Clock> clock = nullptr;  // null: SystemClock
};

// What a request tells about its credentials. Views must outlive the Check call.
struct HttpRequestFacts {
  // Every Authorization field value, in order (an adapter may stop at two: always a 400).
  absl::Span<const std::string_view> authorization;
  // Percent-decoded query parameter names, for frameworks that parse them.
  absl::Span<const std::string_view> query_parameter_names;
  // The raw, undecoded query (QueryOfTarget), for frameworks giving the target. Both may be set.
  std::string_view raw_query;
  bool tls = false;                 // the request arrived over TLS
  std::string_view client_address;  // the client's IP address as text ("127.0.0.1", "::1")
};

enum class Attribution : std::uint8_t {
  kKeyIdOnly = 0,  // the verdict's key id is enough (no extra work)
  kLookup,         // also fetch the Principal through options.principal_lookup
};

struct HttpAuthResult {
  // The verifier's (or a pre-check's) verdict: log `key()` and `OutcomeName(outcome)`.
  Verdict verdict;
  // When !allowed, send exactly this; when allowed, add its (RateLimit) headers.
  HttpDecision decision;
  std::optional<Principal> principal;  // set when allowed with Attribution::kLookup

  bool allowed() const noexcept { return decision.allowed; }
};

// `name` (percent-decoded) is one of `credential_names`, ASCII case-insensitively.
bool IsCredentialParameter(std::string_view name,
                           absl::Span<const std::string> credential_names) noexcept;
// The raw query names one of `credential_names` (names percent-decoded, '+' as a space).
bool QueryCarriesCredential(std::string_view raw_query,
                            absl::Span<const std::string> credential_names) noexcept;
// The part of a request target after the first '?', up to a '#' ("/p?a=1#f" -> "a=1"; "/p" ->
// ""): HttpRequestFacts::raw_query, as every adapter computes it.
std::string_view QueryOfTarget(std::string_view target) noexcept;

class HttpAuthenticator {
 public:
  using Options = HttpAuthOptions;

  // Errors: kInvalidArgument "verifier: must not be null", "http.<field>: ..." (as
  // ValidateHttpOptions), "credential_query_parameters[i]: must not be empty".
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HttpAuthenticator>> Create(Options options);

  // Runs the checks of the file comment against `requirement`.
  [[nodiscard]] HttpAuthResult Check(const HttpRequestFacts& request,
                                     const Requirement& requirement,
                                     Attribution attribution = Attribution::kKeyIdOnly) const;

  const Options& options() const noexcept { return options_; }

 private:
  explicit HttpAuthenticator(Options options);
  Options options_;
};

}  // namespace keygate

#endif  // KEYGATE_HTTP_REQUEST_H_
