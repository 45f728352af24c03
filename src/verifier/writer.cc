// The verifier's writer (writer.h): slot images, in-place updates and
// feed application.

#include "verifier/writer.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"

#include "internal/epoch.h"
#include "verifier/id_index.h"

namespace keygate::internal {

namespace {

// The closure mask exactly as the reference computes it: a record naming a
// scope the registry no longer knows grants nothing at all.
ScopeMask RecordMask(const ScopeRegistry& registry, const std::vector<std::string>& scopes) {
  absl::StatusOr<ScopeMask> m = registry.Compile(scopes);
  return m.ok() ? *m : 0;
}

}  // namespace

IndexWriter::IndexWriter(IndexReader& reader, UsageCollector& usage, WriterConfig config)
    : reader_(reader), usage_(usage), config_(std::move(config)) {}

std::uint64_t IndexWriter::InternPolicy(const GcraPolicy& p) {
  if (!p.valid()) return kPolicyNone;
  const auto key = std::make_tuple(p.emission_ns, p.capacity_ns, p.period_ns, p.rate, p.burst);
  auto it = policy_ids_.find(key);
  if (it != policy_ids_.end()) return it->second;
  if (policy_count_ >= kPolicyInExtra) return kPolicyInExtra;
  // Written before any slot that refers to it is published (release), and
  // never changed again.
  reader_.mutable_policies()[policy_count_] = p;
  policy_ids_.emplace(key, policy_count_);
  return policy_count_++;
}

GcraCell* IndexWriter::OwnerCell(const std::string& owner) {
  auto& cell = owner_cells_[owner];
  if (cell == nullptr) cell = std::make_unique<GcraCell>();
  return cell.get();
}

void IndexWriter::BuildImages(const KeyRecord& r, ImageList* out) {
  out->clear();
  SlotImage base;
  base.id = r.id;
  const bool id_packs = PackKeyId(r.id, &base.packed);
  if (r.state != KeyState::kActive) base.ctrl |= kFlagRevoked;
  if (r.environment != config_.env_name) base.ctrl |= kFlagWrongEnv;
  base.expires_ns = r.expires.has_value() ? DeadlineNs(*r.expires) : kNever;
  base.scopes = RecordMask(config_.deployment->scopes(), r.scopes);

  GcraPolicy policy;
  if (r.rate_limit.has_value()) {
    policy = GcraPolicy::Compile(*r.rate_limit);
  } else if (const EnvironmentSpec* env = config_.deployment->FindEnvironment(r.environment);
             env != nullptr && env->default_rate_limit.has_value()) {
    policy = GcraPolicy::Compile(*env->default_rate_limit);
  }
  const std::uint64_t pidx = InternPolicy(policy);
  base.ctrl |= pidx << kPolicyShift;

  const bool rolled = r.previous.has_value() && r.previous->digest != r.digest;
  const bool needs_extra = !id_packs || !r.accounts.empty() ||
                           (reader_.config().evaluator != nullptr && !r.scopes.empty()) ||
                           pidx == kPolicyInExtra || reader_.config().owner_policy.valid() ||
                           rolled;
  if (needs_extra) {
    auto e = std::make_shared<KeyExtra>();
    e->id = r.id;
    if (reader_.config().owner_policy.valid()) {
      e->owner_subject = "owner:" + r.owner;
      e->owner_cell = OwnerCell(r.owner);
    }
    e->accounts = r.accounts;
    std::sort(e->accounts.begin(), e->accounts.end());
    e->accounts.erase(std::unique(e->accounts.begin(), e->accounts.end()), e->accounts.end());
    if (reader_.config().evaluator != nullptr) e->scope_names = r.scopes;
    if (rolled) e->current = r.digest;
    if (pidx == kPolicyInExtra) e->policy = policy;
    base.extra = std::move(e);
    base.ctrl |= kFlagHasExtra;
    if (!id_packs) base.ctrl |= kFlagIdInExtra;
  }

  SlotImage current = base;
  current.digest = KeyOf(r.digest);
  out->push_back(std::move(current));
  if (rolled) {
    SlotImage prev = base;
    prev.digest = KeyOf(r.previous->digest);
    prev.ctrl |= kFlagRolled;
    prev.tat_or_deadline = DeadlineNs(r.previous->valid_until);
    out->push_back(std::move(prev));
  }
}

bool IndexWriter::SameContent(const Table& t, std::size_t slot, const SlotImage& img) const {
  const Slot& s = t.slots[slot];
  const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
  constexpr std::uint64_t kCompared =
      kFlagRolled | kFlagWrongEnv | kFlagHasExtra | kFlagIdInExtra | (kPolicyMask << kPolicyShift);
  if ((c & kCompared) != (img.ctrl & kCompared)) return false;
  if (!SameDigest(s, img.digest)) return false;
  if (s.expires_ns != img.expires_ns || s.scopes != img.scopes) return false;
  if ((img.ctrl & kFlagRolled) != 0 &&
      s.tat.load(std::memory_order_relaxed) != img.tat_or_deadline) {
    return false;
  }
  const KeyExtra* e = (c & kFlagHasExtra) != 0 ? t.extras[c >> kExtraShift] : nullptr;
  if ((e == nullptr) != (img.extra == nullptr)) return false;
  if (e != nullptr && !(*e == *img.extra)) return false;
  return IdIs(t, slot, img.id);
}

std::size_t IndexWriter::InsertSlot(Table& t, const SlotImage& img, std::int64_t tat) {
  std::uint64_t i = Home(img.digest.w[0], t.capacity);
  while ((t.slots[i].ctrl.load(std::memory_order_relaxed) & kKindMask) != kKindEmpty) {
    i = NextSlot(i, t.capacity);
  }
  Slot& s = t.slots[i];
  s.digest[0] = img.digest.w[0];
  s.digest[1] = img.digest.w[1];
  s.digest[2] = img.digest.w[2];
  s.tat.store((img.ctrl & kFlagRolled) != 0 ? img.tat_or_deadline : tat, std::memory_order_relaxed);
  s.expires_ns = img.expires_ns;
  s.scopes = img.scopes;
  t.ids[i] = (img.ctrl & kFlagIdInExtra) == 0 ? img.packed : IdEntry{};
  std::uint64_t ctrl = img.ctrl | kKindLive;
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
    ctrl |= static_cast<std::uint64_t>(idx) << kExtraShift;
  }
  // Publishes every field above to readers that see the slot live.
  s.ctrl.store(ctrl, std::memory_order_release);
  ++t.used;
  ++t.live;
  IdIndexInsert(t, img.id, i);
  return i;
}

void IndexWriter::Retire(Table& t, std::size_t slot, std::string_view id) {
  Slot& s = t.slots[slot];
  const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
  // seq_cst: visible to every reader that starts after the writer returns.
  s.ctrl.store((c & ~kKindMask) | kKindRetired, std::memory_order_seq_cst);
  --t.live;
  ++t.retired;
  IdIndexRemove(t, id, slot);
}

void IndexWriter::RetireKey(Table& t, const SlotList& slots, std::string_view id) {
  // The current slot first: its retirement is the change's instant (verifier_index.h).
  for (const bool rolled_pass : {false, true}) {
    for (std::size_t slot : slots) {
      const bool rolled = (t.slots[slot].ctrl.load(std::memory_order_relaxed) & kFlagRolled) != 0;
      if (rolled == rolled_pass) Retire(t, slot, id);
    }
  }
}

absl::Status IndexWriter::ApplyRecord(std::unique_ptr<Table>& t, bool published,
                                      const KeyRecord& r) {
  if (r.id.empty()) return absl::OkStatus();
  ImageList images;
  BuildImages(r, &images);
  absl::Status room = EnsureRoom(t, published, images.size());
  if (!room.ok()) return room;
  Table& tab = *t;

  const SlotList existing = IdIndexFind(tab, r.id);
  if (existing.empty()) ++tab.keys;
  // A roll: the new current secret's slot waits for the replaced one's to be
  // retired (verifier_index.h), with or without a grace period. The wait
  // needs the replaced digest, in a side record made for it if the key has
  // none (images[0] is the current secret's; BuildImages).
  for (std::size_t slot : existing) {
    const Slot& old = tab.slots[slot];
    if ((old.ctrl.load(std::memory_order_relaxed) & kFlagRolled) != 0 ||
        SameDigest(old, images[0].digest)) {
      continue;
    }
    SlotImage& cur = images[0];
    auto e = cur.extra != nullptr ? std::make_shared<KeyExtra>(*cur.extra)
                                  : std::make_shared<KeyExtra>();
    e->id = r.id;
    std::memcpy(e->replaces.data(), old.digest, sizeof old.digest);
    cur.extra = std::move(e);
    cur.ctrl |= kFlagHasExtra | kFlagAwait;
  }
  absl::InlinedVector<bool, 2> keep(existing.size(), false);
  SlotList to_insert;
  // The key's current limiter state, carried to its new slot on a roll,
  // and the slot it came from (-1: none).
  const std::int64_t taken_ns = published ? NowNs(reader_.config().clock->Now()) : 0;
  std::int64_t key_tat = kGcraNeverUsed;
  std::int64_t key_slot = -1;
  for (std::size_t slot : existing) {
    const std::uint64_t c = tab.slots[slot].ctrl.load(std::memory_order_relaxed);
    if ((c & kFlagRolled) == 0) {
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
        const std::uint64_t want = (c & ~kFlagRevoked) | (images[k].ctrl & kFlagRevoked);
        if (want != c) s.ctrl.store(want, std::memory_order_seq_cst);
        keep[e] = true;
        handled = true;
      } else if ((tab.slots[slot].ctrl.load(std::memory_order_relaxed) & kFlagRolled) == 0) {
        tats[k] = tab.slots[slot].tat.load(std::memory_order_relaxed);
        from[k] = static_cast<std::int64_t>(slot);
      }
      break;
    }
    if (!handled) to_insert.push_back(k);
  }
  // Publish the new slots first, then retire the old ones (RetireKey).
  absl::InlinedVector<std::size_t, 2> inserted;
  for (std::size_t k : to_insert) inserted.push_back(InsertSlot(tab, images[k], tats[k]));
  SlotList replaced;
  for (std::size_t e = 0; e < existing.size(); ++e) {
    if (!keep[e]) replaced.push_back(existing[e]);
  }
  RetireKey(tab, replaced, r.id);
  // Nothing older is live now: what kFlagAwait waited for has happened.
  for (std::size_t slot : inserted) {
    Slot& s = tab.slots[slot];
    const std::uint64_t c = s.ctrl.load(std::memory_order_relaxed);
    if ((c & kFlagAwait) != 0) s.ctrl.store(c & ~kFlagAwait, std::memory_order_release);
  }
  if (published) {
    // Readers that found the old slot before it was retired charged its
    // TAT after the copy above: add that to the new slot, as CarryOver does
    // for a whole table. (A reader still between its lookup and its CAS may
    // charge the old slot once more; that is not waited for, since a grace
    // period per change would stall the feed.)
    for (std::size_t i = 0; i < to_insert.size(); ++i) {
      const std::size_t k = to_insert[i];
      if (from[k] < 0 || (images[k].ctrl & kFlagRolled) != 0) continue;
      const std::int64_t base = std::max(tats[k], taken_ns);
      const std::int64_t now_tat =
          tab.slots[static_cast<std::size_t>(from[k])].tat.load(std::memory_order_relaxed);
      if (now_tat <= base) continue;
      AddConsumed(tab.slots[inserted[i]].tat,
                  static_cast<std::uint64_t>(now_tat) - static_cast<std::uint64_t>(base), taken_ns);
    }
  }
  ++changes_applied_;
  return absl::OkStatus();
}

void IndexWriter::ApplyDelete(Table& t, std::string_view id) {
  const SlotList existing = IdIndexFind(t, id);
  if (!existing.empty()) --t.keys;
  RetireKey(t, existing, id);
  ++changes_applied_;
}

absl::Status IndexWriter::ApplyChange(std::unique_ptr<Table>& t, bool published, const Change& c) {
  if (c.record.has_value()) return ApplyRecord(t, published, *c.record);
  ApplyDelete(*t, c.key_id);
  return absl::OkStatus();
}

absl::Status IndexWriter::ApplyBatch(std::unique_ptr<Table>& t, bool published,
                                     const std::vector<Change>& changes) {
  // Applying a change reads the id index and the slot at the digest's home
  // at random: at a million keys both are cache misses. Start them a few
  // changes ahead so that they overlap (a quarter off a full load).
  constexpr std::size_t kAhead = 8;
  for (std::size_t k = 0; k < changes.size(); ++k) {
    if (k + kAhead < changes.size()) {
      const Change& ahead = changes[k + kAhead];
      const std::string_view id = ahead.record.has_value() ? ahead.record->id : ahead.key_id;
      __builtin_prefetch(&t->id_index[IdIndexHome(*t, id)]);
      if (ahead.record.has_value()) {
        __builtin_prefetch(&t->slots[Home(DigestPrefix64(ahead.record->digest), t->capacity)]);
      }
    }
    if (absl::Status s = ApplyChange(t, published, changes[k]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status IndexWriter::PullFeed(std::unique_ptr<Table>& t, bool published, std::uint64_t* seq,
                                   bool lock_per_batch) {
  absl::StatusOr<ChangeBatch> batch = config_.store->ChangesSince(*seq, config_.feed_batch);
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    if (lock_per_batch) lock.lock();
    if (!batch.ok()) {
      ++sync_failures_;
      return batch.status();
    }
    // With more to read, the next batch is read on a thread of its own while this one is
    // applied: the store (a database server, SQLite on the other core) works meanwhile. A cold
    // load of a million keys from PostgreSQL takes about a third less.
    absl::StatusOr<ChangeBatch> next = absl::UnknownError("not read");
    std::thread ahead;
    if (batch->more) {
      ahead = std::thread([this, &next, from = batch->next_sequence] {
        next = config_.store->ChangesSince(from, config_.feed_batch);
      });
    }
    absl::Status applied = ApplyBatch(t, published, batch->changes);
    // mu_ is released before waiting for the store, as if it had been called here.
    if (lock.owns_lock()) lock.unlock();
    if (ahead.joinable()) ahead.join();
    if (!applied.ok()) return applied;
    *seq = std::max(*seq, batch->next_sequence);
    if (!batch->more) return absl::OkStatus();
    batch = std::move(next);
  }
}

absl::Status IndexWriter::Sync() {
  std::lock_guard<std::mutex> lock(mu_);
  const std::uint64_t before = applied_sequence_;
  absl::Status s =
      PullFeed(owned_table_, /*published=*/true, &applied_sequence_, /*lock_per_batch=*/false);
  if (!s.ok() || applied_sequence_ != before || before == 0) return s;
  // Nothing new. A store whose sequence is behind ours lost the history this index was built
  // from: its feed would skip every change up to our position.
  absl::StatusOr<std::uint64_t> last = config_.store->LastSequence();
  if (!last.ok()) {
    ++sync_failures_;
    return last.status();
  }
  if (*last < before) store_went_back_ = true;
  return absl::OkStatus();
}

bool IndexWriter::StoreWentBack() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(store_went_back_, false);
}

absl::Status IndexWriter::Refresh(std::string_view key_id) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<KeyRecord> r = config_.store->Get(key_id);
  if (r.ok()) return ApplyRecord(owned_table_, /*published=*/true, *r);
  const absl::StatusCode code = r.status().code();
  if (code != absl::StatusCode::kNotFound && code != absl::StatusCode::kDataLoss) {
    return r.status();
  }
  // Gone, or stored in a state nobody can read (key_store.h): fail closed.
  ApplyDelete(*owned_table_, key_id);
  return code == absl::StatusCode::kDataLoss ? r.status() : absl::OkStatus();
}

VerifierStats IndexWriter::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  const Table& t = *owned_table_;
  VerifierStats s;
  s.keys = t.keys;
  s.slots_live = t.live;
  s.slots_retired = t.retired;
  s.capacity = t.capacity;
  s.index_bytes = t.SlotBytes();
  s.total_bytes = t.SlotBytes() + t.OtherBytes();
  s.applied_sequence = applied_sequence_;
  s.changes_applied = changes_applied_;
  s.rebuilds = rebuilds_;
  s.sync_failures = sync_failures_;
  s.membarrier = EpochUsesMembarrier();
  return s;
}

}  // namespace keygate::internal
