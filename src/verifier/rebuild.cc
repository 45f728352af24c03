// The verifier's table swaps (writer.h): growing and compacting the
// published table, full reloads from the store, and carrying rate-limit
// and usage state from a table readers leave to the one that replaces it.

#include <algorithm>
#include <array>
#include <string>

#include "absl/status/statusor.h"

#include "internal/epoch.h"
#include "verifier/writer.h"

namespace keygate::internal {

namespace {

constexpr std::size_t kMinCapacity = 1024;
// Slot indices (+ 2) must fit the id index's 32-bit entries.
constexpr std::size_t kMaxCapacity = (std::size_t{1} << 32) - 2;

// Capacity for `n` live slots at a load of 0.7: 84 B per slot is 120 B per
// key (a table over 10 M keys takes 1.2 GB; the denial cells map 11 B per
// key more, resident only where keys are denied). Rounded up to whole 4 KiB
// pages of slots, and to whole 2 MiB huge pages once that large, so that
// every byte mapped is a usable slot.
std::size_t CapacityFor(std::size_t n) {
  constexpr std::size_t kPageSlots = 4096 / sizeof(Slot);
  constexpr std::size_t kHugeSlots = (std::size_t{2} << 20) / sizeof(Slot);
  std::size_t cap = std::max(kMinCapacity, n + (n * 3 + 6) / 7);  // >= n / 0.7
  const std::size_t unit = cap >= kHugeSlots ? kHugeSlots : kPageSlots;
  return (cap + unit - 1) / unit * unit;
}

// Linear probing's cost grows as 1 / (1 - load)^2 for a miss: rebuild when
// live + retired slots reach 4/5 (a miss then probes 13 slots on average;
// at 0.7, 6).
std::size_t MaxUsed(std::size_t capacity) { return capacity / 5 * 4; }

// A new, empty table of `capacity` slots, or why there is none.
absl::StatusOr<std::unique_ptr<Table>> NewTable(std::size_t capacity, std::uint64_t generation) {
  if (capacity > kMaxCapacity) {
    return absl::ResourceExhaustedError("verifier: the index would need more than 2^32 slots");
  }
  auto t = std::make_unique<Table>(capacity, generation);
  if (!t->ok()) return absl::ResourceExhaustedError("verifier: cannot allocate the index");
  return t;
}

}  // namespace

IndexWriter::TatCopy IndexWriter::StartTatCopy() const {
  return TatCopy{NowNs(reader_.config().clock->Now()), {}};
}

absl::Status IndexWriter::Rebuild(std::unique_ptr<Table>& t, bool published, std::size_t capacity) {
  absl::StatusOr<std::unique_ptr<Table>> made = NewTable(capacity, next_generation_++);
  if (!made.ok()) return made.status();
  std::unique_ptr<Table> next = std::move(*made);
  next->extra_owner.reserve(t->extra_owner.size());
  TatCopy copy = StartTatCopy();
  for (std::size_t i = 0; i < t->capacity; ++i) {
    const Slot& s = t->slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
    if ((c & kKindMask) != kKindLive) continue;
    SlotImage img;
    img.digest = KeyOf(s);
    img.ctrl = c & ~(kKindMask | kFlagAwait | (std::uint64_t{0xFFFFFFFF} << kExtraShift));
    img.tat_or_deadline = s.tat.load(std::memory_order_relaxed);
    if ((c & kFlagRolled) == 0) copy.Note(i, img.tat_or_deadline);
    img.expires_ns = s.expires_ns;
    img.scopes = s.scopes;
    if ((c & kFlagHasExtra) != 0) {
      img.extra = t->extra_owner[c >> kExtraShift];
    }
    // The id without a string: unpacked into a stack buffer, or the side
    // record's (kept alive by img.extra).
    std::array<char, kKeyIdLength> id_buf;
    if ((c & kFlagIdInExtra) != 0) {
      if (img.extra == nullptr) continue;  // never: such slots have a side record
      img.id = img.extra->id;
    } else {
      img.packed = t->ids[i];
      UnpackKeyId(img.packed, id_buf.data());
      img.id = std::string_view(id_buf.data(), id_buf.size());
    }
    // Slots of one key that shared a side record keep sharing it only if
    // adjacent in insertion; sharing is an optimisation, not a requirement.
    InsertSlot(*next, img, img.tat_or_deadline);
  }
  next->keys = t->keys;
  ++rebuilds_;
  if (published) {
    Publish(std::move(next), copy);  // `t` is owned_table_: it now holds `next`
  } else {
    t = std::move(next);
  }
  return absl::OkStatus();
}

void IndexWriter::CopyTats(const Table& from, Table& next, TatCopy* copy) const {
  for (std::size_t i = 0; i < from.capacity; ++i) {
    const Slot& s = from.slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
    if ((c & kKindMask) != kKindLive || (c & kFlagRolled) != 0) {
      continue;
    }
    std::uint64_t cc = 0;
    const std::int64_t j = FindSlot(next, KeyOf(s), &cc);
    if (j < 0 || (cc & kFlagRolled) != 0) continue;
    const std::int64_t tat = s.tat.load(std::memory_order_relaxed);
    next.slots[j].tat.store(tat, std::memory_order_relaxed);
    copy->Note(i, tat);
  }
}

void IndexWriter::Publish(std::unique_ptr<Table> next, const TatCopy& copy) {
  std::unique_ptr<Table> old = std::move(owned_table_);
  owned_table_ = std::move(next);
  reader_.Publish(owned_table_.get());
  if (old == nullptr) return;
  EpochSynchronize();
  // No reader can reach `old` now: fold in what readers did to it between
  // the copy and the swap.
  CarryOver(*old, *owned_table_, copy);
}

void IndexWriter::CarryOver(Table& from, Table& to, const TatCopy& copy) {
  UsageCollector::Carry carry(usage_);
  std::size_t k = 0;
  for (std::size_t i = 0; i < from.capacity; ++i) {
    Slot& s = from.slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
    if ((c & kKindMask) == kKindEmpty) continue;
    const std::uint32_t uses = s.uses.exchange(0, std::memory_order_relaxed);
    std::uint32_t denied = 0;
    std::uint32_t first_denied_s = 0;
    const bool was_denied = TakeDenials(from.denials[i], &denied, &first_denied_s);
    if (uses != 0 || was_denied) {
      const std::string id = IdOf(from, i);
      if (uses != 0) carry.Add(id, uses, s.last_used_s.load(std::memory_order_relaxed));
      if (was_denied) carry.AddDenials(id, denied, first_denied_s);
    }
    if ((c & kKindMask) != kKindLive || (c & kFlagRolled) != 0) {
      continue;
    }
    std::uint64_t cc = 0;
    const std::int64_t j = FindSlot(to, KeyOf(s), &cc);
    if (j < 0 || (cc & kFlagRolled) != 0) continue;
    // Both tables started this key from the TAT copied (or, for a full
    // bucket, from no later than the copy's start). What readers still on
    // the old table consumed since is how far they moved its TAT past that
    // point; add it to the new table's schedule, so that neither table's
    // requests are forgiven. (Taking the later of the two TATs, as before,
    // forgave the smaller side: a hot key got a burst per reload.) For a
    // full bucket this counts from the copy's start rather than from the
    // request, so it may charge up to the copy's duration too much.
    while (k < copy.ahead.size() && copy.ahead[k].first < i) ++k;
    const std::int64_t base =
        k < copy.ahead.size() && copy.ahead[k].first == i ? copy.ahead[k].second : copy.taken_ns;
    const std::int64_t old_tat = s.tat.load(std::memory_order_relaxed);
    if (old_tat <= base) continue;
    AddConsumed(to.slots[j].tat,
                static_cast<std::uint64_t>(old_tat) - static_cast<std::uint64_t>(base),
                copy.taken_ns);
  }
}

void IndexWriter::AddConsumed(std::atomic<std::int64_t>& tat, std::uint64_t used,
                              std::int64_t taken_ns) {
  // A TAT the arithmetic below cannot push past: the bound on any TAT that
  // GcraStep stores (real ones are near the present).
  constexpr std::int64_t kTatCeiling = kGcraTatCeiling - 1;
  std::int64_t cur = tat.load(std::memory_order_relaxed);
  for (;;) {
    const std::int64_t from_ns = std::max(cur, taken_ns);
    const std::int64_t room = from_ns >= kTatCeiling ? 0 : kTatCeiling - from_ns;
    const std::int64_t next_tat = used >= static_cast<std::uint64_t>(room)
                                      ? kTatCeiling
                                      : from_ns + static_cast<std::int64_t>(used);
    if (next_tat <= cur || tat.compare_exchange_weak(cur, next_tat, std::memory_order_relaxed)) {
      return;
    }
  }
}

absl::Status IndexWriter::EnsureRoom(std::unique_ptr<Table>& t, bool published,
                                     std::size_t extra_slots) {
  if (t->used + extra_slots <= MaxUsed(t->capacity)) return absl::OkStatus();
  // Room for a quarter more live slots: a table that fills up grows by
  // about 1.8x (to a load of 0.56), one that is mostly retired slots is
  // compacted.
  return Rebuild(t, published, CapacityFor(t->live + t->live / 4 + extra_slots));
}

absl::Status IndexWriter::Reload() {
  // The store is read without holding mu_, so that feed application (and
  // the store's change callbacks, which wait for mu_) never wait for a full
  // read of a large store; mu_ is taken per batch, for the shared writer
  // state (policy and owner tables) and the final swap.
  std::lock_guard<std::mutex> reload_lock(reload_mu_);
  std::unique_ptr<Table> next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::size_t cap = CapacityFor(
        std::max(owned_table_ != nullptr ? owned_table_->live : 0, config_.expected_keys));
    absl::StatusOr<std::unique_ptr<Table>> made = NewTable(cap, next_generation_++);
    if (!made.ok()) return made.status();
    next = std::move(*made);
  }
  std::uint64_t seq = 0;
  if (absl::Status s = PullFeed(next, /*published=*/false, &seq, /*lock_per_batch=*/true);
      !s.ok()) {
    return s;
  }
  // Changes committed while the store was read without mu_ may already be
  // in the published table (callbacks, Sync, Refresh apply them there): a
  // revoke among them must not disappear for an instant behind the new
  // table. So, under mu_ (no writer can slip in), bring the new table up to
  // the store's present before it replaces the old one. The feed returns
  // current state, so re-applying what the old table had is harmless. If the
  // store fails here, the old table, which is current, stays.
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = PullFeed(next, /*published=*/false, &seq, /*lock_per_batch=*/false);
      !s.ok()) {
    return s;
  }
  // The published table's rate-limit state carries over (a reload must not
  // hand every key a fresh burst).
  TatCopy copy = StartTatCopy();
  if (owned_table_ != nullptr) CopyTats(*owned_table_, *next, &copy);
  ++rebuilds_;
  Publish(std::move(next), copy);
  applied_sequence_ = seq;
  return absl::OkStatus();
}

}  // namespace keygate::internal
