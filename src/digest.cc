#include "keygate/digest.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <atomic>
#include <string>

#include "absl/status/status.h"

namespace keygate {

// Algorithms are fetched once per hasher: implicit fetches (SHA256(), HMAC(),
// EVP_DigestInit_ex(ctx, EVP_sha256())) search the provider store on every call
// and cost 3-10x more, worse under threads (research/performance.md).
struct TokenHasher::Impl {
  std::uint64_t id = 0;                 // distinguishes hashers in thread-local caches
  EVP_MD* md = nullptr;                 // fetched SHA-256
  EVP_MAC* mac = nullptr;               // fetched HMAC (keyed only)
  EVP_MAC_CTX* mac_template = nullptr;  // keyed with the pepper (keyed only)

  ~Impl() {
    EVP_MAC_CTX_free(mac_template);
    EVP_MAC_free(mac);
    EVP_MD_free(md);
  }
};

namespace {

std::atomic<std::uint64_t> g_next_hasher_id{1};

// Each thread keeps one initialised context for the hasher it used last and
// only re-initialises it per call. A thread that alternates between hashers
// (rare: one deployment per process is the norm) re-creates it on each switch.
struct ThreadContexts {
  std::uint64_t owner = 0;
  EVP_MD_CTX* md = nullptr;
  EVP_MAC_CTX* mac = nullptr;

  ~ThreadContexts() {
    EVP_MAC_CTX_free(mac);
    EVP_MD_CTX_free(md);
  }
};

thread_local ThreadContexts t_contexts;

}  // namespace

TokenHasher::TokenHasher(std::unique_ptr<Impl> impl, bool keyed)
    : impl_(std::move(impl)), keyed_(keyed) {}

TokenHasher::~TokenHasher() = default;

absl::StatusOr<std::shared_ptr<const TokenHasher>> TokenHasher::Create(
    const std::optional<Secret>& pepper) {
  auto impl = std::make_unique<Impl>();
  impl->id = g_next_hasher_id.fetch_add(1, std::memory_order_relaxed);
  impl->md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (impl->md == nullptr) return absl::InternalError("hasher: OpenSSL has no SHA-256");
  const bool keyed = pepper.has_value();
  if (keyed) {
    if (pepper->size() < kMinPepperSize) {
      return absl::InvalidArgumentError("pepper: must be at least 32 bytes");
    }
    impl->mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (impl->mac == nullptr) return absl::InternalError("hasher: OpenSSL has no HMAC");
    impl->mac_template = EVP_MAC_CTX_new(impl->mac);
    if (impl->mac_template == nullptr) return absl::InternalError("hasher: EVP_MAC_CTX_new failed");
    char digest_name[] = "SHA256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end()};
    const std::string_view key = pepper->Reveal(InsecureSecretAccess::Get());
    if (EVP_MAC_init(impl->mac_template, reinterpret_cast<const unsigned char*>(key.data()),
                     key.size(), params) != 1) {
      return absl::InternalError("hasher: EVP_MAC_init failed");
    }
  }
  return std::shared_ptr<const TokenHasher>(new TokenHasher(std::move(impl), keyed));
}

bool TokenHasher::Hash(std::string_view token, Digest* out) const noexcept {
  ThreadContexts& t = t_contexts;
  if (t.owner != impl_->id) {
    EVP_MAC_CTX_free(t.mac);
    t.mac = nullptr;
    t.owner = 0;
    if (keyed_) {
      // A duplicate of the keyed template: later EVP_MAC_init calls with a
      // NULL key restart HMAC with the pepper already loaded.
      t.mac = EVP_MAC_CTX_dup(impl_->mac_template);
      if (t.mac == nullptr) return false;
    } else if (t.md == nullptr) {
      t.md = EVP_MD_CTX_new();
      if (t.md == nullptr) return false;
    }
    t.owner = impl_->id;
  }
  const auto* data = reinterpret_cast<const unsigned char*>(token.data());
  if (keyed_) {
    std::size_t len = 0;
    return EVP_MAC_init(t.mac, nullptr, 0, nullptr) == 1 &&
           EVP_MAC_update(t.mac, data, token.size()) == 1 &&
           EVP_MAC_final(t.mac, out->data(), &len, out->size()) == 1 && len == kDigestSize;
  }
  unsigned int len = 0;
  return EVP_DigestInit_ex2(t.md, impl_->md, nullptr) == 1 &&
         EVP_DigestUpdate(t.md, data, token.size()) == 1 &&
         EVP_DigestFinal_ex(t.md, out->data(), &len) == 1 && len == kDigestSize;
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
