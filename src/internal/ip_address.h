// IP address text and classification (private), one copy for the two places
// that read addresses: the webhook URL check in key request validation and
// AddressFilter (http_request.cc).

#ifndef KEYGATE_SRC_INTERNAL_IP_ADDRESS_H_
#define KEYGATE_SRC_INTERNAL_IP_ADDRESS_H_

#include <array>
#include <cstdint>
#include <string_view>

namespace keygate::internal {

using Ipv4Bytes = std::array<std::uint8_t, 4>;
using Ipv6Bytes = std::array<std::uint8_t, 16>;

// A strict dotted quad of decimal numbers ("10.0.0.1"; not "127.1",
// "0x7f.0.0.1" or "2130706433"), in network byte order. False for anything
// else, including text holding a NUL byte.
bool ParseIpv4(std::string_view text, Ipv4Bytes* out) noexcept;

// An IPv6 address as RFC 4291 writes it, with no brackets and no zone.
// False for anything else, including text holding a NUL byte.
bool ParseIpv6(std::string_view text, Ipv6Bytes* out) noexcept;

// An address as a client address or an allow-list entry gives it: IPv4, or
// IPv6 optionally in brackets and optionally with a zone ("%eth0", dropped).
struct ClientAddress {
  // IPv4 and IPv4-mapped IPv6 (::ffff:a.b.c.d) come back as IPv4, in the
  // first four bytes (the rest zero); `mapped` tells the second from the first.
  Ipv6Bytes bytes{};
  bool v6 = false;
  bool mapped = false;
};
bool ParseClientAddress(std::string_view text, ClientAddress* out) noexcept;

// Whether an IPv4 address (host byte order) is one a webhook must not reach
// by default: "this network", private (RFC 1918), shared (RFC 6598),
// loopback, link-local (cloud metadata services live at 169.254.169.254),
// IETF protocol assignments, benchmarking, multicast, reserved, broadcast.
bool IsInternalIpv4(std::uint32_t address) noexcept;
bool IsInternalIpv4(const Ipv4Bytes& address) noexcept;

// The same for IPv6: unspecified, loopback, IPv4-mapped/-compatible and
// NAT64 (judged by the IPv4 address they carry), unique local (fc00::/7),
// link-local and site-local (fe80::/10, fec0::/10), multicast.
bool IsInternalIpv6(const Ipv6Bytes& address) noexcept;

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_IP_ADDRESS_H_
