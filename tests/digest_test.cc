// Digest at rest: SHA-256 / HMAC-SHA256 known answers, agreement with EVP.
#include "keygate/digest.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "internal/digest_prefix.h"

namespace keygate {
namespace {

Digest Hex(std::string_view hex) {
  Digest d{};
  REQUIRE(DigestFromHex(hex, &d));
  return d;
}

TEST_CASE("Unkeyed digest is SHA-256", "[digest][kat]") {
  auto h = TokenHasher::Create(std::nullopt);
  REQUIRE(h.ok());
  CHECK_FALSE((*h)->keyed());
  Digest d{};
  REQUIRE((*h)->Hash("abc", &d));
  CHECK(DigestToHex(d) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Repeated calls must not carry state between them.
  REQUIRE((*h)->Hash("abc", &d));
  CHECK(DigestToHex(d) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  REQUIRE((*h)->Hash("", &d));
  CHECK(DigestToHex(d) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("Keyed digest is HMAC-SHA256 (RFC 4231 test case 6)", "[digest][kat]") {
  const Secret pepper(std::string(131, '\xaa'));
  auto h = TokenHasher::Create(pepper);
  REQUIRE(h.ok());
  CHECK((*h)->keyed());
  const std::string data = "Test Using Larger Than Block-Size Key - Hash Key First";
  const Digest want = Hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  for (int i = 0; i < 3; ++i) {  // re-initialisation with the loaded key
    auto d = (*h)->Hash(data);
    REQUIRE(d.ok());
    CHECK(DigestEquals(*d, want));
  }
}

TEST_CASE("Keyed digest: RFC 4231 test case 7 (long key, long data)", "[digest][kat]") {
  const Secret pepper(std::string(131, '\xaa'));
  auto h = TokenHasher::Create(pepper);
  REQUIRE(h.ok());
  const std::string data =
      "This is a test using a larger than block-size key and a larger than block-size data. "
      "The key needs to be hashed before being used by the HMAC algorithm.";
  auto d = (*h)->Hash(data);
  REQUIRE(d.ok());
  CHECK(DigestToHex(*d) == "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

// The hasher pads messages itself and keeps HMAC midstates: check it against
// OpenSSL's own EVP implementation at every length around the block
// boundaries (55/56/64/119/120/128 bytes are where padding changes shape),
// for keys shorter than, equal to and longer than a block.
TEST_CASE("Digests match OpenSSL's EVP SHA-256 and HMAC at every length", "[digest]") {
  std::mt19937_64 rng(42);
  std::string msg(300, '\0');
  for (char& c : msg) c = static_cast<char>(rng());
  for (std::size_t key_len : {std::size_t{0}, std::size_t{32}, std::size_t{63}, std::size_t{64},
                              std::size_t{65}, std::size_t{200}}) {
    std::string key(key_len, '\0');
    for (char& c : key) c = static_cast<char>(rng());
    auto h = TokenHasher::Create(key_len == 0 ? std::nullopt : std::optional<Secret>(Secret(key)));
    REQUIRE(h.ok());
    for (std::size_t len = 0; len <= msg.size(); ++len) {
      const auto* data = reinterpret_cast<const unsigned char*>(msg.data());
      Digest want{};
      unsigned int want_len = 0;
      if (key_len == 0) {
        REQUIRE(EVP_Digest(data, len, want.data(), &want_len, EVP_sha256(), nullptr) == 1);
      } else {
        REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data, len, want.data(),
                     &want_len) != nullptr);
      }
      REQUIRE(want_len == kDigestSize);
      Digest got{};
      REQUIRE((*h)->Hash(std::string_view(msg.data(), len), &got));
      INFO("key length " << key_len << ", message length " << len);
      REQUIRE(DigestToHex(got) == DigestToHex(want));
    }
  }
}

TEST_CASE("Hashers with different peppers disagree, alternating on one thread", "[digest]") {
  auto a = TokenHasher::Create(Secret(std::string(32, 'a')));
  auto b = TokenHasher::Create(Secret(std::string(32, 'b')));
  auto plain = TokenHasher::Create(std::nullopt);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(plain.ok());
  const Digest da = *(*a)->Hash("token");
  const Digest db = *(*b)->Hash("token");
  const Digest dp = *(*plain)->Hash("token");
  CHECK_FALSE(DigestEquals(da, db));
  CHECK_FALSE(DigestEquals(da, dp));
  for (int i = 0; i < 4; ++i) {
    CHECK(DigestEquals(*(*a)->Hash("token"), da));
    CHECK(DigestEquals(*(*plain)->Hash("token"), dp));
    CHECK(DigestEquals(*(*b)->Hash("token"), db));
  }
}

TEST_CASE("A short pepper is rejected", "[digest]") {
  auto h = TokenHasher::Create(Secret(std::string(31, 'x')));
  CHECK(h.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(h.status().message()).find("pepper") != std::string::npos);
}

TEST_CASE("Hashing from many threads gives the same digests", "[digest][concurrent]") {
  auto h = TokenHasher::Create(Secret(std::string(48, 'p')));
  REQUIRE(h.ok());
  const Digest want = *(*h)->Hash("kg_live_token");
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        Digest d{};
        if (!(*h)->Hash("kg_live_token", &d) || !DigestEquals(d, want))
          ++mismatches[static_cast<std::size_t>(t)];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) CHECK(m == 0);
}

TEST_CASE("Digest hex round trip and prefix", "[digest]") {
  Digest d{};
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<std::uint8_t>(i * 7);
  Digest back{};
  REQUIRE(DigestFromHex(DigestToHex(d), &back));
  CHECK(back == d);
  CHECK_FALSE(DigestFromHex("zz", &back));
  CHECK_FALSE(DigestFromHex(std::string(64, 'g'), &back));
  std::uint64_t expect = 0;
  std::memcpy(&expect, d.data(), 8);
  CHECK(internal::DigestPrefix64(d) == expect);
}

}  // namespace
}  // namespace keygate
