// The Lua scripts the Redis rate limiter runs. Both read Redis's clock (TIME), so the budget never
// depends on the clocks of the processes that share it. Times are microseconds as doubles (exact
// to a quarter of a microsecond for current dates).

#ifndef KEYGATE_SRC_REDIS_SCRIPTS_H_
#define KEYGATE_SRC_REDIS_SCRIPTS_H_

namespace keygate::internal {

// KEYS[1]: the subject's bucket (its TAT). ARGV: emission T (us), capacity C (us), debit (spent
// on credit, accepted only while there is room), want (to lease), forced (spent in fallback,
// charged up to an empty bucket), refund (leased, unspent), fleet N (a lease takes at most 1/N
// of what is left, so that one process cannot hoard a bucket the others need). Order: refund,
// forced, debit, lease.
// Returns {covered debit, granted, remaining after, us until one more fits, us until full}.
inline constexpr char kExchangeScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local C = tonumber(ARGV[2])
local debit = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local forced = tonumber(ARGV[5])
local refund = tonumber(ARGV[6])
local fleet = tonumber(ARGV[7])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
if refund > 0 then
  tat = tat - refund * T
  if tat < now then tat = now end
end
if forced > 0 then
  tat = math.max(tat, math.min(tat + forced * T, now + C))
end
local avail = math.floor((now + C - tat) / T + 1e-6)
if avail < 0 then avail = 0 end
local covered = math.min(debit, avail)
local granted = math.min(want, math.max(math.floor((avail - covered) / fleet), 1), avail - covered)
tat = tat + (covered + granted) * T
if tat > now then
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
else
  redis.call('DEL', KEYS[1])
end
local remaining = math.floor((now + C - tat) / T + 1e-6)
if remaining < 0 then remaining = 0 end
local wait = tat + T - C - now
if wait < 0 then wait = 0 end
return {covered, granted, remaining, math.ceil(wait), math.ceil(tat - now)}
)lua";

// KEYS[1]: the sorted set of live processes. ARGV: this process's id, the liveness horizon (us),
// "1" to leave. Returns the number of live processes.
inline constexpr char kMembersScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local horizon = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - horizon)
redis.call('PEXPIRE', KEYS[1], math.ceil(horizon / 1000) * 2)
return redis.call('ZCARD', KEYS[1])
)lua";

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_REDIS_SCRIPTS_H_
