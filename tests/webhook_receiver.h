// A local HTTPS webhook receiver for the tests of keygate::webhooks (cpp-httplib on 127.0.0.1,
// with a certificate for localhost, hooks.test and 127.0.0.1 made for the test).
#ifndef KEYGATE_TESTS_WEBHOOK_RECEIVER_H_
#define KEYGATE_TESTS_WEBHOOK_RECEIVER_H_

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

#include "catch.h"
#include "temp_cert.h"

namespace keygate::testing {

// What the receiver saw of one request.
struct Seen {
  std::string path;
  std::string host;
  std::string id;
  std::string timestamp;
  std::string signature;
  std::string content_type;
  std::string body;
};

// An HTTPS receiver on 127.0.0.1: /ok 204, /gone 410, /fail 500, /redirect 302 to /ok, /big
// 200 with 1 MiB, /slow answers after 3 s, /flaky 500 while fail_next() > 0 (counting down),
// then 204. Records every request.
class Receiver {
 public:
  Receiver() : cert_("DNS:localhost,DNS:hooks.test,IP:127.0.0.1") {
    REQUIRE(cert_.ok);
    server_ = std::make_unique<httplib::SSLServer>(cert_.cert.c_str(), cert_.key.c_str());
    REQUIRE(server_->is_valid());
    const auto record = [this](const httplib::Request& req) {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back({req.path, req.get_header_value("Host"), req.get_header_value("webhook-id"),
                       req.get_header_value("webhook-timestamp"),
                       req.get_header_value("webhook-signature"),
                       req.get_header_value("Content-Type"), req.body});
    };
    server_->Post("/ok", [record](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.status = 204;
    });
    server_->Post("/gone", [record](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.status = 410;
    });
    server_->Post("/fail", [record](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.status = 500;
      res.set_content("try later", "text/plain");
    });
    server_->Post("/redirect", [record](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.set_redirect("/ok", 302);
    });
    server_->Post("/big", [record](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.set_content(std::string(1 << 20, 'x'), "text/plain");
    });
    server_->Post("/flaky", [this, record](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.status = fail_next_.fetch_sub(1) > 0 ? 500 : 204;
    });
    server_->Post("/slow", [record](const httplib::Request& req, httplib::Response& res) {
      record(req);
      std::this_thread::sleep_for(std::chrono::seconds(3));
      res.status = 204;
    });
    port_ = server_->bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~Receiver() {
    server_->stop();
    thread_.join();
  }

  std::string Url(const std::string& host, const std::string& path) const {
    return absl::StrCat("https://", host, ":", port_, path);
  }
  int port() const { return port_; }
  const std::string& ca_file() const { return cert_.cert; }
  std::vector<Seen> seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  void set_fail_next(int n) { fail_next_ = n; }

 private:
  testing::TempCert cert_;
  std::unique_ptr<httplib::SSLServer> server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<Seen> seen_;
  std::atomic<int> fail_next_{0};
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_WEBHOOK_RECEIVER_H_
