#include "keygate/secret.h"

#include <openssl/crypto.h>

#include <ostream>
#include <utility>

namespace keygate {
namespace {

// Wipes the whole buffer, including spare capacity that may hold an older,
// longer secret.
void Wipe(std::string& s) noexcept {
  if (s.capacity() > 0) {
    s.resize(s.capacity());
    OPENSSL_cleanse(s.data(), s.size());
  }
  s.clear();
}

}  // namespace

Secret::Secret(std::string_view bytes) : bytes_(bytes) {}

Secret::Secret(const Secret& other) : bytes_(other.bytes_) {}

Secret& Secret::operator=(const Secret& other) {
  if (this != &other) {
    Wipe(bytes_);
    bytes_.assign(other.bytes_);
  }
  return *this;
}

// Moving a std::string may leave short-string-optimised bytes behind in the
// source, so copy then wipe rather than relying on the move.
Secret::Secret(Secret&& other) noexcept : bytes_(std::move(other.bytes_)) { Wipe(other.bytes_); }

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    Wipe(bytes_);
    bytes_ = std::move(other.bytes_);
    Wipe(other.bytes_);
  }
  return *this;
}

Secret::~Secret() { Wipe(bytes_); }

void Secret::Clear() noexcept { Wipe(bytes_); }

bool operator==(const Secret& a, const Secret& b) noexcept {
  return ConstantTimeEquals(a.bytes_, b.bytes_);
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::ostream& operator<<(std::ostream& os, const Secret& /*secret*/) {
  return os << "Secret(redacted)";
}

}  // namespace keygate
