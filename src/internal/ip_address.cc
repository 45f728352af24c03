// IP address text and classification (ip_address.h).

#include "internal/ip_address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace keygate::internal {
namespace {

// inet_pton reads a C string: copies `text` into `buf` with its NUL. A NUL
// inside `text` would end the address early and the rest would be ignored
// ("::<NUL>anything" read as "::"), so such text is refused.
bool ToCString(std::string_view text, std::array<char, INET6_ADDRSTRLEN + 1>* buf) noexcept {
  if (text.empty() || text.size() >= buf->size()) return false;
  if (text.find('\0') != std::string_view::npos) return false;
  std::memcpy(buf->data(), text.data(), text.size());
  (*buf)[text.size()] = '\0';
  return true;
}

std::uint32_t V4At(const Ipv6Bytes& b, std::size_t i) noexcept {
  return (std::uint32_t{b[i]} << 24) | (std::uint32_t{b[i + 1]} << 16) |
         (std::uint32_t{b[i + 2]} << 8) | std::uint32_t{b[i + 3]};
}

}  // namespace

bool ParseIpv4(std::string_view text, Ipv4Bytes* out) noexcept {
  std::array<char, INET6_ADDRSTRLEN + 1> buf{};
  if (!ToCString(text, &buf)) return false;
  return inet_pton(AF_INET, buf.data(), out->data()) == 1;
}

bool ParseIpv6(std::string_view text, Ipv6Bytes* out) noexcept {
  std::array<char, INET6_ADDRSTRLEN + 1> buf{};
  if (!ToCString(text, &buf)) return false;
  return inet_pton(AF_INET6, buf.data(), out->data()) == 1;
}

bool ParseClientAddress(std::string_view text, ClientAddress* out) noexcept {
  *out = ClientAddress();
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  if (const std::size_t zone = text.find('%'); zone != std::string_view::npos) {
    text = text.substr(0, zone);
  }
  Ipv4Bytes v4{};
  if (ParseIpv4(text, &v4)) {
    std::copy(v4.begin(), v4.end(), out->bytes.begin());
    return true;
  }
  Ipv6Bytes raw{};
  if (!ParseIpv6(text, &raw)) return false;
  static constexpr std::array<std::uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0,    0,
                                                                 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), raw.begin())) {
    std::copy(raw.begin() + 12, raw.end(), out->bytes.begin());
    out->mapped = true;
    return true;
  }
  out->bytes = raw;
  out->v6 = true;
  return true;
}

bool IsInternalIpv4(std::uint32_t address) noexcept {
  auto in = [address](std::uint32_t net, int bits) {
    return (address >> (32 - bits)) == (net >> (32 - bits));
  };
  return in(0x00000000, 8) || in(0x0a000000, 8) || in(0x64400000, 10) || in(0x7f000000, 8) ||
         in(0xa9fe0000, 16) || in(0xac100000, 12) || in(0xc0000000, 24) || in(0xc0a80000, 16) ||
         in(0xc6120000, 15) || in(0xe0000000, 4) || in(0xf0000000, 4);
}

bool IsInternalIpv4(const Ipv4Bytes& address) noexcept {
  return IsInternalIpv4((std::uint32_t{address[0]} << 24) | (std::uint32_t{address[1]} << 16) |
                        (std::uint32_t{address[2]} << 8) | std::uint32_t{address[3]});
}

bool IsInternalIpv6(const Ipv6Bytes& b) noexcept {
  const auto all_zero = [&b](std::size_t n) {
    return std::all_of(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n),
                       [](std::uint8_t x) { return x == 0; });
  };
  const bool zero10 = all_zero(10);
  if (zero10 && b[10] == 0 && b[11] == 0) return true;  // ::/96: ::, ::1, IPv4-compatible
  if (zero10 && b[10] == 0xff && b[11] == 0xff) return IsInternalIpv4(V4At(b, 12));
  static constexpr std::array<std::uint8_t, 12> kNat64 = {0x00, 0x64, 0xff, 0x9b};
  if (std::equal(kNat64.begin(), kNat64.end(), b.begin())) return IsInternalIpv4(V4At(b, 12));
  // ::ffff:0:a.b.c.d, the IPv4-translated form (RFC 2765).
  if (all_zero(8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0) {
    return IsInternalIpv4(V4At(b, 12));
  }
  // 64:ff9b:1::/48, the local-use NAT64 prefix (RFC 8215): local by definition.
  static constexpr std::array<std::uint8_t, 6> kLocalNat64 = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
  if (std::equal(kLocalNat64.begin(), kLocalNat64.end(), b.begin())) return true;
  return (b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0x80) == 0x80) || b[0] == 0xff;
}

}  // namespace keygate::internal
