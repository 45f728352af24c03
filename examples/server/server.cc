// The example API server's HTTP side (server.h): an asynchronous Beast
// server, one strand per connection, N threads on one io_context; HTTPS on
// one port and, optionally, plain HTTP on another to show that keygate
// refuses credentials sent in clear text.

#include "server.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/signal_set.hpp"
#include "boost/asio/ssl/context.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"

#include "internal/json_string.h"
#include "keygate/adapters/beast.h"
#ifdef KEYGATE_EXAMPLE_WITH_ADMIN
#include "keygate/admin/beast.h"
#endif
#include "keygate/verdict.h"

namespace keygate_example {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;
using Response = keygate::BeastResponse;

constexpr std::size_t kHeaderLimit = std::size_t{8} * 1024;  // also the read buffer's
constexpr std::size_t kBodyLimit = kMaxBodyBytes;
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
constexpr auto kReadTimeout = std::chrono::seconds(30);
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
constexpr auto kShutdownGrace = std::chrono::seconds(5);

std::string_view Std(beast::string_view v) { return {v.data(), v.size()}; }
// Debian's Abseil has its own string_view (see notes on the Abseil quirk).
absl::string_view Av(std::string_view v) { return {v.data(), v.size()}; }

// JSON string literals (response bodies, the access log's quoted owner):
// valid JSON and valid UTF-8 whatever the bytes, control characters (C1
// included) escaped; the library's own encoder.
using keygate::internal::JsonString;

// The "name" string of a small JSON object like {"name":"billing"}; enough
// for a demo (no escapes in names), strict about the rest.
std::optional<std::string> NameFromBody(std::string_view body) {
  const std::size_t key = body.find("\"name\"");
  if (key == std::string_view::npos) return std::nullopt;
  std::size_t i = key + 6;
  while (i < body.size() && (body[i] == ' ' || body[i] == ':')) ++i;
  if (i >= body.size() || body[i] != '"') return std::nullopt;
  const std::size_t end = body.find('"', i + 1);
  if (end == std::string_view::npos) return std::nullopt;
  std::string name(body.substr(i + 1, end - i - 1));
  if (name.empty() || name.size() > 100) return std::nullopt;
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '\\') return std::nullopt;
  }
  return name;
}

// Path segments at least this long are never logged: a token is 54+
// characters and its secret part alone 43, while no segment of this API's
// routes (project ids have at most 18 digits) comes near it. 32 leaves room
// for a token cut short in a paste.
constexpr std::size_t kRedactedSegmentLength = 32;
// Nor a segment holding this many base62 characters in a row (percent-decoded),
// wherever they stand in it ("t=<secret>", "Bearer%20<secret>").
constexpr std::size_t kRedactedBase62Run = 20;

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool IsBase62(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Decides what the access log must not show: segments of a path (or words of
// a message) that may hold (part of) a token of the deployment.
class Redactor {
 public:
  Redactor(std::string_view token_prefix, const std::vector<std::string>& environment_tags) {
    if (token_prefix.empty()) return;
    for (const char c : token_prefix) prefix_head_.push_back(Lower(c));
    prefix_head_.push_back('_');
    for (const std::string& tag : environment_tags) {
      std::string head = prefix_head_;
      for (const char c : tag) head.push_back(Lower(c));
      head.push_back('_');
      heads_.push_back(std::move(head));
    }
  }

  // Whether a path segment may hold (part of) a token: it is
  // kRedactedSegmentLength characters or more as sent, or, percent-decoded
  // and ASCII lower-cased, it starts with "<prefix>_", holds
  // "<prefix>_<tag>_" for an environment tag of the deployment anywhere
  // ("xkg_live_...", "Bearer kg_live_...", "t=kg_live_..."), or holds a run of
  // kRedactedBase62Run base62 characters.
  bool LooksLikeToken(std::string_view segment) const {
    if (segment.size() >= kRedactedSegmentLength) return true;
    std::string decoded;  // percent-decoded, lower case
    decoded.reserve(segment.size());
    std::size_t run = 0;
    for (std::size_t i = 0; i < segment.size(); ++i) {
      char c = segment[i];
      if (c == '%' && i + 2 < segment.size() && HexDigit(segment[i + 1]) >= 0 &&
          HexDigit(segment[i + 2]) >= 0) {
        c = static_cast<char>(HexDigit(segment[i + 1]) * 16 + HexDigit(segment[i + 2]));
        i += 2;
      }
      run = IsBase62(c) ? run + 1 : 0;
      if (run >= kRedactedBase62Run) return true;
      decoded.push_back(Lower(c));
    }
    if (prefix_head_.empty()) return false;
    if (decoded.rfind(prefix_head_, 0) == 0) return true;
    for (const std::string& head : heads_) {
      if (decoded.find(head) != std::string::npos) return true;
    }
    return false;
  }

  // The request path as the access log writes it: each segment that may
  // hold a token (LooksLikeToken) is replaced by "[redacted]", and every byte
  // that is not visible ASCII, '"' and '\' percent-encoded, so that the
  // field has no space, quote or line break in it.
  std::string Path(std::string_view path) const { return Join(path, '/'); }

  // Free text (an exception's message) for stderr: the same, word by word.
  std::string Text(std::string_view text) const { return Join(text, ' '); }

 private:
  std::string Join(std::string_view text, char separator) const {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size());
    std::size_t start = 0;
    while (start <= text.size()) {
      std::size_t end = text.find(separator, start);
      if (end == std::string_view::npos) end = text.size();
      const std::string_view segment = text.substr(start, end - start);
      if (LooksLikeToken(segment)) {
        out += "[redacted]";
      } else {
        for (const char c : segment) {
          const auto u = static_cast<unsigned char>(c);
          if (u <= 0x20 || u >= 0x7F || c == '"' || c == '\\') {
            out.push_back('%');
            out.push_back(kHex[u >> 4]);
            out.push_back(kHex[u & 0xF]);
          } else {
            out.push_back(c);
          }
        }
      }
      if (end == text.size()) break;
      out.push_back(separator);
      start = end + 1;
    }
    return out;
  }

  std::string prefix_head_;         // "<prefix>_", lower case; empty: no prefix rules
  std::vector<std::string> heads_;  // "<prefix>_<tag>_" for each environment
};

// The application's own data: projects in memory.
class Projects {
 public:
  Projects() {
    Add("website", "system");
    Add("mobile-app", "system");
  }
  std::string ListJson() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out = "{\"projects\":[";
    bool first = true;
    for (const auto& [id, p] : projects_) {
      if (!first) out.push_back(',');
      first = false;
      absl::StrAppend(&out, Json(id, p));
    }
    out += "]}";
    return out;
  }
  std::string Create(std::string name, std::string owner) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::uint64_t id = next_id_;
    Add(std::move(name), std::move(owner));
    return Json(id, projects_.at(id));
  }
  bool Delete(std::uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return projects_.erase(id) == 1;
  }

 private:
  struct Project {
    std::string name;
    std::string created_by;
  };
  void Add(std::string name, std::string owner) {
    projects_[next_id_++] = Project{std::move(name), std::move(owner)};
  }
  static std::string Json(std::uint64_t id, const Project& p) {
    return absl::StrCat("{\"id\":", id, ",\"name\":", JsonString(p.name),
                        ",\"created_by\":", JsonString(p.created_by), "}");
  }
  mutable std::mutex mu_;
  std::map<std::uint64_t, Project> projects_;
  std::uint64_t next_id_ = 1;
};

// What one request contributes to the access log.
struct LogEntry {
  keygate::Verdict verdict;
  bool checked = false;  // a protected route (the verdict means something)
  std::string owner;     // set when the request was attributed
};

class Server;

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  // Ends the connection if it is idle between requests (shutdown).
  virtual void CloseIfIdle() = 0;
};

// Errors of accept() that mean the process or the system is out of a
// resource (descriptors, buffers, memory) rather than one failed connection:
// retrying at once would spin on the listening socket, which stays readable.
bool OutOfResources(const beast::error_code& ec) {
  return ec == asio::error::no_descriptors ||
         ec == boost::system::errc::too_many_files_open_in_system ||
         ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
}

class Server {
 public:
  Server(const ServerConfig& config, const Api& api)
      : config_(config),
        api_(api),
        redactor_(config.token_prefix, config.environment_tags),
        tls_(ssl::context::tls_server),
        ioc_(config.threads),
        strand_(asio::make_strand(ioc_)),
        https_(strand_),
        https_backoff_(strand_),
        http_backoff_(strand_),
        signals_(strand_, SIGINT, SIGTERM),
        deadline_(strand_) {}

  absl::Status Init() {
    tls_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                     ssl::context::single_dh_use);
    beast::error_code ec;
    tls_.use_certificate_chain(asio::buffer(config_.tls.certificate), ec);
    if (ec) return absl::InvalidArgumentError("cert: not a usable PEM certificate chain");
    tls_.use_private_key(asio::buffer(config_.tls.private_key), ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError("key: not a usable PEM private key (or no match)");

    const asio::ip::address address = asio::ip::make_address(config_.address, ec);
    if (ec)
      return absl::InvalidArgumentError(absl::StrCat("listen: bad address ", config_.address));
    absl::Status s = Listen(&https_, address, config_.https_port);
    if (!s.ok()) return s;
    if (config_.http_port >= 0) {
      http_ = std::make_unique<tcp::acceptor>(strand_);
      s = Listen(http_.get(), address, config_.http_port);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  int https_port() const { return https_.local_endpoint().port(); }
  int http_port() const { return http_ ? http_->local_endpoint().port() : -1; }

  absl::Status Run() {
    asio::dispatch(strand_, [this] {
      Accept<true>(&https_, &https_backoff_);
      if (http_) Accept<false>(http_.get(), &http_backoff_);
      signals_.async_wait([this](const beast::error_code& ec, int) {
        if (!ec) BeginShutdown();
      });
    });
    running_.store(true, std::memory_order_release);
    std::vector<std::thread> threads;
    for (int i = 1; i < config_.threads; ++i) threads.emplace_back([this] { RunLoop(); });
    RunLoop();
    for (std::thread& t : threads) t.join();
    running_.store(false, std::memory_order_release);
    return absl::OkStatus();
  }

  bool stopping() const { return stopping_.load(std::memory_order_acquire); }

  // Registration of live sessions, so that shutdown can end idle ones.
  std::list<std::weak_ptr<SessionBase>>::iterator Register(std::weak_ptr<SessionBase> s) {
    std::lock_guard<std::mutex> lock(mu_);
    return sessions_.insert(sessions_.end(), std::move(s));
  }
  void Unregister(std::list<std::weak_ptr<SessionBase>>::iterator it) {
    std::lock_guard<std::mutex> lock(mu_);
    sessions_.erase(it);
    if (sessions_.empty() && stopping() && running_.load(std::memory_order_acquire)) {
      asio::post(strand_, [this] { deadline_.cancel(); });
    }
  }
  // A session's end: its place under max_connections is free again.
  void Release() { connections_.fetch_sub(1, std::memory_order_acq_rel); }

  void Handle(const Request& req, bool tls, std::string_view peer, Response* res);
  // A request refused before it reached a route (framing, limits): `*res`
  // becomes `status` with a JSON error body and Connection: close. `req` is
  // null when its header was not read whole.
  void Refuse(const Request* req, bool tls, std::string_view peer, http::status status,
              std::string_view message, Response* res);
  void Log(const Request* req, std::string_view peer, bool tls, const Response& res,
           const LogEntry& entry, std::chrono::steady_clock::duration took);

 private:
  absl::Status Listen(tcp::acceptor* acceptor, const asio::ip::address& address, int port) {
    beast::error_code ec;
    const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("listen: cannot listen on ", config_.address, ":",
                                                 port, ": ", ec.message()));
    }
    return absl::OkStatus();
  }

  // io_context::run() until it returns of itself. An exception out of a
  // handler (Beast throws std::length_error for a field it cannot store,
  // std::bad_alloc is always possible) unwinds that handler only, and with it
  // the last reference to its session, which closes the connection; the
  // other connections are served on. The message is Beast's or the standard
  // library's, redacted all the same; the request is never logged.
  void RunLoop() {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "keygate-example-server: connection dropped: %s\n",
                     redactor_.Text(e.what()).substr(0, 200).c_str());
      } catch (...) {
        std::fprintf(stderr, "keygate-example-server: connection dropped: unknown exception\n");
      }
    }
  }

  template <bool kTls>
  void Accept(tcp::acceptor* acceptor, asio::steady_timer* backoff);

  void BeginShutdown() {
    std::fprintf(stderr, "keygate-example-server: shutting down\n");
    stopping_.store(true, std::memory_order_release);
    beast::error_code ec;
    https_.close(ec);
    if (http_) http_->close(ec);
    https_backoff_.cancel();
    http_backoff_.cancel();
    std::vector<std::shared_ptr<SessionBase>> live;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& w : sessions_) {
        if (auto s = w.lock()) live.push_back(std::move(s));
      }
    }
    for (auto& s : live) s->CloseIfIdle();
    if (live.empty()) return;
    // Requests in flight get a grace period; then everything stops.
    deadline_.expires_after(kShutdownGrace);
    deadline_.async_wait([this](const beast::error_code& wait_ec) {
      if (!wait_ec) ioc_.stop();
    });
  }

  // Returns true when keygate answered the request (a denial): the response
  // is complete, Content-Length included (for HEAD, that of the body left
  // out), and must not be prepared again.
  bool RouteProjects(const Request& req, bool tls, std::string_view peer, Response* res,
                     LogEntry* entry);

  const ServerConfig& config_;
  const Api& api_;
  const Redactor redactor_;
  // Declared before ioc_ so that they outlive it: sessions abandoned by a
  // forced stop are destroyed with the io_context and unregister then.
  std::mutex mu_;
  std::list<std::weak_ptr<SessionBase>> sessions_;
  std::atomic<int> connections_{0};  // sessions alive (max_connections)
  std::atomic<bool> stopping_{false};
  std::atomic<bool> running_{false};
  Projects projects_;
  std::mutex log_mu_;
  ssl::context tls_;
  asio::io_context ioc_;
  // The acceptors, their back-off timers, the signals and the shutdown
  // deadline: one strand, so that shutdown never races an accept.
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::acceptor https_;
  std::unique_ptr<tcp::acceptor> http_;
  asio::steady_timer https_backoff_;
  asio::steady_timer http_backoff_;
  bool out_of_resources_ = false;  // said so on stderr (strand_ only)
  bool at_capacity_ = false;       // said so on stderr (strand_ only)
  asio::signal_set signals_;
  asio::steady_timer deadline_;
};

// The response to a request Beast could not read (RFC 9110 status codes).
http::status StatusFor(const beast::error_code& ec) {
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
    return http::status::request_header_fields_too_large;  // 431
  }
  if (ec == http::error::body_limit) return http::status::payload_too_large;  // 413
  return http::status::bad_request;
}

// Whether the request's framing is one this server reads as the client
// meant it (RFC 9112 6.1 and 6.3): no Transfer-Encoding, or one whose codings
// form a valid list ending in a single chunked, in HTTP/1.1 or later, and
// framed by Beast as chunked. Otherwise a Content-Length would frame a body
// the client encoded differently, and the rest would be read as the next
// request.
bool FramingIsSound(const Request& req, bool parser_chunked) {
  const auto is_tchar = [](char c) {
    return IsBase62(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  };
  const auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  bool any_field = false;
  bool codings = false;
  bool chunked_last = false;
  bool chunked_before = false;
  for (const auto& f : req) {
    if (f.name() != http::field::transfer_encoding) continue;
    any_field = true;
    // transfer-coding = token *( OWS ";" OWS transfer-parameter ), in a list
    // whose empty elements do not count (RFC 9110 5.6.1).
    std::string_view rest = Std(f.value());
    while (true) {
      const std::size_t comma = rest.find(',');
      const std::string_view element = trim(rest.substr(0, comma));
      if (!element.empty()) {
        const std::string_view name = trim(element.substr(0, element.find(';')));
        if (name.empty()) return false;
        for (const char c : name) {
          if (!is_tchar(c)) return false;
        }
        codings = true;
        if (chunked_last) chunked_before = true;  // a coding after chunked
        chunked_last = beast::iequals(beast::string_view(name.data(), name.size()), "chunked");
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  if (!any_field) return !parser_chunked;
  return codings && req.version() >= 11 && chunked_last && !chunked_before && parser_chunked;
}

template <bool kTls>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<kTls>> {
 public:
  using Stream = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

  // Takes over one place counted under max_connections (Server::Release).
  Session(tcp::socket&& socket, ssl::context& tls, Server* server)
      : stream_(MakeStream(std::move(socket), tls)), server_(server) {
    beast::error_code ec;
    const tcp::endpoint peer = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    peer_ = ec ? std::string("?") : peer.address().to_string();
  }
  ~Session() override {
    if (registered_) server_->Unregister(registration_);
    server_->Release();
  }

  void Run() {
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&Session::Start, this->shared_from_this()));
  }

  void CloseIfIdle() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->idle_) {
        beast::error_code ec;
        beast::get_lowest_layer(self->stream_).socket().cancel(ec);
      }
    });
  }

 private:
  static Stream MakeStream(tcp::socket&& socket, ssl::context& tls) {
    if constexpr (kTls) {
      return Stream(std::move(socket), tls);
    } else {
      (void)tls;
      return Stream(std::move(socket));
    }
  }

  void Start() {
    registration_ = server_->Register(this->weak_from_this());
    registered_ = true;
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kHandshakeTimeout);
      stream_.async_handshake(
          ssl::stream_base::server,
          beast::bind_front_handler(&Session::OnHandshake, this->shared_from_this()));
    } else {
      DoRead();
    }
  }

  void OnHandshake(beast::error_code ec) {
    if (ec) return;  // a client that failed TLS; nothing to answer
    DoRead();
  }

  // The header first, checked (framing) before any of the body is read.
  void DoRead() {
    if (server_->stopping()) return DoClose();
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    beast::get_lowest_layer(stream_).expires_after(kReadTimeout);
    idle_ = true;
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Session::OnHeader, this->shared_from_this()));
  }

  void OnHeader(beast::error_code ec, std::size_t) {
    idle_ = false;
    if (ec == http::error::end_of_stream) return DoClose();
    if (ec) return OnReadError(ec);
    const Request& req = parser_->get();
    if (!FramingIsSound(req, parser_->chunked())) {
      return Refuse(&req, http::status::bad_request,
                    "Unsupported Transfer-Encoding: send a body with Content-Length, or with "
                    "Transfer-Encoding: chunked (HTTP/1.1).");
    }
    header_fields_ = static_cast<std::size_t>(std::distance(req.begin(), req.end()));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::OnRead, this->shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec) return OnReadError(ec);
    const Request& req = parser_->get();
    // Beast adds trailer fields to the header's: refused, so that a field
    // sent after the body (Authorization, even) is never taken for a header
    // (RFC 9110 6.5.1), and so that they cost no more than the header limit.
    if (static_cast<std::size_t>(std::distance(req.begin(), req.end())) != header_fields_) {
      return Refuse(&req, http::status::bad_request, "Trailer fields are not accepted.");
    }
    res_ = {};
    server_->Handle(req, kTls, peer_, &res_);
    if (server_->stopping()) res_.keep_alive(false);
    http::async_write(stream_, res_,
                      beast::bind_front_handler(&Session::OnWrite, this->shared_from_this()));
  }

  // A request Beast could not read: an HTTP error (malformed, over a limit)
  // is answered and the connection closed; anything else (timeout, reset,
  // end of stream mid-request, shutdown) just ends it.
  void OnReadError(const beast::error_code& ec) {
    if (ec.category() != http::make_error_code(http::error::bad_target).category() ||
        ec == http::error::partial_message || ec == http::error::end_of_stream) {
      return;
    }
    const Request* req = parser_->is_header_done() ? &parser_->get() : nullptr;
    return Refuse(req, StatusFor(ec), "The request could not be read.");
  }

  void Refuse(const Request* req, http::status status, std::string_view message) {
    res_ = {};
    server_->Refuse(req, kTls, peer_, status, message, &res_);
    http::async_write(stream_, res_,
                      beast::bind_front_handler(&Session::OnWrite, this->shared_from_this()));
  }

  void OnWrite(beast::error_code ec, std::size_t) {
    if (ec) return;
    if (!res_.keep_alive()) return DoClose();
    DoRead();
  }

  void DoClose() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  Stream stream_;
  Server* server_;
  std::string peer_;
  // Bounded: Beast keeps a chunked body's whole trailer section in it (and
  // throws for a field of 64 KiB); a header never needs more.
  beast::flat_buffer buffer_{kHeaderLimit};
  std::optional<http::request_parser<http::string_body>> parser_;
  std::size_t header_fields_ = 0;
  Response res_;
  bool idle_ = false;
  bool registered_ = false;
  std::list<std::weak_ptr<SessionBase>>::iterator registration_;
};

template <bool kTls>
void Server::Accept(tcp::acceptor* acceptor, asio::steady_timer* backoff) {
  acceptor->async_accept(
      asio::make_strand(ioc_),
      asio::bind_executor(strand_, [this, acceptor, backoff](beast::error_code ec,
                                                             tcp::socket socket) {
        if (ec == asio::error::operation_aborted || stopping()) return;
        if (OutOfResources(ec)) {
          // The listening socket stays readable: accepting again at once
          // would spin. Wait, and say so once per episode.
          if (!out_of_resources_) {
            out_of_resources_ = true;
            std::fprintf(
                stderr,
                "keygate-example-server: accept: out of %s (%s); pausing accept %lld ms "
                "at a time\n",
                ec == asio::error::no_descriptors ||
                        ec == boost::system::errc::too_many_files_open_in_system
                    ? "file descriptors"
                    : "memory",
                ec.message().c_str(),
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(kAcceptBackoff).count()));
          }
          backoff->expires_after(kAcceptBackoff);
          backoff->async_wait([this, acceptor, backoff](const beast::error_code& wait_ec) {
            if (!wait_ec && !stopping()) Accept<kTls>(acceptor, backoff);
          });
          return;
        }
        // Accept the next one first, so that nothing thrown below (a
        // session that cannot be made) stops this port from accepting.
        Accept<kTls>(acceptor, backoff);
        if (!ec) {
          out_of_resources_ = false;
          if (connections_.fetch_add(1, std::memory_order_acq_rel) >= config_.max_connections) {
            // Full: closed at once rather than left to hold a descriptor.
            Release();
            if (!at_capacity_) {
              at_capacity_ = true;
              std::fprintf(stderr,
                           "keygate-example-server: %d connections (--max-connections): closing "
                           "new ones until some end\n",
                           config_.max_connections);
            }
            socket.close(ec);
          } else {
            at_capacity_ = false;
            beast::error_code opt_ec;
            socket.set_option(tcp::no_delay(true), opt_ec);
            std::shared_ptr<Session<kTls>> session;
            try {
              session = std::make_shared<Session<kTls>>(std::move(socket), tls_, this);
            } catch (const std::exception& e) {
              // Never made (SSL_new or memory failed): its slot goes back;
              // the socket closes with the exception.
              Release();
              std::fprintf(stderr, "keygate-example-server: connection dropped: %s\n", e.what());
            }
            if (session) session->Run();  // from here ~Session releases the slot
          }
        }
      }));
}

void SetJson(Response* res, http::status status, std::string body) {
  res->result(status);
  res->set(http::field::content_type, "application/json");
  res->body() = std::move(body);
}

std::string HttpDate() {
  return absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT", absl::Now(), absl::UTCTimeZone());
}

void Server::Handle(const Request& req, bool tls, std::string_view peer, Response* res) {
  const auto start = std::chrono::steady_clock::now();
  LogEntry entry;
  res->version(req.version());
  res->keep_alive(req.keep_alive());

  std::string_view target = Std(req.target());
  const std::string_view path = target.substr(0, target.find_first_of("?#"));
  bool complete = false;
  if (path == "/healthz") {
    if (req.method() == http::verb::get || req.method() == http::verb::head) {
      SetJson(res, http::status::ok, "{\"status\":\"ok\"}");
    } else {
      SetJson(res, http::status::method_not_allowed,
              "{\"error\":\"method_not_allowed\",\"message\":\"Use GET.\"}");
      res->set(http::field::allow, "GET, HEAD");
    }
  } else if (config_.bench_routes && path == "/open/v1/projects" &&
             req.method() == http::verb::get) {
    // The benchmark's baseline: the same handler, no keygate.
    SetJson(res, http::status::ok, projects_.ListJson());
  } else if (path == "/v1/projects" || path.rfind("/v1/projects/", 0) == 0) {
    complete = RouteProjects(req, tls, peer, res, &entry);
#ifdef KEYGATE_EXAMPLE_WITH_ADMIN
  } else if (api_.admin_api != nullptr && api_.admin_api->Serves(target)) {
    *res = keygate::ServeAdminBeast(*api_.admin_api, req, {.tls = tls, .client_address = peer});
    complete = true;  // its Content-Length (none for HEAD and 204) is final
#endif
  } else {
    SetJson(res, http::status::not_found,
            "{\"error\":\"not_found\",\"message\":\"No such resource.\"}");
  }
  res->set(http::field::server, "keygate-example");
  res->set(http::field::date, HttpDate());
  if (complete) {
    // keygate's denial already carries its Content-Length (for HEAD, that of
    // the body it left out); preparing the payload again would measure the
    // emptied body. Set again only to keep it the last field, as below.
    if (const auto it = res->find(http::field::content_length); it != res->end()) {
      const std::string length(it->value());
      res->set(http::field::content_length, length);
    }
  } else {
    res->prepare_payload();
    // RFC 9110 8.6: no Content-Length on a 204.
    if (res->result() == http::status::no_content) res->erase(http::field::content_length);
    // RFC 9110 9.3.2: HEAD gets GET's headers, Content-Length included.
    if (req.method() == http::verb::head) res->body().clear();
  }
  Log(&req, peer, tls, *res, entry, std::chrono::steady_clock::now() - start);
}

void Server::Refuse(const Request* req, bool tls, std::string_view peer, http::status status,
                    std::string_view message, Response* res) {
  const auto start = std::chrono::steady_clock::now();
  res->version(11);
  res->keep_alive(false);
  std::string_view error = "bad_request";
  if (status == http::status::payload_too_large) error = "body_too_large";
  if (status == http::status::request_header_fields_too_large) error = "header_too_large";
  SetJson(
      res, status,
      absl::StrCat("{\"error\":", JsonString(error), ",\"message\":", JsonString(message), "}"));
  res->set(http::field::server, "keygate-example");
  res->set(http::field::date, HttpDate());
  res->prepare_payload();
  Log(req, peer, tls, *res, LogEntry{}, std::chrono::steady_clock::now() - start);
}

bool Server::RouteProjects(const Request& req, bool tls, std::string_view peer, Response* res,
                           LogEntry* entry) {
  const std::string_view target = Std(req.target());
  const std::string_view path = target.substr(0, target.find_first_of("?#"));
  const keygate::BeastConnection conn{tls, peer};
  const bool collection = path == "/v1/projects";
  const http::verb method = req.method();

  const keygate::Requirement* requirement = nullptr;
  keygate::Attribution attribution = keygate::Attribution::kKeyIdOnly;
  if (collection && (method == http::verb::get || method == http::verb::head)) {
    requirement = &api_.read;
  } else if (collection && method == http::verb::post) {
    requirement = &api_.write;
    attribution = keygate::Attribution::kLookup;  // the new project names its creator
  } else if (!collection && method == http::verb::delete_) {
    requirement = &api_.admin;
    attribution = keygate::Attribution::kLookup;
  } else {
    SetJson(res, http::status::method_not_allowed,
            "{\"error\":\"method_not_allowed\",\"message\":\"Method not allowed here.\"}");
    res->set(http::field::allow, collection ? "GET, HEAD, POST" : "DELETE");
    return false;
  }

  const keygate::HttpAuthResult auth =
      keygate::CheckBeastRequest(*api_.auth, req, conn, *requirement, res, attribution);
  entry->checked = true;
  entry->verdict = auth.verdict;
  if (auth.principal) entry->owner = auth.principal->owner;
  if (!auth.allowed()) return true;

  if (method == http::verb::get || method == http::verb::head) {
    SetJson(res, http::status::ok, projects_.ListJson());
  } else if (method == http::verb::post) {
    std::optional<std::string> name = NameFromBody(req.body());
    if (!name) {
      SetJson(res, http::status::bad_request,
              "{\"error\":\"invalid_body\",\"message\":\"Send {\\\"name\\\":\\\"...\\\"} "
              "(1-100 characters).\"}");
      return false;
    }
    SetJson(res, http::status::created, projects_.Create(std::move(*name), entry->owner));
  } else {
    const std::string_view id_text = path.substr(std::string_view("/v1/projects/").size());
    std::uint64_t id = 0;
    bool numeric = !id_text.empty() && id_text.size() <= 18;
    for (char c : id_text) {
      if (c < '0' || c > '9') numeric = false;
      id = id * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (numeric && projects_.Delete(id)) {
      res->result(http::status::no_content);
      res->body().clear();
    } else {
      SetJson(res, http::status::not_found,
              "{\"error\":\"not_found\",\"message\":\"No such project.\"}");
    }
  }
  return false;
}

void Server::Log(const Request* req, std::string_view peer, bool tls, const Response& res,
                 const LogEntry& entry, std::chrono::steady_clock::duration took) {
  if (config_.access_log == nullptr) return;
  // A request whose header could not be read: "- -" for method and path.
  const std::string_view target = req != nullptr ? Std(req->target()) : std::string_view();
  // The path only: a query string may hold a key a client should not have
  // sent there. Nor a token pasted into the path: see Redactor.
  const std::string_view path = target.substr(0, target.find_first_of("?#"));
  // A method Beast does not know is whatever the client sent (a token, even):
  // only known ones are logged by name.
  std::string_view method = "-";
  if (req != nullptr) {
    method = req->method() == http::verb::unknown ? std::string_view("OTHER")
                                                  : Std(req->method_string());
  }
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                   Av(peer), " ", tls ? "https" : "http", " ", Av(method), " ",
                   req != nullptr ? redactor_.Path(path) : std::string("-"), " ", res.result_int());
  if (entry.checked) {
    absl::StrAppend(&line, " key=", entry.verdict.key().empty() ? "-" : Av(entry.verdict.key()),
                    " verdict=", Av(keygate::OutcomeName(entry.verdict.outcome)));
    // The owner is whatever the key's creator typed (spaces, quotes): quoted
    // and escaped as a JSON string, so that it cannot forge other fields or
    // lines.
    if (!entry.owner.empty()) absl::StrAppend(&line, " owner=", JsonString(entry.owner));
  }
  absl::StrAppend(
      &line, " us=", std::chrono::duration_cast<std::chrono::microseconds>(took).count(), "\n");
  std::lock_guard<std::mutex> lock(log_mu_);
  std::fwrite(line.data(), 1, line.size(), config_.access_log);
  std::fflush(config_.access_log);
}

}  // namespace

absl::Status Serve(const ServerConfig& config, const Api& api) {
  Server server(config, api);
  absl::Status s = server.Init();
  if (!s.ok()) return s;
  if (!config.port_file.empty()) {
    const std::string tmp = config.port_file + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) return absl::InternalError("port-file: cannot write " + tmp);
    std::fprintf(f, "https=%d\nhttp=%d\n", server.https_port(), server.http_port());
    if (std::fclose(f) != 0 || std::rename(tmp.c_str(), config.port_file.c_str()) != 0) {
      return absl::InternalError("port-file: cannot write " + config.port_file);
    }
  }
  std::fprintf(stderr, "keygate-example-server: listening on https://%s:%d/",
               config.address.c_str(), server.https_port());
  if (server.http_port() >= 0) {
    std::fprintf(stderr, " and http://%s:%d/ (plain, rejected)", config.address.c_str(),
                 server.http_port());
  }
  std::fprintf(stderr, "\n");
  return server.Run();
}

}  // namespace keygate_example
