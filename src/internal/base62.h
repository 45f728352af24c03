// Private base62 tables and codecs shared by token.cc and key-id generation.
#ifndef KEYGATE_SRC_INTERNAL_BASE62_H_
#define KEYGATE_SRC_INTERNAL_BASE62_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace keygate::internal {

inline constexpr char kBase62Alphabet[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

inline constexpr std::uint8_t kNotBase62 = 0xFF;

constexpr std::array<std::uint8_t, 256> MakeBase62Digits() {
  std::array<std::uint8_t, 256> t{};
  for (auto& v : t) v = kNotBase62;
  for (int i = 0; i < 62; ++i) {
    t[static_cast<unsigned char>(kBase62Alphabet[i])] = static_cast<std::uint8_t>(i);
  }
  return t;
}

// Digit value of a base62 character, or kNotBase62 (its top bit set).
inline constexpr std::array<std::uint8_t, 256> kBase62Digit = MakeBase62Digits();

// Fixed-width base62 (0-9A-Za-z, most significant first, zero padded); a value of 62^width or
// more keeps its low `width` digits (value mod 62^width): size `width` for the range.
std::string Base62EncodeFixed(std::uint64_t value, std::size_t width);
// Decodes base62; false on a non-base62 character or overflow of 64 bits.
bool Base62Decode(std::string_view digits, std::uint64_t* value) noexcept;

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_BASE62_H_
