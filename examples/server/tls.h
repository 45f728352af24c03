// examples/server/tls.h: a self-signed certificate for the example server's
// demo mode (no --cert given), made in-process with OpenSSL's X509 API.
#ifndef KEYGATE_EXAMPLES_SERVER_TLS_H_
#define KEYGATE_EXAMPLES_SERVER_TLS_H_

#include <string>

#include "absl/status/statusor.h"

namespace keygate_example {

struct PemPair {
  std::string certificate;  // PEM
  std::string private_key;  // PEM (PKCS#8, unencrypted): keep it off disk
};

// An ECDSA P-256 certificate for CN=localhost with subjectAltName
// DNS:localhost, IP:127.0.0.1, IP:::1, valid from a minute ago for `days`.
// It is its own issuer, so a client trusts it with `curl --cacert cert.pem`.
// Errors: kInternal naming the OpenSSL step that failed.
absl::StatusOr<PemPair> MakeSelfSignedCertificate(int days);

}  // namespace keygate_example

#endif  // KEYGATE_EXAMPLES_SERVER_TLS_H_
