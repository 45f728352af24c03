// Latency sampling for keygate's benchmarks: rdtsc cycles around sampled calls, converted to
// nanoseconds with a one-off calibration, reported as p50/p99/p99.9 counters.

#ifndef KEYGATE_BENCH_BENCH_LATENCY_H_
#define KEYGATE_BENCH_BENCH_LATENCY_H_

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"

namespace keygate::bench {

inline std::uint64_t Ticks() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

inline double NsPerTick() {
  static const double v = [] {
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t c0 = Ticks();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(50)) {
    }
    const auto t1 = std::chrono::steady_clock::now();
    const std::uint64_t c1 = Ticks();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(c1 - c0);
  }();
  return v;
}

class Latencies {
 public:
  Latencies() { samples_.reserve(1 << 20); }
  void Add(std::uint64_t ticks) {
    if (samples_.size() < samples_.capacity()) samples_.push_back(ticks);
  }
  void Report(benchmark::State& state) {
    if (samples_.empty()) return;
    std::sort(samples_.begin(), samples_.end());
    auto pct = [&](double p) {
      const std::size_t i = std::min(
          samples_.size() - 1, static_cast<std::size_t>(p * static_cast<double>(samples_.size())));
      return static_cast<double>(samples_[i]) * NsPerTick();
    };
    state.counters["p50_ns"] = benchmark::Counter(pct(0.50), benchmark::Counter::kAvgThreads);
    state.counters["p99_ns"] = benchmark::Counter(pct(0.99), benchmark::Counter::kAvgThreads);
    state.counters["p999_ns"] = benchmark::Counter(pct(0.999), benchmark::Counter::kAvgThreads);
  }

 private:
  std::vector<std::uint64_t> samples_;
};

}  // namespace keygate::bench

#endif  // KEYGATE_BENCH_BENCH_LATENCY_H_
