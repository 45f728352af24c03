// One webhook delivery attempt over libcurl (keygate/webhooks/webhook_sender.h).
//
// The address check: the host is resolved here, each address judged with the rules the webhook
// URL check uses (internal/ip_address.h), and curl is given the allowed ones through
// CURLOPT_RESOLVE, so that it connects to them while TLS and Host keep the name. The
// open-socket callback refuses any socket to another address: the check holds even if curl
// resolved the name itself.
//
// Connection reuse: the sender keeps idle easy handles in a pool. Each holds at most one
// connection (CURLOPT_MAXCONNECTS 1: when a transfer leaves a second one, curl closes the older),
// and the pool records which host and port and which address it goes to. An attempt lets curl
// reuse it (no CURLOPT_FRESH_CONNECT) only when both match the attempt's host and port and one of
// the addresses it allows; curl itself matches connections by host name and port only, so the
// record is what keeps a connection to an address this attempt dropped unused. The record is
// updated only from the transfer's own connection while it is still open (CURLINFO_ACTIVESOCKET);
// when a new connection did not survive, the older one (if any) is still the one described.
// curl_easy_reset after each attempt drops every option (and pointer into Send's frame) but keeps
// the connection, the DNS cache, TLS sessions and a cached CA store (libcurl caches one only
// without a CA directory: not Debian's build, whose default CURLOPT_CAPATH is /etc/ssl/certs).
// The pins are non-permanent DNS entries ("+host:port:..."), pruned after
// CURLOPT_DNS_CACHE_TIMEOUT, so a handle's cache stays small however many hosts it reaches.

#include "keygate/webhooks/webhook_sender.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "internal/ip_address.h"
#include "key_request_validation.h"

namespace keygate {
namespace {

constexpr std::size_t kMaxResponseBytes = std::size_t{1} << 20;

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Curl = std::unique_ptr<CURL, CurlDeleter>;
using CurlUrl = std::unique_ptr<CURLU, CurlDeleter>;
using CurlList = std::unique_ptr<curl_slist, CurlDeleter>;

struct CurlString {
  char* s = nullptr;
  ~CurlString() { curl_free(s); }
};

// As many idle handles as a dispatcher has workers at most.
constexpr std::size_t kMaxIdleHandles = 64;
// How long a pinned name stays in a handle's DNS cache: long after its transfer's connect.
constexpr long kPinSeconds = 60;

// An allowed address, as the open-socket callback compares it.
struct Allowed {
  int family = 0;  // AF_INET or AF_INET6
  std::array<std::uint8_t, 16> bytes{};

  friend bool operator==(const Allowed&, const Allowed&) = default;
};

// A libcurl handle between attempts, and what the one connection it may hold goes to.
struct Handle {
  Curl curl;
  bool holds = false;  // a connection may be open; then to `target` at `address`
  std::string target;  // "host:port", the host lower-cased, as the URL gave them
  Allowed address;
};

// Parses `text` (an IP address) into `out`; whether it is one a webhook may reach.
bool Judge(const std::string& text, bool allow_internal, Allowed* out) {
  internal::ClientAddress a;
  if (!internal::ParseClientAddress(text, &a)) return false;
  if (a.v6 && !a.mapped) {
    internal::Ipv6Bytes v6;
    std::copy(a.bytes.begin(), a.bytes.end(), v6.begin());
    if (!allow_internal && internal::IsInternalIpv6(v6)) return false;
    out->family = AF_INET6;
    std::copy(a.bytes.begin(), a.bytes.end(), out->bytes.begin());
    return true;
  }
  internal::Ipv4Bytes v4{a.bytes[0], a.bytes[1], a.bytes[2], a.bytes[3]};
  if (!allow_internal && internal::IsInternalIpv4(v4)) return false;
  out->family = AF_INET;
  std::copy(v4.begin(), v4.end(), out->bytes.begin());
  return true;
}

// The address a connected socket goes to, as the open-socket callback compares it.
bool PeerAddress(curl_socket_t socket, Allowed* out) {
  sockaddr_storage peer{};
  socklen_t size = sizeof peer;
  if (::getpeername(socket, reinterpret_cast<sockaddr*>(&peer), &size) != 0) return false;
  if (peer.ss_family == AF_INET) {
    out->family = AF_INET;
    std::memcpy(out->bytes.data(), &reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr, 4);
    return true;
  }
  if (peer.ss_family == AF_INET6) {
    out->family = AF_INET6;
    std::memcpy(out->bytes.data(), &reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr, 16);
    return true;
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> SystemResolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &list);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  std::vector<std::string> out;
  for (const addrinfo* p = list; p != nullptr; p = p->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* src =
        p->ai_family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(p->ai_addr)->sin_addr)
            : static_cast<const void*>(
                  &reinterpret_cast<const sockaddr_in6*>(p->ai_addr)->sin6_addr);
    if ((p->ai_family == AF_INET || p->ai_family == AF_INET6) &&
        ::inet_ntop(p->ai_family, src, text, sizeof text) != nullptr &&
        std::find(out.begin(), out.end(), text) == out.end()) {
      out.emplace_back(text);
    }
  }
  ::freeaddrinfo(list);
  return out;
}

// The open-socket callback: a socket only to an allowed address.
struct SocketGuard {
  const std::vector<Allowed>* allowed = nullptr;
  bool refused = false;
};

curl_socket_t OpenSocket(void* data, curlsocktype purpose, curl_sockaddr* address) {
  auto* guard = static_cast<SocketGuard*>(data);
  bool ok = purpose == CURLSOCKTYPE_IPCXN;
  if (ok && address->family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&address->addr);
    ok = std::any_of(guard->allowed->begin(), guard->allowed->end(), [in](const Allowed& a) {
      return a.family == AF_INET && std::memcmp(a.bytes.data(), &in->sin_addr, 4) == 0;
    });
  } else if (ok && address->family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address->addr);
    ok = std::any_of(guard->allowed->begin(), guard->allowed->end(), [in6](const Allowed& a) {
      return a.family == AF_INET6 && std::memcmp(a.bytes.data(), &in6->sin6_addr, 16) == 0;
    });
  } else {
    ok = false;
  }
  if (!ok) {
    guard->refused = true;
    return CURL_SOCKET_BAD;
  }
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

struct Body {
  std::string* out;
  std::size_t limit;
  bool truncated = false;
};

std::size_t WriteBody(char* data, std::size_t size, std::size_t n, void* user) {
  auto* body = static_cast<Body*>(user);
  const std::size_t bytes = size * n;
  const std::size_t room = body->limit - body->out->size();
  body->out->append(data, std::min(bytes, room));
  if (bytes > room) {
    body->truncated = true;
    return 0;  // stop reading: what is kept is all a delivery log needs
  }
  return bytes;
}

WebhookAttempt Failed(std::string error, absl::Time start) {
  WebhookAttempt a;
  a.result = WebhookResult::kFailed;
  a.error = std::move(error);
  a.latency = absl::Now() - start;
  return a;
}

absl::Status CheckDuration(absl::Duration d, absl::Duration min, absl::Duration max,
                           std::string_view field) {
  if (d < min || d > max) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": must be between ",
                                                   absl::FormatDuration(min), " and ",
                                                   absl::FormatDuration(max)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<WebhookSender>> WebhookSender::Create(WebhookSenderOptions options) {
  if (absl::Status s = CheckDuration(options.connect_timeout, absl::Milliseconds(1),
                                     absl::Minutes(1), "connect_timeout");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDuration(options.total_timeout, options.connect_timeout,
                                     absl::Minutes(5), "total_timeout");
      !s.ok()) {
    return s;
  }
  if (options.max_response_bytes > kMaxResponseBytes) {
    return absl::InvalidArgumentError("max_response_bytes: must be at most 1 MiB");
  }
  if (!options.proxy.empty() && options.proxy.rfind("http://", 0) != 0 &&
      options.proxy.rfind("https://", 0) != 0) {
    // SOCKS proxies would resolve the name here, unchecked.
    return absl::InvalidArgumentError("proxy: must be an http:// or https:// URL");
  }
  if (options.connection_lifetime != absl::ZeroDuration()) {
    if (absl::Status s = CheckDuration(options.connection_lifetime, absl::Seconds(1),
                                       absl::Minutes(10), "connection_lifetime");
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(s.message(), ", or zero"));
    }
  }
  if (!options.ca_file.empty() && ::access(options.ca_file.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ca_file: cannot read ", options.ca_file, ": ", std::strerror(errno)));
  }
  static std::once_flag init;
  static CURLcode init_code = CURLE_OK;
  std::call_once(init, [] { init_code = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init_code != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("libcurl: initialization failed: ", curl_easy_strerror(init_code)));
  }
  return std::unique_ptr<WebhookSender>(new WebhookSender(std::move(options)));
}

// The idle handles, the most recently used last.
struct WebhookSender::Pool {
  std::mutex mu;
  std::vector<std::unique_ptr<Handle>> idle;

  // One holding a connection to `target` if there is one, else one holding none, else the least
  // recently used; null when none is idle.
  std::unique_ptr<Handle> Take(const std::string& target) {
    std::lock_guard<std::mutex> lock(mu);
    if (idle.empty()) return nullptr;
    auto it = std::find_if(idle.rbegin(), idle.rend(), [&target](const auto& h) {
                return h->holds && h->target == target;
              }).base();
    if (it == idle.begin()) {
      it = std::find_if(idle.begin(), idle.end(), [](const auto& h) { return !h->holds; });
      if (it == idle.end()) it = idle.begin();
    } else {
      --it;  // base() points one past the match
    }
    std::unique_ptr<Handle> h = std::move(*it);
    idle.erase(it);
    return h;
  }

  void Give(std::unique_ptr<Handle> h) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (idle.size() < kMaxIdleHandles) {
        idle.push_back(std::move(h));
        return;
      }
    }
    h.reset();  // outside the lock: closing a connection may take a moment
  }
};

WebhookSender::WebhookSender(WebhookSenderOptions options)
    : options_(std::move(options)), pool_(std::make_unique<Pool>()) {}

WebhookSender::~WebhookSender() = default;

WebhookAttempt WebhookSender::Send(const WebhookMessage& message) const {
  const absl::Time start = absl::Now();
  if (absl::Status s = internal::CheckWebhookUrl(message.url, options_.allow_internal_hosts);
      !s.ok()) {
    return Failed(std::string(s.message()), start);
  }
  // The host and port as curl reads the URL (the same parser that connects).
  CurlUrl url(curl_url());
  if (url == nullptr) return Failed("libcurl: out of memory", start);
  CurlString host;
  CurlString port;
  if (curl_url_set(url.get(), CURLUPART_URL, message.url.c_str(), 0) != CURLUE_OK ||
      curl_url_get(url.get(), CURLUPART_HOST, &host.s, 0) != CURLUE_OK ||
      curl_url_get(url.get(), CURLUPART_PORT, &port.s, CURLU_DEFAULT_PORT) != CURLUE_OK) {
    return Failed("webhook_url: libcurl cannot parse it", start);
  }
  std::string name = host.s;
  const bool literal_v6 = name.size() >= 2 && name.front() == '[';
  if (literal_v6) name = name.substr(1, name.size() - 2);

  // Resolve now, on every attempt, and keep only the addresses a webhook may reach.
  std::vector<std::string> addresses;
  internal::ClientAddress literal;
  const bool is_literal = internal::ParseClientAddress(name, &literal);
  if (is_literal) {
    addresses.push_back(name);
  } else {
    absl::StatusOr<std::vector<std::string>> resolved =
        options_.resolver ? options_.resolver(name) : SystemResolve(name);
    if (!resolved.ok())
      return Failed(absl::StrCat("address: ", resolved.status().message()), start);
    addresses = *std::move(resolved);
  }
  std::vector<Allowed> allowed;
  std::vector<std::string> allowed_text;  // as curl reads them: from the bytes judged
  std::vector<std::string> refused_text;
  for (const std::string& a : addresses) {
    Allowed x;
    if (Judge(a, options_.allow_internal_hosts, &x)) {
      char text[INET6_ADDRSTRLEN] = {};
      if (::inet_ntop(x.family, x.bytes.data(), text, sizeof text) == nullptr) continue;
      allowed.push_back(x);
      allowed_text.push_back(x.family == AF_INET6 ? absl::StrCat("[", text, "]") : text);
    } else {
      refused_text.push_back(a);
    }
  }
  if (allowed.empty()) {
    return Failed(
        refused_text.empty()
            ? absl::StrCat("address: ", name, " has no address")
            : absl::StrCat("address: ", name,
                           " resolves only to addresses webhooks may not reach (loopback, "
                           "private, link-local or reserved): ",
                           absl::StrJoin(refused_text, ", ")),
        start);
  }

  // Everything the handle points at outlives the transfer (declared first).
  char error_buffer[CURL_ERROR_SIZE] = {};
  CurlList resolve;
  CurlList headers;
  std::string response;
  Body body{&response, options_.max_response_bytes};
  SocketGuard guard{&allowed};
  const auto append = [](CurlList& list, const std::string& line) {
    curl_slist* next = curl_slist_append(list.get(), line.c_str());
    if (next != nullptr) {
      (void)list.release();
      list.reset(next);
    }
    return next != nullptr;
  };
  const bool direct = options_.proxy.empty();
  // An IP literal needs no pinning (curl resolves nothing; the socket check still applies).
  const bool pin = direct && !is_literal;
  // Through a proxy the connection goes to the proxy, not to an address checked here: not kept.
  const bool keep = direct && options_.connection_lifetime > absl::ZeroDuration();
  const long lifetime_s = static_cast<long>(absl::ToInt64Seconds(options_.connection_lifetime));
  bool ok = true;
  if (pin) {
    // "+": an entry that expires (kPinSeconds), so that pins of other hosts leave the cache.
    ok = append(resolve, absl::StrCat("+", literal_v6 ? absl::StrCat("[", name, "]") : name, ":",
                                      port.s, ":", absl::StrJoin(allowed_text, ",")));
  }
  ok = ok && append(headers, "Content-Type: application/json") &&
       append(headers, absl::StrCat("webhook-id: ", message.id)) &&
       append(headers, absl::StrCat("webhook-timestamp: ", message.timestamp)) &&
       append(headers, absl::StrCat("webhook-signature: ", message.signature)) &&
       append(headers, "Expect:");
  if (!ok) return Failed("libcurl: out of memory", start);

  const std::string target = absl::StrCat(absl::AsciiStrToLower(host.s), ":", port.s);
  std::unique_ptr<Handle> handle = pool_->Take(target);
  if (handle == nullptr) {
    handle = std::make_unique<Handle>();
    handle->curl.reset(curl_easy_init());
    if (handle->curl == nullptr) return Failed("libcurl: out of memory", start);
  }
  CURL* c = handle->curl.get();
  // Its connection only if it goes where this attempt may go.
  const bool reuse = keep && handle->holds && handle->target == target &&
                     std::find(allowed.begin(), allowed.end(), handle->address) != allowed.end();
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_URL, message.url.c_str());
  // The options the address check rests on: an attempt fails rather than go without them.
  bool guarded = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
                 // "": no proxy, whatever $https_proxy and $NO_PROXY say.
                 curl_easy_setopt(c, CURLOPT_PROXY, options_.proxy.c_str()) == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_NOPROXY, "") == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, reuse ? 0L : 1L) == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_FORBID_REUSE, keep ? 0L : 1L) == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_MAXCONNECTS, 1L) == CURLE_OK &&
                 (!keep || (curl_easy_setopt(c, CURLOPT_MAXLIFETIME_CONN, lifetime_s) == CURLE_OK &&
                            curl_easy_setopt(c, CURLOPT_MAXAGE_CONN, lifetime_s) == CURLE_OK));
  // Set even when empty: a list left by an attempt that failed before using it is never read.
  guarded = guarded && curl_easy_setopt(c, CURLOPT_RESOLVE, resolve.get()) == CURLE_OK;
  if (direct) {
    guarded = guarded &&
              (!pin || curl_easy_setopt(c, CURLOPT_DNS_CACHE_TIMEOUT, kPinSeconds) == CURLE_OK) &&
              curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, OpenSocket) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &guard) == CURLE_OK;
  }
  if (!guarded) return Failed("libcurl: this build cannot enforce the address check", start);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.total_timeout)));
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, message.body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(message.body.size()));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_USERAGENT, "keygate-webhooks/1");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
#if LIBCURL_VERSION_NUM >= 0x075700  // 7.87: the CA store is cached, by default for a day
  // Cached in the handle as long as a connection may live (0: read for every connection).
  curl_easy_setopt(c, CURLOPT_CA_CACHE_TIMEOUT, keep ? lifetime_s : 0L);
#endif
  if (!options_.ca_file.empty()) {
    // Instead of the system's: Debian's libcurl also trusts its default CA directory unless
    // told not to.
    curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_CAPATH, static_cast<const char*>(nullptr));
  }

  const CURLcode rc = curl_easy_perform(c);
  WebhookAttempt a;
  a.latency = absl::Now() - start;
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  a.status = static_cast<int>(status);
  char* ip = nullptr;
  if (curl_easy_getinfo(c, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != nullptr) a.address = ip;
  // What the handle holds now: this transfer's connection if curl kept it (ACTIVESOCKET: then
  // an older one, if any, was closed, MAXCONNECTS being 1); else, after a reuse, nothing (the
  // connection reused, or found dead, is gone); else what it held before (a new connection
  // that was not kept leaves an older one as it was).
  curl_socket_t socket = CURL_SOCKET_BAD;
  Allowed used;
  if (keep && curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &socket) == CURLE_OK &&
      socket != CURL_SOCKET_BAD && PeerAddress(socket, &used)) {
    handle->holds = true;
    handle->target = target;
    handle->address = used;
  } else if (reuse) {
    handle->holds = false;
  }
  // Nothing of this attempt stays in the handle (its pointers into this frame included).
  curl_easy_reset(c);
  pool_->Give(std::move(handle));

  a.response = std::move(response);
  const bool cut_short = rc == CURLE_WRITE_ERROR && body.truncated;
  if (rc != CURLE_OK && !cut_short) {
    a.result = WebhookResult::kFailed;
    a.error = guard.refused ? "address: the connection was to an address webhooks may not reach"
              : error_buffer[0] != '\0' ? std::string(error_buffer)
                                        : std::string(curl_easy_strerror(rc));
    return a;
  }
  if (a.status >= 200 && a.status < 300) {
    a.result = WebhookResult::kDelivered;
  } else if (a.status == 410) {
    a.result = WebhookResult::kGone;
  } else {
    a.result = WebhookResult::kFailed;
    a.error = absl::StrCat("status ", a.status);
  }
  return a;
}

}  // namespace keygate
