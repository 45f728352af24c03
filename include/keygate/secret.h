// keygate/secret.h: a container for secret bytes (API tokens, peppers).
//
// A `Secret` owns a copy of sensitive bytes, wipes them with `OPENSSL_cleanse`
// when destroyed, compares in constant time and never prints them: streaming a
// `Secret` writes `Secret(redacted)`. Reading the bytes takes an explicit
// access token, so every place that touches a secret is easy to find with
// `grep -n InsecureSecretAccess`.
//
// Example:
//
//   keygate::Secret token = created.token;            // copy wipes on destroy
//   std::string_view bytes =
//       token.Reveal(keygate::InsecureSecretAccess::Get());  // greppable
//   std::cout << token;                                // prints Secret(redacted)
//
// Thread safety: a `Secret` is a value type; concurrent const access is safe,
// mutation needs external synchronisation, as for `std::string`.

#ifndef KEYGATE_SECRET_H_
#define KEYGATE_SECRET_H_

#include <cstddef>
#include <iosfwd>
#include <string>
#include <string_view>

namespace keygate {

// The access token required to read a secret's bytes. Obtain it with
// `InsecureSecretAccess::Get()`; the name is deliberately alarming so that
// reviewers can find every read of secret material.
class SecretAccessToken {
 private:
  friend class InsecureSecretAccess;
  constexpr SecretAccessToken() = default;
};

class InsecureSecretAccess {
 public:
  static constexpr SecretAccessToken Get() { return SecretAccessToken(); }
};

// Owns secret bytes. Copyable (each copy is wiped on destruction) and movable
// (the moved-from object is wiped and left empty).
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string_view bytes);
  Secret(const Secret& other);
  Secret& operator=(const Secret& other);
  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  ~Secret();

  // The bytes. The view is valid until this object is modified or destroyed.
  std::string_view Reveal(SecretAccessToken /*access*/) const noexcept { return bytes_; }

  std::size_t size() const noexcept { return bytes_.size(); }
  bool empty() const noexcept { return bytes_.empty(); }

  // Wipes and empties the secret.
  void Clear() noexcept;

  // Constant-time in the contents (the lengths are not secret).
  friend bool operator==(const Secret& a, const Secret& b) noexcept;
  friend bool operator!=(const Secret& a, const Secret& b) noexcept { return !(a == b); }

 private:
  std::string bytes_;
};

// Compares two byte strings in time independent of their contents
// (CRYPTO_memcmp). Returns false when the sizes differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b) noexcept;

// Writes "Secret(redacted)"; never the bytes.
std::ostream& operator<<(std::ostream& os, const Secret& secret);

}  // namespace keygate

#endif  // KEYGATE_SECRET_H_
