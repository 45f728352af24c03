// MapStore (map_store.h): one mutex over ordered maps; the change log keeps
// each key's latest sequence only (ChangesSince returns current state).

#include "map_store.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "keygate/key.h"

namespace custom {
namespace {

using keygate::KeyKind;
using keygate::KeyRecord;
using keygate::KeyState;

constexpr char kCursorPrefix[] = "c:";
constexpr std::size_t kCursorPrefixSize = sizeof(kCursorPrefix) - 1;

// Names a key in an error only by an id of the generated shape: anything
// else may be a token pasted where an id belongs.
std::string Label(std::string_view id) {
  if (!keygate::IsGeneratedKeyId(id)) return "key (not a key id)";
  return absl::StrCat("key ", std::string(id));
}

absl::Status NotFound(std::string_view id) {
  return absl::NotFoundError(absl::StrCat(Label(id), ": not found"));
}

absl::Status Conflict(std::string_view id, std::uint64_t expected, std::uint64_t stored) {
  return absl::AbortedError(
      absl::StrCat(Label(id), ": version conflict (expected ", expected, ", stored ", stored, ")"));
}

absl::Status DataLoss(std::string_view id) {
  return absl::DataLossError(absl::StrCat(Label(id), ": stored state cannot be decoded"));
}

bool IsActivePersonal(const KeyRecord& r) {
  return r.kind == KeyKind::kPersonal && r.state == KeyState::kActive;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool Matches(const keygate::ListFilter& f, const std::string& needle, const KeyRecord& r) {
  return (!f.owner || r.owner == *f.owner) && (!f.environment || r.environment == *f.environment) &&
         (!f.state || r.state == *f.state) && (!f.kind || r.kind == *f.kind) &&
         (needle.empty() || Lower(r.name).find(needle) != std::string::npos);
}

}  // namespace

absl::Status MapStore::CheckUnique(const KeyRecord& r) const {
  auto taken = [&](const keygate::Digest& d) {
    auto it = by_digest_.find(d);
    return it != by_digest_.end() && it->second != r.id;
  };
  if (taken(r.digest) || (r.previous && taken(r.previous->digest))) {
    return absl::AlreadyExistsError(absl::StrCat(Label(r.id), ": digest already in use"));
  }
  if (IsActivePersonal(r)) {
    auto it = active_personal_.find({r.owner, r.environment});
    if (it != active_personal_.end() && it->second != r.id) {
      return absl::AlreadyExistsError(
          absl::StrCat(Label(r.id), ": the owner already has an active personal key here"));
    }
  }
  return absl::OkStatus();
}

void MapStore::Index(const KeyRecord& r) {
  by_digest_[r.digest] = r.id;
  if (r.previous) by_digest_[r.previous->digest] = r.id;
  if (IsActivePersonal(r)) active_personal_[{r.owner, r.environment}] = r.id;
}

void MapStore::Unindex(const KeyRecord& r) {
  by_digest_.erase(r.digest);
  if (r.previous) by_digest_.erase(r.previous->digest);
  if (IsActivePersonal(r)) active_personal_.erase({r.owner, r.environment});
}

void MapStore::Log(const std::string& id, const keygate::AuditNote& note, std::string_view owner,
                   std::uint64_t version, std::string_view webhook_url) {
  const std::uint64_t seq = ++last_sequence_;
  audit_.emplace(seq, keygate::MakeAuditEvent(note, seq, id, owner, version, webhook_url));
  auto it = key_seq_.find(id);
  if (it != key_seq_.end()) {
    log_.erase(it->second);
    it->second = seq;
  } else {
    key_seq_.emplace(id, seq);
  }
  log_.emplace(seq, id);
}

absl::Status MapStore::Insert(const KeyRecord& record, const keygate::AuditNote& note) {
  if (absl::Status s = keygate::ValidateAuditNote(note, keygate::AuditWrite::kInsert); !s.ok()) {
    return s;
  }
  if (record.id.empty()) return absl::InvalidArgumentError("id: must not be empty");
  if (record.id.size() > keygate::kKeyIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("id: longer than ", keygate::kKeyIdLength, " bytes"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (records_.count(record.id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat(Label(record.id), ": already exists"));
    }
    if (absl::Status s = CheckUnique(record); !s.ok()) return s;
    Entry e{record};
    e.record.version = 1;
    Index(e.record);
    records_.emplace(record.id, std::move(e));
    Log(record.id, note, record.owner, 1, record.webhook_url);
  }
  notifier_.Notify();  // after the commit, with the lock released
  return absl::OkStatus();
}

absl::StatusOr<KeyRecord> MapStore::Get(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return NotFound(id);
  if (it->second.corrupt) return DataLoss(id);
  return it->second.record;
}

absl::StatusOr<KeyRecord> MapStore::FindByDigest(const keygate::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_digest_.find(digest);
  if (it == by_digest_.end()) return absl::NotFoundError("digest: no such key");
  const Entry& e = records_.at(it->second);
  if (e.corrupt) return DataLoss(it->second);
  return e.record;
}

absl::StatusOr<KeyRecord> MapStore::Update(const KeyRecord& record,
                                           const keygate::AuditNote& note) {
  if (absl::Status s = keygate::ValidateAuditNote(note, keygate::AuditWrite::kUpdate); !s.ok()) {
    return s;
  }
  KeyRecord stored;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = records_.find(record.id);
    if (it == records_.end()) return NotFound(record.id);
    KeyRecord& cur = it->second.record;
    if (cur.version != record.version) return Conflict(record.id, record.version, cur.version);
    if (absl::Status s = CheckUnique(record); !s.ok()) return s;
    Unindex(cur);
    const std::uint64_t version = cur.version + 1;
    cur = record;
    cur.version = version;
    it->second.corrupt = false;
    Index(cur);
    Log(record.id, note, record.owner, version, record.webhook_url);
    stored = cur;
  }
  notifier_.Notify();
  return stored;
}

absl::Status MapStore::Delete(std::string_view id, std::optional<std::uint64_t> expected_version,
                              const keygate::AuditNote& note) {
  if (absl::Status s = keygate::ValidateAuditNote(note, keygate::AuditWrite::kDelete); !s.ok()) {
    return s;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = records_.find(id);
    if (it == records_.end()) return NotFound(id);
    const std::uint64_t version = it->second.record.version;
    if (expected_version && *expected_version != version) {
      return Conflict(id, *expected_version, version);
    }
    const std::string key_id = it->first;
    const std::string owner = it->second.record.owner;
    const std::string webhook_url = it->second.record.webhook_url;
    Unindex(it->second.record);
    records_.erase(it);
    Log(key_id, note, owner, 0, webhook_url);
  }
  notifier_.Notify();
  return absl::OkStatus();
}

absl::StatusOr<keygate::ListPage> MapStore::List(const keygate::ListOptions& options) {
  if (options.limit < 1 || options.limit > keygate::kMaxListLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be between 1 and ", keygate::kMaxListLimit));
  }
  std::string after;
  if (!options.cursor.empty()) {
    const std::string_view c = options.cursor;
    if (c.size() <= kCursorPrefixSize || c.substr(0, kCursorPrefixSize) != kCursorPrefix) {
      return absl::InvalidArgumentError("cursor: not a cursor of this store");
    }
    after = std::string(c.substr(kCursorPrefixSize));
  }
  const std::string needle = Lower(options.filter.name_contains);
  std::lock_guard<std::mutex> lock(mu_);
  keygate::ListPage page;
  for (auto it = after.empty() ? records_.begin() : records_.upper_bound(after);
       it != records_.end(); ++it) {
    // Whether it matches cannot be known: fail closed.
    if (it->second.corrupt) return DataLoss(it->first);
    if (!Matches(options.filter, needle, it->second.record)) continue;
    if (page.keys.size() == options.limit) {
      page.next_cursor = absl::StrCat(kCursorPrefix, page.keys.back().id);
      break;
    }
    page.keys.push_back(it->second.record);
  }
  return page;
}

absl::Status MapStore::TouchLastUsed(absl::Span<const keygate::LastUsedUpdate> updates,
                                     absl::Duration min_advance) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const keygate::LastUsedUpdate& u : updates) {
    auto it = records_.find(u.key_id);
    if (it == records_.end()) continue;
    std::optional<absl::Time>& last = it->second.record.last_used;
    if (!last || (u.last_used > *last && u.last_used - *last >= min_advance)) last = u.last_used;
  }
  return absl::OkStatus();
}

absl::StatusOr<keygate::ChangeBatch> MapStore::ChangesSince(std::uint64_t after,
                                                            std::size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  keygate::ChangeBatch batch;
  batch.next_sequence = after;
  auto it = log_.upper_bound(after);
  for (; it != log_.end() && batch.changes.size() < limit; ++it) {
    keygate::Change c;
    c.sequence = it->first;
    c.key_id = it->second;
    auto rec = records_.find(it->second);
    // A corrupt key is delivered as deleted: a follower must not keep it.
    if (rec != records_.end() && !rec->second.corrupt) c.record = rec->second.record;
    batch.next_sequence = it->first;
    batch.changes.push_back(std::move(c));
  }
  batch.more = it != log_.end();
  return batch;
}

absl::StatusOr<std::uint64_t> MapStore::LastSequence() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_sequence_;
}

absl::StatusOr<std::unique_ptr<keygate::Subscription>> MapStore::Subscribe(
    std::function<void()> on_change) {
  return notifier_.Subscribe(std::move(on_change));
}

absl::Status MapStore::AwaitSubscribers() {
  notifier_.Notify();
  return absl::OkStatus();
}

absl::Status MapStore::Corrupt(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return NotFound(id);
  it->second.corrupt = true;
  return absl::OkStatus();
}

absl::StatusOr<keygate::AuditPage> MapStore::ReadAudit(const keygate::AuditQuery& query) {
  if (absl::Status s = keygate::ValidateAuditQuery(query); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  keygate::AuditPage page;
  page.next_after = query.after;
  for (auto it = audit_.upper_bound(query.after); it != audit_.end(); ++it) {
    if (!keygate::AuditQueryMatches(query, it->second)) continue;
    if (page.events.size() == query.limit) {
      page.more = true;
      break;
    }
    page.events.push_back(it->second);
    page.next_after = it->first;
  }
  return page;
}

absl::StatusOr<std::uint64_t> MapStore::AuditCursor(std::string_view consumer) {
  if (absl::Status s = keygate::ValidateAuditConsumer(consumer); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cursors_.find(consumer);
  return it == cursors_.end() ? 0 : it->second;
}

absl::Status MapStore::AckAudit(std::string_view consumer, std::uint64_t sequence) {
  if (absl::Status s = keygate::ValidateAuditConsumer(consumer); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  if (sequence > last_sequence_) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence: ", sequence, " is beyond the last one (", last_sequence_, ")"));
  }
  std::uint64_t& cursor = cursors_[std::string(consumer)];
  if (sequence > cursor) cursor = sequence;
  return absl::OkStatus();
}

}  // namespace custom
