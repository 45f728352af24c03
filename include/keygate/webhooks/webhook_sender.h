// keygate/webhooks/webhook_sender.h: one webhook delivery attempt over HTTPS, safe against
// server-side request forgery (component keygate::webhooks, libcurl).
//
// `Send` POSTs a signed message (webhook_signature.h) to a key's webhook URL and reports what
// happened. The address is checked on every attempt, not only when the URL was saved: the host
// is resolved then (a name may point at a private, loopback, link-local or metadata address
// since: DNS rebinding), every address it resolves to that a webhook may not reach is dropped
// (unless `allow_internal_hosts`), and the connection goes to a checked address, pinned, with
// the original host name for TLS (SNI, certificate check) and `Host`; a socket to any other
// address is refused when it is opened. Redirects are not followed (a 3xx is a failed attempt),
// only https is spoken, the environment's proxy variables ($https_proxy, $NO_PROXY) are ignored
// (an http(s) proxy is used only when `proxy` is set: the name is still resolved and checked
// here, but the proxy connects, so the check is then the proxy's too), the response body is read
// up to `max_response_bytes` (a longer one closes the connection), and connect and total timeouts
// bound the connection and the exchange (not the name lookup, which the system resolver bounds).
//
// Connections are kept for later attempts to the same host and port (`connection_lifetime`;
// never through a proxy). The name is still resolved and checked on every attempt, and an attempt
// none of whose addresses passes fails before any connection is used. A kept connection is reused
// only while the address it was opened to (checked then) is among those this attempt allows, and
// for at most `connection_lifetime` after it was opened; otherwise the attempt opens a new one,
// pinned and checked as above. So every request goes to an address that passed the check when
// its connection was opened, with this sender's options.
//
// Results: 2xx is kDelivered, 410 Gone kGone (the endpoint asked to be disabled), anything else
// kFailed (retry later). Errors never hold the message body or signature.
//
// Ownership: the sender owns its libcurl handles (up to 64 idle, each holding at most one
// connection and its TLS sessions); destroying it closes them. Thread safety: `Send` is const and
// thread-safe; concurrent calls use distinct handles (a mutex is held only to take one and give
// it back). Cost: a name lookup per attempt, plus a TLS handshake and a read of the trusted
// certificates only when no kept connection fits (on loopback, bench/webhook_bench: ~0.1 ms per
// attempt on a kept connection, ~1 ms with a new one); not a hot path.
//
// Example:
//   keygate::WebhookSenderOptions o;
//   std::unique_ptr<keygate::WebhookSender> sender = *keygate::WebhookSender::Create(o);
//   keygate::WebhookMessage m;
//   m.url = record.webhook_url;
//   m.id = "msg_...";  // the same for every attempt of this message
//   m.timestamp = absl::ToUnixSeconds(absl::Now());
//   m.body = payload_json;
//   m.signature = keygate::WebhookSignatureHeader({secret}, m.id, m.timestamp, m.body);
//   keygate::WebhookAttempt a = sender->Send(m);
//   if (a.result == keygate::WebhookResult::kGone) DisableEndpoint();

#ifndef KEYGATE_WEBHOOKS_WEBHOOK_SENDER_H_
#define KEYGATE_WEBHOOKS_WEBHOOK_SENDER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace keygate {

struct WebhookMessage {
  std::string url;             // https://host[:port]/path, as KeyRecord::webhook_url
  std::string id;              // webhook-id: the same for every attempt of one message
  std::int64_t timestamp = 0;  // webhook-timestamp, Unix seconds (this attempt's)
  std::string body;            // the JSON payload
  std::string signature;       // webhook-signature (WebhookSignatureHeader)
};

enum class WebhookResult : std::uint8_t {
  kDelivered,  // a 2xx response
  kGone,       // 410 Gone: stop sending to this endpoint
  kFailed,     // anything else: no connection, a timeout, a refused address, another status
};

// What one attempt did, for the delivery log.
struct WebhookAttempt {
  WebhookResult result = WebhookResult::kFailed;
  int status = 0;                                 // the HTTP status; 0 when no response came
  absl::Duration latency = absl::ZeroDuration();  // from the start of the attempt to its end
  std::string address;                            // the IP address connected to; empty when none
  std::string error;                              // why it failed; empty when a 2xx or 410 came
  std::string response;  // the start of the response body, at most max_response_bytes
};

struct WebhookSenderOptions {
  absl::Duration connect_timeout = absl::Seconds(5);  // 1 ms .. 1 min, TCP and TLS handshakes
  absl::Duration total_timeout = absl::Seconds(15);   // connect_timeout .. 5 min, whole attempt
  std::size_t max_response_bytes = 4096;              // 0 .. 1 MiB of the body kept
  // Reach loopback, private, link-local and reserved addresses (tests, a receiver in the same
  // network on purpose). The same classes KeyManager refuses in a webhook URL.
  bool allow_internal_hosts = false;
  // A PEM file of the certificate authorities to trust instead of the system's.
  std::string ca_file = {};
  // An http:// or https:// proxy URL to send through; empty: connect directly ($https_proxy and
  // $NO_PROXY are ignored either way).
  std::string proxy = {};
  // How long a connection may be reused after it was opened, and stay idle (1 s .. 10 min; libcurl
  // counts whole seconds, so it may serve up to a second longer): a DNS answer that still holds
  // its address among new ones is followed within this time. Each new connection reads the
  // trusted certificates (`ca_file`, or the system's) again, or uses a copy libcurl cached at
  // most this long ago. Zero: a new connection per attempt.
  absl::Duration connection_lifetime = absl::Seconds(60);
  // Name -> IP addresses (text). Empty: the system resolver (getaddrinfo). For tests.
  std::function<absl::StatusOr<std::vector<std::string>>(const std::string& host)> resolver = {};
};

class WebhookSender {
 public:
  // Errors: kInvalidArgument naming the option ("connect_timeout: ...", "connection_lifetime:
  // ...", "ca_file: cannot read ...").
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<WebhookSender>> Create(
      WebhookSenderOptions options);

  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;
  ~WebhookSender();

  // One attempt. A URL keygate would not store (webhook_url rules, key_manager.h) or a host with
  // no reachable address fails without a connection ("webhook_url: ...", "address: ...").
  WebhookAttempt Send(const WebhookMessage& message) const;

 private:
  struct Pool;  // the idle libcurl handles
  explicit WebhookSender(WebhookSenderOptions options);
  WebhookSenderOptions options_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace keygate

#endif  // KEYGATE_WEBHOOKS_WEBHOOK_SENDER_H_
