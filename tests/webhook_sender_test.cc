// WebhookSender (keygate/webhooks/webhook_sender.h) against a real HTTPS receiver on loopback:
// signed deliveries, the result of each kind of answer, no redirects, capped responses,
// timeouts, the address check on every attempt (a name that resolves to loopback is refused
// unless internal hosts are allowed, without a connection), and connections kept only while
// they go where an attempt may go.

#include "keygate/webhooks/webhook_sender.h"

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/webhook_signature.h"
#include "temp_cert.h"
#include "test_util.h"
#include "webhook_receiver.h"

namespace keygate {
namespace {

using testing::MustOk;
using testing::Receiver;
using testing::Seen;

// "hooks.test" resolves to 127.0.0.1 (as a public name could, after DNS rebinding), as does
// localhost; "mixed.test" to two internal addresses; other names to nothing.
absl::StatusOr<std::vector<std::string>> TestResolver(const std::string& host) {
  if (host == "hooks.test" || host == "localhost") return std::vector<std::string>{"127.0.0.1"};
  if (host == "mixed.test") return std::vector<std::string>{"10.1.2.3", "169.254.169.254"};
  return absl::UnavailableError(absl::StrCat("cannot resolve ", host));
}

WebhookSenderOptions Options(const Receiver& r, bool allow_internal) {
  WebhookSenderOptions o;
  o.allow_internal_hosts = allow_internal;
  o.ca_file = r.ca_file();
  o.resolver = TestResolver;
  o.connect_timeout = absl::Seconds(2);
  o.total_timeout = absl::Seconds(10);
  return o;
}

struct Signed {
  WebhookSecret secret = MustOk(WebhookSecret::Generate());
  WebhookMessage Message(const std::string& url, const std::string& id = "msg_1") const {
    WebhookMessage m;
    m.url = url;
    m.id = id;
    m.timestamp = absl::ToUnixSeconds(absl::Now());
    m.body = R"({"type":"key.created","data":{"id":"key_1"}})";
    m.signature = MustOk(WebhookSignatureHeader({secret}, m.id, m.timestamp, m.body));
    return m;
  }
};

TEST_CASE("WebhookSender delivers a signed message the receiver can verify", "[webhooks]") {
  Receiver r;
  Signed s;
  auto sender = MustOk(WebhookSender::Create(Options(r, true)));
  const WebhookMessage m = s.Message(r.Url("localhost", "/ok"), "msg_stable");
  const WebhookAttempt a = sender->Send(m);
  INFO(a.error);
  CHECK(a.result == WebhookResult::kDelivered);
  CHECK(a.status == 204);
  CHECK(a.error.empty());
  CHECK(a.address == "127.0.0.1");
  CHECK(a.latency > absl::ZeroDuration());
  // A retry carries the same id.
  CHECK(sender->Send(m).result == WebhookResult::kDelivered);
  const std::vector<Seen> seen = r.seen();
  REQUIRE(seen.size() == 2);
  for (const Seen& x : seen) {
    CHECK(x.id == "msg_stable");
    CHECK(x.content_type == "application/json");
    CHECK(x.body == m.body);
    CHECK(VerifyWebhookSignature({s.secret}, x.id, x.timestamp, x.signature, x.body, absl::Now())
              .ok());
  }
}

TEST_CASE("WebhookSender reports 410 as gone, other statuses and redirects as failed",
          "[webhooks]") {
  Receiver r;
  Signed s;
  auto sender = MustOk(WebhookSender::Create(Options(r, true)));
  WebhookAttempt a = sender->Send(s.Message(r.Url("localhost", "/gone")));
  CHECK(a.result == WebhookResult::kGone);
  CHECK(a.status == 410);
  a = sender->Send(s.Message(r.Url("localhost", "/fail")));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK(a.status == 500);
  CHECK(a.error == "status 500");
  CHECK(a.response == "try later");
  // A redirect is not followed: /ok is never asked.
  a = sender->Send(s.Message(r.Url("localhost", "/redirect")));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK(a.status == 302);
  for (const Seen& x : r.seen()) CHECK(x.path != "/ok");
}

TEST_CASE("WebhookSender keeps only the start of a response and bounds an attempt's time",
          "[webhooks]") {
  Receiver r;
  Signed s;
  WebhookSenderOptions o = Options(r, true);
  o.max_response_bytes = 100;
  auto capped = MustOk(WebhookSender::Create(o));
  WebhookAttempt a = capped->Send(s.Message(r.Url("localhost", "/big")));
  INFO(a.error);
  CHECK(a.result == WebhookResult::kDelivered);
  CHECK(a.status == 200);
  CHECK(a.response == std::string(100, 'x'));
  // The receiver answers after 3 s; the attempt ends at 1.5 s.
  o.connect_timeout = absl::Milliseconds(1500);
  o.total_timeout = absl::Milliseconds(1500);
  auto quick = MustOk(WebhookSender::Create(o));
  a = quick->Send(s.Message(r.Url("localhost", "/slow")));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK(a.status == 0);
  CHECK(!a.error.empty());
  CHECK(a.latency < absl::Milliseconds(2900));
}

TEST_CASE("WebhookSender checks the address on every attempt, not only the URL", "[webhooks]") {
  Receiver r;
  Signed s;
  // The URL names a public-looking host; it resolves to loopback now.
  auto strict = MustOk(WebhookSender::Create(Options(r, false)));
  WebhookAttempt a = strict->Send(s.Message(r.Url("hooks.test", "/ok")));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK(a.status == 0);
  CHECK(a.address.empty());
  CHECK_THAT(a.error, Catch::Contains("may not reach") && Catch::Contains("127.0.0.1"));
  a = strict->Send(s.Message(r.Url("mixed.test", "/ok")));
  CHECK_THAT(a.error, Catch::Contains("10.1.2.3") && Catch::Contains("169.254.169.254"));
  // Literal internal addresses and localhost are refused as a stored URL would be.
  a = strict->Send(s.Message(r.Url("127.0.0.1", "/ok")));
  CHECK_THAT(a.error, Catch::StartsWith("webhook_url: "));
  a = strict->Send(s.Message(r.Url("localhost", "/ok")));
  CHECK_THAT(a.error, Catch::StartsWith("webhook_url: "));
  CHECK(r.seen().empty());  // not one connection

  // Allowed: the pinned address, with the name kept for TLS and Host.
  auto lenient = MustOk(WebhookSender::Create(Options(r, true)));
  a = lenient->Send(s.Message(r.Url("hooks.test", "/ok")));
  INFO(a.error);
  CHECK(a.result == WebhookResult::kDelivered);
  CHECK(a.address == "127.0.0.1");
  REQUIRE(r.seen().size() == 1);
  CHECK(r.seen()[0].host == absl::StrCat("hooks.test:", r.port()));
  // A name that does not resolve, a closed port, plain http: failed, saying why.
  a = lenient->Send(s.Message(r.Url("nowhere.test", "/ok")));
  CHECK_THAT(a.error, Catch::StartsWith("address: cannot resolve nowhere.test"));
  a = lenient->Send(s.Message("https://127.0.0.1:1/ok"));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK(!a.error.empty());
  a = lenient->Send(s.Message(absl::StrCat("http://localhost:", r.port(), "/ok")));
  CHECK_THAT(a.error, Catch::StartsWith("webhook_url: "));
}

TEST_CASE("WebhookSender verifies the receiver's certificate", "[webhooks]") {
  Receiver r;
  Signed s;
  WebhookSenderOptions o = Options(r, true);
  o.ca_file.clear();  // the system's authorities do not know the test's certificate
  auto sender = MustOk(WebhookSender::Create(o));
  const WebhookAttempt a = sender->Send(s.Message(r.Url("localhost", "/ok")));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK(a.status == 0);
  CHECK(r.seen().empty());
}

// An HTTPS receiver that tells connections apart (by the client's port): /ok 204, /big 200 with
// 1 MiB. It keeps a connection for 100 requests.
class ConnectionReceiver {
 public:
  ConnectionReceiver() : cert_("DNS:localhost,DNS:hooks.test,DNS:other.test,IP:127.0.0.1") {
    REQUIRE(cert_.ok);
    server_ = std::make_unique<httplib::SSLServer>(cert_.cert.c_str(), cert_.key.c_str());
    REQUIRE(server_->is_valid());
    server_->set_keep_alive_max_count(100);
    server_->Post("/ok", [this](const httplib::Request& req, httplib::Response& res) {
      Record(req);
      res.status = 204;
    });
    server_->Post("/big", [this](const httplib::Request& req, httplib::Response& res) {
      Record(req);
      res.set_content(std::string(1 << 20, 'x'), "text/plain");
    });
    port_ = server_->bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~ConnectionReceiver() {
    server_->stop();
    thread_.join();
  }
  ConnectionReceiver(const ConnectionReceiver&) = delete;
  ConnectionReceiver& operator=(const ConnectionReceiver&) = delete;

  std::string Url(const std::string& host, const std::string& path) const {
    return absl::StrCat("https://", host, ":", port_, path);
  }
  const std::string& ca_file() const { return cert_.cert; }
  std::size_t requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::size_t connections() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ports_.size();
  }

 private:
  void Record(const httplib::Request& req) {
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_;
    ports_.insert(req.remote_port);
  }
  testing::TempCert cert_;
  std::unique_ptr<httplib::SSLServer> server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::size_t requests_ = 0;
  std::set<int> ports_;
};

// A resolver whose answer for hooks.test and other.test the test changes ("" : none).
struct SwitchingResolver {
  std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
  std::shared_ptr<std::string> address = std::make_shared<std::string>("127.0.0.1");
  void Set(const std::string& a) const {
    std::lock_guard<std::mutex> lock(*mu);
    *address = a;
  }
  WebhookSenderOptions Options(const ConnectionReceiver& r) const {
    WebhookSenderOptions o;
    o.allow_internal_hosts = true;
    o.ca_file = r.ca_file();
    o.connect_timeout = absl::Seconds(2);
    o.total_timeout = absl::Seconds(10);
    o.resolver = [mu = mu, address = address](
                     const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
      std::lock_guard<std::mutex> lock(*mu);
      if ((host != "hooks.test" && host != "other.test") || address->empty()) {
        return absl::UnavailableError(absl::StrCat("cannot resolve ", host));
      }
      return std::vector<std::string>{*address};
    };
    return o;
  }
};

TEST_CASE("WebhookSender keeps a connection for later attempts to the same host",
          "[webhooks][reuse]") {
  ConnectionReceiver r;
  SwitchingResolver resolver;
  Signed s;
  auto sender = MustOk(WebhookSender::Create(resolver.Options(r)));
  for (int i = 0; i < 5; ++i) {
    const WebhookAttempt a = sender->Send(s.Message(r.Url("hooks.test", "/ok")));
    INFO(a.error);
    REQUIRE(a.result == WebhookResult::kDelivered);
    CHECK(a.address == "127.0.0.1");
  }
  CHECK(r.requests() == 5);
  CHECK(r.connections() == 1);
  // Another name is another connection, even to the same address.
  REQUIRE(sender->Send(s.Message(r.Url("other.test", "/ok"))).result == WebhookResult::kDelivered);
  CHECK(r.connections() == 2);
  // A response longer than kept closes its connection: the next attempt opens a new one.
  WebhookSenderOptions capped = resolver.Options(r);
  capped.max_response_bytes = 100;
  auto short_reads = MustOk(WebhookSender::Create(capped));
  REQUIRE(short_reads->Send(s.Message(r.Url("hooks.test", "/ok"))).result ==
          WebhookResult::kDelivered);
  REQUIRE(short_reads->Send(s.Message(r.Url("hooks.test", "/big"))).result ==
          WebhookResult::kDelivered);
  REQUIRE(short_reads->Send(s.Message(r.Url("hooks.test", "/ok"))).result ==
          WebhookResult::kDelivered);
  CHECK(r.connections() == 4);
  // connection_lifetime 0: a new connection per attempt, as before reuse.
  WebhookSenderOptions fresh = resolver.Options(r);
  fresh.connection_lifetime = absl::ZeroDuration();
  auto one_shot = MustOk(WebhookSender::Create(fresh));
  for (int i = 0; i < 3; ++i) {
    REQUIRE(one_shot->Send(s.Message(r.Url("hooks.test", "/ok"))).result ==
            WebhookResult::kDelivered);
  }
  CHECK(r.connections() == 7);
}

TEST_CASE("WebhookSender uses a kept connection only where the attempt may go",
          "[webhooks][reuse]") {
  ConnectionReceiver r;
  SwitchingResolver resolver;
  Signed s;
  auto sender = MustOk(WebhookSender::Create(resolver.Options(r)));
  REQUIRE(sender->Send(s.Message(r.Url("hooks.test", "/ok"))).result == WebhookResult::kDelivered);
  // The name stops resolving: the attempt fails before any connection is used.
  resolver.Set("");
  WebhookAttempt a = sender->Send(s.Message(r.Url("hooks.test", "/ok")));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK_THAT(a.error, Catch::StartsWith("address: cannot resolve hooks.test"));
  CHECK(a.address.empty());
  CHECK(r.requests() == 1);
  // It resolves to another address: the connection to 127.0.0.1 stays unused, and the new one
  // is refused (nothing listens on 127.0.0.2).
  resolver.Set("127.0.0.2");
  a = sender->Send(s.Message(r.Url("hooks.test", "/ok")));
  CHECK(a.result == WebhookResult::kFailed);
  CHECK(a.status == 0);
  CHECK(!a.error.empty());
  CHECK(r.requests() == 1);
  // Back to 127.0.0.1: delivered.
  resolver.Set("127.0.0.1");
  a = sender->Send(s.Message(r.Url("hooks.test", "/ok")));
  INFO(a.error);
  CHECK(a.result == WebhookResult::kDelivered);
  CHECK(r.requests() == 2);
}

TEST_CASE("WebhookSender closes a kept connection after connection_lifetime", "[webhooks][reuse]") {
  ConnectionReceiver r;
  SwitchingResolver resolver;
  Signed s;
  WebhookSenderOptions o = resolver.Options(r);
  o.connection_lifetime = absl::Seconds(1);
  auto sender = MustOk(WebhookSender::Create(o));
  // Never idle for long, yet replaced once it is over a second old.
  for (int i = 0; i < 9; ++i) {
    REQUIRE(sender->Send(s.Message(r.Url("hooks.test", "/ok"))).result ==
            WebhookResult::kDelivered);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  CHECK(r.connections() >= 2);
  // About three (2.7 s of sends); fewer than one per send, with room for slow handshakes under
  // sanitizers.
  CHECK(r.connections() <= 6);
}

TEST_CASE("WebhookSender sends from many threads, one connection per concurrent attempt",
          "[webhooks][reuse]") {
  ConnectionReceiver r;
  SwitchingResolver resolver;
  Signed s;
  auto sender = MustOk(WebhookSender::Create(resolver.Options(r)));
  constexpr std::size_t kThreads = 4;
  constexpr std::size_t kEach = 10;
  // Signed here: Catch's assertions (MustOk) are for the main thread only.
  const WebhookMessage m = s.Message(r.Url("hooks.test", "/ok"));
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<std::string> errors;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (std::size_t i = 0; i < kEach; ++i) {
        const WebhookAttempt a = sender->Send(m);
        if (a.result != WebhookResult::kDelivered) {
          std::lock_guard<std::mutex> lock(mu);
          errors.push_back(a.error);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(errors.empty());
  CHECK(r.requests() == kThreads * kEach);
  CHECK(r.connections() <= kThreads);
}

TEST_CASE("WebhookSender::Create refuses options that cannot work", "[webhooks]") {
  WebhookSenderOptions o;
  o.connect_timeout = absl::ZeroDuration();
  CHECK_THAT(std::string(WebhookSender::Create(o).status().message()),
             Catch::StartsWith("connect_timeout: "));
  o = {};
  o.total_timeout = absl::Seconds(1);  // shorter than the connect timeout
  CHECK_THAT(std::string(WebhookSender::Create(o).status().message()),
             Catch::StartsWith("total_timeout: "));
  o = {};
  o.max_response_bytes = (1 << 20) + 1;
  CHECK(!WebhookSender::Create(o).ok());
  o = {};
  o.proxy = "socks5://127.0.0.1:1080";  // would resolve names here, unchecked
  CHECK_THAT(std::string(WebhookSender::Create(o).status().message()),
             Catch::StartsWith("proxy: "));
  o = {};
  o.connection_lifetime = absl::Milliseconds(500);
  CHECK_THAT(std::string(WebhookSender::Create(o).status().message()),
             Catch::StartsWith("connection_lifetime: "));
  o.connection_lifetime = absl::Minutes(11);
  CHECK(!WebhookSender::Create(o).ok());
  o.connection_lifetime = absl::ZeroDuration();  // no reuse
  CHECK(WebhookSender::Create(o).ok());
  o = {};
  o.ca_file = "/nonexistent/ca.pem";
  CHECK_THAT(std::string(WebhookSender::Create(o).status().message()),
             Catch::StartsWith("ca_file: cannot read"));
  CHECK(WebhookSender::Create({}).ok());
}

}  // namespace
}  // namespace keygate
