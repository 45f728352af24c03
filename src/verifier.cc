// The lock-free hot-path verifier (verifier.h). The index layout and its
// publication protocol are described in internal/verifier_index.h, the
// reclamation in internal/epoch.h.

#include "keygate/verifier.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "internal/canonical_token.h"
#include "internal/epoch.h"
#include "internal/gcra.h"
#include "internal/verdict_access.h"
#include "internal/verifier_index.h"
#include "keygate/bearer.h"
#include "keygate/token.h"

namespace keygate {

using internal::DigestPrefix64;
using internal::IdEntry;
using internal::KeyExtra;
using internal::kGcraNeverUsed;
using internal::Slot;
using internal::Table;

namespace {

constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();
constexpr std::size_t kMinCapacity = 1024;
// Slot indices (+ 2) must fit the id index's 32-bit entries.
constexpr std::size_t kMaxCapacity = (std::size_t{1} << 32) - 2;
constexpr std::size_t kPolicySlots = 1u << 16;  // indices 1 .. 0xFFFE usable
constexpr std::size_t kUsageScanChunk = 4096;

// Unix nanoseconds, saturated to the int64 range (years 1678-2262): an
// expiry past 2262 is kNever.
std::int64_t ToNs(absl::Time t) noexcept { return absl::ToUnixNanos(t); }
// A deadline (expiry, a rolled secret's valid_until), rounded up to a whole
// nanosecond. absl::Time has quarter nanoseconds, and `now` is taken in
// whole ones (rounded down), so `deadline <= now` then holds exactly when it
// holds for the absl::Time values, as in ReferenceVerifier; rounded down, a
// key expiring at .25 ns past `now` was already refused.
std::int64_t DeadlineNs(absl::Time t) noexcept {
  const std::int64_t ns = ToNs(t);
  return ns < kNever && absl::FromUnixNanos(ns) < t ? ns + 1 : ns;
}
// `now` likewise, but always before kNever, so that a key without an expiry
// stays valid at any `now` (absl::InfiniteFuture() included).
std::int64_t NowNs(absl::Time t) noexcept { return std::min(ToNs(t), kNever - 1); }

// Capacity for `n` live slots at a load of 0.7: 84 B per slot is 120 B per
// key (a table over 10 M keys takes 1.2 GB). Rounded up to whole 4 KiB
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

// The 192 bits of a digest that an index lookup compares (verifier_index.h,
// Slot); w[0] is also the hash that places the slot.
struct DigestKey {
  std::uint64_t w[3] = {0, 0, 0};
};
DigestKey KeyOf(const Digest& d) noexcept {
  DigestKey k;
  std::memcpy(k.w, d.data(), sizeof k.w);
  return k;
}
DigestKey KeyOf(const Slot& s) noexcept { return {{s.digest[0], s.digest[1], s.digest[2]}}; }

// The closure mask exactly as the reference computes it: a record naming a
// scope the registry no longer knows grants nothing at all.
ScopeMask RecordMask(const ScopeRegistry& registry, const std::vector<std::string>& scopes) {
  absl::StatusOr<ScopeMask> m = registry.Compile(scopes);
  return m.ok() ? *m : 0;
}

// What one slot should hold for a key's current or previous secret.
struct SlotImage {
  DigestKey digest;
  std::uint64_t ctrl = 0;  // flags and policy; kind, extra index added on insert
  std::int64_t tat_or_deadline = kGcraNeverUsed;
  std::int64_t expires_ns = kNever;
  ScopeMask scopes = 0;
  std::shared_ptr<const KeyExtra> extra;
  std::string_view id;
  IdEntry packed;  // the id, unless ctrl has kFlagIdInExtra
};

bool SameDigest(const Slot& s, const DigestKey& k) noexcept {
  return s.digest[0] == k.w[0] && s.digest[1] == k.w[1] && s.digest[2] == k.w[2];
}

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

struct Verifier::Impl {
  // ---- Configuration (immutable after Create) ----
  VerifierOptions options;
  const TokenHasher* hasher = nullptr;
  std::string prefix;
  std::string env_name;
  std::string env_tag;
  std::vector<std::string> other_tags;         // tags of the deployment's other environments
  internal::CanonicalToken canonical{"", ""};  // the fast recogniser for env_tag's tokens
  const ScopeEvaluator* evaluator = nullptr;   // nullptr: inline mask check
  RateLimiter* limiter = nullptr;
  bool local_limiter = true;  // devirtualised GCRA
  GcraPolicy owner_policy;    // invalid: no owner limit
  const Clock* clock = nullptr;

  // ---- Shared with readers ----
  std::atomic<Table*> table{nullptr};
  internal::ZeroArray policy_mem{kPolicySlots * sizeof(GcraPolicy)};
  GcraPolicy* policies = static_cast<GcraPolicy*>(policy_mem.data());

  // ---- Writer state, under mu ----
  mutable std::mutex mu;
  std::mutex reload_mu;  // one full reload at a time; taken before `mu`
  std::unique_ptr<Table> owned_table;
  std::uint64_t next_generation = 1;
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::uint32_t, std::uint32_t>,
           std::uint64_t>
      policy_ids;
  std::uint64_t policy_count = 1;
  std::unordered_map<std::string, std::unique_ptr<GcraCell>> owner_cells;
  std::uint64_t applied_sequence = 0;
  std::uint64_t changes_applied = 0;
  std::uint64_t rebuilds = 0;
  std::uint64_t sync_failures = 0;
  // Usage carried out of tables that were swapped away, for the next flush.
  struct PendingUse {
    std::uint64_t requests = 0;
    std::uint32_t last_s = 0;
  };
  std::mutex pending_mu;
  std::unordered_map<std::string, PendingUse> pending_usage;
  std::mutex flush_mu;  // one usage flush at a time

  // ---- Background work ----
  std::unique_ptr<Subscription> subscription;
  std::mutex shutdown_mu;  // one Shutdown at a time; taken before wake_mu
  std::mutex wake_mu;
  std::condition_variable wake_cv;
  bool wake_pending = false;
  bool stopping = false;
  bool shut_down = false;
  std::thread feed_thread;
  std::thread usage_thread;

  // ---------------------------------------------------------------- reads

  // `now` null: read the clock, once, while the slot's cache miss is in
  // flight (and not at all for requests rejected before the lookup).
  Verdict VerifyTokenAt(std::string_view token, const Requirement& req,
                        const absl::Time* now) const noexcept;
  Verdict VerifyHeader(std::string_view authorization, const Requirement& req,
                       const absl::Time* now) const noexcept;
  // Steps 2-3 by the general parsers (any token the one-pass recogniser did
  // not take), then Lookup.
  Verdict VerifyGeneral(std::string_view token, const Requirement& req,
                        const absl::Time* now) const noexcept;
  // Steps 4 on, for a token known to be well formed and of this environment.
  Verdict Lookup(std::string_view token, const Requirement& req,
                 const absl::Time* now) const noexcept;
  Verdict Check(const Table& t, std::size_t i, std::uint64_t c, const Requirement& req,
                std::int64_t now_ns) const noexcept;
  static std::int64_t Find(const Table& t, const DigestKey& d, std::uint64_t* ctrl) noexcept;

  // ---------------------------------------------------------------- writes
  // All under `mu`.

  std::string IdOf(const Table& t, std::size_t slot) const;
  void IdIndexInsert(Table& t, std::string_view id, std::size_t slot);
  void IdIndexRemove(Table& t, std::string_view id, std::size_t slot);
  // A key has at most two slots (current and previous secret): no allocation.
  using SlotList = absl::InlinedVector<std::size_t, 2>;
  using ImageList = absl::InlinedVector<SlotImage, 2>;
  // True if `slot` belongs to key `id` (compared in place, no allocation).
  bool IdIs(const Table& t, std::size_t slot, std::string_view id) const noexcept;
  SlotList IdIndexFind(const Table& t, std::string_view id) const;

  std::uint64_t InternPolicy(const GcraPolicy& p);
  GcraCell* OwnerCell(const std::string& owner);
  void BuildImages(const KeyRecord& r, ImageList* out);
  bool SameContent(const Table& t, std::size_t slot, const SlotImage& img) const;
  std::size_t InsertSlot(Table& t, const SlotImage& img, std::int64_t tat);
  void Retire(Table& t, std::size_t slot, std::string_view id);

  // `t` is either `owned_table` itself with `published` true (what readers
  // see: it is only ever swapped, through Publish, never freed in place), or
  // a private table being built (Reload).
  absl::Status EnsureRoom(std::unique_ptr<Table>& t, bool published, std::size_t extra_slots);
  absl::Status Rebuild(std::unique_ptr<Table>& t, bool published, std::size_t capacity);
  absl::Status ApplyRecord(std::unique_ptr<Table>& t, bool published, const KeyRecord& r);
  void ApplyDelete(Table& t, std::string_view id);
  absl::Status ApplyChange(std::unique_ptr<Table>& t, bool published, const Change& c);
  // Applies a feed batch in order, prefetching ahead.
  absl::Status ApplyBatch(std::unique_ptr<Table>& t, bool published,
                          const std::vector<Change>& changes);
  // The keys' GCRA state as copied into a table that is about to replace
  // the published one: what CarryOver needs to add, after the swap, what
  // readers consumed on the old table after the copy (see CarryOver).
  struct TatCopy {
    std::int64_t taken_ns = 0;  // the verifier's clock when the copy began
    // (old slot, TAT copied) for every copied TAT ahead of taken_ns (a
    // bucket not full at the time), in slot order. Keys with a full bucket
    // are left out, so this holds only the recently used keys.
    std::vector<std::pair<std::size_t, std::int64_t>> ahead;
    void Note(std::size_t slot, std::int64_t tat) {
      if (tat > taken_ns) ahead.emplace_back(slot, tat);
    }
  };
  TatCopy StartTatCopy() const { return TatCopy{NowNs(clock->Now()), {}}; }
  // Copies each live key's TAT from the published table into `next`.
  void CopyTats(const Table& from, Table& next, TatCopy* copy) const;
  void Publish(std::unique_ptr<Table> next, const TatCopy& copy);
  void CarryOver(Table& from, Table& to, const TatCopy& copy);
  // Moves `tat` `used` ns further along the schedule, counted from no
  // earlier than `taken_ns` (a full bucket's start), capped below
  // kGcraTatCeiling.
  static void AddConsumed(std::atomic<std::int64_t>& tat, std::uint64_t used,
                          std::int64_t taken_ns);

  // Pulls the feed from `*seq` until it is exhausted, applying each batch to
  // `t` and advancing `*seq`. The store is always called without `mu`
  // taken here: with `lock_per_batch` (the caller does not hold `mu`) it is
  // taken for each batch's application; without, the caller holds it.
  absl::Status PullFeed(std::unique_ptr<Table>& t, bool published, std::uint64_t* seq,
                        bool lock_per_batch);
  absl::Status SyncLocked();
  absl::Status Reload();  // takes `mu` itself; must not be held

  // ---------------------------------------------------------------- usage
  absl::Status FlushUsage();

  // ---------------------------------------------------------------- threads
  void Wake();
  void FeedLoop();
  void UsageLoop();
  void Shutdown();
};

// ============================================================================
// Reads
// ============================================================================

std::int64_t Verifier::Impl::Find(const Table& t, const DigestKey& d,
                                  std::uint64_t* ctrl) noexcept {
  std::uint64_t i = internal::Home(d.w[0], t.capacity);
  for (;;) {
    const Slot& s = t.slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_acquire);
    const std::uint64_t kind = c & internal::kKindMask;
    if (kind == internal::kKindEmpty) return -1;
    if (kind == internal::kKindLive && SameDigest(s, d)) {
      *ctrl = c;
      return static_cast<std::int64_t>(i);
    }
    i = internal::NextSlot(i, t.capacity);
  }
}

Verdict Verifier::Impl::VerifyHeader(std::string_view authorization, const Requirement& req,
                                     const absl::Time* now) const noexcept {
  std::string_view token;
  // 0. The shape nearly every request has, recognised in one pass; anything
  // else takes the general parsers below, which reach the same verdicts.
  switch (canonical.MatchHeader(authorization, &token)) {
    case internal::CanonicalMatch::kOk:
      return Lookup(token, req, now);
    case internal::CanonicalMatch::kBadChecksum: {
      Verdict v;
      v.outcome = Outcome::kMalformed;
      return v;
    }
    case internal::CanonicalMatch::kOther:
      break;
  }
  // 1. The header.
  switch (ParseBearer(authorization, &token)) {
    case BearerParse::kOk:
      break;
    case BearerParse::kMissing:
    case BearerParse::kWrongScheme: {  // no Bearer credentials (RFC 6750 3.1)
      Verdict v;
      v.outcome = Outcome::kMissing;
      return v;
    }
    case BearerParse::kMalformed: {
      Verdict v;
      v.outcome = Outcome::kInvalidRequest;
      return v;
    }
  }
  // The recogniser has seen this token already (inside a header it did not
  // take); the general parsers reach the same verdict on any token.
  return VerifyGeneral(token, req, now);
}

Verdict Verifier::Impl::VerifyTokenAt(std::string_view token, const Requirement& req,
                                      const absl::Time* now) const noexcept {
  switch (canonical.MatchToken(token)) {
    case internal::CanonicalMatch::kOk:
      return Lookup(token, req, now);
    case internal::CanonicalMatch::kBadChecksum: {
      Verdict v;
      v.outcome = Outcome::kMalformed;
      return v;
    }
    case internal::CanonicalMatch::kOther:
      break;
  }
  return VerifyGeneral(token, req, now);
}

Verdict Verifier::Impl::VerifyGeneral(std::string_view token, const Requirement& req,
                                      const absl::Time* now) const noexcept {
  Verdict v;
  // 2. Format, prefix and checksum, before any hashing.
  TokenView view;
  if (ParseToken(token, &view, prefix) != TokenError::kNone) {
    v.outcome = Outcome::kMalformed;
    return v;
  }
  // 3. The environment tag.
  if (view.env_tag != env_tag) {
    v.outcome = Outcome::kMalformed;
    for (const std::string& tag : other_tags) {
      if (view.env_tag == tag) v.outcome = Outcome::kWrongEnvironment;
    }
    return v;
  }
  return Lookup(token, req, now);
}

Verdict Verifier::Impl::Lookup(std::string_view token, const Requirement& req,
                               const absl::Time* now) const noexcept {
  Verdict v;
  // 4. Hash and look up.
  Digest digest;
  if (!hasher->Hash(token, &digest)) {
    v.outcome = Outcome::kUnavailable;
    return v;
  }
  const DigestKey d = KeyOf(digest);
  internal::EpochReadGuard guard;
  if (!guard.ok()) {
    v.outcome = Outcome::kUnavailable;
    return v;
  }
  const Table* t = table.load(std::memory_order_seq_cst);
  const std::uint64_t home = internal::Home(d.w[0], t->capacity);
  // The slot and its key id are in different arrays: start both misses now.
  __builtin_prefetch(&t->slots[home]);
  __builtin_prefetch(&t->ids[home]);
  // At load 0.7 a third of the keys sit past their home slot (linear
  // probing), most of those in the next one.
  __builtin_prefetch(&t->slots[internal::NextSlot(home, t->capacity)]);
  const std::int64_t now_ns = NowNs(now != nullptr ? *now : clock->Now());
  std::uint64_t c = 0;
  const std::int64_t found = Find(*t, d, &c);
  if (found < 0) {
    v.outcome = Outcome::kUnknown;
    return v;
  }
  return Check(*t, static_cast<std::size_t>(found), c, req, now_ns);
}

Verdict Verifier::Impl::Check(const Table& t, std::size_t i, std::uint64_t c,
                              const Requirement& req, std::int64_t now_ns) const noexcept {
  Verdict v;
  Slot& s = t.slots[i];
  const KeyExtra* extra =
      (c & internal::kFlagHasExtra) != 0 ? t.extras[c >> internal::kExtraShift] : nullptr;
  const std::uint64_t pidx = (c >> internal::kPolicyShift) & internal::kPolicyMask;
  // The writer gives every slot that needs a side record one (BuildImages);
  // should that ever not hold, fail closed rather than dereference null.
  const bool id_in_extra = (c & internal::kFlagIdInExtra) != 0;
  const bool rolled = (c & internal::kFlagRolled) != 0;
  if (extra == nullptr && (id_in_extra || rolled || pidx == internal::kPolicyInExtra)) {
    v.outcome = Outcome::kUnavailable;
    return v;
  }
  if (!id_in_extra) {
    internal::UnpackKeyId(t.ids[i], internal::VerdictAccess::KeyBuffer(v));
    internal::VerdictAccess::SetKeySize(v, kKeyIdLength);
  } else if (extra->id.size() <= kKeyIdLength) {
    v.set_key(extra->id);
  } else {
    // An id a verdict cannot carry whole (key.h, kKeyIdLength): cut off, it
    // could name another key. ReferenceVerifier answers the same.
    v.outcome = Outcome::kUnavailable;
    return v;
  }

  // 5. A previous secret past its grace deadline.
  if (rolled && !(now_ns < s.tat.load(std::memory_order_relaxed))) {
    v.outcome = Outcome::kExpired;
    return v;
  }
  // 6-8. State, expiry, environment.
  if ((c & internal::kFlagRevoked) != 0) {
    v.outcome = Outcome::kRevoked;
    return v;
  }
  if (s.expires_ns <= now_ns) {
    v.outcome = Outcome::kExpired;
    return v;
  }
  if ((c & internal::kFlagWrongEnv) != 0) {
    v.outcome = Outcome::kWrongEnvironment;
    return v;
  }
  // 9. The linked account.
  if (!req.account().empty()) {
    if (extra == nullptr ||
        !std::binary_search(extra->accounts.begin(), extra->accounts.end(), req.account(),
                            [](std::string_view a, std::string_view b) { return a < b; })) {
      v.outcome = Outcome::kAccountDenied;
      return v;
    }
  }
  // 10. Scopes.
  if (evaluator == nullptr) {
    if (!MaskSatisfies(s.scopes, req)) {
      v.outcome = Outcome::kInsufficientScope;
      return v;
    }
  } else {
    GrantedScopes granted;
    granted.mask = s.scopes;
    if (extra != nullptr) granted.names = extra->scope_names;
    if (!evaluator->Allows(granted, req)) {
      v.outcome = Outcome::kInsufficientScope;
      return v;
    }
  }

  // 11. Rate limits: the key's (in its slot; a previous secret shares its
  // key's current slot) and optionally its owner's.
  const GcraPolicy* key_policy = nullptr;
  if (pidx == internal::kPolicyInExtra) {
    key_policy = &extra->policy;
  } else if (pidx != internal::kPolicyNone) {
    key_policy = &policies[pidx];
  }
  std::atomic<std::int64_t>* key_tat = nullptr;
  if (key_policy != nullptr) {
    if (!rolled) {
      key_tat = &s.tat;
    } else {
      std::uint64_t cc = 0;
      const std::int64_t j = Find(t, KeyOf(extra->current), &cc);
      // A concurrent roll may have replaced the current secret; then this
      // one request is not charged (the next lookup sees the new state).
      if (j >= 0) key_tat = &t.slots[j].tat;
    }
  }
  GcraCell* owner_cell = extra != nullptr ? extra->owner_cell : nullptr;
  LimitDecision decision{LimitResult::kAllowed, {}};
  if (owner_cell == nullptr && local_limiter) {
    if (key_tat != nullptr) {
      decision = internal::GcraAcquireOne(*key_policy, *key_tat, req.cost(), now_ns);
    }
  } else {
    LimitRef refs[2];
    std::size_t n = 0;
    if (key_tat != nullptr) {
      refs[n++] = internal::GcraAccess::Ref(key_policy, key_tat, v.key());
    }
    if (owner_cell != nullptr) refs[n++] = LimitRef{&owner_policy, owner_cell, extra->owner};
    if (n != 0) decision = limiter->Acquire({refs, n}, req.cost(), now_ns);
  }
  v.rate = decision.status;
  switch (decision.result) {
    case LimitResult::kAllowed:
      break;
    case LimitResult::kDenied:
      v.outcome = Outcome::kRateLimited;
      return v;
    case LimitResult::kUnavailable:
      v.outcome = Outcome::kUnavailable;
      return v;
  }

  // Usage: in the slot's own line, which the TAT update (if any) has already
  // brought into this core's cache in exclusive state.
  if (options.record_usage) {
    Slot& u = s;
    u.uses.fetch_add(1, std::memory_order_relaxed);
    const std::uint32_t sec =
        now_ns <= 0 ? 0u
                    : static_cast<std::uint32_t>(std::min<std::int64_t>(
                          now_ns / 1'000'000'000, std::numeric_limits<std::uint32_t>::max()));
    if (u.last_used_s.load(std::memory_order_relaxed) != sec) {
      u.last_used_s.store(sec, std::memory_order_relaxed);
    }
  }
  v.outcome = Outcome::kOk;
  return v;
}

// ============================================================================
// Writes
// ============================================================================

std::string Verifier::Impl::IdOf(const Table& t, std::size_t slot) const {
  const std::uint64_t c = t.slots[slot].ctrl.load(std::memory_order_relaxed);
  if ((c & internal::kFlagIdInExtra) != 0) return t.extras[c >> internal::kExtraShift]->id;
  std::string id(kKeyIdLength, '\0');
  internal::UnpackKeyId(t.ids[slot], id.data());
  return id;
}

// The id index (writer-only) maps a key id to its slots by linear probing.
// An entry is 0 (empty), 1 (deleted) or (tag << tag_shift) | (slot + 2):
// the bits above the slot number hold bits of the id's hash, so a probe that
// meets another key's entry almost never has to read that key's slot (a
// cache miss per probe, which made loading a million keys 10 % slower).
namespace {

struct IdProbe {
  std::uint64_t pos;
  std::uint32_t tag;    // already shifted into place
  std::uint32_t shift;  // bits below the tag
};

IdProbe StartIdProbe(const Table& t, std::string_view id) noexcept {
  const std::uint64_t h = std::hash<std::string_view>{}(id);
  // slot + 2 <= capacity + 1 < 2^shift.
  const auto shift = static_cast<std::uint32_t>(std::bit_width(t.capacity + 1));
  const std::uint32_t tag = shift >= 32 ? 0u : static_cast<std::uint32_t>((h >> 40) << shift);
  // The position from the hash's low half, the tag from its high bits.
  return {internal::Home(h << 32, t.capacity), tag, shift};
}

inline std::uint32_t SlotBits(const IdProbe& p, std::uint32_t entry) noexcept {
  return p.shift >= 32 ? entry : entry & ((std::uint32_t{1} << p.shift) - 1);
}

}  // namespace

void Verifier::Impl::IdIndexInsert(Table& t, std::string_view id, std::size_t slot) {
  IdProbe p = StartIdProbe(t, id);
  while (t.id_index[p.pos] >= 2) p.pos = internal::NextSlot(p.pos, t.capacity);
  t.id_index[p.pos] = p.tag | static_cast<std::uint32_t>(slot + 2);
}

void Verifier::Impl::IdIndexRemove(Table& t, std::string_view id, std::size_t slot) {
  IdProbe p = StartIdProbe(t, id);
  while (t.id_index[p.pos] != 0) {
    if (t.id_index[p.pos] == (p.tag | static_cast<std::uint32_t>(slot + 2))) {
      t.id_index[p.pos] = 1;
      return;
    }
    p.pos = internal::NextSlot(p.pos, t.capacity);
  }
}

bool Verifier::Impl::IdIs(const Table& t, std::size_t slot, std::string_view id) const noexcept {
  const std::uint64_t c = t.slots[slot].ctrl.load(std::memory_order_relaxed);
  if ((c & internal::kFlagIdInExtra) != 0) return t.extras[c >> internal::kExtraShift]->id == id;
  IdEntry packed;
  return internal::PackKeyId(id, &packed) && packed == t.ids[slot];
}

Verifier::Impl::SlotList Verifier::Impl::IdIndexFind(const Table& t, std::string_view id) const {
  SlotList out;
  IdProbe p = StartIdProbe(t, id);
  const std::uint32_t tag_mask = ~SlotBits(p, 0xFFFFFFFFu);
  while (t.id_index[p.pos] != 0) {
    const std::uint32_t e = t.id_index[p.pos];
    if (e >= 2 && (e & tag_mask) == p.tag) {
      const std::size_t slot = SlotBits(p, e) - 2;
      if (IdIs(t, slot, id)) out.push_back(slot);
    }
    p.pos = internal::NextSlot(p.pos, t.capacity);
  }
  return out;
}

std::uint64_t Verifier::Impl::InternPolicy(const GcraPolicy& p) {
  if (!p.valid()) return internal::kPolicyNone;
  const auto key = std::make_tuple(p.emission_ns, p.capacity_ns, p.period_ns, p.rate, p.burst);
  auto it = policy_ids.find(key);
  if (it != policy_ids.end()) return it->second;
  if (policy_count >= internal::kPolicyInExtra) return internal::kPolicyInExtra;
  // Written before any slot that refers to it is published (release), and
  // never changed again.
  policies[policy_count] = p;
  policy_ids.emplace(key, policy_count);
  return policy_count++;
}

GcraCell* Verifier::Impl::OwnerCell(const std::string& owner) {
  auto& cell = owner_cells[owner];
  if (cell == nullptr) cell = std::make_unique<GcraCell>();
  return cell.get();
}

void Verifier::Impl::BuildImages(const KeyRecord& r, ImageList* out) {
  out->clear();
  SlotImage base;
  base.id = r.id;
  const bool id_packs = internal::PackKeyId(r.id, &base.packed);
  if (r.state != KeyState::kActive) base.ctrl |= internal::kFlagRevoked;
  if (r.environment != env_name) base.ctrl |= internal::kFlagWrongEnv;
  base.expires_ns = r.expires.has_value() ? DeadlineNs(*r.expires) : kNever;
  base.scopes = RecordMask(options.deployment->scopes(), r.scopes);

  GcraPolicy policy;
  if (r.rate_limit.has_value()) {
    policy = GcraPolicy::Compile(*r.rate_limit);
  } else if (const EnvironmentSpec* env = options.deployment->FindEnvironment(r.environment);
             env != nullptr && env->default_rate_limit.has_value()) {
    policy = GcraPolicy::Compile(*env->default_rate_limit);
  }
  const std::uint64_t pidx = InternPolicy(policy);
  base.ctrl |= pidx << internal::kPolicyShift;

  const bool rolled = r.previous.has_value() && r.previous->digest != r.digest;
  const bool needs_extra = !id_packs || !r.accounts.empty() ||
                           (evaluator != nullptr && !r.scopes.empty()) ||
                           pidx == internal::kPolicyInExtra || owner_policy.valid() || rolled;
  if (needs_extra) {
    auto e = std::make_shared<KeyExtra>();
    e->id = r.id;
    if (owner_policy.valid()) {
      e->owner = r.owner;
      e->owner_cell = OwnerCell(r.owner);
    }
    e->accounts = r.accounts;
    std::sort(e->accounts.begin(), e->accounts.end());
    e->accounts.erase(std::unique(e->accounts.begin(), e->accounts.end()), e->accounts.end());
    if (evaluator != nullptr) e->scope_names = r.scopes;
    if (rolled) e->current = r.digest;
    if (pidx == internal::kPolicyInExtra) e->policy = policy;
    base.extra = std::move(e);
    base.ctrl |= internal::kFlagHasExtra;
    if (!id_packs) base.ctrl |= internal::kFlagIdInExtra;
  }

  SlotImage current = base;
  current.digest = KeyOf(r.digest);
  out->push_back(std::move(current));
  if (rolled) {
    SlotImage prev = base;
    prev.digest = KeyOf(r.previous->digest);
    prev.ctrl |= internal::kFlagRolled;
    prev.tat_or_deadline = DeadlineNs(r.previous->valid_until);
    out->push_back(std::move(prev));
  }
}

bool Verifier::Impl::SameContent(const Table& t, std::size_t slot, const SlotImage& img) const {
  const Slot& s = t.slots[slot];
  const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
  constexpr std::uint64_t kCompared = internal::kFlagRolled | internal::kFlagWrongEnv |
                                      internal::kFlagHasExtra | internal::kFlagIdInExtra |
                                      (internal::kPolicyMask << internal::kPolicyShift);
  if ((c & kCompared) != (img.ctrl & kCompared)) return false;
  if (!SameDigest(s, img.digest)) return false;
  if (s.expires_ns != img.expires_ns || s.scopes != img.scopes) return false;
  if ((img.ctrl & internal::kFlagRolled) != 0 &&
      s.tat.load(std::memory_order_relaxed) != img.tat_or_deadline) {
    return false;
  }
  const KeyExtra* e =
      (c & internal::kFlagHasExtra) != 0 ? t.extras[c >> internal::kExtraShift] : nullptr;
  if ((e == nullptr) != (img.extra == nullptr)) return false;
  if (e != nullptr && !(*e == *img.extra)) return false;
  return IdIs(t, slot, img.id);
}

std::size_t Verifier::Impl::InsertSlot(Table& t, const SlotImage& img, std::int64_t tat) {
  std::uint64_t i = internal::Home(img.digest.w[0], t.capacity);
  while ((t.slots[i].ctrl.load(std::memory_order_relaxed) & internal::kKindMask) !=
         internal::kKindEmpty) {
    i = internal::NextSlot(i, t.capacity);
  }
  Slot& s = t.slots[i];
  s.digest[0] = img.digest.w[0];
  s.digest[1] = img.digest.w[1];
  s.digest[2] = img.digest.w[2];
  s.tat.store((img.ctrl & internal::kFlagRolled) != 0 ? img.tat_or_deadline : tat,
              std::memory_order_relaxed);
  s.expires_ns = img.expires_ns;
  s.scopes = img.scopes;
  t.ids[i] = (img.ctrl & internal::kFlagIdInExtra) == 0 ? img.packed : IdEntry{};
  std::uint64_t ctrl = img.ctrl | internal::kKindLive;
  if (img.extra != nullptr) {
    // One side record per key version: the current and previous secret's
    // slots of one ApplyRecord share it (BuildImages copies the pointer).
    std::uint32_t idx = 0;
    if (!t.extra_owner.empty() && t.extra_owner.back() == img.extra) {
      idx = t.extra_count - 1;
    } else {
      idx = t.extra_count++;
      t.extra_owner.push_back(img.extra);
      t.extras[idx] = img.extra.get();
    }
    ctrl |= static_cast<std::uint64_t>(idx) << internal::kExtraShift;
  }
  // Publishes every field above to readers that see the slot live.
  s.ctrl.store(ctrl, std::memory_order_release);
  ++t.used;
  ++t.live;
  IdIndexInsert(t, img.id, i);
  return i;
}

void Verifier::Impl::Retire(Table& t, std::size_t slot, std::string_view id) {
  Slot& s = t.slots[slot];
  const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
  // seq_cst: visible to every reader that starts after the writer returns.
  s.ctrl.store((c & ~internal::kKindMask) | internal::kKindRetired, std::memory_order_seq_cst);
  --t.live;
  ++t.retired;
  IdIndexRemove(t, id, slot);
}

absl::Status Verifier::Impl::Rebuild(std::unique_ptr<Table>& t, bool published,
                                     std::size_t capacity) {
  absl::StatusOr<std::unique_ptr<Table>> made = NewTable(capacity, next_generation++);
  if (!made.ok()) return made.status();
  std::unique_ptr<Table> next = std::move(*made);
  next->extra_owner.reserve(t->extra_owner.size());
  TatCopy copy = StartTatCopy();
  for (std::size_t i = 0; i < t->capacity; ++i) {
    const Slot& s = t->slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
    if ((c & internal::kKindMask) != internal::kKindLive) continue;
    SlotImage img;
    img.digest = KeyOf(s);
    img.ctrl = c & ~(internal::kKindMask | (std::uint64_t{0xFFFFFFFF} << internal::kExtraShift));
    img.tat_or_deadline = s.tat.load(std::memory_order_relaxed);
    if ((c & internal::kFlagRolled) == 0) copy.Note(i, img.tat_or_deadline);
    img.expires_ns = s.expires_ns;
    img.scopes = s.scopes;
    if ((c & internal::kFlagHasExtra) != 0) {
      img.extra = t->extra_owner[c >> internal::kExtraShift];
    }
    // The id without a string: unpacked into a stack buffer, or the side
    // record's (kept alive by img.extra).
    std::array<char, kKeyIdLength> id_buf;
    if ((c & internal::kFlagIdInExtra) != 0) {
      if (img.extra == nullptr) continue;  // never: such slots have a side record
      img.id = img.extra->id;
    } else {
      img.packed = t->ids[i];
      internal::UnpackKeyId(img.packed, id_buf.data());
      img.id = std::string_view(id_buf.data(), id_buf.size());
    }
    // Slots of one key that shared a side record keep sharing it only if
    // adjacent in insertion; sharing is an optimisation, not a requirement.
    InsertSlot(*next, img, img.tat_or_deadline);
  }
  next->keys = t->keys;
  ++rebuilds;
  if (published) {
    Publish(std::move(next), copy);  // `t` is owned_table: it now holds `next`
  } else {
    t = std::move(next);
  }
  return absl::OkStatus();
}

void Verifier::Impl::CopyTats(const Table& from, Table& next, TatCopy* copy) const {
  for (std::size_t i = 0; i < from.capacity; ++i) {
    const Slot& s = from.slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
    if ((c & internal::kKindMask) != internal::kKindLive || (c & internal::kFlagRolled) != 0) {
      continue;
    }
    std::uint64_t cc = 0;
    const std::int64_t j = Find(next, KeyOf(s), &cc);
    if (j < 0 || (cc & internal::kFlagRolled) != 0) continue;
    const std::int64_t tat = s.tat.load(std::memory_order_relaxed);
    next.slots[j].tat.store(tat, std::memory_order_relaxed);
    copy->Note(i, tat);
  }
}

void Verifier::Impl::Publish(std::unique_ptr<Table> next, const TatCopy& copy) {
  std::unique_ptr<Table> old = std::move(owned_table);
  owned_table = std::move(next);
  table.store(owned_table.get(), std::memory_order_seq_cst);
  if (old == nullptr) return;
  internal::EpochSynchronize();
  // No reader can reach `old` now: fold in what readers did to it between
  // the copy and the swap.
  CarryOver(*old, *owned_table, copy);
}

void Verifier::Impl::CarryOver(Table& from, Table& to, const TatCopy& copy) {
  std::lock_guard<std::mutex> lock(pending_mu);
  std::size_t k = 0;
  for (std::size_t i = 0; i < from.capacity; ++i) {
    Slot& s = from.slots[i];
    const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
    if ((c & internal::kKindMask) == internal::kKindEmpty) continue;
    const std::uint32_t uses = s.uses.exchange(0, std::memory_order_relaxed);
    if (uses != 0) {
      PendingUse& p = pending_usage[IdOf(from, i)];
      p.requests += uses;
      p.last_s = std::max(p.last_s, s.last_used_s.load(std::memory_order_relaxed));
    }
    if ((c & internal::kKindMask) != internal::kKindLive || (c & internal::kFlagRolled) != 0) {
      continue;
    }
    std::uint64_t cc = 0;
    const std::int64_t j = Find(to, KeyOf(s), &cc);
    if (j < 0 || (cc & internal::kFlagRolled) != 0) continue;
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

void Verifier::Impl::AddConsumed(std::atomic<std::int64_t>& tat, std::uint64_t used,
                                 std::int64_t taken_ns) {
  // A TAT the arithmetic below cannot push past: the bound on any TAT that
  // GcraStep stores (real ones are near the present).
  constexpr std::int64_t kTatCeiling = internal::kGcraTatCeiling - 1;
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

absl::Status Verifier::Impl::EnsureRoom(std::unique_ptr<Table>& t, bool published,
                                        std::size_t extra_slots) {
  if (t->used + extra_slots <= MaxUsed(t->capacity)) return absl::OkStatus();
  // Room for a quarter more live slots: a table that fills up grows by
  // about 1.8x (to a load of 0.56), one that is mostly retired slots is
  // compacted.
  return Rebuild(t, published, CapacityFor(t->live + t->live / 4 + extra_slots));
}

absl::Status Verifier::Impl::ApplyRecord(std::unique_ptr<Table>& t, bool published,
                                         const KeyRecord& r) {
  if (r.id.empty()) return absl::OkStatus();
  ImageList images;
  BuildImages(r, &images);
  absl::Status room = EnsureRoom(t, published, images.size());
  if (!room.ok()) return room;
  Table& tab = *t;

  const SlotList existing = IdIndexFind(tab, r.id);
  if (existing.empty()) ++tab.keys;
  absl::InlinedVector<bool, 2> keep(existing.size(), false);
  SlotList to_insert;
  // The key's current limiter state, carried to its new slot on a roll,
  // and the slot it came from (-1: none).
  const std::int64_t taken_ns = published ? NowNs(clock->Now()) : 0;
  std::int64_t key_tat = kGcraNeverUsed;
  std::int64_t key_slot = -1;
  for (std::size_t slot : existing) {
    const std::uint64_t c = tab.slots[slot].ctrl.load(std::memory_order_relaxed);
    if ((c & internal::kFlagRolled) == 0) {
      key_tat = tab.slots[slot].tat.load(std::memory_order_relaxed);
      key_slot = static_cast<std::int64_t>(slot);
    }
  }
  absl::InlinedVector<std::int64_t, 2> tats(images.size(), key_tat);
  absl::InlinedVector<std::int64_t, 2> from(images.size(), key_slot);
  for (std::size_t k = 0; k < images.size(); ++k) {
    bool handled = false;
    for (std::size_t e = 0; e < existing.size(); ++e) {
      const std::size_t slot = existing[e];
      if (keep[e] || !SameDigest(tab.slots[slot], images[k].digest)) continue;
      if (SameContent(tab, slot, images[k])) {
        // Only the state may differ: flip it in place, one atomic store.
        Slot& s = tab.slots[slot];
        const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
        const std::uint64_t want =
            (c & ~internal::kFlagRevoked) | (images[k].ctrl & internal::kFlagRevoked);
        if (want != c) s.ctrl.store(want, std::memory_order_seq_cst);
        keep[e] = true;
        handled = true;
      } else if ((tab.slots[slot].ctrl.load(std::memory_order_relaxed) & internal::kFlagRolled) ==
                 0) {
        tats[k] = tab.slots[slot].tat.load(std::memory_order_relaxed);
        from[k] = static_cast<std::int64_t>(slot);
      }
      break;
    }
    if (!handled) to_insert.push_back(k);
  }
  // Publish the new slots first, then retire the old ones: a reader sees
  // either the old or the new version of the key, never neither.
  absl::InlinedVector<std::size_t, 2> inserted;
  for (std::size_t k : to_insert) inserted.push_back(InsertSlot(tab, images[k], tats[k]));
  for (std::size_t e = 0; e < existing.size(); ++e) {
    if (!keep[e]) Retire(tab, existing[e], r.id);
  }
  if (published) {
    // Readers that found the old slot before it was retired charged its
    // TAT after the copy above: add that to the new slot, as CarryOver does
    // for a whole table. (A reader still between its lookup and its CAS may
    // charge the old slot once more; that is not waited for, since a grace
    // period per change would stall the feed.)
    for (std::size_t i = 0; i < to_insert.size(); ++i) {
      const std::size_t k = to_insert[i];
      if (from[k] < 0 || (images[k].ctrl & internal::kFlagRolled) != 0) continue;
      const std::int64_t base = std::max(tats[k], taken_ns);
      const std::int64_t now_tat =
          tab.slots[static_cast<std::size_t>(from[k])].tat.load(std::memory_order_relaxed);
      if (now_tat <= base) continue;
      AddConsumed(tab.slots[inserted[i]].tat,
                  static_cast<std::uint64_t>(now_tat) - static_cast<std::uint64_t>(base), taken_ns);
    }
  }
  ++changes_applied;
  return absl::OkStatus();
}

void Verifier::Impl::ApplyDelete(Table& t, std::string_view id) {
  const SlotList existing = IdIndexFind(t, id);
  if (!existing.empty()) --t.keys;
  for (std::size_t slot : existing) Retire(t, slot, id);
  ++changes_applied;
}

absl::Status Verifier::Impl::ApplyChange(std::unique_ptr<Table>& t, bool published,
                                         const Change& c) {
  if (c.record.has_value()) return ApplyRecord(t, published, *c.record);
  ApplyDelete(*t, c.key_id);
  return absl::OkStatus();
}

absl::Status Verifier::Impl::ApplyBatch(std::unique_ptr<Table>& t, bool published,
                                        const std::vector<Change>& changes) {
  // Applying a change reads the id index and the slot at the digest's home
  // at random: at a million keys both are cache misses. Start them a few
  // changes ahead so that they overlap (a quarter off a full load).
  constexpr std::size_t kAhead = 8;
  for (std::size_t k = 0; k < changes.size(); ++k) {
    if (k + kAhead < changes.size()) {
      const Change& ahead = changes[k + kAhead];
      const std::string_view id = ahead.record.has_value() ? ahead.record->id : ahead.key_id;
      __builtin_prefetch(&t->id_index[StartIdProbe(*t, id).pos]);
      if (ahead.record.has_value()) {
        __builtin_prefetch(
            &t->slots[internal::Home(DigestPrefix64(ahead.record->digest), t->capacity)]);
      }
    }
    if (absl::Status s = ApplyChange(t, published, changes[k]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Verifier::Impl::PullFeed(std::unique_ptr<Table>& t, bool published, std::uint64_t* seq,
                                      bool lock_per_batch) {
  for (;;) {
    absl::StatusOr<ChangeBatch> batch = options.store->ChangesSince(*seq, options.feed_batch);
    std::unique_lock<std::mutex> lock(mu, std::defer_lock);
    if (lock_per_batch) lock.lock();
    if (!batch.ok()) {
      ++sync_failures;
      return batch.status();
    }
    if (absl::Status s = ApplyBatch(t, published, batch->changes); !s.ok()) return s;
    *seq = std::max(*seq, batch->next_sequence);
    if (!batch->more) return absl::OkStatus();
  }
}

absl::Status Verifier::Impl::SyncLocked() {
  return PullFeed(owned_table, /*published=*/true, &applied_sequence, /*lock_per_batch=*/false);
}

absl::Status Verifier::Impl::Reload() {
  // The store is read without holding `mu`, so that feed application (and
  // the store's change callbacks, which wait for `mu`) never wait for a full
  // read of a large store; `mu` is taken per batch, for the shared writer
  // state (policy and owner tables) and the final swap.
  std::lock_guard<std::mutex> reload_lock(reload_mu);
  std::unique_ptr<Table> next;
  {
    std::lock_guard<std::mutex> lock(mu);
    const std::size_t cap = CapacityFor(
        std::max(owned_table != nullptr ? owned_table->live : 0, options.expected_keys));
    absl::StatusOr<std::unique_ptr<Table>> made = NewTable(cap, next_generation++);
    if (!made.ok()) return made.status();
    next = std::move(*made);
  }
  std::uint64_t seq = 0;
  if (absl::Status s = PullFeed(next, /*published=*/false, &seq, /*lock_per_batch=*/true);
      !s.ok()) {
    return s;
  }
  // Changes committed while the store was read without `mu` may already be
  // in the published table (callbacks, Sync, Refresh apply them there): a
  // revoke among them must not disappear for an instant behind the new
  // table. So, under `mu` (no writer can slip in), bring the new table up to
  // the store's present before it replaces the old one. The feed returns
  // current state, so re-applying what the old table had is harmless. If the
  // store fails here, the old table, which is current, stays.
  std::lock_guard<std::mutex> lock(mu);
  if (absl::Status s = PullFeed(next, /*published=*/false, &seq, /*lock_per_batch=*/false);
      !s.ok()) {
    return s;
  }
  // The published table's rate-limit state carries over (a reload must not
  // hand every key a fresh burst).
  TatCopy copy = StartTatCopy();
  if (owned_table != nullptr) CopyTats(*owned_table, *next, &copy);
  ++rebuilds;
  Publish(std::move(next), copy);
  applied_sequence = seq;
  return absl::OkStatus();
}

// ============================================================================
// Usage
// ============================================================================

absl::Status Verifier::Impl::FlushUsage() {
  std::lock_guard<std::mutex> flush_lock(flush_mu);
  std::unordered_map<std::string, PendingUse> agg;
  {
    std::lock_guard<std::mutex> lock(pending_mu);
    agg.swap(pending_usage);
  }
  // Scan in short read sections so that writers' grace periods stay short.
  std::uint64_t generation = 0;
  std::size_t pos = 0;
  for (;;) {
    internal::EpochReadGuard guard;
    if (!guard.ok()) return absl::ResourceExhaustedError("usage: cannot register thread");
    const Table* t = table.load(std::memory_order_seq_cst);
    if (t->generation != generation) {
      // A new table: its slots carry no usage that was already taken (a
      // rebuild moves usage to pending_usage, read at the next flush), so
      // scan it from the start.
      generation = t->generation;
      pos = 0;
    }
    if (pos >= t->capacity) break;
    const std::size_t end = std::min(t->capacity, pos + kUsageScanChunk);
    for (; pos < end; ++pos) {
      Slot& s = t->slots[pos];
      if ((s.ctrl.load(std::memory_order_acquire) & internal::kKindMask) == internal::kKindEmpty) {
        continue;
      }
      if (s.uses.load(std::memory_order_relaxed) == 0) continue;
      const std::uint32_t n = s.uses.exchange(0, std::memory_order_relaxed);
      PendingUse& p = agg[IdOf(*t, pos)];
      p.requests += n;
      p.last_s = std::max(p.last_s, s.last_used_s.load(std::memory_order_relaxed));
    }
  }
  if (agg.empty()) return absl::OkStatus();

  std::vector<KeyUsage> batch;
  batch.reserve(agg.size());
  std::vector<LastUsedUpdate> touches;
  touches.reserve(agg.size());
  for (auto& [id, p] : agg) {
    // An entry with no requests is a last_used a failed flush put back.
    if (p.requests != 0) {
      KeyUsage u;
      u.key_id = id;
      u.requests = p.requests;
      u.last_used = absl::FromUnixSeconds(p.last_s);
      batch.push_back(std::move(u));
    }
    touches.push_back(LastUsedUpdate{id, absl::FromUnixSeconds(p.last_s)});
  }
  if (options.usage_sink != nullptr && !batch.empty()) options.usage_sink->Record(batch);

  absl::Status stored = options.store->TouchLastUsed(touches, options.last_used_granularity);
  if (!stored.ok()) {
    // Keep the last-used times for the next flush (the sink has had the
    // counts): a store that is down for one flush, or at Shutdown, must not
    // lose them.
    std::lock_guard<std::mutex> lock(pending_mu);
    for (const auto& [id, p] : agg) {
      PendingUse& q = pending_usage[id];
      q.last_s = std::max(q.last_s, p.last_s);
    }
  }
  return stored;
}

// ============================================================================
// Background threads
// ============================================================================

void Verifier::Impl::Wake() {
  {
    std::lock_guard<std::mutex> lock(wake_mu);
    wake_pending = true;
  }
  wake_cv.notify_all();
}

void Verifier::Impl::FeedLoop() {
  const auto poll = absl::ToChronoNanoseconds(options.poll_interval);
  const bool resync = options.full_resync_interval > absl::ZeroDuration();
  auto next_resync = std::chrono::steady_clock::now() +
                     (resync ? absl::ToChronoNanoseconds(options.full_resync_interval)
                             : std::chrono::nanoseconds(0));
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(wake_mu);
      wake_cv.wait_for(lock, poll, [&] { return stopping || wake_pending; });
      if (stopping) return;
      wake_pending = false;
    }
    if (resync && std::chrono::steady_clock::now() >= next_resync) {
      (void)Reload();  // failures are counted; the old index keeps serving
      next_resync = std::chrono::steady_clock::now() +
                    absl::ToChronoNanoseconds(options.full_resync_interval);
    } else {
      std::lock_guard<std::mutex> lock(mu);
      (void)SyncLocked();
    }
  }
}

void Verifier::Impl::UsageLoop() {
  const auto interval = absl::ToChronoNanoseconds(options.usage_flush_interval);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(wake_mu);
      if (wake_cv.wait_for(lock, interval, [&] { return stopping; })) return;
    }
    (void)FlushUsage();
  }
}

void Verifier::Impl::Shutdown() {
  // Held throughout, so that a second caller returns only once the threads
  // have stopped and the last flush is done, as the first does.
  std::lock_guard<std::mutex> shutdown_lock(shutdown_mu);
  {
    std::lock_guard<std::mutex> lock(wake_mu);
    if (shut_down) return;
    shut_down = true;
  }
  // First stop notifications (after this returns the callback is not
  // running and will not run again), then the threads.
  subscription.reset();
  {
    std::lock_guard<std::mutex> lock(wake_mu);
    stopping = true;
  }
  wake_cv.notify_all();
  if (feed_thread.joinable()) feed_thread.join();
  if (usage_thread.joinable()) usage_thread.join();
  if (options.record_usage) (void)FlushUsage();
}

// ============================================================================
// Public API
// ============================================================================

Verifier::Verifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Verifier::~Verifier() {
  if (impl_ != nullptr) impl_->Shutdown();
}

absl::StatusOr<std::unique_ptr<Verifier>> Verifier::Create(VerifierOptions options) {
  if (options.deployment == nullptr) return absl::InvalidArgumentError("deployment: required");
  if (options.store == nullptr) return absl::InvalidArgumentError("store: required");
  absl::StatusOr<const EnvironmentSpec*> found =
      options.deployment->Environment(options.environment);
  if (!found.ok()) return found.status();
  const EnvironmentSpec* env = *found;
  if (options.feed_batch == 0 || options.feed_batch > kMaxListLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("feed_batch: must be between 1 and ", kMaxListLimit));
  }
  if (options.follow_changes && options.poll_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("poll_interval: must be positive");
  }
  if (options.full_resync_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("full_resync_interval: must not be negative");
  }
  if (options.usage_flush_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("usage_flush_interval: must not be negative");
  }
  // The background threads wait on std::chrono deadlines; an infinite (or
  // huge) interval would overflow them into a busy loop.
  for (const auto& [field, value] :
       {std::pair<const char*, absl::Duration>{"poll_interval", options.poll_interval},
        {"full_resync_interval", options.full_resync_interval},
        {"usage_flush_interval", options.usage_flush_interval}}) {
    if (value > kMaxVerifierInterval) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": must be at most 365 days"));
    }
  }
  if (options.expected_keys > kMaxExpectedKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected_keys: must be at most ", kMaxExpectedKeys));
  }
  if (options.owner_rate_limit.has_value()) {
    if (absl::Status s = ValidateRateLimitPolicy(*options.owner_rate_limit, "owner_rate_limit");
        !s.ok()) {
      return s;
    }
  }

  auto impl = std::make_unique<Impl>();
  if (impl->policies == nullptr) {
    return absl::ResourceExhaustedError("verifier: cannot allocate the policy table");
  }
  impl->hasher = &options.deployment->hasher();
  impl->prefix = options.deployment->token_prefix();
  impl->env_name = env->name;
  impl->env_tag = env->tag;
  impl->canonical = internal::CanonicalToken(impl->prefix, impl->env_tag);
  for (const EnvironmentSpec& e : options.deployment->environments()) {
    if (e.name != env->name) impl->other_tags.push_back(e.tag);
  }
  if (options.scope_evaluator != nullptr &&
      dynamic_cast<const MaskScopeEvaluator*>(options.scope_evaluator.get()) == nullptr) {
    impl->evaluator = options.scope_evaluator.get();
  }
  if (options.rate_limiter == nullptr) options.rate_limiter = std::make_shared<LocalRateLimiter>();
  impl->limiter = options.rate_limiter.get();
  impl->local_limiter = dynamic_cast<LocalRateLimiter*>(impl->limiter) != nullptr;
  if (options.owner_rate_limit.has_value()) {
    impl->owner_policy = GcraPolicy::Compile(*options.owner_rate_limit);
  }
  if (options.clock == nullptr) {
    options.clock = std::shared_ptr<const Clock>(&SystemClock::Get(), [](const Clock*) {});
  }
  impl->clock = options.clock.get();
  impl->options = std::move(options);
  Impl* p = impl.get();

  absl::Status loaded = p->Reload();
  if (!loaded.ok()) return loaded;

  std::unique_ptr<Verifier> v(new Verifier(std::move(impl)));
  if (p->options.follow_changes) {
    absl::StatusOr<std::unique_ptr<Subscription>> sub = p->options.store->Subscribe([p] {
      if (p->options.sync_in_callback) {
        std::lock_guard<std::mutex> lock(p->mu);
        if (p->SyncLocked().ok()) return;
      }
      p->Wake();  // failed or deferred: let the feed thread retry
    });
    if (!sub.ok()) return sub.status();
    p->subscription = std::move(*sub);
    // Changes committed between the initial load and the subscription
    // reached no callback of ours. Apply them before returning, so that a
    // revoke that returned before Create did is in force when it returns.
    {
      std::lock_guard<std::mutex> lock(p->mu);
      if (absl::Status s = p->SyncLocked(); !s.ok()) return s;
    }
    p->feed_thread = std::thread([p] { p->FeedLoop(); });
  }
  if (p->options.record_usage && p->options.usage_flush_interval > absl::ZeroDuration()) {
    p->usage_thread = std::thread([p] { p->UsageLoop(); });
  }
  return v;
}

Verdict Verifier::Verify(std::string_view authorization,
                         const Requirement& requirement) const noexcept {
  return impl_->VerifyHeader(authorization, requirement, nullptr);
}

Verdict Verifier::Verify(std::string_view authorization, const Requirement& requirement,
                         absl::Time now) const noexcept {
  return impl_->VerifyHeader(authorization, requirement, &now);
}

Verdict Verifier::VerifyToken(std::string_view token,
                              const Requirement& requirement) const noexcept {
  return impl_->VerifyTokenAt(token, requirement, nullptr);
}

Verdict Verifier::VerifyToken(std::string_view token, const Requirement& requirement,
                              absl::Time now) const noexcept {
  return impl_->VerifyTokenAt(token, requirement, &now);
}

absl::Status Verifier::Sync() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->SyncLocked();
}

absl::Status Verifier::Refresh(std::string_view key_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  absl::StatusOr<KeyRecord> r = impl_->options.store->Get(key_id);
  if (r.ok()) return impl_->ApplyRecord(impl_->owned_table, /*published=*/true, *r);
  const absl::StatusCode code = r.status().code();
  if (code != absl::StatusCode::kNotFound && code != absl::StatusCode::kDataLoss) {
    return r.status();
  }
  // Gone, or stored in a state nobody can read (key_store.h): fail closed.
  impl_->ApplyDelete(*impl_->owned_table, key_id);
  return code == absl::StatusCode::kDataLoss ? r.status() : absl::OkStatus();
}

absl::Status Verifier::Reload() { return impl_->Reload(); }

absl::Status Verifier::FlushUsage() { return impl_->FlushUsage(); }

void Verifier::Shutdown() { impl_->Shutdown(); }

VerifierStats Verifier::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const Table& t = *impl_->owned_table;
  VerifierStats s;
  s.keys = t.keys;
  s.slots_live = t.live;
  s.slots_retired = t.retired;
  s.capacity = t.capacity;
  s.index_bytes = t.SlotBytes();
  s.total_bytes = t.SlotBytes() + t.OtherBytes();
  s.applied_sequence = impl_->applied_sequence;
  s.changes_applied = impl_->changes_applied;
  s.rebuilds = impl_->rebuilds;
  s.sync_failures = impl_->sync_failures;
  s.membarrier = internal::EpochUsesMembarrier();
  return s;
}

}  // namespace keygate
