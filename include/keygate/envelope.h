// keygate/envelope.h: envelope encryption for the secrets keygate must read back (a recoverable
// key's token, a webhook's signing secret), under key-encryption keys (KEKs) that live in files,
// never in a store.
//
// `Seal` draws a fresh 256-bit data key, encrypts the plaintext with it (AES-256-GCM) and wraps
// the data key with the primary KEK (AES-256-GCM); both bind the caller's associated data (a
// key id, say), so a sealed value copied onto another record does not open. `Open` accepts the
// primary KEK or any previous one (rotation); `Reseal` rewraps the data key under the primary
// without touching the ciphertext. A sealed value is text: "kge1." and URL-safe base64 of
//   version (1) | KEK id (8) | nonce (12) | wrapped data key (32) | tag (16)
//              | nonce (12) | ciphertext (n) | tag (16)
// 97 bytes over the plaintext before base64. The KEK id is a keyed hash of the KEK (it tells KEKs
// apart and reveals nothing of them).
//
// A KEK file is read like a pepper file (ReadPepperFile: a regular file, not a link, mode 0600
// unless allowed, 32 to 4096 bytes); its bytes are the input of HMAC-SHA256, whose output is the
// AES key. Generate one with `head -c 32 /dev/urandom > kek && chmod 600 kek`.
//
// Errors never hold a KEK, a data key or a plaintext byte: kInvalidArgument "sealed: ..." (not
// this format), kFailedPrecondition "sealed: under KEK <id>, which is not loaded", kDataLoss
// "sealed: does not open ..." (altered, or other associated data).
//
// Ownership: share one `Envelope` (shared_ptr); it owns its keys and wipes them on destruction.
// Thread safety: immutable; every method is const and thread-safe. Cost: two AES-GCM operations
// and an RNG draw per Seal, two per Open (a few microseconds); not a hot path.
//
// Example:
//   keygate::EnvelopeOptions o;
//   o.kek_file = "/etc/myapp/kek";              // mode 0600
//   o.previous_kek_files = {"/etc/myapp/kek.old"};  // while rotating
//   absl::StatusOr<std::shared_ptr<const keygate::Envelope>> env = keygate::Envelope::Create(o);
//   if (!env.ok()) return env.status();
//   absl::StatusOr<std::string> sealed = (*env)->Seal(secret_bytes, key_id);
//   absl::StatusOr<keygate::Secret> back = (*env)->Open(*sealed, key_id);

#ifndef KEYGATE_ENVELOPE_H_
#define KEYGATE_ENVELOPE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include "keygate/secret.h"

namespace keygate {

struct EnvelopeOptions {
  // The primary KEK's file: Seal and Reseal use it. Required.
  std::string kek_file = {};
  // Older KEKs' files, for Open and Reseal only: keep one here until everything sealed under it
  // is resealed.
  std::vector<std::string> previous_kek_files = {};
  // Accept KEK files that group or others may read or write (the warnings then say so).
  bool allow_group_or_world_access = false;
};

class Envelope {
 public:
  // Reads the files. Errors: ReadPepperFile's, prefixed with the option's name
  // ("kek_file: ...", "previous_kek_files[0]: ..."); kInvalidArgument when two files hold the
  // same KEK.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const Envelope>> Create(
      const EnvelopeOptions& options);
  // From the KEKs' bytes (a secrets manager, tests): each at least 32 bytes.
  // Errors: kInvalidArgument "kek: ...", "previous_keks[i]: ...".
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const Envelope>> FromKeys(
      const Secret& kek, const std::vector<Secret>& previous_keks = {});

  Envelope(const Envelope&) = delete;
  Envelope& operator=(const Envelope&) = delete;
  ~Envelope();

  // `plaintext` sealed under the primary KEK, bound to `associated_data`. Errors:
  // kInvalidArgument "plaintext: larger than 65536 bytes"; kInternal (OpenSSL failed).
  [[nodiscard]] absl::StatusOr<std::string> Seal(std::string_view plaintext,
                                                 std::string_view associated_data) const;
  // The plaintext, if `sealed` was sealed with this `associated_data` under a loaded KEK.
  [[nodiscard]] absl::StatusOr<Secret> Open(std::string_view sealed,
                                            std::string_view associated_data) const;
  // `sealed` with its data key rewrapped under the primary KEK (the same text when it already
  // is). Errors: Open's.
  [[nodiscard]] absl::StatusOr<std::string> Reseal(std::string_view sealed,
                                                   std::string_view associated_data) const;
  // Whether `sealed` names the primary KEK (false for anything else, malformed included).
  [[nodiscard]] bool UnderPrimary(std::string_view sealed) const;

  // The primary KEK's id, 16 hex digits (not secret).
  const std::string& primary_id() const noexcept { return ids_.front(); }
  // What to tell the operator about the files (never a key byte).
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }

 private:
  Envelope() = default;
  // FromKeys, with the options' names in errors and the files' warnings.
  static absl::StatusOr<std::shared_ptr<const Envelope>> Make(
      const Secret& kek, const std::vector<Secret>& previous_keks, std::string_view kek_field,
      std::string_view previous_field, std::vector<std::string> warnings);
  std::vector<Secret> keys_;      // AES-256 keys; [0] is the primary
  std::vector<std::string> ids_;  // their ids, hex
  std::vector<std::string> warnings_;
};

}  // namespace keygate

#endif  // KEYGATE_ENVELOPE_H_
