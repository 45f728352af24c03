// Standard Webhooks 1.0 signatures (keygate/webhook_signature.h).

#include "keygate/webhook_signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace keygate {
namespace {

constexpr std::size_t kGeneratedSecretBytes = 32;
constexpr std::size_t kMaxIdLength = 256;
constexpr std::size_t kMaxTimestampDigits = 18;  // far beyond any clock, below int64 overflow

absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }

// Wipes a buffer on scope exit.
struct Wipe {
  void* data;
  std::size_t size;
  ~Wipe() { OPENSSL_cleanse(data, size); }
};

// HMAC-SHA256(key, id + "." + timestamp + "." + body), base64; nullopt when OpenSSL cannot
// compute it (HMAC not available: a provider misconfigured). `timestamp` is the header's text.
std::optional<std::string> Mac(const Secret& key, std::string_view id, std::string_view timestamp,
                               std::string_view body) {
  const std::string_view k = key.Reveal(InsecureSecretAccess::Get());
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  std::size_t out_size = 0;
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = mac != nullptr ? EVP_MAC_CTX_new(mac) : nullptr;
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                               OSSL_PARAM_construct_end()};
  bool ok = ctx != nullptr && EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(k.data()),
                                           k.size(), params) == 1;
  for (const std::string_view part :
       {id, std::string_view("."), timestamp, std::string_view("."), body}) {
    ok = ok &&
         EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(part.data()), part.size()) == 1;
  }
  ok = ok && EVP_MAC_final(ctx, out.data(), &out_size, out.size()) == 1 && out_size == 32;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  if (!ok) return std::nullopt;
  return absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(out.data()), out_size));
}

absl::Status MacUnavailable() {
  return absl::InternalError("webhook signature: OpenSSL cannot compute HMAC-SHA256");
}

}  // namespace

absl::StatusOr<WebhookSecret> WebhookSecret::Generate() {
  std::array<unsigned char, kGeneratedSecretBytes> bytes{};
  const Wipe wipe{bytes.data(), bytes.size()};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    return absl::InternalError("webhook_secret: the CSPRNG failed");
  }
  const absl::string_view raw(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::string text = absl::StrCat(AV(kWebhookSecretPrefix), absl::Base64Escape(raw));
  WebhookSecret secret{Secret(std::string_view(raw.data(), raw.size())), Secret(text)};
  OPENSSL_cleanse(text.data(), text.size());
  return secret;
}

absl::StatusOr<WebhookSecret> WebhookSecret::Parse(std::string_view text) {
  if (text.substr(0, kWebhookSecretPrefix.size()) != kWebhookSecretPrefix) {
    return absl::InvalidArgumentError("webhook_secret: must start with whsec_");
  }
  std::string key;
  const std::string_view encoded = text.substr(kWebhookSecretPrefix.size());
  // Standard base64 with its padding, nothing else (absl also takes unpadded text and spaces).
  if (!absl::Base64Unescape(AV(encoded), &key) || absl::Base64Escape(key) != AV(encoded)) {
    OPENSSL_cleanse(key.data(), key.size());
    return absl::InvalidArgumentError("webhook_secret: is not base64 after whsec_");
  }
  const std::size_t n = key.size();
  WebhookSecret secret{Secret(key), Secret(text)};
  OPENSSL_cleanse(key.data(), key.size());
  if (n < kMinWebhookSecretBytes || n > kMaxWebhookSecretBytes) {
    return absl::InvalidArgumentError(absl::StrCat("webhook_secret: must hold ",
                                                   kMinWebhookSecretBytes, " to ",
                                                   kMaxWebhookSecretBytes, " bytes (has ", n, ")"));
  }
  return secret;
}

absl::StatusOr<std::string> WebhookSecret::Sign(std::string_view id, std::int64_t timestamp,
                                                std::string_view body) const {
  std::optional<std::string> mac = Mac(key_, id, absl::StrCat(timestamp), body);
  if (!mac.has_value()) return MacUnavailable();
  return absl::StrCat("v1,", *mac);
}

absl::StatusOr<std::string> WebhookSignatureHeader(const std::vector<WebhookSecret>& secrets,
                                                   std::string_view id, std::int64_t timestamp,
                                                   std::string_view body) {
  if (secrets.empty()) return absl::InvalidArgumentError("secrets: none");
  std::string header;
  for (const WebhookSecret& s : secrets) {
    absl::StatusOr<std::string> one = s.Sign(id, timestamp, body);
    if (!one.ok()) return one.status();
    if (!header.empty()) header.push_back(' ');
    header += *one;
  }
  return header;
}

absl::Status VerifyWebhookSignature(const std::vector<WebhookSecret>& secrets, std::string_view id,
                                    std::string_view timestamp, std::string_view signature,
                                    std::string_view body, absl::Time now,
                                    absl::Duration tolerance) {
  if (secrets.empty()) return absl::FailedPreconditionError("secrets: none");
  if (id.empty()) return absl::InvalidArgumentError("webhook-id: missing");
  if (id.size() > kMaxIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("webhook-id: longer than ", kMaxIdLength, " bytes"));
  }
  if (timestamp.empty() || timestamp.size() > kMaxTimestampDigits) {
    return absl::InvalidArgumentError("webhook-timestamp: not Unix seconds");
  }
  std::int64_t seconds = 0;
  for (const char c : timestamp) {
    if (c < '0' || c > '9')
      return absl::InvalidArgumentError("webhook-timestamp: not Unix seconds");
    seconds = seconds * 10 + (c - '0');
  }
  if (absl::AbsDuration(now - absl::FromUnixSeconds(seconds)) > tolerance) {
    return absl::UnauthenticatedError("webhook-timestamp: outside the tolerance");
  }
  // Every entry against every secret, without stopping at a match: the time taken does not say
  // which entry or secret matched.
  bool any_v1 = false;
  bool matched = false;
  // Over the header's text as received, as the sender signed it.
  std::vector<std::string> expected;
  expected.reserve(secrets.size());
  for (const WebhookSecret& s : secrets) {
    std::optional<std::string> mac = Mac(s.key_, id, timestamp, body);
    if (!mac.has_value()) return MacUnavailable();  // never "v1," against an empty MAC
    expected.push_back(absl::StrCat("v1,", *mac));
  }
  std::size_t pos = 0;
  while (pos <= signature.size()) {
    std::size_t end = signature.find(' ', pos);
    if (end == std::string_view::npos) end = signature.size();
    const std::string_view entry = signature.substr(pos, end - pos);
    pos = end + 1;
    if (entry.substr(0, 3) != "v1,") continue;
    any_v1 = true;
    for (const std::string& e : expected) matched = ConstantTimeEquals(entry, e) || matched;
  }
  if (!any_v1) return absl::InvalidArgumentError("webhook-signature: no v1 entry");
  if (!matched) return absl::UnauthenticatedError("webhook-signature: no entry matches");
  return absl::OkStatus();
}

std::vector<WebhookSecret> KeyWebhookSecrets::SigningAt(absl::Time now) const {
  std::vector<WebhookSecret> out = {current};
  if (previous.has_value() && now < previous_until) out.push_back(*previous);
  return out;
}

namespace {
std::string WebhookSecretsAad(std::string_view key_id) {
  return absl::StrCat("webhook_secret:", std::string(key_id));
}
}  // namespace

// Plaintext: the current secret's text, then optionally " <previous> <until, Unix micros>",
// where the previous is "*" for the deployment's.
absl::StatusOr<std::string> SealWebhookSecrets(const Envelope& envelope, std::string_view key_id,
                                               const KeyWebhookSecrets& secrets) {
  const std::string_view current = secrets.current.text().Reveal(InsecureSecretAccess::Get());
  const std::string_view previous =
      secrets.previous.has_value() ? secrets.previous->text().Reveal(InsecureSecretAccess::Get())
                                   : std::string_view(secrets.deployment_previous ? "*" : "");
  const std::string until =
      previous.empty() ? std::string() : absl::StrCat(absl::ToUnixMicros(secrets.previous_until));
  // One buffer, sized first: no reallocation leaves a copy of a secret behind.
  std::string plain;
  plain.reserve(current.size() + previous.size() + until.size() + 2);
  plain.append(current);
  if (!previous.empty()) plain.append(" ").append(previous).append(" ").append(until);
  absl::StatusOr<std::string> sealed = envelope.Seal(plain, WebhookSecretsAad(key_id));
  OPENSSL_cleanse(plain.data(), plain.size());
  return sealed;
}

absl::StatusOr<KeyWebhookSecrets> OpenWebhookSecrets(const Envelope& envelope,
                                                     std::string_view key_id,
                                                     std::string_view sealed) {
  absl::StatusOr<Secret> opened = envelope.Open(sealed, WebhookSecretsAad(key_id));
  if (!opened.ok()) return opened.status();
  const std::string_view plain = opened->Reveal(InsecureSecretAccess::Get());
  const auto damaged = [] {
    return absl::DataLossError("sealed_webhook_secret: does not hold webhook secrets");
  };
  // Split in place: no copy of a secret outlives `opened` (which wipes its bytes).
  std::vector<std::string_view> parts;
  for (std::size_t pos = 0;;) {
    const std::size_t end = plain.find(' ', pos);
    parts.push_back(plain.substr(pos, end == std::string_view::npos ? end : end - pos));
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  if (parts.size() != 1 && parts.size() != 3) return damaged();
  absl::StatusOr<WebhookSecret> current = WebhookSecret::Parse(parts[0]);
  if (!current.ok()) return damaged();
  KeyWebhookSecrets out{*std::move(current)};
  if (parts.size() == 3) {
    std::int64_t until = 0;
    if (!absl::SimpleAtoi(absl::string_view(parts[2].data(), parts[2].size()), &until)) {
      return damaged();
    }
    out.previous_until = absl::FromUnixMicros(until);
    if (parts[1] == "*") {
      out.deployment_previous = true;
    } else {
      absl::StatusOr<WebhookSecret> previous = WebhookSecret::Parse(parts[1]);
      if (!previous.ok()) return damaged();
      out.previous = *std::move(previous);
    }
  }
  return out;
}

absl::StatusOr<std::string> ResealWebhookSecrets(const Envelope& envelope, std::string_view key_id,
                                                 std::string_view sealed) {
  return envelope.Reseal(sealed, WebhookSecretsAad(key_id));
}

}  // namespace keygate
