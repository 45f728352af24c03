// Private base62 tables shared by token.cc and key-id generation.
#ifndef KEYGATE_SRC_INTERNAL_BASE62_H_
#define KEYGATE_SRC_INTERNAL_BASE62_H_

#include <array>
#include <cstdint>

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

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_BASE62_H_
