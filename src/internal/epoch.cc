// Epoch registry and grace periods; see epoch.h.

#include "internal/epoch.h"

#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <new>
#include <thread>

namespace keygate::internal {

std::atomic<std::uint64_t> g_epoch{1};

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr bool kSanitizingThreads = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kSanitizingThreads = true;
#else
constexpr bool kSanitizingThreads = false;
#endif
#else
constexpr bool kSanitizingThreads = false;
#endif

// Registry of every record ever created: a lock-free push-only list.
std::atomic<EpochRecord*> g_records{nullptr};

// Decided once, before the first reader registers, and never changed: a
// reader that runs fence-free relies on every later synchronize issuing
// membarrier().
bool DecideMembarrier() noexcept {
  if (kSanitizingThreads) return false;
  const long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (cmds < 0 || (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

bool UseMembarrier() noexcept {
  static const bool use = DecideMembarrier();
  return use;
}

// Releases the thread's record when the thread exits.
struct RecordReleaser {
  EpochRecord* record = nullptr;
  ~RecordReleaser() {
    if (record == nullptr) return;
    record->nest = 0;
    record->ctr.store(0, std::memory_order_release);
    record->in_use.store(false, std::memory_order_release);
    tls_epoch_record = nullptr;
  }
};
thread_local RecordReleaser tls_releaser;

// A full barrier on every thread of the process that is running now.
void HeavyBarrier() noexcept {
  if (UseMembarrier()) {
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
    // Registered, so this cannot fail on a sane kernel; if it does, there is
    // no safe way to continue with fence-free readers.
    std::abort();
  }
  // Heavy readers use seq_cst exchanges; a seq_cst RMW here orders the
  // writer's preceding stores before its following loads.
  static std::atomic<std::uint64_t> dummy{0};
  dummy.fetch_add(1, std::memory_order_seq_cst);
}

}  // namespace

bool EpochUsesMembarrier() noexcept { return UseMembarrier(); }

EpochRecord* EpochRegisterThread() noexcept {
  const bool heavy = !UseMembarrier();
  // Reuse a record released by an exited thread.
  for (EpochRecord* r = g_records.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    bool expected = false;
    if (!r->in_use.load(std::memory_order_relaxed) &&
        r->in_use.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      r->nest = 0;
      r->heavy = heavy;
      tls_epoch_record = r;
      tls_releaser.record = r;
      return r;
    }
  }
  auto* r = new (std::nothrow) EpochRecord;
  if (r == nullptr) return nullptr;
  r->in_use.store(true, std::memory_order_relaxed);
  r->heavy = heavy;
  EpochRecord* head = g_records.load(std::memory_order_relaxed);
  do {
    r->next = head;
  } while (!g_records.compare_exchange_weak(head, r, std::memory_order_release,
                                            std::memory_order_relaxed));
  tls_epoch_record = r;
  tls_releaser.record = r;
  return r;
}

void EpochSynchronize() noexcept {
  // Serialises grace periods; they are rare (table swaps).
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  HeavyBarrier();
  const std::uint64_t target = g_epoch.fetch_add(1, std::memory_order_seq_cst) + 1;
  for (EpochRecord* r = g_records.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    int spins = 0;
    for (;;) {
      // seq_cst pairs with the readers' seq_cst exchange in heavy mode.
      const std::uint64_t c = r->ctr.load(std::memory_order_seq_cst);
      if (c == 0 || c >= target) break;
      // Read sections are a few hundred nanoseconds; back off gently in case
      // the reader was preempted.
      if (++spins < 64) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }
}

}  // namespace keygate::internal
