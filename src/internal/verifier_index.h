// The verifier's index (private): a linear-probing table of 64-byte slots
// keyed by token digest, with a parallel array of key ids, per-key side
// records, and a writer-only index by key id.
//
// Reader protocol (no locks): load the table pointer inside an epoch read
// section; probe from `digest[0..8) & mask`; a slot is considered only when
// its `ctrl` word (loaded with acquire) says live; all other slot fields are
// written before `ctrl` is published and never change while the table is
// reachable, except the atomics (ctrl's revoked bit, the TAT, usage).
//
// Writer protocol (one writer at a time, under the verifier's mutex): a new
// or changed key gets a fresh, never-used slot (found by probing for an
// EMPTY one; retired slots are never reused), published with a release
// store of `ctrl`; the slot it replaces is then retired with a seq_cst store.
// Revoke/restore with nothing else changed flips the revoked bit in place.
// When live + retired slots reach 3/4 of the capacity, the table is rebuilt
// (compacted, grown if needed) and swapped; the old one is freed after an
// epoch grace period.

#ifndef KEYGATE_SRC_INTERNAL_VERIFIER_INDEX_H_
#define KEYGATE_SRC_INTERNAL_VERIFIER_INDEX_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "keygate/digest.h"
#include "keygate/rate_limiter.h"

namespace keygate::internal {

// ---- The ctrl word ---------------------------------------------------------
// bits 0-1   kind: empty / live / retired
// bit  2     revoked (any state but active)
// bit  3     rolled: the slot holds a key's previous secret; its `tat` field
//            holds that secret's valid_until instead of a TAT
// bit  4     the key belongs to another environment
// bit  5     the key has a side record (index in bits 32-63)
// bit  6     the key id is in the side record (not canonical "key_" + <= 22)
// bits 16-31 rate-limit policy: 0 none, 0xFFFF in the side record, else an
//            index into the verifier's policy table
// bits 32-63 side-record index
inline constexpr std::uint64_t kKindMask = 3;
inline constexpr std::uint64_t kKindEmpty = 0;
inline constexpr std::uint64_t kKindLive = 1;
inline constexpr std::uint64_t kKindRetired = 2;
inline constexpr std::uint64_t kFlagRevoked = 1u << 2;
inline constexpr std::uint64_t kFlagRolled = 1u << 3;
inline constexpr std::uint64_t kFlagWrongEnv = 1u << 4;
inline constexpr std::uint64_t kFlagHasExtra = 1u << 5;
inline constexpr std::uint64_t kFlagIdInExtra = 1u << 6;
inline constexpr int kPolicyShift = 16;
inline constexpr std::uint64_t kPolicyMask = 0xFFFF;
inline constexpr std::uint64_t kPolicyNone = 0;
inline constexpr std::uint64_t kPolicyInExtra = 0xFFFF;
inline constexpr int kExtraShift = 32;

inline constexpr std::size_t kIdTailMax = 22;  // "key_" + 22 = kKeyIdLength
inline constexpr std::uint8_t kIdTailInExtra = 0xFF;

// Everything the checks read for one token, in one cache line.
struct alignas(64) Slot {
  std::atomic<std::uint64_t> ctrl{0};
  std::uint64_t digest[3] = {0, 0, 0};            // digest bytes 0-23; digest[0] is the hash
  std::atomic<std::int64_t> tat{kGcraNeverUsed};  // rolled slots: valid_until (ns)
  std::int64_t expires_ns = 0;                    // INT64_MAX: never
  std::uint64_t scopes = 0;                       // closure mask
  std::atomic<std::uint32_t> uses{0};             // successful verifications
  std::atomic<std::uint32_t> last_used_s{0};      // Unix seconds of the latest
};
static_assert(sizeof(Slot) == 64);

// Read with the slot when it matches (prefetched in parallel with it).
struct alignas(32) ColdEntry {
  std::uint64_t digest_tail = 0;  // digest bytes 24-31
  char id_tail[kIdTailMax] = {};  // the key id after "key_"
  std::uint8_t id_tail_len = 0;
  std::uint8_t reserved = 0;
};
static_assert(sizeof(ColdEntry) == 32);

// Per-key data that only some requests need. Immutable once published.
struct KeyExtra {
  std::string id;
  std::string owner;
  std::vector<std::string> accounts;     // sorted, unique
  std::vector<std::string> scope_names;  // as stored (custom evaluators only)
  Digest current{};                      // rolled slots: the key's current secret
  GcraPolicy policy;                     // when ctrl's policy is kPolicyInExtra
  GcraCell* owner_cell = nullptr;        // owner limit state

  friend bool operator==(const KeyExtra&, const KeyExtra&) = default;
};

// A zero-filled array of trivially constructible T (or T whose value
// initialisation is all zero bytes) from mmap, with transparent huge pages
// requested for large ones: a TLB miss per lookup would cost as much as the
// cache miss. Pages are only resident once touched.
class ZeroArray {
 public:
  ZeroArray() = default;
  explicit ZeroArray(std::size_t bytes);
  ~ZeroArray();
  ZeroArray(const ZeroArray&) = delete;
  ZeroArray& operator=(const ZeroArray&) = delete;
  void* data() const noexcept { return data_; }
  std::size_t bytes() const noexcept { return bytes_; }
  bool ok() const noexcept { return data_ != nullptr; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

struct Table {
  // Allocates a table of `capacity` slots (a power of two); check ok().
  explicit Table(std::size_t capacity, std::uint64_t generation);
  ~Table();
  bool ok() const noexcept { return slots != nullptr; }

  // ---- Read by Verify ----
  std::uint64_t mask = 0;
  Slot* slots = nullptr;
  ColdEntry* cold = nullptr;
  const KeyExtra** extras = nullptr;  // by side-record index

  // ---- Writer only ----
  std::size_t capacity = 0;
  std::uint64_t generation = 0;
  std::size_t used = 0;     // non-empty slots (live + retired)
  std::size_t live = 0;     // live slots
  std::size_t retired = 0;  // retired slots
  std::size_t keys = 0;     // distinct key ids
  std::uint32_t extra_count = 0;
  std::vector<std::shared_ptr<const KeyExtra>> extra_owner;  // by side-record index
  // Open addressing by hash of the key id: 0 empty, 1 deleted, else slot + 2
  // with bits of the id's hash above it (verifier.cc, StartIdProbe).
  std::uint32_t* id_index = nullptr;

  // Memory, for stats.
  std::size_t SlotBytes() const noexcept { return slot_mem_.bytes(); }
  std::size_t OtherBytes() const noexcept;

 private:
  ZeroArray slot_mem_, cold_mem_, extra_mem_, id_mem_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_VERIFIER_INDEX_H_
