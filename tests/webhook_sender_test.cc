// WebhookSender (keygate/webhooks/webhook_sender.h) against a real HTTPS receiver on loopback:
// signed deliveries, the result of each kind of answer, no redirects, capped responses,
// timeouts, and the address check on every attempt (a name that resolves to loopback is
// refused unless internal hosts are allowed, without a connection).

#include "keygate/webhooks/webhook_sender.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/webhook_signature.h"
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
  o.ca_file = "/nonexistent/ca.pem";
  CHECK_THAT(std::string(WebhookSender::Create(o).status().message()),
             Catch::StartsWith("ca_file: cannot read"));
  CHECK(WebhookSender::Create({}).ok());
}

}  // namespace
}  // namespace keygate
