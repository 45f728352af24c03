// tests/redis_lua_gcra.h: the peers' way to share a rate limit through Redis, as a baseline for
// RedisRateLimiter: one synchronous EVALSHA of a GCRA script per request over hiredis (Kong's
// redis policy, redis-cell and Envoy's rate-limit service do the like). Used by
// redis_limiter_bench (its latency) and redis_fleet_test (its accuracy, 4 processes). Needs
// hiredis (not part of keygate::redis's interface: link it directly).
//
// Thread safety: a LuaGcra is one connection; use one per thread.
#ifndef KEYGATE_TESTS_REDIS_LUA_GCRA_H_
#define KEYGATE_TESTS_REDIS_LUA_GCRA_H_

#include <hiredis/hiredis.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "keygate/rate_limiter.h"

namespace keygate::testing {

// GCRA in Redis, times in microseconds from Redis's TIME. KEYS[1]: the subject's TAT. ARGV: the
// emission interval T, the capacity C = burst * T, the cost. Returns {1, 0} when allowed, {0, us
// until it would be} when not. A request of cost c at `now` is allowed iff
// max(TAT, now) + c * T - now <= C (as keygate's GCRA, rate_limiter.h).
inline constexpr char kLuaGcraScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local C = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + cost * T
if next_tat - now > C then return {0, math.ceil(next_tat - now - C)} end
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX',
           math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
)lua";

class LuaGcra {
 public:
  enum class Result { kAllowed, kDenied, kError };

  // Connects to the Unix socket `path` and loads the script; ok() says whether both worked.
  explicit LuaGcra(const std::string& path) : c_(redisConnectUnix(path.c_str())) {
    if (c_ == nullptr || c_->err != 0) return;
    Reply r = Command({"SCRIPT", "LOAD", kLuaGcraScript});
    if (r != nullptr && r->type == REDIS_REPLY_STRING) sha_.assign(r->str, r->len);
  }
  bool ok() const { return !sha_.empty(); }

  // One request of `cost` on `key` under `policy`: one round trip.
  Result Acquire(const std::string& key, const GcraPolicy& policy, std::uint32_t cost = 1) {
    const double t_us = static_cast<double>(policy.emission_ns) / 1000;
    const double c_us = static_cast<double>(policy.capacity_ns) / 1000;
    Reply r = Command({"EVALSHA", sha_, "1", key, std::to_string(t_us), std::to_string(c_us),
                       std::to_string(cost)});
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
      return Result::kError;
    }
    return r->element[0]->integer == 1 ? Result::kAllowed : Result::kDenied;
  }

  bool Delete(const std::string& key) { return Command({"DEL", key}) != nullptr; }

 private:
  struct ContextDeleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  struct ReplyDeleter {
    void operator()(redisReply* r) const { freeReplyObject(r); }
  };
  using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

  Reply Command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(
        redisCommandArgv(c_.get(), static_cast<int>(args.size()), argv.data(), lens.data())));
  }

  std::unique_ptr<redisContext, ContextDeleter> c_;
  std::string sha_;
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_REDIS_LUA_GCRA_H_
