// CRC-32 as the token checksum uses it (private).
#ifndef KEYGATE_SRC_INTERNAL_CRC32_H_
#define KEYGATE_SRC_INTERNAL_CRC32_H_

#include <cstdint>
#include <string_view>

namespace keygate::internal {

// CRC-32 (IEEE 802.3 reflected polynomial 0xEDB88320, as zlib's crc32).
std::uint32_t Crc32(std::string_view data) noexcept;

// CRC-32 continued from a raw register value: Crc32(s) ==
// ~Crc32Update(0xFFFFFFFF, s), and Crc32Update(Crc32Update(r, a), b) ==
// Crc32Update(r, a + b).
std::uint32_t Crc32Update(std::uint32_t reg, std::string_view data) noexcept;

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_CRC32_H_
