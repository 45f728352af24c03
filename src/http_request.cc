// The framework-agnostic request check (http_request.h).

#include "keygate/http_request.h"

#include <array>
#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "internal/ip_address.h"
#include "internal/percent.h"
#include "keygate/token.h"

namespace keygate {
namespace {

// Parameter names longer than this (after decoding) are not compared: no
// credential parameter is that long, and a fixed buffer keeps the scan
// allocation-free.
constexpr std::size_t kMaxDecodedName = 128;

inline char Lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// Percent-decodes a query component ('+' is a space, as in
// application/x-www-form-urlencoded). A '%' not followed by two hex digits is
// kept as it is, as browsers and most servers do. Returns false when the
// result does not fit in `out`.
bool DecodeComponent(std::string_view in, std::array<char, kMaxDecodedName>* out,
                     std::size_t* size) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (n == out->size()) return false;
    char c = in[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && i + 2 < in.size()) {
      const int hi = internal::HexDigitValue(in[i + 1]);
      const int lo = internal::HexDigitValue(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        c = static_cast<char>((hi << 4) | lo);
        i += 2;
      }
    }
    (*out)[n++] = c;
  }
  *size = n;
  return true;
}

Verdict MakeVerdict(Outcome outcome) {
  Verdict v;
  v.outcome = outcome;
  return v;
}

// Entries longer than this are never quoted in an error message: shorter
// than any token, with room for the longest IPv6 block written out
// ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128", 49 characters).
constexpr std::size_t kMaxQuotedEntry = 50;
static_assert(kMaxQuotedEntry < kMinTokenLength);

// "::ffff:" is the first 96 bits of an IPv4-mapped IPv6 address: a mapped
// block's prefix length counts them.
constexpr int kMappedPrefixBits = 96;

// Whether a rejected `allowed` entry may be quoted in the error message: only
// text made of the characters of addresses and blocks, and shorter than any
// token. A misplaced option may hold anything (a pasted token, control
// characters); such an entry is named by its index only.
bool IsQuotableAddressEntry(std::string_view text) noexcept {
  if (text.empty() || text.size() > kMaxQuotedEntry) return false;
  for (const char c : text) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                    c == '.' || c == ':' || c == '/' || c == '%' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

bool PrefixMatches(const unsigned char* a, const unsigned char* b, int bits) noexcept {
  const int whole = bits / 8;
  if (std::memcmp(a, b, static_cast<std::size_t>(whole)) != 0) return false;
  const int rest = bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<unsigned char>(0xFF << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

}  // namespace

Principal PrincipalFromRecord(const KeyRecord& record) {
  Principal p;
  p.key_id = record.id;
  p.key_name = record.name;
  p.owner = record.owner;
  p.environment = record.environment;
  p.scopes = record.scopes;
  p.accounts = record.accounts;
  p.metadata = record.metadata;
  return p;
}

PrincipalLookup LookupPrincipalInStore(std::shared_ptr<KeyStore> store) {
  return [store = std::move(store)](std::string_view key_id) -> absl::StatusOr<Principal> {
    if (!store) return absl::FailedPreconditionError("principal lookup: no store");
    absl::StatusOr<KeyRecord> record = store->Get(key_id);
    if (!record.ok()) return record.status();
    return PrincipalFromRecord(*record);
  };
}

absl::StatusOr<std::shared_ptr<const AddressFilter>> AddressFilter::Create(
    absl::Span<const std::string> allowed) {
  std::shared_ptr<AddressFilter> filter(new AddressFilter());
  for (std::size_t i = 0; i < allowed.size(); ++i) {
    const std::string_view text = allowed[i];
    // "allowed[i]: '<entry>' is <what>", or "allowed[i]: <what>" when the
    // entry may be anything but an address (see IsQuotableAddressEntry).
    auto error_because = [&](std::string_view what) {
      const absl::string_view w(what.data(), what.size());
      if (!IsQuotableAddressEntry(text)) {
        return absl::InvalidArgumentError(absl::StrCat("allowed[", i, "]: ", w));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("allowed[", i, "]: '", std::string(text), "' is ", w));
    };
    auto error = [&] { return error_because("not an IP address or CIDR block"); };
    std::string_view address = text;
    int bits = -1;
    if (const std::size_t slash = text.find('/'); slash != std::string_view::npos) {
      address = text.substr(0, slash);
      const std::string_view len = text.substr(slash + 1);
      if (len.empty() || len.size() > 3) return error();
      bits = 0;
      for (char c : len) {
        if (c < '0' || c > '9') return error();
        bits = bits * 10 + (c - '0');
      }
    }
    internal::ClientAddress parsed;
    if (!internal::ParseClientAddress(address, &parsed)) return error();
    Block block;
    block.v6 = parsed.v6;
    std::memcpy(block.bytes, parsed.bytes.data(), sizeof(block.bytes));
    if (parsed.mapped && bits >= 0) {
      // An IPv6 prefix length: "::ffff:10.0.0.0/104" is 10.0.0.0/8. Below
      // /96 the block would take in IPv6 space besides all of IPv4, which an
      // allow-list should not do by accident: refused, saying so.
      if (bits > 128) return error();
      if (bits < kMappedPrefixBits) {
        return error_because(
            "an IPv4-mapped IPv6 block with a prefix shorter than /96; write it as an IPv4 "
            "block (a.b.c.d/n)");
      }
      bits -= kMappedPrefixBits;
    }
    const int max_bits = block.v6 ? 128 : 32;
    if (bits < 0) bits = max_bits;
    if (bits > max_bits) return error();
    block.prefix_bits = bits;
    filter->blocks_.push_back(block);
  }
  return std::shared_ptr<const AddressFilter>(std::move(filter));
}

bool AddressFilter::Allows(std::string_view address) const noexcept {
  internal::ClientAddress parsed;
  if (!internal::ParseClientAddress(address, &parsed)) return false;
  for (const Block& b : blocks_) {
    if (b.v6 == parsed.v6 && PrefixMatches(b.bytes, parsed.bytes.data(), b.prefix_bits)) {
      return true;
    }
  }
  return false;
}

bool IsCredentialParameter(std::string_view name,
                           absl::Span<const std::string> credential_names) noexcept {
  for (const std::string& c : credential_names) {
    if (EqualsIgnoreCase(name, c)) return true;
  }
  return false;
}

bool QueryCarriesCredential(std::string_view raw_query,
                            absl::Span<const std::string> credential_names) noexcept {
  std::size_t pos = 0;
  while (pos <= raw_query.size()) {
    std::size_t end = raw_query.find_first_of("&;", pos);
    if (end == std::string_view::npos) end = raw_query.size();
    std::string_view param = raw_query.substr(pos, end - pos);
    const std::string_view raw_name = param.substr(0, param.find('='));
    std::array<char, kMaxDecodedName> decoded;
    std::size_t size = 0;
    if (!raw_name.empty() && DecodeComponent(raw_name, &decoded, &size) &&
        IsCredentialParameter(std::string_view(decoded.data(), size), credential_names)) {
      return true;
    }
    pos = end + 1;
  }
  return false;
}

std::string_view QueryOfTarget(std::string_view target) noexcept {
  const std::size_t q = target.find('?');
  if (q == std::string_view::npos) return {};
  const std::string_view query = target.substr(q + 1);
  return query.substr(0, query.find('#'));
}

absl::StatusOr<std::unique_ptr<HttpAuthenticator>> HttpAuthenticator::Create(Options options) {
  if (!options.verifier) return absl::InvalidArgumentError("verifier: must not be null");
  if (absl::Status s = ValidateHttpOptions(options.http); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("http.", s.message()));
  }
  for (std::size_t i = 0; i < options.credential_query_parameters.size(); ++i) {
    if (options.credential_query_parameters[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("credential_query_parameters[", i, "]: must not be empty"));
    }
  }
  if (!options.clock) {
    // SystemClock::Get() is process-wide and never destroyed.
    options.clock = std::shared_ptr<const Clock>(&SystemClock::Get(), [](const Clock*) {});
  }
  return std::unique_ptr<HttpAuthenticator>(new HttpAuthenticator(std::move(options)));
}

HttpAuthenticator::HttpAuthenticator(Options options) : options_(std::move(options)) {}

HttpAuthResult HttpAuthenticator::Check(const HttpRequestFacts& request,
                                        const Requirement& requirement,
                                        Attribution attribution) const {
  HttpAuthResult result;
  result.verdict = [&]() -> Verdict {
    // 1. Never look at credentials that crossed the network in clear text.
    if (options_.require_tls && !request.tls) return MakeVerdict(Outcome::kInsecureTransport);
    // 2. The client address.
    if (options_.address_filter && !options_.address_filter->Allows(request.client_address)) {
      return MakeVerdict(Outcome::kDeniedByIp);
    }
    // 3. Exactly one way of sending credentials.
    if (request.authorization.size() > 1) return MakeVerdict(Outcome::kInvalidRequest);
    for (std::string_view name : request.query_parameter_names) {
      if (IsCredentialParameter(name, options_.credential_query_parameters)) {
        return MakeVerdict(Outcome::kInvalidRequest);
      }
    }
    if (QueryCarriesCredential(request.raw_query, options_.credential_query_parameters)) {
      return MakeVerdict(Outcome::kInvalidRequest);
    }
    // 4. The verifier (never null: Create checks). Anything unexpected fails closed.
    const std::string_view authorization =
        request.authorization.empty() ? std::string_view() : request.authorization.front();
    try {
      return options_.verifier->Verify(authorization, requirement, options_.clock->Now());
    } catch (...) {
      return MakeVerdict(Outcome::kUnavailable);
    }
  }();

  // 5. Attribution, only for requests that are otherwise allowed.
  if (result.verdict.ok() && attribution == Attribution::kLookup) {
    absl::StatusOr<Principal> principal = absl::UnavailableError("principal lookup: not set");
    if (options_.principal_lookup) {
      try {
        principal = options_.principal_lookup(result.verdict.key());
      } catch (...) {
        principal = absl::UnavailableError("principal lookup: threw");
      }
    }
    if (principal.ok() && principal->key_id == result.verdict.key()) {
      result.principal = std::move(*principal);
    } else if (principal.status().code() == absl::StatusCode::kNotFound) {
      // Deleted between the verification and the lookup: the key no longer
      // exists, so the request is answered as any unknown key would be.
      result.verdict.outcome = Outcome::kUnknown;
    } else {
      // A lookup that cannot attribute the request (or returns another
      // key's record) must not let it through unattributed.
      result.verdict.outcome = Outcome::kUnavailable;
    }
  }

  result.decision = DecideHttp(result.verdict, requirement, options_.http);
  return result;
}

}  // namespace keygate
