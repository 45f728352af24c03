#include "redis/redis_client.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <charconv>
#include <cstddef>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/percent.h"

namespace keygate::internal {
namespace {

absl::Status UrlError(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("url: ", std::string(why)));
}

bool ParseInt(std::string_view s, int min, int max, int* out) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < min || v > max) {
    return false;
  }
  *out = v;
  return true;
}

// "user:password", ":password" (no user). The values are not echoed in errors.
absl::Status ParseUserInfo(std::string_view info, RedisEndpoint* e) {
  const std::size_t colon = info.find(':');
  if (colon == std::string_view::npos) {
    return UrlError("credentials must be user:password or :password");
  }
  if (!internal::PercentDecode(info.substr(0, colon), false, &e->user) ||
      !internal::PercentDecode(info.substr(colon + 1), false, &e->password)) {
    return UrlError("credentials hold a malformed %-escape");
  }
  if (e->password.empty()) return UrlError("credentials have an empty password");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url) {
  RedisEndpoint e;
  std::string_view rest;
  if (url.substr(0, 8) == "redis://") {
    rest = url.substr(8);
  } else if (url.substr(0, 7) == "unix://") {
    rest = url.substr(7);
    e.unix_socket = true;
  } else if (url.empty()) {
    return UrlError("required");
  } else {
    return UrlError("unsupported scheme (want redis:// or unix://)");
  }
  if (e.unix_socket) {
    // [userinfo@]/path[?db=N]
    const std::size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return UrlError("unix:// needs an absolute socket path");
    if (slash > 0) {
      std::string_view info = rest.substr(0, slash);
      if (info.back() != '@') return UrlError("unix:// needs an absolute socket path");
      info.remove_suffix(1);
      if (absl::Status s = ParseUserInfo(info, &e); !s.ok()) return s;
    }
    std::string_view path = rest.substr(slash);
    const std::size_t q = path.find('?');
    if (q != std::string_view::npos) {
      std::string_view query = path.substr(q + 1);
      path = path.substr(0, q);
      if (query.substr(0, 3) != "db=" || !ParseInt(query.substr(3), 0, 1 << 20, &e.db)) {
        return UrlError("the only query parameter is db=N");
      }
    }
    if (path.size() < 2) return UrlError("unix:// needs an absolute socket path");
    e.path = std::string(path);
    return e;
  }
  // [userinfo@]host[:port][/db]
  std::string_view authority = rest;
  std::string_view db;
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    db = rest.substr(slash + 1);
  }
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    if (absl::Status s = ParseUserInfo(authority.substr(0, at), &e); !s.ok()) return s;
    authority = authority.substr(at + 1);
  }
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return UrlError("unterminated [IPv6 address]");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return UrlError("junk after the [IPv6 address]");
      port = after.substr(1);
      if (port.empty()) return UrlError("port: empty");
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) return UrlError("port: empty");
  }
  if (host.empty()) return UrlError("host: required");
  if (!port.empty() && !ParseInt(port, 1, 65535, &e.port)) return UrlError("port: must be 1-65535");
  if (!db.empty() && !ParseInt(db, 0, 1 << 20, &e.db)) return UrlError("database: not a number");
  e.host = std::string(host);
  return e;
}

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::Connect(const RedisEndpoint& endpoint,
                                                                  absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  redisContext* ctx = endpoint.unix_socket
                          ? redisConnectUnixWithTimeout(endpoint.path.c_str(), tv)
                          : redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, tv);
  const std::string where =
      endpoint.unix_socket ? endpoint.path : absl::StrCat(endpoint.host, ":", endpoint.port);
  if (ctx == nullptr)
    return absl::UnavailableError(absl::StrCat("redis ", where, ": out of memory"));
  std::unique_ptr<RedisClient> client(new RedisClient(ctx));
  client->where_ = where;
  if (ctx->err != 0) return client->TransportError("connect");
  if (redisSetTimeout(ctx, tv) != REDIS_OK) return client->TransportError("set timeout");

  // Runs one command given as argv; an error reply is reported by `what` only, since the
  // arguments may hold a password.
  auto command = [&](const std::vector<std::string_view>& argv,
                     std::string_view what) -> absl::Status {
    std::vector<const char*> args;
    std::vector<std::size_t> lens;
    for (std::string_view a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(ctx, static_cast<int>(args.size()), args.data(), lens.data()));
    if (reply == nullptr) return client->TransportError(what);
    const bool error = reply->type == REDIS_REPLY_ERROR;
    freeReplyObject(reply);
    if (error) {
      return absl::UnavailableError(
          absl::StrCat("redis ", where, ": ", std::string(what), " was refused"));
    }
    return absl::OkStatus();
  };
  if (!endpoint.password.empty()) {
    absl::Status s = endpoint.user.empty()
                         ? command({"AUTH", endpoint.password}, "AUTH")
                         : command({"AUTH", endpoint.user, endpoint.password}, "AUTH");
    if (!s.ok()) return s;
  }
  if (endpoint.db != 0) {
    const std::string db = std::to_string(endpoint.db);
    if (absl::Status s = command({"SELECT", db}, "SELECT"); !s.ok()) return s;
  }
  return client;
}

RedisClient::~RedisClient() { redisFree(ctx_); }

absl::Status RedisClient::TransportError(std::string_view what) const {
  const char* why = ctx_->err != 0 ? ctx_->errstr : "no reply";
  return absl::UnavailableError(absl::StrCat("redis ", where_, ": ", std::string(what), ": ", why));
}

absl::StatusOr<std::string> RedisClient::LoadScript(std::string_view script) {
  auto* reply =
      static_cast<redisReply*>(redisCommand(ctx_, "SCRIPT LOAD %b", script.data(), script.size()));
  if (reply == nullptr) return TransportError("SCRIPT LOAD");
  std::string sha;
  const bool ok = reply->type == REDIS_REPLY_STRING;
  if (ok) sha.assign(reply->str, reply->len);
  freeReplyObject(reply);
  if (!ok) return absl::UnavailableError(absl::StrCat("redis ", where_, ": SCRIPT LOAD refused"));
  return sha;
}

void RedisClient::AppendEvalSha(std::string_view sha, std::string_view key,
                                const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size() + 4);
  lens.reserve(args.size() + 4);
  auto add = [&](std::string_view a) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  };
  add("EVALSHA");
  add(sha);
  add("1");
  add(key);
  for (const std::string& a : args) add(a);
  redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data());
  ++queued_;
}

absl::Status RedisClient::Flush(std::vector<RedisIntReply>* replies) {
  replies->clear();
  const int n = std::exchange(queued_, 0);
  for (int i = 0; i < n; ++i) {
    void* raw = nullptr;
    if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) {
      return TransportError("EVALSHA");
    }
    auto* reply = static_cast<redisReply*>(raw);
    RedisIntReply r;
    if (reply->type == REDIS_REPLY_ARRAY) {
      r.ok = true;
      for (std::size_t j = 0; j < reply->elements; ++j) {
        const redisReply* e = reply->element[j];
        if (e->type != REDIS_REPLY_INTEGER) {
          r.ok = false;
          break;
        }
        r.values.push_back(e->integer);
      }
    } else if (reply->type == REDIS_REPLY_INTEGER) {
      r.ok = true;
      r.values.push_back(reply->integer);
    } else if (reply->type == REDIS_REPLY_ERROR) {
      r.noscript = std::string_view(reply->str, reply->len).substr(0, 8) == "NOSCRIPT";
    }
    freeReplyObject(reply);
    replies->push_back(std::move(r));
  }
  return absl::OkStatus();
}

}  // namespace keygate::internal
