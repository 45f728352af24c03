// The verifier's writer (private): applies key records and change-feed
// entries to the index that IndexReader publishes, rebuilds and swaps
// tables, and reloads everything from the store.
//
// Thread safety: thread-safe. One change is applied at a time, under mu_;
// a full reload holds reload_mu_ (taken before mu_) and reads the store
// without mu_. Readers are never blocked: a change becomes visible through
// atomic slot stores, a rebuild through IndexReader::Publish followed by an
// epoch grace period before the old table is freed.

#ifndef KEYGATE_SRC_VERIFIER_WRITER_H_
#define KEYGATE_SRC_VERIFIER_WRITER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"

#include "internal/verifier_index.h"
#include "keygate/deployment.h"
#include "keygate/key_store.h"
#include "keygate/verifier.h"
#include "verifier/id_index.h"
#include "verifier/index.h"
#include "verifier/usage.h"

namespace keygate::internal {

struct WriterConfig {
  const Deployment* deployment = nullptr;
  KeyStore* store = nullptr;
  std::string env_name;
  std::size_t feed_batch = 1000;
  std::size_t expected_keys = 0;
};

class IndexWriter {
 public:
  // `reader` publishes what this writer builds; `usage` receives the counts
  // of tables swapped away. Both must outlive the writer.
  IndexWriter(IndexReader& reader, UsageCollector& usage, WriterConfig config);
  IndexWriter(const IndexWriter&) = delete;
  IndexWriter& operator=(const IndexWriter&) = delete;

  // Pulls the change feed and applies everything committed before the call.
  // When it brought nothing new, also asks the store for its last sequence:
  // one behind this index's (a database restored from a backup, or created
  // anew) means the feed can no longer be trusted, and StoreWentBack() then
  // says so once. Errors: the store's; the index keeps its last state.
  absl::Status Sync();
  // Whether a Sync since the last call found the store's history behind this
  // index (the caller then Reload()s).
  bool StoreWentBack();
  // Reads `key_id` from the store and applies it (a delete if it is gone).
  // Errors: the store's; kDataLoss also drops the key.
  absl::Status Refresh(std::string_view key_id);
  // Builds a new table from a full read of the store and swaps it in.
  // Must not be called with mu_ held. Errors: the store's,
  // kResourceExhausted (allocation); the old table keeps serving.
  absl::Status Reload();

  VerifierStats Stats() const;

 private:
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
  using ImageList = absl::InlinedVector<SlotImage, 2>;

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

  // All below run under mu_ (Reload's private table excepted).
  std::uint64_t InternPolicy(const GcraPolicy& p);
  GcraCell* OwnerCell(const std::string& owner);
  void BuildImages(const KeyRecord& r, ImageList* out);
  bool SameContent(const Table& t, std::size_t slot, const SlotImage& img) const;
  std::size_t InsertSlot(Table& t, const SlotImage& img, std::int64_t tat);
  void Retire(Table& t, std::size_t slot, std::string_view id);
  // Retires `slots` of key `id`, its current (unrolled) slot before any rolled one.
  void RetireKey(Table& t, const SlotList& slots, std::string_view id);

  // `t` is either `owned_table_` itself with `published` true (what readers
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

  TatCopy StartTatCopy() const;
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
  // `t` and advancing `*seq`; while a batch is applied, the next is read on
  // a short-lived thread. PullFeed never waits for the store holding mu_
  // itself: with `lock_per_batch` (the caller does not hold mu_) it is taken
  // for each batch's application; without, the caller holds it.
  absl::Status PullFeed(std::unique_ptr<Table>& t, bool published, std::uint64_t* seq,
                        bool lock_per_batch);

  IndexReader& reader_;
  UsageCollector& usage_;
  const WriterConfig config_;

  mutable std::mutex mu_;
  std::mutex reload_mu_;  // one full reload at a time; taken before mu_
  // Everything below is under mu_.
  std::unique_ptr<Table> owned_table_;
  std::uint64_t next_generation_ = 1;
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::uint32_t, std::uint32_t>,
           std::uint64_t>
      policy_ids_;
  std::uint64_t policy_count_ = 1;
  std::unordered_map<std::string, std::unique_ptr<GcraCell>> owner_cells_;
  std::uint64_t applied_sequence_ = 0;
  std::uint64_t changes_applied_ = 0;
  std::uint64_t rebuilds_ = 0;
  std::uint64_t sync_failures_ = 0;
  bool store_went_back_ = false;
};

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_VERIFIER_WRITER_H_
