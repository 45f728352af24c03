// Standard Webhooks signatures (keygate/webhook_signature.h): the specification's published
// test vector, an independent HMAC for generated secrets, and every way a receiver refuses.

#include "keygate/webhook_signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/secret.h"
#include "test_util.h"

namespace keygate {
namespace {

using testing::MustOk;

// The Standard Webhooks specification's test vector (also in its reference libraries' tests).
constexpr char kVectorSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr char kVectorId[] = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr std::int64_t kVectorTimestamp = 1614265330;
constexpr char kVectorBody[] = R"({"test": 2432232314})";
constexpr char kVectorSignature[] = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const absl::Time kVectorTime = absl::FromUnixSeconds(kVectorTimestamp);

std::string Text(const Secret& s) { return std::string(s.Reveal(InsecureSecretAccess::Get())); }

// HMAC-SHA256 by OpenSSL's one-shot call, base64: an independent reference.
std::string ReferenceSignature(const std::string& key, const std::string& content) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
               reinterpret_cast<const unsigned char*>(content.data()), content.size(), out,
               &n) != nullptr);
  return "v1," + absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(out), n));
}

absl::StatusCode VerifyCode(const std::vector<WebhookSecret>& secrets, std::string_view id,
                            std::string_view ts, std::string_view sig, std::string_view body,
                            absl::Time now = kVectorTime) {
  return VerifyWebhookSignature(secrets, id, ts, sig, body, now).code();
}

TEST_CASE("WebhookSecret signs the Standard Webhooks test vector", "[webhook]") {
  const WebhookSecret secret = MustOk(WebhookSecret::Parse(kVectorSecret));
  CHECK(MustOk(secret.Sign(kVectorId, kVectorTimestamp, kVectorBody)) == kVectorSignature);
  CHECK(Text(secret.text()) == kVectorSecret);
  CHECK(VerifyWebhookSignature({secret}, kVectorId, "1614265330", kVectorSignature, kVectorBody,
                               kVectorTime)
            .ok());
  CHECK(MustOk(WebhookSignatureHeader({secret}, kVectorId, kVectorTimestamp, kVectorBody)) ==
        kVectorSignature);
  CHECK(WebhookSignatureHeader({}, kVectorId, kVectorTimestamp, kVectorBody).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Generated webhook secrets are whsec_ and 32 random bytes", "[webhook]") {
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    const WebhookSecret s = MustOk(WebhookSecret::Generate());
    const std::string text = Text(s.text());
    REQUIRE(text.rfind("whsec_", 0) == 0);
    std::string key;
    REQUIRE(absl::Base64Unescape(text.substr(6), &key));
    CHECK(key.size() == 32);
    seen.insert(text);
    // The signature is HMAC-SHA256 under the decoded bytes over "id.timestamp.body".
    CHECK(MustOk(s.Sign("msg_1", 1700000000, "{}")) ==
          ReferenceSignature(key, "msg_1.1700000000.{}"));
    // Parsing its text gives the same signer.
    CHECK(MustOk(MustOk(WebhookSecret::Parse(text)).Sign("m", 5, "b")) ==
          MustOk(s.Sign("m", 5, "b")));
  }
  CHECK(seen.size() == 50);
}

TEST_CASE("WebhookSecret::Parse refuses what is not a secret, without quoting it", "[webhook]") {
  const std::string sixteen = absl::Base64Escape(std::string(16, 'x'));
  const std::string sixty_five = absl::Base64Escape(std::string(65, 'x'));
  const struct {
    std::string text;
    std::string message;
  } cases[] = {
      {"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "webhook_secret: must start with whsec_"},
      {"", "webhook_secret: must start with whsec_"},
      {"whsec_not base64!", "webhook_secret: is not base64 after whsec_"},
      {"whsec_" + sixteen, "webhook_secret: must hold 24 to 64 bytes (has 16)"},
      {"whsec_" + sixty_five, "webhook_secret: must hold 24 to 64 bytes (has 65)"},
      {"whsec_", "webhook_secret: must hold 24 to 64 bytes (has 0)"},
      // Padded standard base64 only: not unpadded, not with spaces or newlines.
      {"whsec_" + absl::Base64Escape(std::string(25, 'x')).substr(0, 34),
       "webhook_secret: is not base64 after whsec_"},
      {"whsec_MfKQ9r8GKYqr TwjUPD8ILPZIo2LaLaSw", "webhook_secret: is not base64 after whsec_"},
      {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "webhook_secret: is not base64 after whsec_"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    absl::StatusOr<WebhookSecret> s = WebhookSecret::Parse(c.text);
    REQUIRE(!s.ok());
    CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.status().message()) == c.message);
  }
  CHECK(WebhookSecret::Parse("whsec_" + absl::Base64Escape(std::string(24, 'k'))).ok());
  CHECK(WebhookSecret::Parse("whsec_" + absl::Base64Escape(std::string(64, 'k'))).ok());
}

TEST_CASE("VerifyWebhookSignature refuses altered, replayed and malformed messages", "[webhook]") {
  const std::vector<WebhookSecret> secrets = {MustOk(WebhookSecret::Parse(kVectorSecret))};
  const std::string ts = "1614265330";
  using C = absl::StatusCode;
  CHECK(VerifyCode(secrets, kVectorId, ts, kVectorSignature, kVectorBody) == C::kOk);
  // Anything signed, altered.
  CHECK(VerifyCode(secrets, kVectorId, ts, kVectorSignature, R"({"test": 2432232315})") ==
        C::kUnauthenticated);
  CHECK(VerifyCode(secrets, "msg_other", ts, kVectorSignature, kVectorBody) == C::kUnauthenticated);
  CHECK(VerifyCode(secrets, kVectorId, "1614265331", kVectorSignature, kVectorBody) ==
        C::kUnauthenticated);
  // The same instant written otherwise is other signed text.
  CHECK(VerifyCode(secrets, kVectorId, "01614265330", kVectorSignature, kVectorBody) ==
        C::kUnauthenticated);
  // Another secret.
  const std::vector<WebhookSecret> other = {MustOk(WebhookSecret::Generate())};
  CHECK(VerifyCode(other, kVectorId, ts, kVectorSignature, kVectorBody) == C::kUnauthenticated);
  // Replays: outside five minutes either way; inside, fine.
  CHECK(VerifyCode(secrets, kVectorId, ts, kVectorSignature, kVectorBody,
                   kVectorTime + absl::Minutes(5) + absl::Seconds(1)) == C::kUnauthenticated);
  CHECK(VerifyCode(secrets, kVectorId, ts, kVectorSignature, kVectorBody,
                   kVectorTime - absl::Minutes(5) - absl::Seconds(1)) == C::kUnauthenticated);
  CHECK(VerifyCode(secrets, kVectorId, ts, kVectorSignature, kVectorBody,
                   kVectorTime + absl::Minutes(4)) == C::kOk);
  CHECK(VerifyWebhookSignature(secrets, kVectorId, ts, kVectorSignature, kVectorBody,
                               kVectorTime + absl::Hours(1), absl::Hours(2))
            .ok());
  // Malformed headers, named.
  const auto message = [&](std::string_view id, std::string_view t, std::string_view sig) {
    return std::string(
        VerifyWebhookSignature(secrets, id, t, sig, kVectorBody, kVectorTime).message());
  };
  CHECK(message("", ts, kVectorSignature) == "webhook-id: missing");
  CHECK(message(std::string(257, 'i'), ts, kVectorSignature) ==
        "webhook-id: longer than 256 bytes");
  for (const char* bad :
       {"", "16142653a0", "-1614265330", " 1614265330", "1614265330.5", "9999999999999999999"}) {
    INFO(bad);
    CHECK(message(kVectorId, bad, kVectorSignature) == "webhook-timestamp: not Unix seconds");
  }
  CHECK(message(kVectorId, ts, "") == "webhook-signature: no v1 entry");
  CHECK(message(kVectorId, ts, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=") ==
        "webhook-signature: no v1 entry");
  CHECK(message(kVectorId, ts, "v1,") == "webhook-signature: no entry matches");
  CHECK(message(kVectorId, ts, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=") ==
        "webhook-signature: no v1 entry");
  CHECK(VerifyCode({}, kVectorId, ts, kVectorSignature, kVectorBody) == C::kFailedPrecondition);
}

TEST_CASE("During a rotation both secrets sign, and a receiver with either accepts", "[webhook]") {
  const WebhookSecret old_secret = MustOk(WebhookSecret::Parse(kVectorSecret));
  const WebhookSecret new_secret = MustOk(WebhookSecret::Generate());
  const std::string header = MustOk(
      WebhookSignatureHeader({new_secret, old_secret}, kVectorId, kVectorTimestamp, kVectorBody));
  CHECK(header == absl::StrCat(MustOk(new_secret.Sign(kVectorId, kVectorTimestamp, kVectorBody)),
                               " ", kVectorSignature));
  const std::string ts = "1614265330";
  CHECK(VerifyCode({old_secret}, kVectorId, ts, header, kVectorBody) == absl::StatusCode::kOk);
  CHECK(VerifyCode({new_secret}, kVectorId, ts, header, kVectorBody) == absl::StatusCode::kOk);
  CHECK(VerifyCode({MustOk(WebhookSecret::Generate())}, kVectorId, ts, header, kVectorBody) ==
        absl::StatusCode::kUnauthenticated);
  // Unknown versions and extra spaces among the entries are skipped.
  CHECK(VerifyCode({old_secret}, kVectorId, ts, absl::StrCat("v9,xyz  ", kVectorSignature, " "),
                   kVectorBody) == absl::StatusCode::kOk);
  // A receiver holding both secrets accepts a message signed by either alone.
  CHECK(VerifyCode({new_secret, old_secret}, kVectorId, ts, kVectorSignature, kVectorBody) ==
        absl::StatusCode::kOk);
}

}  // namespace
}  // namespace keygate
