// A blocking hiredis connection with a deadline on every call, for the rate limiter's
// background thread. Not thread-safe: one thread owns a RedisClient.

#ifndef KEYGATE_SRC_REDIS_REDIS_CLIENT_H_
#define KEYGATE_SRC_REDIS_REDIS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct redisContext;

namespace keygate::internal {

// A parsed "redis://" or "unix://" URL. The password is kept only to send AUTH.
struct RedisEndpoint {
  bool unix_socket = false;
  std::string host;  // TCP
  int port = 6379;   // TCP
  std::string path;  // Unix socket
  std::string user;
  std::string password;
  int db = 0;
};

// Errors: kInvalidArgument "url: ..." naming what is wrong, never the password.
absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url);

// One reply of a script call: an array of integers, or an error.
struct RedisIntReply {
  bool ok = false;
  bool noscript = false;  // the script cache was flushed (or Redis restarted)
  std::vector<std::int64_t> values;
};

class RedisClient {
 public:
  // Connects within `timeout`, authenticates, selects the database. Errors: kUnavailable naming
  // the endpoint (host:port or socket path) and the cause; never the password.
  static absl::StatusOr<std::unique_ptr<RedisClient>> Connect(const RedisEndpoint& endpoint,
                                                              absl::Duration timeout);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // SCRIPT LOAD; returns the script's SHA1.
  absl::StatusOr<std::string> LoadScript(std::string_view script);

  // Queues EVALSHA sha 1 key args... (arguments as text).
  void AppendEvalSha(std::string_view sha, std::string_view key,
                     const std::vector<std::string>& args);
  // Sends everything queued and reads one reply per queued call, in order. A transport error or
  // timeout fails the whole batch (the connection is then unusable: drop it).
  absl::Status Flush(std::vector<RedisIntReply>* replies);

 private:
  explicit RedisClient(redisContext* ctx) : ctx_(ctx) {}
  absl::Status TransportError(std::string_view what) const;

  redisContext* ctx_;
  std::string where_;  // "host:port" or the socket path, for errors
  int queued_ = 0;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_REDIS_REDIS_CLIENT_H_
