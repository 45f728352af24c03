// Envelope encryption (keygate/envelope.h): AES-256-GCM data keys wrapped by KEKs.

#include "keygate/envelope.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

#include "keygate/deployment.h"

namespace keygate {
namespace {

constexpr std::string_view kPrefix = "kge1.";
constexpr unsigned char kVersion = 1;
constexpr std::size_t kIdBytes = 8;
constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kNonceBytes = 12;
constexpr std::size_t kTagBytes = 16;
constexpr std::size_t kMinKekBytes = 32;
// version | id | nonce | wrapped data key | tag | nonce | ... | tag
constexpr std::size_t kWrapAt = 1 + kIdBytes;
constexpr std::size_t kDataAt = kWrapAt + kNonceBytes + kKeyBytes + kTagBytes;
constexpr std::size_t kOverhead = kDataAt + kNonceBytes + kTagBytes;
// Sealed secrets are small (tokens, signing secrets); anything larger is not one of ours.
constexpr std::size_t kMaxPlaintext = std::size_t{64} << 10;

absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }

// 32 bytes of a data key, wiped when it goes.
struct KeyBuffer {
  std::array<unsigned char, kKeyBytes> bytes{};
  KeyBuffer() = default;
  KeyBuffer(const KeyBuffer&) = delete;
  KeyBuffer& operator=(const KeyBuffer&) = delete;
  ~KeyBuffer() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

bool Hmac(std::string_view key, std::string_view message, unsigned char out[32]) {
  unsigned int len = 0;
  return HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(message.data()), message.size(), out,
              &len) != nullptr &&
         len == 32;
}

std::string Hex(const unsigned char* p, std::size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(p), n));
}

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter>;

// AES-256-GCM over `in` into `out` (same length) and `tag`.
bool GcmSeal(const unsigned char* key, const unsigned char* nonce, std::string_view aad,
             const unsigned char* in, std::size_t n, unsigned char* out, unsigned char* tag) {
  Ctx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  return ctx != nullptr &&
         EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key, nonce) == 1 &&
         EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                           reinterpret_cast<const unsigned char*>(aad.data()),
                           static_cast<int>(aad.size())) == 1 &&
         (n == 0 || EVP_EncryptUpdate(ctx.get(), out, &len, in, static_cast<int>(n)) == 1) &&
         EVP_EncryptFinal_ex(ctx.get(), out + n, &len) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes), tag) ==
             1;
}

// Whether `in` and `tag` authenticate under `key` and `aad`; the plaintext in `out`.
bool GcmOpen(const unsigned char* key, const unsigned char* nonce, std::string_view aad,
             const unsigned char* in, std::size_t n, const unsigned char* tag, unsigned char* out) {
  Ctx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  std::array<unsigned char, kTagBytes> t{};
  std::copy(tag, tag + kTagBytes, t.begin());
  return ctx != nullptr &&
         EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key, nonce) == 1 &&
         EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                           reinterpret_cast<const unsigned char*>(aad.data()),
                           static_cast<int>(aad.size())) == 1 &&
         (n == 0 || EVP_DecryptUpdate(ctx.get(), out, &len, in, static_cast<int>(n)) == 1) &&
         EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes),
                             t.data()) == 1 &&
         EVP_DecryptFinal_ex(ctx.get(), out + n, &len) == 1;
}

// What each AEAD binds: its role, the KEK (for the wrap) and the caller's data.
std::string WrapAad(std::string_view id_bytes, std::string_view associated_data) {
  return absl::StrCat("keygate envelope v1 data key", absl::string_view("\0", 1), AV(id_bytes),
                      AV(associated_data));
}
std::string DataAad(std::string_view associated_data) {
  return absl::StrCat("keygate envelope v1 data", absl::string_view("\0", 1), AV(associated_data));
}

// The raw bytes of a sealed value, or why it is not one.
absl::StatusOr<std::string> Decode(std::string_view sealed) {
  if (sealed.substr(0, kPrefix.size()) != kPrefix) {
    return absl::InvalidArgumentError("sealed: not an envelope (no \"kge1.\" prefix)");
  }
  std::string raw;
  if (!absl::WebSafeBase64Unescape(AV(sealed.substr(kPrefix.size())), &raw)) {
    return absl::InvalidArgumentError("sealed: not URL-safe base64");
  }
  if (raw.size() < kOverhead || raw.size() > kOverhead + kMaxPlaintext ||
      static_cast<unsigned char>(raw[0]) != kVersion) {
    return absl::InvalidArgumentError("sealed: not a version 1 envelope of a valid length");
  }
  return raw;
}

}  // namespace

Envelope::~Envelope() = default;

absl::StatusOr<std::shared_ptr<const Envelope>> Envelope::FromKeys(
    const Secret& kek, const std::vector<Secret>& previous_keks) {
  return Make(kek, previous_keks, "kek", "previous_keks", {});
}

absl::StatusOr<std::shared_ptr<const Envelope>> Envelope::Make(
    const Secret& kek, const std::vector<Secret>& previous_keks, std::string_view kek_field,
    std::string_view previous_field, std::vector<std::string> warnings) {
  std::shared_ptr<Envelope> e(new Envelope());
  e->warnings_ = std::move(warnings);
  for (std::size_t i = 0; i <= previous_keks.size(); ++i) {
    const Secret& k = i == 0 ? kek : previous_keks[i - 1];
    const std::string field =
        i == 0 ? std::string(kek_field) : absl::StrCat(AV(previous_field), "[", i - 1, "]");
    if (k.size() < kMinKekBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": must be at least ", kMinKekBytes, " bytes"));
    }
    const std::string_view bytes = k.Reveal(InsecureSecretAccess::Get());
    KeyBuffer aes;
    std::array<unsigned char, 32> id{};
    if (!Hmac(bytes, "keygate kek v1", aes.bytes.data()) ||
        !Hmac(bytes, "keygate kek id v1", id.data())) {
      return absl::InternalError("envelope: OpenSSL HMAC failed");
    }
    std::string hex = Hex(id.data(), kIdBytes);
    for (const std::string& seen : e->ids_) {
      if (seen == hex) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": the same KEK as another one (", hex, ")"));
      }
    }
    e->keys_.emplace_back(
        std::string_view(reinterpret_cast<const char*>(aes.bytes.data()), aes.bytes.size()));
    e->ids_.push_back(std::move(hex));
  }
  return std::shared_ptr<const Envelope>(std::move(e));
}

absl::StatusOr<std::shared_ptr<const Envelope>> Envelope::Create(const EnvelopeOptions& options) {
  if (options.kek_file.empty()) return absl::InvalidArgumentError("kek_file: must be set");
  PepperFileOptions file_options;
  file_options.allow_group_or_world_access = options.allow_group_or_world_access;
  std::vector<std::string> warnings;
  std::vector<Secret> keys;
  for (std::size_t i = 0; i <= options.previous_kek_files.size(); ++i) {
    const std::string& path = i == 0 ? options.kek_file : options.previous_kek_files[i - 1];
    const std::string field = i == 0 ? "kek_file" : absl::StrCat("previous_kek_files[", i - 1, "]");
    absl::StatusOr<PepperFile> f = ReadPepperFile(path, file_options);
    // ReadPepperFile names its file "pepper file <path>"; here it holds a KEK.
    const auto kek_terms = [](absl::string_view m) {
      absl::ConsumePrefix(&m, "pepper file ");
      return absl::StrCat("file ", absl::StrReplaceAll(m, {{"a pepper file holds only the pepper",
                                                            "a KEK file holds only the KEK"},
                                                           {"a pepper needs", "a KEK needs"}}));
    };
    if (!f.ok()) {
      return absl::Status(f.status().code(),
                          absl::StrCat(field, ": ", kek_terms(f.status().message())));
    }
    for (std::string& w : f->warnings) warnings.push_back(absl::StrCat(field, ": ", kek_terms(w)));
    keys.push_back(std::move(f->pepper));
  }
  std::vector<Secret> previous(std::make_move_iterator(keys.begin() + 1),
                               std::make_move_iterator(keys.end()));
  return Make(keys.front(), previous, "kek_file", "previous_kek_files", std::move(warnings));
}

namespace {

// Writes the KEK's id, a fresh nonce and `data_key` wrapped under `kek` into `raw` (sized).
absl::Status Wrap(const Secret& kek, const std::string& kek_id_hex, const KeyBuffer& data_key,
                  std::string_view associated_data, std::string* raw) {
  const std::string id_bytes = absl::HexStringToBytes(AV(kek_id_hex));
  std::copy(id_bytes.begin(), id_bytes.end(), raw->begin() + 1);
  auto* nonce = reinterpret_cast<unsigned char*>(raw->data()) + kWrapAt;
  if (RAND_bytes(nonce, static_cast<int>(kNonceBytes)) != 1) {
    return absl::InternalError("envelope: the random generator failed");
  }
  const auto* key =
      reinterpret_cast<const unsigned char*>(kek.Reveal(InsecureSecretAccess::Get()).data());
  if (!GcmSeal(key, nonce, WrapAad(id_bytes, associated_data), data_key.bytes.data(), kKeyBytes,
               nonce + kNonceBytes, nonce + kNonceBytes + kKeyBytes)) {
    return absl::InternalError("envelope: OpenSSL AES-GCM failed");
  }
  return absl::OkStatus();
}

absl::Status DoesNotOpen() {
  return absl::DataLossError(
      "sealed: does not open (altered, or sealed with other associated data)");
}

// Opens `raw` (Decode's) with the KEKs `keys` (ids `ids`): the index of its KEK, its data key
// in `data_key` and its plaintext in `plain` (the caller wipes it).
absl::StatusOr<std::size_t> OpenRaw(const std::vector<Secret>& keys,
                                    const std::vector<std::string>& ids, const std::string& raw,
                                    std::string_view associated_data, KeyBuffer* data_key,
                                    std::string* plain) {
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  const std::string hex = Hex(p + 1, kIdBytes);
  const auto k = static_cast<std::size_t>(std::find(ids.begin(), ids.end(), hex) - ids.begin());
  if (k == ids.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sealed: under KEK ", hex, ", which is not loaded (add its file to previous_kek_files)"));
  }
  const unsigned char* wrap_nonce = p + kWrapAt;
  const auto* kek =
      reinterpret_cast<const unsigned char*>(keys[k].Reveal(InsecureSecretAccess::Get()).data());
  if (!GcmOpen(kek, wrap_nonce, WrapAad(raw.substr(1, kIdBytes), associated_data),
               wrap_nonce + kNonceBytes, kKeyBytes, wrap_nonce + kNonceBytes + kKeyBytes,
               data_key->bytes.data())) {
    return DoesNotOpen();
  }
  const std::size_t n = raw.size() - kOverhead;
  plain->assign(n, '\0');
  const unsigned char* nonce = p + kDataAt;
  if (!GcmOpen(data_key->bytes.data(), nonce, DataAad(associated_data), nonce + kNonceBytes, n,
               nonce + kNonceBytes + n, reinterpret_cast<unsigned char*>(plain->data()))) {
    return DoesNotOpen();
  }
  return k;
}

}  // namespace

absl::StatusOr<std::string> Envelope::Seal(std::string_view plaintext,
                                           std::string_view associated_data) const {
  if (plaintext.size() > kMaxPlaintext) {
    return absl::InvalidArgumentError(
        absl::StrCat("plaintext: larger than ", kMaxPlaintext, " bytes"));
  }
  std::string raw(kOverhead + plaintext.size(), '\0');
  auto* p = reinterpret_cast<unsigned char*>(raw.data());
  p[0] = kVersion;
  KeyBuffer data_key;
  unsigned char* data_nonce = p + kDataAt;
  if (RAND_bytes(data_key.bytes.data(), static_cast<int>(kKeyBytes)) != 1 ||
      RAND_bytes(data_nonce, static_cast<int>(kNonceBytes)) != 1) {
    return absl::InternalError("envelope: the random generator failed");
  }
  if (absl::Status s = Wrap(keys_.front(), ids_.front(), data_key, associated_data, &raw);
      !s.ok()) {
    return s;
  }
  if (!GcmSeal(data_key.bytes.data(), data_nonce, DataAad(associated_data),
               reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
               data_nonce + kNonceBytes, data_nonce + kNonceBytes + plaintext.size())) {
    return absl::InternalError("envelope: OpenSSL AES-GCM failed");
  }
  return absl::StrCat(AV(kPrefix), absl::WebSafeBase64Escape(raw));
}

absl::StatusOr<Secret> Envelope::Open(std::string_view sealed,
                                      std::string_view associated_data) const {
  absl::StatusOr<std::string> raw = Decode(sealed);
  if (!raw.ok()) return raw.status();
  KeyBuffer data_key;
  std::string plain;
  absl::StatusOr<std::size_t> k = OpenRaw(keys_, ids_, *raw, associated_data, &data_key, &plain);
  Secret out(k.ok() ? std::string_view(plain) : std::string_view());
  OPENSSL_cleanse(plain.data(), plain.size());
  if (!k.ok()) return k.status();
  return out;
}

absl::StatusOr<std::string> Envelope::Reseal(std::string_view sealed,
                                             std::string_view associated_data) const {
  absl::StatusOr<std::string> raw = Decode(sealed);
  if (!raw.ok()) return raw.status();
  // Opened whole first: only an authentic value is rewrapped.
  KeyBuffer data_key;
  std::string plain;
  absl::StatusOr<std::size_t> k = OpenRaw(keys_, ids_, *raw, associated_data, &data_key, &plain);
  OPENSSL_cleanse(plain.data(), plain.size());
  if (!k.ok()) return k.status();
  if (*k == 0) return std::string(sealed);
  if (absl::Status s = Wrap(keys_.front(), ids_.front(), data_key, associated_data, &*raw);
      !s.ok()) {
    return s;
  }
  return absl::StrCat(AV(kPrefix), absl::WebSafeBase64Escape(*raw));
}

bool Envelope::UnderPrimary(std::string_view sealed) const {
  absl::StatusOr<std::string> raw = Decode(sealed);
  return raw.ok() &&
         Hex(reinterpret_cast<const unsigned char*>(raw->data()) + 1, kIdBytes) == ids_.front();
}

}  // namespace keygate
