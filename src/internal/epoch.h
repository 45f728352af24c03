// Epoch-based safe memory reclamation for the verifier's index (private).
//
// Readers bracket each lookup with EpochReadLock()/EpochReadUnlock(); a
// writer that has unlinked memory (an old table after a resize) calls
// EpochSynchronize(), which returns once every read section that might still
// see that memory has ended, and then frees it. This is the classic
// userspace-RCU grace period with 64-bit counters (no wrap-around, so one
// counter flip suffices, unlike liburcu's parity bit).
//
// Why our own instead of liburcu: the library stays dependency-free (core
// is OpenSSL + Abseil + Boost headers), and we need only this one primitive.
// The read side costs what liburcu's "memb" flavour costs:
//   enter: load the global epoch, store it in this thread's record (plain
//          stores; no RMW, no fence: a compiler barrier only);
//   exit:  a release store of 0.
// The missing store->load fence on the read side is supplied by the writer
// with membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which makes every
// running thread of the process execute a full barrier (Linux >= 4.14). Where
// membarrier is unavailable, and under ThreadSanitizer (which cannot see it),
// readers use a sequentially consistent exchange instead (~5-10 ns).
//
// Correctness sketch (writer W publishes a new pointer P, then frees old O):
//   W: P.store(new); membarrier(); g = ++epoch; for each reader r: wait while
//      r.ctr in [1, g).
//   R: r.ctr = epoch; [barrier]; p = P.load(); use *p; r.ctr.store(0, release)
// (P is stored and loaded seq_cst, so that in heavy mode the C++ model alone
// gives the store-buffering guarantee; a seq_cst load is a plain load on x86.)
// If W's scan saw r.ctr == 0 or >= g, then R's load of P happens after W's
// store (store-buffering pattern with a full barrier on both sides), so R
// never touches O; otherwise W waits for R's release store of 0, which
// orders R's last use of O before the free.
//
// Thread safety: all functions are thread-safe. Each thread gets a record on
// its first read section (one small allocation per thread, ever; records are
// recycled when threads exit). Read sections may nest.

#ifndef KEYGATE_SRC_INTERNAL_EPOCH_H_
#define KEYGATE_SRC_INTERNAL_EPOCH_H_

#include <atomic>
#include <cstdint>

namespace keygate::internal {

struct alignas(64) EpochRecord {
  // 0: not in a read section; else the epoch observed on entry.
  std::atomic<std::uint64_t> ctr{0};
  // Claimed by a live thread.
  std::atomic<bool> in_use{false};
  // Owner-thread only.
  std::uint32_t nest = 0;
  bool heavy = false;  // use the seq_cst exchange (no membarrier)
  // Immutable once the record is linked into the registry.
  EpochRecord* next = nullptr;
};

// The global epoch; starts at 1 so that 0 can mean "not reading".
extern std::atomic<std::uint64_t> g_epoch;

// This thread's record; nullptr until its first read section.
inline thread_local EpochRecord* tls_epoch_record = nullptr;

// Slow path of the first read section on a thread. Returns nullptr only if
// memory for the record cannot be allocated.
EpochRecord* EpochRegisterThread() noexcept;

// Enters a read section. Returns false (and enters nothing) only if the
// thread could not be registered; the caller must then fail closed.
inline bool EpochReadLock() noexcept {
  EpochRecord* r = tls_epoch_record;
  if (r == nullptr) {
    r = EpochRegisterThread();
    if (r == nullptr) return false;
  }
  if (r->nest++ != 0) return true;
  const std::uint64_t e = g_epoch.load(std::memory_order_acquire);
  if (r->heavy) {
    r->ctr.exchange(e, std::memory_order_seq_cst);
  } else {
    r->ctr.store(e, std::memory_order_relaxed);
    // The matching full barrier is the writer's membarrier().
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  return true;
}

inline void EpochReadUnlock() noexcept {
  EpochRecord* r = tls_epoch_record;
  if (--r->nest == 0) r->ctr.store(0, std::memory_order_release);
}

// Waits until every read section that began before the call has ended.
// Writers call it after unlinking memory and before freeing it. Cost: one or
// two membarrier() system calls (microseconds) plus waiting for readers.
// Must not be called inside a read section.
void EpochSynchronize() noexcept;

// True if readers run fence-free (membarrier available and in use).
bool EpochUsesMembarrier() noexcept;

// RAII read section.
class EpochReadGuard {
 public:
  EpochReadGuard() noexcept : ok_(EpochReadLock()) {}
  ~EpochReadGuard() {
    if (ok_) EpochReadUnlock();
  }
  EpochReadGuard(const EpochReadGuard&) = delete;
  EpochReadGuard& operator=(const EpochReadGuard&) = delete;
  bool ok() const noexcept { return ok_; }

 private:
  bool ok_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_EPOCH_H_
