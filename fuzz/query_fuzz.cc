// libFuzzer target: the query-string pre-check of HttpAuthenticator
// (QueryOfTarget, QueryCarriesCredential, IsCredentialParameter).
// Input: an extra credential parameter name, a newline, a request target.
// Invariants:
//   - QueryOfTarget returns the text between the first '?' and the next '#'
//     of the target, as a view into it;
//   - QueryCarriesCredential agrees with a plain reference decoder
//     (http_request.h: '&' and ';' separate parameters, a name ends at '=',
//     "%XX" and '+' are decoded, names compare ASCII case-insensitively);
//   - a credential name written fully percent-encoded, or in upper case, is
//     still caught;
//   - HttpAuthenticator::Check answers 400 invalid_request exactly when the
//     query carries a credential, before the verifier is asked.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/http_request.h"
#include "keygate/verdict.h"

namespace {

// Must match http_request.cc: longer decoded names are never credentials.
constexpr std::size_t kMaxDecodedName = 128;

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Decode(std::string_view in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out.push_back(' ');
    } else if (in[i] == '%' && in.size() - i >= 3 && Hex(in[i + 1]) >= 0 && Hex(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(Hex(in[i + 1]) * 16 + Hex(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

bool ReferenceCarries(std::string_view query, const std::array<std::string, 3>& names) {
  std::size_t start = 0;
  while (true) {
    std::size_t end = start;
    while (end < query.size() && query[end] != '&' && query[end] != ';') ++end;
    const std::string_view param = query.substr(start, end - start);
    const std::string_view raw_name = param.substr(0, param.find('='));
    const std::string name = Decode(raw_name);
    if (!raw_name.empty() && name.size() <= kMaxDecodedName) {
      for (const std::string& n : names) {
        if (Lower(n) == Lower(name)) return true;
      }
    }
    if (end == query.size()) return false;
    start = end + 1;
  }
}

std::string PercentEncodeAll(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back('%');
    out.push_back(kHex[u >> 4]);
    out.push_back(kHex[u & 0xF]);
  }
  return out;
}

class NeverCalled final : public keygate::RequestVerifier {
 public:
  keygate::Verdict Verify(std::string_view, const keygate::Requirement&,
                          absl::Time) const override {
    keygate::Verdict v;
    v.outcome = keygate::Outcome::kMissing;
    return v;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::size_t nl = in.find('\n');
  const std::string_view extra =
      nl == std::string_view::npos ? std::string_view() : in.substr(0, nl);
  const std::string_view target = nl == std::string_view::npos ? in : in.substr(nl + 1);
  const std::array<std::string, 3> names = {"access_token", "api_key", std::string(extra)};

  const std::string_view query = keygate::QueryOfTarget(target);
  const std::size_t q = target.find('?');
  if (q == std::string_view::npos) {
    if (!query.empty()) std::abort();
  } else {
    const std::size_t hash = target.find('#', q + 1);
    const std::size_t end = hash == std::string_view::npos ? target.size() : hash;
    if (query.data() != target.data() + q + 1 || query.size() != end - q - 1) std::abort();
  }

  const bool carries = keygate::QueryCarriesCredential(query, names);
  if (carries != ReferenceCarries(query, names)) std::abort();

  if (!extra.empty() && extra.size() <= kMaxDecodedName) {
    if (!keygate::IsCredentialParameter(Upper(extra), names)) std::abort();
    const std::string encoded = "a=1&" + PercentEncodeAll(extra) + "=x";
    if (!keygate::QueryCarriesCredential(encoded, names)) std::abort();
  }

  // HttpAuthenticator::Create refuses an empty name: leave it out there.
  keygate::HttpAuthOptions options;
  options.verifier = std::make_shared<NeverCalled>();
  options.credential_query_parameters.assign(names.begin(),
                                             extra.empty() ? names.end() - 1 : names.end());
  const bool auth_carries =
      keygate::QueryCarriesCredential(query, options.credential_query_parameters);
  absl::StatusOr<std::unique_ptr<keygate::HttpAuthenticator>> created =
      keygate::HttpAuthenticator::Create(std::move(options));
  if (!created.ok()) std::abort();
  const keygate::HttpAuthenticator& auth = **created;
  keygate::HttpRequestFacts facts;
  facts.tls = true;
  facts.raw_query = query;
  const keygate::HttpAuthResult r = auth.Check(facts, keygate::Requirement::AnyValidKey());
  const keygate::Outcome expected =
      auth_carries ? keygate::Outcome::kInvalidRequest : keygate::Outcome::kMissing;
  if (r.verdict.outcome != expected || r.allowed()) std::abort();
  return 0;
}
