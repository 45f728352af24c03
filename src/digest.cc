// The low-level SHA-256 entry points are deprecated in OpenSSL 3 but are the
// fastest way to its (SHA-NI) block function; see TokenHasher::Hash below.
// This must precede every OpenSSL include, including indirect ones.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "keygate/digest.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"

#if defined(OPENSSL_NO_DEPRECATED_3_0)
#error "keygate needs OpenSSL's SHA256_Transform (an OpenSSL built without no-deprecated)"
#endif

namespace keygate {
namespace {

constexpr std::size_t kBlock = 64;

// FIPS 180-4 5.3.3: the initial hash value.
constexpr std::uint32_t kSha256Iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

// Zeroes `N` bytes at `p`, `N` a multiple of 16. GCC 12 at -O2 compiles a constant-size memset of
// 128 bytes to `rep stosq`, whose start-up cost (about 30 cycles on the Zen 4 machine the
// benchmarks run on) was a tenth of the whole hash; these are plain vector
// stores.
template <std::size_t N>
inline void Zero(unsigned char* p) noexcept {
  static_assert(N % 16 == 0);
#if defined(__SSE2__)
  // Written out rather than as a loop: GCC turns a zeroing loop back into
  // memset, and so into `rep stosq`.
  [p]<std::size_t... I>(std::index_sequence<I...>) {
    const __m128i z = _mm_setzero_si128();
    (_mm_storeu_si128(reinterpret_cast<__m128i*>(p + 16 * I), z),
     ...);  // NOLINT(*-reinterpret-cast)
  }
  (std::make_index_sequence<N / 16>{});
#else
  std::memset(p, 0, N);
#endif
}

// Zero<N>, in a way the compiler may not drop as a dead store. (OPENSSL_cleanse
// does the same through an indirect call; this is the per-request path, where
// a few stores are all it takes.)
template <std::size_t N>
inline void Wipe(unsigned char* p) noexcept {
  Zero<N>(p);
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

// A SHA-256 chaining value. Only `h` of OpenSSL's context is used: the block
// function reads and writes nothing else, so nothing else is set or wiped.
struct State {
  SHA256_CTX ctx;

  void Reset(const std::uint32_t h[8]) noexcept { std::memcpy(ctx.h, h, sizeof ctx.h); }
  void Block(const unsigned char* p) noexcept { SHA256_Transform(&ctx, p); }
  void Wipe() noexcept {
    static_assert(sizeof ctx.h == 32);
    keygate::Wipe<sizeof ctx.h>(
        reinterpret_cast<unsigned char*>(ctx.h));  // NOLINT(*-reinterpret-cast)
  }
};

inline void StoreBe32(unsigned char* p, std::uint32_t v) noexcept {
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
  std::memcpy(p, &v, sizeof v);
}

// Absorbs `data` into `s`, which has already absorbed `prior` bytes (a
// multiple of the block size), pads (FIPS 180-4 5.1.1) and writes the
// digest. Whole blocks are compressed straight from `data`; only the tail is
// copied, into a stack buffer that is wiped afterwards.
void Finish(State& s, std::uint64_t prior, const unsigned char* data, std::size_t len,
            unsigned char out[kDigestSize]) noexcept {
  const std::size_t full = len / kBlock;
  for (std::size_t i = 0; i < full; ++i) s.Block(data + i * kBlock);
  const std::size_t tail = len % kBlock;
  // Constant-size clears are a few vector stores (Zero); a size that depends
  // on the tail would be a library call.
  alignas(64) unsigned char buf[2 * kBlock];
  Zero<sizeof buf>(buf);
  if (tail != 0) std::memcpy(buf, data + full * kBlock, tail);
  buf[tail] = 0x80;
  const bool two = tail + 9 > kBlock;
  unsigned char* last = two ? buf + kBlock : buf;
  const std::uint64_t bits = (prior + len) * 8;
  StoreBe32(last + kBlock - 8, static_cast<std::uint32_t>(bits >> 32));
  StoreBe32(last + kBlock - 4, static_cast<std::uint32_t>(bits));
  s.Block(buf);
  if (two) s.Block(last);
  Wipe<sizeof buf>(buf);
  for (std::size_t i = 0; i < 8; ++i) StoreBe32(out + 4 * i, s.ctx.h[i]);
}

void Sha256(const unsigned char* data, std::size_t len, unsigned char out[kDigestSize]) noexcept {
  State s;
  s.Reset(kSha256Iv);
  Finish(s, 0, data, len, out);
  s.Wipe();
}

}  // namespace

// HMAC (RFC 2104) keeps the chaining values after the key's inner and outer
// pad blocks, so each call compresses only the message and one outer block:
// 3 block operations for a token, against 5 for HMAC from scratch. These
// chaining values are as sensitive as the pepper itself: they live only here
// and are wiped on destruction.
struct TokenHasher::Impl {
  std::uint32_t inner[8] = {};
  std::uint32_t outer[8] = {};

  ~Impl() {
    OPENSSL_cleanse(inner, sizeof inner);
    OPENSSL_cleanse(outer, sizeof outer);
  }
};

TokenHasher::TokenHasher(std::unique_ptr<Impl> impl, bool keyed)
    : impl_(std::move(impl)), keyed_(keyed) {}

TokenHasher::~TokenHasher() = default;

absl::StatusOr<std::shared_ptr<const TokenHasher>> TokenHasher::Create(
    const std::optional<Secret>& pepper) {
  auto impl = std::make_unique<Impl>();
  const bool keyed = pepper.has_value();
  if (keyed) {
    if (pepper->size() < kMinPepperSize) {
      return absl::InvalidArgumentError("pepper: must be at least 32 bytes");
    }
    const std::string_view key = pepper->Reveal(InsecureSecretAccess::Get());
    // A key longer than a block is replaced by its digest (RFC 2104 2).
    unsigned char k[kBlock] = {};
    if (key.size() > kBlock) {
      Sha256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), k);
    } else {
      std::memcpy(k, key.data(), key.size());
    }
    unsigned char pad[kBlock];
    State s;
    for (std::size_t i = 0; i < kBlock; ++i) pad[i] = static_cast<unsigned char>(k[i] ^ 0x36);
    s.Reset(kSha256Iv);
    s.Block(pad);
    std::memcpy(impl->inner, s.ctx.h, sizeof impl->inner);
    for (std::size_t i = 0; i < kBlock; ++i) pad[i] = static_cast<unsigned char>(k[i] ^ 0x5c);
    s.Reset(kSha256Iv);
    s.Block(pad);
    std::memcpy(impl->outer, s.ctx.h, sizeof impl->outer);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(&s, sizeof s);
  }
  return std::shared_ptr<const TokenHasher>(new TokenHasher(std::move(impl), keyed));
}

bool TokenHasher::Hash(std::string_view token, Digest* out) const noexcept {
  const auto* data = reinterpret_cast<const unsigned char*>(token.data());
  if (!keyed_) {
    Sha256(data, token.size(), out->data());
    return true;
  }
  State s;
  unsigned char inner_digest[kDigestSize];
  s.Reset(impl_->inner);
  Finish(s, kBlock, data, token.size(), inner_digest);
  s.Reset(impl_->outer);
  Finish(s, kBlock, inner_digest, sizeof inner_digest, out->data());
  Wipe<sizeof inner_digest>(inner_digest);
  s.Wipe();
  return true;
}

absl::StatusOr<Digest> TokenHasher::Hash(std::string_view token) const {
  Digest d{};
  if (!Hash(token, &d)) return absl::InternalError("hasher: OpenSSL digest failed");
  return d;
}

bool DigestEquals(const Digest& a, const Digest& b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string DigestToHex(const Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * d.size(), '0');
  for (std::size_t i = 0; i < d.size(); ++i) {
    out[2 * i] = kHex[d[i] >> 4];
    out[2 * i + 1] = kHex[d[i] & 0xF];
  }
  return out;
}

bool DigestFromHex(std::string_view hex, Digest* out) noexcept {
  if (hex.size() != 2 * kDigestSize) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Digest d{};
  for (std::size_t i = 0; i < kDigestSize; ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    d[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  *out = d;
  return true;
}

}  // namespace keygate
