// Private base62 tables shared by token.cc and key-id generation.
#ifndef KEYGATE_SRC_INTERNAL_BASE62_H_
#define KEYGATE_SRC_INTERNAL_BASE62_H_

#include <array>
#include <cstdint>

namespace keygate::internal {

inline constexpr char kBase62Alphabet[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

constexpr std::array<std::int8_t, 256> MakeBase62Digits() {
  std::array<std::int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 62; ++i) t[static_cast<unsigned char>(kBase62Alphabet[i])] = static_cast<std::int8_t>(i);
  return t;
}

// Digit value of a base62 character, or -1.
inline constexpr std::array<std::int8_t, 256> kBase62Digit = MakeBase62Digits();

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_BASE62_H_
