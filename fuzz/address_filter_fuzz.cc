// libFuzzer target: AddressFilter (the IP allow-list: its block parser and
// Allows). Input: lines; all but the last are `allowed` entries, the last is
// a client address to check.
// Invariants:
//   - Create either succeeds or fails with kInvalidArgument naming the first
//     bad entry as documented: "allowed[i]: '<entry>' is ..." only for an
//     entry of address characters of at most 50 bytes, else
//     "allowed[i]: <reason>" (the entry may be a pasted token); the entries
//     before it are a valid list;
//   - every address and every block's own address is allowed by the filter
//     built from it;
//   - an accepted entry, and an allowed client address, hold no NUL byte
//     before the zone ('%', ignored): the address is read as a C string,
//     and what followed a NUL would be silently dropped;
//   - an IPv4 client is one address in its dotted, IPv4-mapped IPv6 and
//     bracketed forms.
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

#include "keygate/http_request.h"

namespace {

bool Quotable(std::string_view s) {
  if (s.empty() || s.size() > 50) return false;
  for (const char c : s) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                    c == '.' || c == ':' || c == '/' || c == '%' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

bool HasNulBeforeZone(std::string_view s) {
  return s.substr(0, s.find('%')).find('\0') != std::string_view::npos;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Checks the message of a refused list; aborts if it is not as documented.
void CheckError(const absl::Status& status, const std::vector<std::string>& entries) {
  if (status.code() != absl::StatusCode::kInvalidArgument) std::abort();
  std::string_view m(status.message().data(), status.message().size());
  if (!StartsWith(m, "allowed[")) std::abort();
  m.remove_prefix(8);
  std::size_t i = 0;
  std::size_t digits = 0;
  while (digits < m.size() && m[digits] >= '0' && m[digits] <= '9') {
    i = i * 10 + static_cast<std::size_t>(m[digits] - '0');
    ++digits;
  }
  if (digits == 0 || i >= entries.size()) std::abort();
  m.remove_prefix(digits);
  if (!StartsWith(m, "]: ")) std::abort();
  m.remove_prefix(3);
  const std::string& entry = entries[i];
  if (Quotable(entry)) {
    const std::string quoted = "'" + entry + "' is ";
    if (!StartsWith(m, quoted)) std::abort();
    m.remove_prefix(quoted.size());
  }
  if (m != "not an IP address or CIDR block" &&
      !StartsWith(m, "an IPv4-mapped IPv6 block with a prefix shorter than /96")) {
    std::abort();
  }
  // The entries before the named one are fine on their own.
  if (!keygate::AddressFilter::Create(absl::MakeConstSpan(entries.data(), i)).ok()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> entries;
  std::size_t start = 0;
  for (std::size_t nl = in.find('\n'); nl != std::string_view::npos; nl = in.find('\n', start)) {
    entries.emplace_back(in.substr(start, nl - start));
    start = nl + 1;
  }
  const std::string probe(in.substr(start));

  auto filter = keygate::AddressFilter::Create(entries);
  if (!filter.ok()) {
    CheckError(filter.status(), entries);
    return 0;
  }
  for (const std::string& e : entries) {
    if (HasNulBeforeZone(e)) std::abort();
    const std::string address = e.substr(0, e.find('/'));
    if (!(*filter)->Allows(address)) std::abort();
  }

  const bool allowed = (*filter)->Allows(probe);
  if (allowed && HasNulBeforeZone(probe)) std::abort();
  unsigned char v4[4];
  if (probe.find('\0') == std::string::npos && inet_pton(AF_INET, probe.c_str(), v4) == 1) {
    if ((*filter)->Allows("::ffff:" + probe) != allowed) std::abort();
    if ((*filter)->Allows("[::ffff:" + probe + "]") != allowed) std::abort();
  }
  if (!probe.empty() && probe.front() != '[' && (*filter)->Allows("[" + probe + "]") != allowed) {
    std::abort();
  }
  return 0;
}
