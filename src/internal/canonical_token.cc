#include "internal/canonical_token.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <cstring>

#include "internal/base62.h"

namespace keygate::internal {
namespace {

constexpr std::size_t kBody = kSecretChars + kCheckChars;  // 49
constexpr std::size_t kSchemeLen = 7;                      // "Bearer "

// True if all kBody bytes at `p` are base62 characters.
inline bool AllBase62(const char* p) noexcept {
#if defined(__SSE2__)
  // Signed byte compares: bytes >= 0x80 are negative and fall outside every
  // range. OR-ing 0x20 maps exactly 'A'-'Z' and 'a'-'z' (and nothing else)
  // onto 'a'-'z'.
  const auto classify = [](const char* q) noexcept {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                        _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
    const __m128i folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
    const __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(folded, _mm_set1_epi8('a' - 1)),
                                         _mm_cmplt_epi8(folded, _mm_set1_epi8('z' + 1)));
    return _mm_or_si128(digit, letter);
  };
  // Four overlapping 16-byte loads cover the 49 bytes without reading past
  // them.
  const __m128i all = _mm_and_si128(_mm_and_si128(classify(p), classify(p + 16)),
                                    _mm_and_si128(classify(p + 32), classify(p + kBody - 16)));
  return _mm_movemask_epi8(all) == 0xFFFF;
#else
  unsigned bad = 0;
  for (std::size_t i = 0; i < kBody; ++i) bad |= kBase62Digit[static_cast<unsigned char>(p[i])];
  return (bad & 0x80u) == 0;
#endif
}

// The six checksum characters, known to be base62: at most 62^6 < 2^36.
inline std::uint64_t CheckValue(const char* p) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < kCheckChars; ++i) {
    v = v * 62 + kBase62Digit[static_cast<unsigned char>(p[i])];
  }
  return v;
}

}  // namespace

CanonicalToken::CanonicalToken(std::string_view prefix, std::string_view env_tag) noexcept {
  // Anything else never matches (head_len_ stays 0).
  if (!IsValidPrefix(prefix) || !IsValidEnvTag(env_tag)) return;
  std::memcpy(head_, prefix.data(), prefix.size());
  head_[prefix.size()] = '_';
  std::memcpy(head_ + prefix.size() + 1, env_tag.data(), env_tag.size());
  head_len_ = prefix.size() + env_tag.size() + 2;
  head_[head_len_ - 1] = '_';
  for (std::size_t i = 0; i < head_len_; ++i) head_mask_[i] = 0xFF;
  static_assert(kMinPrefixLength + kMinEnvTagLength + 2 >= kCrcOverlap);
  head_crc_ = Crc32Update(
      0xFFFFFFFFu, std::string_view(reinterpret_cast<const char*>(head_), head_len_ - kCrcOverlap));
}

bool CanonicalToken::HeadMatches(const char* p) const noexcept {
#if defined(__SSE2__)
  const auto differs = [&](std::size_t at) noexcept {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
    const __m128i h = _mm_load_si128(reinterpret_cast<const __m128i*>(head_ + at));
    const __m128i m = _mm_load_si128(reinterpret_cast<const __m128i*>(head_mask_ + at));
    return _mm_and_si128(_mm_xor_si128(v, h), m);
  };
  const __m128i d = _mm_or_si128(differs(0), differs(16));
  return _mm_movemask_epi8(_mm_cmpeq_epi8(d, _mm_setzero_si128())) == 0xFFFF;
#else
  unsigned char d = 0;
  for (std::size_t i = 0; i < sizeof head_; ++i) {
    d |= static_cast<unsigned char>((static_cast<unsigned char>(p[i]) ^ head_[i]) & head_mask_[i]);
  }
  return d == 0;
#endif
}

CanonicalMatch CanonicalToken::MatchToken(std::string_view token) const noexcept {
  if (head_len_ == 0 || token.size() != head_len_ + kBody || !HeadMatches(token.data())) {
    return CanonicalMatch::kOther;
  }
  const char* body = token.data() + head_len_;
  if (!AllBase62(body)) return CanonicalMatch::kOther;
  const std::uint32_t crc =
      ~Crc32Update(head_crc_, std::string_view(body - kCrcOverlap, kCrcOverlap + kSecretChars));
  return CheckValue(body + kSecretChars) == crc ? CanonicalMatch::kOk
                                                : CanonicalMatch::kBadChecksum;
}

CanonicalMatch CanonicalToken::MatchHeader(std::string_view header,
                                           std::string_view* token) const noexcept {
  if (header.size() != kSchemeLen + head_len_ + kBody) return CanonicalMatch::kOther;
  // "Bearer " in any case: fold bytes 0-5 (the letters) to lower case; the
  // space (byte 6) is compared as is, so a NUL cannot pass for it.
  // All four words are built from bytes, so this holds for either byte order.
  static constexpr unsigned char kWant[8] = {'b', 'e', 'a', 'r', 'e', 'r', ' ', 0};
  static constexpr unsigned char kFold[8] = {0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0, 0};
  static constexpr unsigned char kSeven[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0};
  std::uint64_t w, want, fold, seven;
  std::memcpy(&w, header.data(), 8);  // the size check above: >= 56 bytes
  std::memcpy(&want, kWant, 8);
  std::memcpy(&fold, kFold, 8);
  std::memcpy(&seven, kSeven, 8);
  if (((w | fold) & seven) != want) return CanonicalMatch::kOther;
  const std::string_view t = header.substr(kSchemeLen);
  const CanonicalMatch m = MatchToken(t);
  if (m == CanonicalMatch::kOk) *token = t;
  return m;
}

}  // namespace keygate::internal
