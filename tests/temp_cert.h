// A self-signed TLS certificate for the tests that run real TLS servers.
#ifndef KEYGATE_TESTS_TEMP_CERT_H_
#define KEYGATE_TESTS_TEMP_CERT_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace keygate::testing {

// A certificate for CN=localhost (and any other names given) and its key, made with the openssl
// command-line tool in a fresh temporary directory removed at the end; `ok` says whether it worked.
struct TempCert {
  // `subject_alt_names`: an openssl subjectAltName value ("DNS:localhost,IP:127.0.0.1"), or
  // none.
  explicit TempCert(const std::string& subject_alt_names = "") {
    std::string tmpl = (std::filesystem::temp_directory_path() / "keygate_cert_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return;  // ok stays false
    dir = tmpl;
    cert = (dir / "cert.pem").string();
    key = (dir / "key.pem").string();
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
        "-subj /CN=localhost " +
        (subject_alt_names.empty() ? std::string()
                                   : "-addext 'subjectAltName=" + subject_alt_names + "' ") +
        "-keyout '" + key + "' -out '" + cert + "' >/dev/null 2>&1";
    ok = std::system(cmd.c_str()) == 0;
  }
  ~TempCert() {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
  TempCert(const TempCert&) = delete;
  TempCert& operator=(const TempCert&) = delete;

  std::filesystem::path dir;
  std::string cert;
  std::string key;
  bool ok = false;
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_TEMP_CERT_H_
