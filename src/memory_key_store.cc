// The in-memory KeyStore (memory_key_store.h).
//
// Layout: one mutex guards the records (ordered by id, which is the List
// order and what cursors encode), a digest index over current and rolled
// digests, the set of active personal keys, and the change log. The change log
// keeps only each key's latest sequence number (ChangesSince returns current
// state anyway), so it grows with the number of keys ever stored, not with the
// number of writes.
//
// Subscribers are notified after the mutex is released, on the writing
// thread. Each subscription runs its callback on at most one thread at a time:
// a notification that arrives while the callback runs is folded into one more
// round by the thread already running it, and the folded writer waits until a
// round that started after its notification has finished. So when a write
// returns, every subscriber has seen it (a verifier that applies changes in
// its callback rejects a revoked key as soon as Revoke() returns), at the
// price of writers waiting for a slow callback. A write made from inside the
// callback does not wait (it would wait for itself); the running round loop
// picks it up.

#include "keygate/memory_key_store.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "internal/digest_prefix.h"
#include "internal/key_label.h"

namespace keygate {
namespace {

constexpr char kCursorPrefix[] = "id:";
constexpr std::size_t kCursorPrefixSize = sizeof(kCursorPrefix) - 1;

struct DigestHash {
  std::size_t operator()(const Digest& d) const noexcept {
    return static_cast<std::size_t>(internal::DigestPrefix64(d));
  }
};

struct SubscriberState {
  explicit SubscriberState(std::function<void()> cb) : callback(std::move(cb)) {}

  std::mutex mu;
  std::condition_variable idle;
  bool active = true;    // false once the Subscription is being destroyed
  bool running = false;  // a thread is inside the round loop
  std::thread::id runner;
  std::uint64_t requested = 0;  // notifications received
  std::uint64_t completed = 0;  // every notification <= this was followed by a whole round
  const std::function<void()> callback;
};

// Delivers one notification: returns once a callback round that started
// after it has finished (or the subscription is gone).
void Notify(const std::shared_ptr<SubscriberState>& s) {
  std::unique_lock<std::mutex> lock(s->mu);
  const std::uint64_t ticket = ++s->requested;
  const std::thread::id self = std::this_thread::get_id();
  for (;;) {
    if (!s->active || s->completed >= ticket) return;
    if (!s->running) break;
    if (s->runner == self) return;  // from inside the callback: the loop below runs again
    s->idle.wait(lock);
  }
  s->running = true;
  s->runner = self;
  while (s->active && s->completed < s->requested) {
    const std::uint64_t round = s->requested;
    lock.unlock();
    s->callback();
    lock.lock();
    s->completed = round;
    s->idle.notify_all();
  }
  s->running = false;
  s->runner = std::thread::id();
  s->idle.notify_all();
}

struct SubscriberList {
  std::mutex mu;
  std::vector<std::shared_ptr<SubscriberState>> subs;
};

class MemorySubscription final : public Subscription {
 public:
  MemorySubscription(std::shared_ptr<SubscriberState> sub, std::weak_ptr<SubscriberList> list)
      : sub_(std::move(sub)), list_(std::move(list)) {}

  // Waits for a callback running on another thread; does not wait when
  // called from inside the callback itself (that would deadlock), in which
  // case the callback is not called again once it returns.
  ~MemorySubscription() override {
    {
      std::unique_lock<std::mutex> lock(sub_->mu);
      sub_->active = false;
      sub_->idle.notify_all();  // folded writers stop waiting for this subscriber
      const std::thread::id self = std::this_thread::get_id();
      sub_->idle.wait(lock, [&] { return !sub_->running || sub_->runner == self; });
    }
    if (std::shared_ptr<SubscriberList> list = list_.lock()) {
      std::lock_guard<std::mutex> lock(list->mu);
      for (auto it = list->subs.begin(); it != list->subs.end(); ++it) {
        if (*it == sub_) {
          list->subs.erase(it);
          break;
        }
      }
    }
  }

 private:
  std::shared_ptr<SubscriberState> sub_;
  std::weak_ptr<SubscriberList> list_;
};

std::string ToLowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool Matches(const ListFilter& f, const std::string& lowered_needle, const KeyRecord& r) {
  if (f.owner.has_value() && r.owner != *f.owner) return false;
  if (f.environment.has_value() && r.environment != *f.environment) return false;
  if (f.state.has_value() && r.state != *f.state) return false;
  if (f.kind.has_value() && r.kind != *f.kind) return false;
  if (!lowered_needle.empty() && ToLowerAscii(r.name).find(lowered_needle) == std::string::npos) {
    return false;
  }
  return true;
}

bool IsActivePersonal(const KeyRecord& r) {
  return r.kind == KeyKind::kPersonal && r.state == KeyState::kActive;
}

absl::Status NotFound(std::string_view id) {
  return absl::NotFoundError(absl::StrCat(internal::KeyLabel(id), ": not found"));
}

}  // namespace

struct MemoryKeyStore::State {
  std::mutex mu;
  std::map<std::string, KeyRecord, std::less<>> records;
  absl::flat_hash_map<Digest, std::string, DigestHash> by_digest;
  std::map<std::pair<std::string, std::string>, std::string> active_personal;
  std::map<std::uint64_t, std::string> log;                   // sequence -> key id
  std::map<std::string, std::uint64_t, std::less<>> key_seq;  // key id -> its log entry
  std::uint64_t last_sequence = 0;

  const std::shared_ptr<SubscriberList> subscribers = std::make_shared<SubscriberList>();

  // The digest `d` is free for key `id` (unused, or used by `id` itself).
  bool DigestFree(const Digest& d, const std::string& id) const {
    auto it = by_digest.find(d);
    return it == by_digest.end() || it->second == id;
  }

  absl::Status CheckUnique(const KeyRecord& r) const {
    if (!DigestFree(r.digest, r.id) ||
        (r.previous.has_value() && !DigestFree(r.previous->digest, r.id))) {
      return absl::AlreadyExistsError(
          absl::StrCat(internal::KeyLabel(r.id), ": digest already in use by another key"));
    }
    if (IsActivePersonal(r)) {
      auto it = active_personal.find({r.owner, r.environment});
      if (it != active_personal.end() && it->second != r.id) {
        return absl::AlreadyExistsError(absl::StrCat(internal::KeyLabel(r.id), ": owner '", r.owner,
                                                     "' already has an active personal key (",
                                                     it->second, ") in environment '",
                                                     r.environment, "'"));
      }
    }
    return absl::OkStatus();
  }

  void Index(const KeyRecord& r) {
    by_digest[r.digest] = r.id;
    if (r.previous.has_value()) by_digest[r.previous->digest] = r.id;
    if (IsActivePersonal(r)) active_personal[{r.owner, r.environment}] = r.id;
  }

  void Unindex(const KeyRecord& r) {
    auto erase_digest = [&](const Digest& d) {
      auto it = by_digest.find(d);
      if (it != by_digest.end() && it->second == r.id) by_digest.erase(it);
    };
    erase_digest(r.digest);
    if (r.previous.has_value()) erase_digest(r.previous->digest);
    if (IsActivePersonal(r)) {
      auto it = active_personal.find({r.owner, r.environment});
      if (it != active_personal.end() && it->second == r.id) active_personal.erase(it);
    }
  }

  void AppendChange(const std::string& id) {
    const std::uint64_t seq = ++last_sequence;
    auto it = key_seq.find(id);
    if (it != key_seq.end()) {
      log.erase(it->second);
      it->second = seq;
    } else {
      key_seq.emplace(id, seq);
    }
    log.emplace(seq, id);
  }

  void NotifyAll() {
    std::vector<std::shared_ptr<SubscriberState>> subs;
    {
      std::lock_guard<std::mutex> lock(subscribers->mu);
      subs = subscribers->subs;
    }
    for (const auto& s : subs) Notify(s);
  }
};

MemoryKeyStore::MemoryKeyStore() : state_(std::make_shared<State>()) {}
MemoryKeyStore::~MemoryKeyStore() = default;

absl::Status MemoryKeyStore::Insert(const KeyRecord& record) {
  if (absl::Status s = internal::CheckRecordShape(record); !s.ok()) return s;
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.records.find(record.id) != s.records.end()) {
      return absl::AlreadyExistsError(
          absl::StrCat(internal::KeyLabel(record.id), ": already exists"));
    }
    if (absl::Status u = s.CheckUnique(record); !u.ok()) return u;
    KeyRecord stored = record;
    stored.version = 1;
    s.Index(stored);
    s.records.emplace(stored.id, std::move(stored));
    s.AppendChange(record.id);
  }
  s.NotifyAll();
  return absl::OkStatus();
}

absl::StatusOr<KeyRecord> MemoryKeyStore::Get(std::string_view id) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.records.find(id);
  if (it == s.records.end()) return NotFound(id);
  return it->second;
}

absl::StatusOr<KeyRecord> MemoryKeyStore::FindByDigest(const Digest& digest) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.by_digest.find(digest);
  if (it == s.by_digest.end()) return absl::NotFoundError("digest: no such key");
  auto rec = s.records.find(it->second);
  if (rec == s.records.end()) return absl::InternalError("memory key store: stale digest index");
  return rec->second;
}

absl::StatusOr<KeyRecord> MemoryKeyStore::Update(const KeyRecord& record) {
  if (absl::Status c = internal::CheckUpdateShape(record); !c.ok()) return c;
  State& s = *state_;
  KeyRecord result;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.records.find(record.id);
    if (it == s.records.end()) return NotFound(record.id);
    if (it->second.version != record.version) {
      return absl::AbortedError(absl::StrCat(internal::KeyLabel(record.id),
                                             ": version conflict (expected ", record.version,
                                             ", stored ", it->second.version, ")"));
    }
    if (absl::Status u = s.CheckUnique(record); !u.ok()) return u;
    s.Unindex(it->second);
    const std::uint64_t next_version = it->second.version + 1;
    it->second = record;
    it->second.version = next_version;
    s.Index(it->second);
    s.AppendChange(record.id);
    result = it->second;
  }
  s.NotifyAll();
  return result;
}

absl::Status MemoryKeyStore::TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                           absl::Duration min_advance) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  for (const LastUsedUpdate& u : updates) {
    auto it = s.records.find(u.key_id);
    if (it == s.records.end()) continue;
    std::optional<absl::Time>& last = it->second.last_used;
    if (!last.has_value() || (u.last_used > *last && u.last_used - *last >= min_advance)) {
      last = u.last_used;
    }
  }
  return absl::OkStatus();
}

absl::Status MemoryKeyStore::Delete(std::string_view id,
                                    std::optional<std::uint64_t> expected_version) {
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.records.find(id);
    if (it == s.records.end()) return NotFound(id);
    if (expected_version.has_value() && *expected_version != it->second.version) {
      return absl::AbortedError(absl::StrCat(internal::KeyLabel(id),
                                             ": version conflict (expected ", *expected_version,
                                             ", stored ", it->second.version, ")"));
    }
    const std::string key_id = it->first;
    s.Unindex(it->second);
    s.records.erase(it);
    s.AppendChange(key_id);
  }
  s.NotifyAll();
  return absl::OkStatus();
}

absl::StatusOr<ListPage> MemoryKeyStore::List(const ListOptions& options) {
  if (options.limit < 1 || options.limit > kMaxListLimit) {
    return absl::InvalidArgumentError(absl::StrCat("limit: must be between 1 and ", kMaxListLimit));
  }
  std::string after;
  if (!options.cursor.empty()) {
    std::string_view c = options.cursor;
    if (c.size() <= kCursorPrefixSize || c.substr(0, kCursorPrefixSize) != kCursorPrefix) {
      return absl::InvalidArgumentError("cursor: not a cursor returned by this store");
    }
    after = std::string(c.substr(kCursorPrefixSize));
  }
  const std::string needle = ToLowerAscii(options.filter.name_contains);

  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  ListPage page;
  auto it = after.empty() ? s.records.begin() : s.records.upper_bound(after);
  for (; it != s.records.end(); ++it) {
    if (!Matches(options.filter, needle, it->second)) continue;
    if (page.keys.size() == options.limit) {
      // One more match exists: this page is not the last.
      page.next_cursor = absl::StrCat(kCursorPrefix, page.keys.back().id);
      break;
    }
    page.keys.push_back(it->second);
  }
  return page;
}

absl::StatusOr<ChangeBatch> MemoryKeyStore::ChangesSince(std::uint64_t after, std::size_t limit) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  ChangeBatch batch;
  batch.next_sequence = after;
  auto it = s.log.upper_bound(after);
  for (; it != s.log.end() && batch.changes.size() < limit; ++it) {
    Change c;
    c.sequence = it->first;
    c.key_id = it->second;
    auto rec = s.records.find(it->second);
    if (rec != s.records.end()) c.record = rec->second;
    batch.next_sequence = it->first;
    batch.changes.push_back(std::move(c));
  }
  batch.more = it != s.log.end();
  return batch;
}

absl::StatusOr<std::uint64_t> MemoryKeyStore::LastSequence() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  return s.last_sequence;
}

absl::Status MemoryKeyStore::AwaitSubscribers() {
  state_->NotifyAll();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Subscription>> MemoryKeyStore::Subscribe(
    std::function<void()> on_change) {
  if (!on_change) return absl::InvalidArgumentError("on_change: must be callable");
  auto sub = std::make_shared<SubscriberState>(std::move(on_change));
  {
    std::lock_guard<std::mutex> lock(state_->subscribers->mu);
    state_->subscribers->subs.push_back(sub);
  }
  return std::unique_ptr<Subscription>(
      std::make_unique<MemorySubscription>(std::move(sub), state_->subscribers));
}

}  // namespace keygate
