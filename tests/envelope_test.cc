// Envelope encryption (keygate/envelope.h): round trips, binding to the associated data,
// tampering, KEK rotation, the documented layout, the KEK files, and errors without secrets.
#include "keygate/envelope.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"

#include "catch.h"

namespace keygate {
namespace {

const Secret kKekA("KEK-A-0123456789abcdefghijklmnopqrstuvwxyz");
const Secret kKekB("KEK-B-0123456789abcdefghijklmnopqrstuvwxyz");
constexpr char kPlain[] = "kg_live_PLAINTEXT-TOKEN-0123456789";

std::shared_ptr<const Envelope> Make(const Secret& kek, const std::vector<Secret>& previous = {}) {
  absl::StatusOr<std::shared_ptr<const Envelope>> e = Envelope::FromKeys(kek, previous);
  REQUIRE(e.ok());
  return *e;
}

std::string Raw(const std::string& sealed) {
  std::string raw;
  REQUIRE(sealed.rfind("kge1.", 0) == 0);
  REQUIRE(absl::WebSafeBase64Unescape(sealed.substr(5), &raw));
  return raw;
}

std::string Text(const Secret& s) { return std::string(s.Reveal(InsecureSecretAccess::Get())); }

TEST_CASE("Envelope seals and opens, bound to the associated data", "[envelope]") {
  const auto e = Make(kKekA);
  for (const std::string& plain : {std::string(kPlain), std::string(), std::string(5000, 'x')}) {
    absl::StatusOr<std::string> sealed = e->Seal(plain, "key_1");
    REQUIRE(sealed.ok());
    CHECK(sealed->find(kPlain) == std::string::npos);
    CHECK(Raw(*sealed).size() == 97 + plain.size());
    absl::StatusOr<Secret> back = e->Open(*sealed, "key_1");
    REQUIRE(back.ok());
    CHECK(Text(*back) == plain);
    // Copied onto another record, it does not open.
    absl::StatusOr<Secret> other = e->Open(*sealed, "key_2");
    CHECK(other.status().code() == absl::StatusCode::kDataLoss);
    CHECK(e->Open(*sealed, "").status().code() == absl::StatusCode::kDataLoss);
  }
  // Fresh data key and nonces each time.
  CHECK(*e->Seal(kPlain, "key_1") != *e->Seal(kPlain, "key_1"));
  CHECK(e->UnderPrimary(*e->Seal(kPlain, "key_1")));
}

TEST_CASE("Envelope refuses a sealed value with any byte changed", "[envelope]") {
  const auto e = Make(kKekA);
  const std::string raw = Raw(*e->Seal(kPlain, "key_1"));
  for (std::size_t i = 0; i < raw.size(); ++i) {
    std::string bad = raw;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    absl::StatusOr<Secret> r = e->Open("kge1." + absl::WebSafeBase64Escape(bad), "key_1");
    INFO("byte " << i);
    CHECK_FALSE(r.ok());
  }
  // Cut short or lengthened.
  CHECK_FALSE(
      e->Open("kge1." + absl::WebSafeBase64Escape(raw.substr(0, raw.size() - 1)), "key_1").ok());
  CHECK_FALSE(e->Open("kge1." + absl::WebSafeBase64Escape(raw + "x"), "key_1").ok());
  for (const std::string junk : {"", "kge1.", "kge1.!!!", "kge2.AAAA", "v1.AAAA"}) {
    INFO(junk);
    CHECK(e->Open(junk, "key_1").status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_FALSE(e->UnderPrimary(junk));
  }
}

TEST_CASE("Envelope follows the documented layout", "[envelope]") {
  const auto e = Make(kKekA);
  const std::string raw = Raw(*e->Seal(kPlain, "key_1"));
  CHECK(raw[0] == '\x01');
  // The KEK id: HMAC-SHA256(KEK, "keygate kek id v1"), its first 8 bytes.
  unsigned char mac[32];
  unsigned int len = 0;
  const std::string kek = Text(kKekA);
  const std::string label = "keygate kek id v1";
  REQUIRE(HMAC(EVP_sha256(), kek.data(), static_cast<int>(kek.size()),
               reinterpret_cast<const unsigned char*>(label.data()), label.size(), mac,
               &len) != nullptr);
  CHECK(raw.substr(1, 8) == std::string(reinterpret_cast<const char*>(mac), 8));
  CHECK(e->primary_id() == absl::BytesToHexString(raw.substr(1, 8)));
}

TEST_CASE("Envelope rotates its KEK: old values open, Reseal rewraps them", "[envelope]") {
  const auto old_env = Make(kKekA);
  const std::string sealed = *old_env->Seal(kPlain, "key_1");
  const auto rotating = Make(kKekB, {kKekA});
  CHECK(rotating->primary_id() != old_env->primary_id());
  CHECK_FALSE(rotating->UnderPrimary(sealed));
  REQUIRE(rotating->Open(sealed, "key_1").ok());
  CHECK(Text(*rotating->Open(sealed, "key_1")) == kPlain);

  absl::StatusOr<std::string> resealed = rotating->Reseal(sealed, "key_1");
  REQUIRE(resealed.ok());
  CHECK(rotating->UnderPrimary(*resealed));
  // The data key is rewrapped; the ciphertext of the token is unchanged.
  CHECK(Raw(*resealed).substr(69) == Raw(sealed).substr(69));
  CHECK(*rotating->Reseal(*resealed, "key_1") == *resealed);
  CHECK(rotating->Reseal(sealed, "key_2").status().code() == absl::StatusCode::kDataLoss);

  // Once the old KEK is dropped, only the resealed value opens.
  const auto done = Make(kKekB);
  CHECK(Text(*done->Open(*resealed, "key_1")) == kPlain);
  absl::StatusOr<Secret> stale = done->Open(sealed, "key_1");
  CHECK(stale.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(stale.status().message()).find(old_env->primary_id()) != std::string::npos);
  // And the old KEK alone cannot open the resealed one.
  CHECK(old_env->Open(*resealed, "key_1").status().code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("Envelope::FromKeys checks the keys", "[envelope]") {
  absl::StatusOr<std::shared_ptr<const Envelope>> e = Envelope::FromKeys(Secret("short"));
  CHECK(e.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(e.status().message()).rfind("kek: ", 0) == 0);
  e = Envelope::FromKeys(kKekA, {kKekB, Secret("short")});
  CHECK(std::string(e.status().message()).rfind("previous_keks[1]: ", 0) == 0);
  e = Envelope::FromKeys(kKekA, {kKekA});
  CHECK(e.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Envelope::Create reads KEK files like pepper files", "[envelope]") {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("keygate-envelope-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& name, const Secret& bytes, mode_t mode) {
    const std::string path = (dir / name).string();
    { std::ofstream(path, std::ios::binary) << Text(bytes) << "\n"; }
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    return path;
  };
  const std::string a = write("a", kKekA, 0600);
  const std::string b = write("b", kKekB, 0644);

  absl::StatusOr<std::shared_ptr<const Envelope>> e = Envelope::Create({.kek_file = a});
  REQUIRE(e.ok());
  CHECK((*e)->primary_id() == Make(kKekA)->primary_id());  // the trailing newline is not key
  CHECK((*e)->warnings().empty());

  e = Envelope::Create({.kek_file = a, .previous_kek_files = {b}});
  CHECK(e.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(e.status().message()).rfind("previous_kek_files[0]: ", 0) == 0);
  e = Envelope::Create(
      {.kek_file = a, .previous_kek_files = {b}, .allow_group_or_world_access = true});
  REQUIRE(e.ok());
  CHECK((*e)->warnings().size() == 1);
  e = Envelope::Create({.kek_file = (dir / "missing").string()});
  CHECK(e.status().code() == absl::StatusCode::kNotFound);
  CHECK(std::string(e.status().message()).rfind("kek_file: ", 0) == 0);
  CHECK(Envelope::Create({}).status().code() == absl::StatusCode::kInvalidArgument);

  // No error or warning holds a key byte.
  for (const absl::Status& s :
       {Envelope::Create({.kek_file = b}).status(), Envelope::FromKeys(kKekA, {kKekA}).status(),
        Make(kKekB)->Open(*Make(kKekA)->Seal(kPlain, "k"), "k").status(),
        Make(kKekA)->Open(*Make(kKekA)->Seal(kPlain, "k"), "j").status()}) {
    INFO(s.ToString());
    CHECK_FALSE(s.ok());
    CHECK(s.ToString().find("KEK-") == std::string::npos);
    CHECK(s.ToString().find("PLAINTEXT") == std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace keygate
