// The verifier's index (private): a linear-probing table of 64-byte slots
// keyed by token digest, with a parallel array of packed key ids, per-key
// side records, and a writer-only index by key id.
//
// Size: 64 B per slot + 16 B of key id + 4 B of writer index = 84 B per
// slot. The capacity is not a power of two (a slot's home is a
// multiply-shift of the digest's first word), so a table loaded with n keys
// sits at load 0.7, 120 B per key, wherever n falls; a power-of-two table
// would sit anywhere between 0.375 and 0.75 (10 M keys: 0.6, 140 B). A
// further 8 B per slot of rate-limit denial counters is mapped but only
// becomes resident, one 4 KiB page (512 slots) at a time, where keys are
// denied.
//
// Reader protocol (no locks): load the table pointer inside an epoch read
// section; probe from `Home(digest word 0)`; a slot is considered only when
// its `ctrl` word (loaded with acquire) says live; all other slot fields are
// written before `ctrl` is published and never change while the table is
// reachable, except the atomics (ctrl's revoked bit, the TAT, usage, the
// slot's denial cell).
//
// Writer protocol (one writer at a time, under the verifier's mutex): a new
// or changed key gets a fresh, never-used slot (found by probing for an
// EMPTY one; retired slots are never reused), published with a release
// store of `ctrl`; the slot it replaces is then retired with a seq_cst store.
// Revoke/restore with nothing else changed flips the revoked bit in place.
//
// One change, one instant: a key with a previous secret has two slots, and
// a change rewrites both, so a reader must never see one rewritten and the
// other not. Hence a rolled slot holds only its digest and valid_until; its
// reader takes everything else (state, expiry, scopes, environment, side
// record, TAT) from the live slot of the key's current secret, and finds the
// secret superseded (unknown) once that slot is gone or itself rolled. The
// current slot is therefore the key's only truth, and the change's instant
// is the store that retires it (or flips it). A roll, with a grace period
// or without, also brings a new digest in: its slot is published with
// kFlagAwait, under which a reader answers unknown while the secret it
// replaces still has a live unrolled slot, so the new token starts to work
// at that same instant; the flag is cleared once the old slots are retired.
// The writer retires a key's current slot before its rolled one.
// When live + retired slots reach 4/5 of the capacity, the table is rebuilt
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

#include "internal/digest_prefix.h"
#include "internal/gcra.h"
#include "keygate/digest.h"
#include "keygate/key.h"
#include "keygate/rate_limiter.h"

namespace keygate::internal {

// ---- The ctrl word ---------------------------------------------------------
// bits 0-1   kind: empty / live / retired
// bit  2     revoked (any state but active)
// bit  3     rolled: the slot holds a key's previous secret; its `tat` field
//            holds that secret's valid_until instead of a TAT
// bit  4     the key belongs to another environment
// bit  5     the key has a side record (index in bits 32-63)
// bit  6     the key id is in the side record (it does not pack: PackKeyId)
// bit  7     await: a current slot published by a roll, valid only once
//            the replaced secret's unrolled slot is retired (above)
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
inline constexpr std::uint64_t kFlagAwait = 1u << 7;
inline constexpr int kPolicyShift = 16;
inline constexpr std::uint64_t kPolicyMask = 0xFFFF;
inline constexpr std::uint64_t kPolicyNone = 0;
inline constexpr std::uint64_t kPolicyInExtra = 0xFFFF;
inline constexpr int kExtraShift = 32;

// Everything the checks read for one token, in one cache line.
//
// The slot holds digest bytes 0-23 and a lookup compares those 192 bits.
// The digest is an HMAC under the deployment's secret pepper, so a forged
// token matches one of n indexed keys with probability n / 2^192 per try
// (RFC 2104 asks for at least half the output, 128 bits); the store keeps
// all 32 bytes, and its own lookups compare all of them.
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

// The key id, read with the slot when it matches (prefetched in parallel
// with it). A generated id is "key_" + 22 base62 characters, the first of
// which is '0' until the year 2081 (8 characters of Unix milliseconds, then
// 14 random ones); one whose first tail character is '0'-'3' packs into 128
// bits: 2 bits for that character, 6 for each of the other 21. Any other id
// lives in the key's side record (kFlagIdInExtra).
struct alignas(16) IdEntry {
  std::uint64_t w[2] = {0, 0};
  friend bool operator==(const IdEntry&, const IdEntry&) = default;
};
static_assert(sizeof(IdEntry) == 16);

// Packs `id` into `out`; false (and `out` untouched) if it does not pack.
bool PackKeyId(std::string_view id, IdEntry* out) noexcept;

// Writes the packed id, "key_" and its 22 characters, to
// `out[0..kKeyIdLength)`. Branch-free and table-free: each 48-bit group of 8
// characters is spread into 8 bytes and mapped to ASCII with SWAR arithmetic
// (a few ns).
inline void UnpackKeyId(const IdEntry& e, char* out) noexcept {
  static_assert(kKeyIdLength == 4 + 22);
  constexpr char kPrefix[4] = {'k', 'e', 'y', '_'};  // not a C string: no terminator
  std::memcpy(out, kPrefix, sizeof kPrefix);
  out += sizeof kPrefix;
  constexpr std::uint64_t k48 = (std::uint64_t{1} << 48) - 1;
  const auto ascii8 = [](std::uint64_t g) noexcept {
    // 12-bit pairs into 16-bit lanes, then one 6-bit value per byte.
    std::uint64_t y = (g & 0xFFF) | ((g & 0xFFF000) << 4) | ((g & 0xFFF000000) << 8) |
                      ((g & 0xFFF000000000) << 12);
    y = (y & 0x003F003F003F003Full) | ((y & 0x0FC00FC00FC00FC0ull) << 2);
    // Digit d (0..61) to "0-9A-Za-z": d + '0', + 7 from 10, + 6 more from
    // 36. No byte carries: d + 118 < 256 and the result < 128.
    constexpr std::uint64_t kOnes = 0x0101010101010101ull;
    const std::uint64_t ge10 = ((y + 0x7676767676767676ull) >> 7) & kOnes;
    const std::uint64_t ge36 = ((y + 0x5C5C5C5C5C5C5C5Cull) >> 7) & kOnes;
    return y + 0x3030303030303030ull + ge10 * 7 + ge36 * 6;
  };
  const std::uint64_t a = ascii8(e.w[0] & k48);                                     // chars 1-8
  const std::uint64_t b = ascii8(((e.w[0] >> 48) | (e.w[1] << 16)) & k48);          // chars 9-16
  const std::uint64_t c = ascii8((e.w[1] >> 32) & ((std::uint64_t{1} << 30) - 1));  // 17-21
  out[0] = static_cast<char>('0' + (e.w[1] >> 62));
  std::memcpy(out + 1, &a, 8);
  std::memcpy(out + 9, &b, 8);
  std::memcpy(out + 17, &c, 5);
}

// ---- Rate-limit denials -----------------------------------------------------
// The slot is full, so the requests a key's (or its owner's) limit refuses
// are counted in a parallel array of one 64-bit cell per slot, written only
// on that path and read and reset by the usage collector:
//   bits 0-31   the Unix second of the earliest denial since the cell was
//               last taken, at least 1; 0 while the first one's reader has
//               yet to write it
//   bits 32-63  the number of denials, mod 2^32 (an add carries out of the
//               word, never into the time)
// A denial is one relaxed add; only the first of a window (or one whose
// clock read an earlier second) also stores its time, with a CAS that gives
// up once the count it added to has been taken. So a cell with a count
// always gets a time, and a taker that finds a count without one leaves the
// cell for its next pass rather than report a denial with no time. (A
// reader preempted between its add and its CAS while the cell is taken and
// refilled past its count may write its own, earlier, second into the next
// window; counts are exact regardless.)
// Accessed through std::atomic_ref: zero bytes are an empty cell, so the
// array needs no construction and its pages stay unmapped until a denial.
inline constexpr std::uint64_t kOneDenial = std::uint64_t{1} << 32;
inline constexpr std::uint64_t kDenialSecondMask = kOneDenial - 1;
static_assert(std::atomic_ref<std::uint64_t>::required_alignment <= alignof(std::uint64_t));

// Counts a denial at `second` (Unix seconds, at least 1) in `cell`.
// Lock-free, allocation-free.
inline void NoteDenial(std::uint64_t& cell, std::uint32_t second) noexcept {
  std::atomic_ref<std::uint64_t> c(cell);
  std::uint64_t cur = c.fetch_add(kOneDenial, std::memory_order_relaxed) + kOneDenial;
  const std::uint64_t counted = cur >> 32;  // ours and those before it
  for (;;) {
    const std::uint64_t first = cur & kDenialSecondMask;
    // Set and no later than ours, or our count was taken (with a time) meanwhile.
    if ((first != 0 && first <= second) || (cur >> 32) < counted) return;
    if (c.compare_exchange_weak(cur, (cur & ~kDenialSecondMask) | second,
                                std::memory_order_relaxed)) {
      return;
    }
  }
}

// Takes the denials counted in `cell` and empties it. False, and the cell
// untouched, if it holds none or its first denial's time is not written yet.
inline bool TakeDenials(std::uint64_t& cell, std::uint32_t* count,
                        std::uint32_t* first_second) noexcept {
  std::atomic_ref<std::uint64_t> c(cell);
  std::uint64_t cur = c.load(std::memory_order_relaxed);
  for (;;) {
    if ((cur >> 32) == 0 || (cur & kDenialSecondMask) == 0) return false;
    if (c.compare_exchange_weak(cur, 0, std::memory_order_relaxed)) {
      *count = static_cast<std::uint32_t>(cur >> 32);
      *first_second = static_cast<std::uint32_t>(cur & kDenialSecondMask);
      return true;
    }
  }
}

// A slot's home: the digest's first word mapped onto [0, capacity) by a
// multiply-shift (capacity < 2^32), so any capacity works.
inline std::uint64_t Home(std::uint64_t hash, std::uint64_t capacity) noexcept {
  return ((hash >> 32) * capacity) >> 32;
}
inline std::uint64_t NextSlot(std::uint64_t i, std::uint64_t capacity) noexcept {
  return i + 1 == capacity ? 0 : i + 1;
}

// Per-key data that only some requests need. Immutable once published.
struct KeyExtra {
  std::string id;
  std::string owner_subject;          // "owner:<owner>", what a limiter keys the owner's state by
  std::vector<std::string> accounts;  // sorted, unique
  std::vector<std::string> scope_names;  // as stored (custom evaluators only)
  Digest current{};                      // rolled keys: the current secret
  GcraPolicy policy;                     // when ctrl's policy is kPolicyInExtra
  GcraCell* owner_cell = nullptr;        // owner limit state
  // A roll's new current slot (kFlagAwait): the secret it replaces (its first 24 bytes). Set
  // only while the writer applies the roll, so not part of the key's content (==).
  Digest replaces{};

  friend bool operator==(const KeyExtra& a, const KeyExtra& b) {
    return a.id == b.id && a.owner_subject == b.owner_subject && a.accounts == b.accounts &&
           a.scope_names == b.scope_names && a.current == b.current && a.policy == b.policy &&
           a.owner_cell == b.owner_cell;
  }
};

// A zero-filled array of trivially constructible T (or T whose value
// initialisation is all zero bytes) from mmap, with transparent huge pages
// requested for large ones (kHuge): a TLB miss per lookup would cost as much
// as the cache miss. Pages are only resident once touched; kSmall refuses
// huge pages, for an array touched sparsely, where one would make 2 MiB
// resident for a byte.
class ZeroArray {
 public:
  enum class Pages { kHuge, kSmall };
  ZeroArray() = default;
  explicit ZeroArray(std::size_t bytes, Pages pages = Pages::kHuge);
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
  // Allocates a table of `capacity` slots (1 .. 2^32 - 2); check ok().
  explicit Table(std::size_t capacity, std::uint64_t generation);
  ~Table();
  bool ok() const noexcept { return slots != nullptr; }

  // ---- Read by Verify ----
  std::uint64_t capacity = 0;
  Slot* slots = nullptr;
  IdEntry* ids = nullptr;
  const KeyExtra** extras = nullptr;  // by side-record index
  // Per slot; written only when a limit refuses a request (NoteDenial).
  std::uint64_t* denials = nullptr;

  // ---- Writer only ----
  std::uint64_t generation = 0;
  std::size_t used = 0;     // non-empty slots (live + retired)
  std::size_t live = 0;     // live slots
  std::size_t retired = 0;  // retired slots
  std::size_t keys = 0;     // distinct key ids
  std::uint32_t extra_count = 0;
  std::vector<std::shared_ptr<const KeyExtra>> extra_owner;  // by side-record index
  // Open addressing by hash of the key id: 0 empty, 1 deleted, else slot + 2
  // with bits of the id's hash above it (verifier/id_index.cc, StartIdProbe).
  std::uint32_t* id_index = nullptr;

  // Memory, for stats.
  std::size_t SlotBytes() const noexcept { return slot_mem_.bytes(); }
  std::size_t OtherBytes() const noexcept;

 private:
  ZeroArray slot_mem_, key_id_mem_, extra_mem_, id_mem_, denial_mem_;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_VERIFIER_INDEX_H_
