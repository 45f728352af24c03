// One process of redis_fleet_test's fleet: a RedisRateLimiter on a shared Redis, hammered by a
// few threads at a fixed demand, recording when each request was admitted.
//
//   redis_fleet_helper --url=unix:///tmp/.../redis.sock --out=FILE --go=FILE
//       [--threads=3] [--rate=2000] [--burst=200] [--period-ms=1000] [--fleet-size=4]
//       [--demand=2500] [--duration-ms=4000] [--skew-ms=0] [--key-rate=0] [--key-burst=0]
//       [--lua=0]
//
// It creates its limiter, waits until it is connected, writes FILE.ready, then waits for the go
// file (written by the test, with the start time T0 in Unix ns on its only line). From T0 for
// duration-ms, `threads` threads together try `demand` requests per second on subject
// "key_fleet" under a policy of `rate` per `period-ms` (burst `burst`).
//
// --skew-ms: this process's clock runs that far ahead (negative: behind): the limiter's clock
// and every `now_ns` passed to Acquire carry the skew. Recorded times have it removed (real
// CLOCK_REALTIME), so the test compares all processes on one time line.
//
// SIGPIPE is ignored, as servers do, so that a Redis killed mid-run ends no helper.
//
// --key-rate > 0 (two limits): every attempt is two requests, one on key "key_a" limited by its
// own policy (key-rate per period, key-burst) and by the owner, one on "key_b" limited (in
// effect) by the owner only; the owner's policy is rate/burst.
//
// --lua=1: the baseline instead of the limiter: every request is one EVALSHA of a GCRA script in
// Redis (redis_lua_gcra.h), on a connection per thread (one limit only).
//
// FILE, written at the end: one line "<subject> <stamp> <done>" per admission (subject "a" or
// "b"; "a" alone with one limit; stamp: the `now_ns` passed, done: read once the decision was
// back, both real time in ns: the limiter decided somewhere in between), then "stats <name>=<value>
// ..." with the limiter's counters and the calls' outcomes. Exit 0, or 1 with the reason on stderr.

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "keygate/clock.h"
#include "keygate/rate_limiter.h"
#include "keygate/redis/redis_rate_limiter.h"
#include "redis_lua_gcra.h"

namespace keygate {
namespace {

// The system clock, `skew` off.
class SkewedClock final : public Clock {
 public:
  explicit SkewedClock(absl::Duration skew) : skew_(skew) {}
  absl::Time Now() const noexcept override { return absl::Now() + skew_; }

 private:
  absl::Duration skew_;
};

struct Args {
  std::string url;
  std::string out;
  std::string go;
  std::int64_t threads = 3;
  std::int64_t rate = 2000;
  std::int64_t burst = 200;
  std::int64_t period_ms = 1000;
  std::int64_t fleet_size = 4;
  std::int64_t demand = 2500;  // requests per second, this process
  std::int64_t duration_ms = 4000;
  std::int64_t skew_ms = 0;
  std::int64_t key_rate = 0;
  std::int64_t key_burst = 0;
  std::int64_t lua = 0;
};

[[noreturn]] void Fail(std::string_view why) {
  std::fprintf(stderr, "redis_fleet_helper: %.*s\n", static_cast<int>(why.size()), why.data());
  std::exit(1);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const std::size_t eq = arg.find('=');
    if (arg.substr(0, 2) != "--" || eq == std::string_view::npos) Fail("bad " + std::string(arg));
    const std::string_view name = arg.substr(2, eq - 2);
    const std::string_view value = arg.substr(eq + 1);
    std::int64_t* number = name == "threads"       ? &a.threads
                           : name == "rate"        ? &a.rate
                           : name == "burst"       ? &a.burst
                           : name == "period-ms"   ? &a.period_ms
                           : name == "fleet-size"  ? &a.fleet_size
                           : name == "demand"      ? &a.demand
                           : name == "duration-ms" ? &a.duration_ms
                           : name == "skew-ms"     ? &a.skew_ms
                           : name == "key-rate"    ? &a.key_rate
                           : name == "key-burst"   ? &a.key_burst
                           : name == "lua"         ? &a.lua
                                                   : nullptr;
    if (name == "url") {
      a.url = value;
    } else if (name == "out") {
      a.out = value;
    } else if (name == "go") {
      a.go = value;
    } else if (number == nullptr || !absl::SimpleAtoi(std::string(value), number)) {
      Fail("bad " + std::string(arg));
    }
  }
  if (a.url.empty() || a.out.empty() || a.go.empty()) Fail("--url, --out and --go are required");
  if (a.threads < 1 || a.demand < 1 || a.rate < 1 || a.burst < 1 || a.period_ms < 1) {
    Fail("--threads, --demand, --rate, --burst and --period-ms must be positive");
  }
  return a;
}

GcraPolicy Policy(std::int64_t rate, std::int64_t period_ms, std::int64_t burst) {
  RateLimitPolicy p;
  p.rate = static_cast<std::uint64_t>(rate);
  p.period = absl::Milliseconds(period_ms);
  p.burst = static_cast<std::uint32_t>(burst);
  return GcraPolicy::Compile(p);
}

void SleepUntilRealNs(std::int64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (::clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
}

// A thread's record: admissions as (subject, real ns), and the outcomes of its calls.
struct Record {
  struct Admission {
    char subject;
    std::int64_t stamp;  // the `now_ns` passed, real time
    std::int64_t done;   // real time read once the decision was back
  };
  std::vector<Admission> admitted;
  std::uint64_t attempts = 0;
  std::uint64_t denied = 0;
  std::uint64_t unavailable = 0;
  bool failed = false;  // the baseline could not connect
};

int Main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  // As servers do (the limiter must not depend on it: redis_rate_limiter_test checks that).
  ::signal(SIGPIPE, SIG_IGN);
  const SkewedClock clock(absl::Milliseconds(args.skew_ms));
  const std::int64_t skew_ns = args.skew_ms * 1'000'000;
  const bool lua = args.lua != 0;
  std::unique_ptr<RedisRateLimiter> limiter;
  if (!lua) {
    RedisRateLimiterOptions o;
    o.url = args.url;
    o.fleet_size = static_cast<std::uint32_t>(args.fleet_size);
    o.clock = &clock;
    absl::StatusOr<std::unique_ptr<RedisRateLimiter>> made = RedisRateLimiter::Create(o);
    if (!made.ok()) Fail(made.status().ToString());
    limiter = *std::move(made);
  }
  const std::string unix_prefix = "unix://";
  if (lua && args.url.rfind(unix_prefix, 0) != 0) Fail("--lua needs a unix:// url");
  const std::string socket_path = args.url.substr(unix_prefix.size());

  const GcraPolicy policy = Policy(args.rate, args.period_ms, args.burst);
  const bool two_limits = args.key_rate > 0;
  const GcraPolicy key_policy =
      Policy(two_limits ? args.key_rate : 1, args.period_ms, two_limits ? args.key_burst : 1);
  const GcraPolicy open_policy = Policy(1'000'000'000, args.period_ms, 1'000'000);
  // One limit: the key's. Two limits: key a (tight) and key b (open), each with the owner.
  const LimitRef one[] = {{&policy, nullptr, "key_fleet"}};
  const LimitRef with_a[] = {{&key_policy, nullptr, "key_a"}, {&policy, nullptr, "owner:fleet"}};
  const LimitRef with_b[] = {{&open_policy, nullptr, "key_b"}, {&policy, nullptr, "owner:fleet"}};

  // Connected before the start, so that the test measures limiting, not start-up.
  const absl::Time connect_deadline = absl::Now() + absl::Seconds(10);
  while (limiter != nullptr && limiter->Stats().in_fallback) {
    if (absl::Now() > connect_deadline) Fail("not connected to Redis after 10 s");
    absl::SleepFor(absl::Milliseconds(1));
  }
  { std::ofstream ready(args.out + ".ready"); }
  std::int64_t t0 = 0;
  for (;;) {
    std::ifstream go(args.go);
    if (go >> t0) break;
    absl::SleepFor(absl::Milliseconds(1));
  }

  const std::int64_t end = t0 + args.duration_ms * 1'000'000;
  // Thread k tries at t0 + (i * threads + k) * gap: together `demand` per second. A thread that
  // falls behind catches up at once, so the demand holds on average.
  const std::int64_t gap = 1'000'000'000 / args.demand;
  std::vector<Record> records(static_cast<std::size_t>(args.threads));
  std::vector<std::thread> threads;
  for (std::int64_t k = 0; k < args.threads; ++k) {
    threads.emplace_back([&, k] {
      Record& r = records[static_cast<std::size_t>(k)];
      std::unique_ptr<testing::LuaGcra> baseline;
      if (lua) {
        baseline = std::make_unique<testing::LuaGcra>(socket_path);
        if (!baseline->ok()) r.failed = true;
      }
      r.admitted.reserve(static_cast<std::size_t>(
          2 * args.rate * args.duration_ms / args.period_ms / args.threads + 1000));
      const auto attempt = [&](absl::Span<const LimitRef> refs, char subject) {
        const std::int64_t now = absl::ToUnixNanos(clock.Now());
        const auto admit = [&] {
          r.admitted.push_back({subject, now - skew_ns, absl::ToUnixNanos(absl::Now())});
        };
        ++r.attempts;
        if (baseline != nullptr) {
          switch (baseline->Acquire("keygate:lua:key_fleet", policy)) {
            case testing::LuaGcra::Result::kAllowed:
              admit();
              break;
            case testing::LuaGcra::Result::kDenied:
              ++r.denied;
              break;
            case testing::LuaGcra::Result::kError:
              ++r.unavailable;
              break;
          }
          return;
        }
        switch (limiter->Acquire(refs, 1, now).result) {
          case LimitResult::kAllowed:
            admit();
            break;
          case LimitResult::kDenied:
            ++r.denied;
            break;
          case LimitResult::kUnavailable:
            ++r.unavailable;
            break;
        }
      };
      for (std::int64_t i = 0;; ++i) {
        const std::int64_t at = t0 + (i * args.threads + k) * gap;
        if (at >= end) break;
        SleepUntilRealNs(at);
        if (two_limits) {
          attempt(with_a, 'a');
          attempt(with_b, 'b');
        } else {
          attempt(one, 'a');
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  for (const Record& r : records) {
    if (r.failed) Fail("the Lua baseline cannot connect to Redis or load its script");
  }
  const RedisRateLimiterStats s = limiter != nullptr ? limiter->Stats() : RedisRateLimiterStats{};
  std::uint64_t attempts = 0;
  std::uint64_t denied = 0;
  std::uint64_t unavailable = 0;
  std::string text;
  for (const Record& r : records) {
    attempts += r.attempts;
    denied += r.denied;
    unavailable += r.unavailable;
    for (const Record::Admission& a : r.admitted)
      absl::StrAppend(&text, std::string(1, a.subject), " ", a.stamp, " ", a.done, "\n");
  }
  absl::StrAppend(&text, "stats attempts=", attempts, " denied=", denied,
                  " unavailable=", unavailable, " round_trips=", s.round_trips,
                  " commands=", s.commands, " failures=", s.failures, " reconnects=", s.reconnects,
                  " lease_misses=", s.lease_misses, " fallback_ns=", s.fallback_ns,
                  " in_fallback=", s.in_fallback ? 1 : 0, " fleet_size=", s.fleet_size, "\n");
  const std::string tmp = args.out + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.good()) Fail(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), args.out.c_str()) != 0) Fail(absl::StrCat("cannot rename ", tmp));
  return 0;
}

}  // namespace
}  // namespace keygate

int main(int argc, char** argv) { return keygate::Main(argc, argv); }
