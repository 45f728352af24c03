// The in-memory KeyStore (memory_key_store.h).
//
// Layout: one mutex guards the records (ordered by id, which is the List
// order and what cursors encode), a digest index over current and rolled
// digests, the set of active personal keys, and the change log. The change log
// keeps only each key's latest sequence number (ChangesSince returns current
// state anyway), so it grows with the number of keys ever stored, not with the
// number of writes.
//
// Subscribers are notified by a ChangeNotifier after the mutex is released,
// on the writing thread: when a write returns, every subscriber has seen it.

#include "keygate/memory_key_store.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "internal/digest_prefix.h"
#include "internal/key_label.h"
#include "keygate/audit.h"
#include "keygate/change_notifier.h"

namespace keygate {
namespace {

constexpr char kCursorPrefix[] = "id:";
constexpr std::size_t kCursorPrefixSize = sizeof(kCursorPrefix) - 1;

struct DigestHash {
  std::size_t operator()(const Digest& d) const noexcept {
    return static_cast<std::size_t>(internal::DigestPrefix64(d));
  }
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
  std::map<std::uint64_t, Event> audit;                       // sequence -> entry
  std::map<std::string, std::uint64_t, std::less<>> cursors;  // consumer -> acknowledged

  ChangeNotifier notifier;  // its own locks: never called under mu

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

  // Appends the change and its audit entry.
  void AppendChange(const std::string& id, const AuditNote& note, std::string_view owner,
                    std::uint64_t version, std::string_view webhook_url) {
    const std::uint64_t seq = ++last_sequence;
    audit.emplace(seq, MakeAuditEvent(note, seq, id, owner, version, webhook_url));
    auto it = key_seq.find(id);
    if (it != key_seq.end()) {
      log.erase(it->second);
      it->second = seq;
    } else {
      key_seq.emplace(id, seq);
    }
    log.emplace(seq, id);
  }
};

MemoryKeyStore::MemoryKeyStore() : state_(std::make_shared<State>()) {}
MemoryKeyStore::~MemoryKeyStore() = default;

absl::Status MemoryKeyStore::Insert(const KeyRecord& record, const AuditNote& note) {
  if (absl::Status s = internal::CheckRecordShape(record); !s.ok()) return s;
  if (absl::Status s = ValidateAuditNote(note, AuditWrite::kInsert); !s.ok()) {
    return s;
  }
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
    s.AppendChange(record.id, note, record.owner, 1, record.webhook_url);
  }
  s.notifier.Notify();
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

absl::StatusOr<KeyRecord> MemoryKeyStore::Update(const KeyRecord& record, const AuditNote& note) {
  if (absl::Status c = internal::CheckUpdateShape(record); !c.ok()) return c;
  if (absl::Status c = ValidateAuditNote(note, AuditWrite::kUpdate); !c.ok()) {
    return c;
  }
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
    s.AppendChange(record.id, note, record.owner, next_version, record.webhook_url);
    result = it->second;
  }
  s.notifier.Notify();
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
                                    std::optional<std::uint64_t> expected_version,
                                    const AuditNote& note) {
  if (absl::Status c = ValidateAuditNote(note, AuditWrite::kDelete); !c.ok()) {
    return c;
  }
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
    const std::string owner = it->second.owner;
    const std::string webhook_url = it->second.webhook_url;
    s.Unindex(it->second);
    s.records.erase(it);
    s.AppendChange(key_id, note, owner, 0, webhook_url);
  }
  s.notifier.Notify();
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

absl::StatusOr<AuditPage> MemoryKeyStore::ReadAudit(const AuditQuery& query) {
  if (absl::Status c = ValidateAuditQuery(query); !c.ok()) return c;
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  AuditPage page;
  page.next_after = query.after;
  for (auto it = s.audit.upper_bound(query.after); it != s.audit.end(); ++it) {
    if (!AuditQueryMatches(query, it->second)) continue;
    if (page.events.size() == query.limit) {
      page.more = true;
      break;
    }
    page.events.push_back(it->second);
    page.next_after = it->first;
  }
  return page;
}

absl::StatusOr<std::uint64_t> MemoryKeyStore::AuditCursor(std::string_view consumer) {
  if (absl::Status c = ValidateAuditConsumer(consumer); !c.ok()) return c;
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.cursors.find(consumer);
  return it == s.cursors.end() ? 0 : it->second;
}

absl::Status MemoryKeyStore::AckAudit(std::string_view consumer, std::uint64_t sequence) {
  if (absl::Status c = ValidateAuditConsumer(consumer); !c.ok()) return c;
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  if (sequence > s.last_sequence) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence: ", sequence, " is beyond the last one (", s.last_sequence, ")"));
  }
  std::uint64_t& cursor = s.cursors[std::string(consumer)];
  if (sequence > cursor) cursor = sequence;
  return absl::OkStatus();
}

absl::Status MemoryKeyStore::AwaitSubscribers() {
  state_->notifier.Notify();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Subscription>> MemoryKeyStore::Subscribe(
    std::function<void()> on_change) {
  return state_->notifier.Subscribe(std::move(on_change));
}

}  // namespace keygate
