// A self-signed TLS certificate made in-process with OpenSSL's X509 API, for the tools' demo and
// first-run modes (`keygate serve`, the example server) when no certificate is given.
#ifndef KEYGATE_SRC_INTERNAL_SELF_SIGNED_CERT_H_
#define KEYGATE_SRC_INTERNAL_SELF_SIGNED_CERT_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace keygate::internal {

struct PemPair {
  std::string certificate;  // PEM
  std::string private_key;  // PEM (PKCS#8, unencrypted): keep it off disk
};

// An ECDSA P-256 certificate for O=`organization`, CN=localhost with subjectAltName
// DNS:localhost, IP:127.0.0.1, IP:::1, valid from a minute ago for `days`. It is its own issuer,
// so a client trusts it with `curl --cacert cert.pem`. Errors: kInternal naming the OpenSSL step
// that failed.
absl::StatusOr<PemPair> MakeSelfSignedCertificate(std::string_view organization, int days);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_SELF_SIGNED_CERT_H_
