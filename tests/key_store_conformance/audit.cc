// The audit log group of the conformance suite (suite.h): every write appends
// exactly one entry in its own transaction, a failed write appends none,
// ReadAudit filters and pages, consumer cursors move forward only.

#include "keygate/audit.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "key_store_conformance/suite.h"
#include "keygate/key_store.h"
#include "keygate/testing/key_store_conformance.h"

namespace keygate::conformance {
namespace {

// The whole log, or nullopt after reporting.
std::optional<std::vector<Event>> ReadWholeAudit(KeyStore& store, Checker& c,
                                                 const std::string& what) {
  std::vector<Event> all;
  AuditQuery q;
  q.limit = kMaxAuditLimit;
  for (int pages = 0; pages < 1000; ++pages) {
    absl::StatusOr<AuditPage> page = store.ReadAudit(q);
    if (!c.ExpectOk(page, absl::StrCat(what, ": ReadAudit"))) return std::nullopt;
    all.insert(all.end(), page->events.begin(), page->events.end());
    if (!page->more) return all;
    c.Expect(page->next_after > q.after, absl::StrCat(what, ": next_after does not advance"));
    q.after = page->next_after;
  }
  c.Violation(absl::StrCat(what, ": ReadAudit never ends"));
  return std::nullopt;
}

std::string EventText(const Event& e) {
  std::ostringstream os;
  os << e;
  return os.str();
}

AuditNote NoteAt(EventType type, std::string actor, std::int64_t unix_seconds,
                 std::vector<std::string> fields = {}) {
  return AuditNote{type, std::move(actor), absl::FromUnixSeconds(unix_seconds), std::move(fields)};
}

}  // namespace

// Each write appends one entry with the change's sequence and what the note and record say.
Findings CheckAuditEntries(const std::shared_ptr<KeyStore>& store, const BackendHooks&) {
  Checker c;
  KeyStore& s = *store;
  KeyRecord r = MakeRecord("key_au1", "alice");
  r.webhook_url = "https://hooks.example.com/first";
  // Sub-microsecond parts drop, as for record times.
  AuditNote created = NoteAt(EventType::kCreated, "alice", 1'700'000'000, {"name", "owner"});
  created.at += absl::Nanoseconds(1'500);
  if (!c.ExpectOk(s.Insert(r, created), "Insert key_au1")) return c.Take();
  absl::StatusOr<std::uint64_t> seq1 = s.LastSequence();
  if (!c.ExpectOk(seq1, "LastSequence")) return c.Take();
  absl::StatusOr<KeyRecord> v1 = s.Get("key_au1");
  if (!c.ExpectOk(v1, "Get key_au1")) return c.Take();
  KeyRecord edit = *v1;
  edit.name = "renamed";
  edit.webhook_url = "https://hooks.example.com/second";
  if (!c.ExpectOk(s.Update(edit, NoteAt(EventType::kModified, "bob", 1'700'000'010, {"name"})),
                  "Update key_au1")) {
    return c.Take();
  }
  absl::StatusOr<std::uint64_t> seq2 = s.LastSequence();
  if (!c.ExpectOk(seq2, "LastSequence")) return c.Take();
  if (!c.ExpectOk(s.Delete("key_au1", 2, NoteAt(EventType::kDeleted, "carol", 1'700'000'020)),
                  "Delete key_au1")) {
    return c.Take();
  }
  absl::StatusOr<std::uint64_t> seq3 = s.LastSequence();
  if (!c.ExpectOk(seq3, "LastSequence")) return c.Take();

  std::optional<std::vector<Event>> log = ReadWholeAudit(s, c, "after three writes");
  if (!log.has_value()) return c.Take();
  if (!c.Expect(log->size() == 3, absl::StrCat("three writes left ", log->size(), " entries"))) {
    return c.Take();
  }
  const Event& a = (*log)[0];
  const Event& b = (*log)[1];
  const Event& d = (*log)[2];
  c.Expect(a.sequence == *seq1 && b.sequence == *seq2 && d.sequence == *seq3,
           "entry sequences are not the writes' change sequences");
  c.Expect(a.type == EventType::kCreated && a.actor == "alice" && a.key_id == "key_au1" &&
               a.owner == "alice" && a.version == 1 &&
               a.changed_fields == std::vector<std::string>{"name", "owner"} &&
               a.webhook_url == "https://hooks.example.com/first",
           absl::StrCat("insert entry: ", EventText(a)));
  c.Expect(a.at == absl::FromUnixSeconds(1'700'000'000) + absl::Microseconds(1),
           "insert entry: time not kept at microsecond precision");
  c.Expect(b.type == EventType::kModified && b.actor == "bob" && b.version == 2 &&
               b.owner == "alice" && b.changed_fields == std::vector<std::string>{"name"} &&
               b.at == absl::FromUnixSeconds(1'700'000'010) &&
               b.webhook_url == "https://hooks.example.com/second",
           absl::StrCat("update entry: ", EventText(b)));
  c.Expect(
      d.type == EventType::kDeleted && d.actor == "carol" && d.version == 0 && d.owner == "alice" &&
          d.key_id == "key_au1" && d.changed_fields.empty() &&
          d.webhook_url == "https://hooks.example.com/second",
      absl::StrCat("delete entry (owner and webhook URL from the stored record): ", EventText(d)));
  return c.Take();
}

// A refused note or a failed write leaves no entry and no change.
Findings CheckAuditFailedWrites(const std::shared_ptr<KeyStore>& store, const BackendHooks&) {
  Checker c;
  KeyStore& s = *store;
  if (!c.ExpectOk(s.Insert(MakeRecord("key_af1"), SuiteNote(EventType::kCreated)),
                  "Insert key_af1")) {
    return c.Take();
  }
  absl::StatusOr<std::uint64_t> before = s.LastSequence();
  if (!c.ExpectOk(before, "LastSequence")) return c.Take();

  const auto refused = [&](const absl::Status& st, const std::string& what) {
    c.ExpectCode(st, {absl::StatusCode::kInvalidArgument}, what);
  };
  KeyRecord fresh = MakeRecord("key_af2");
  refused(s.Insert(fresh, SuiteNote(EventType::kModified)), "Insert with a kModified note");
  refused(s.Insert(fresh, NoteAt(EventType::kUnspecifiedDoNotUse, "x", 1)), "unspecified type");
  refused(s.Insert(fresh, NoteAt(EventType::kCreated, "", 1)), "Insert with an empty actor");
  refused(s.Insert(fresh, NoteAt(EventType::kCreated, "eve\nroot", 1)), "actor with a newline");
  refused(s.Insert(fresh, NoteAt(EventType::kCreated, std::string(129, 'a'), 1)),
          "actor of 129 bytes");
  refused(s.Insert(fresh, NoteAt(EventType::kCreated, "a", 1, {"Name"})), "field 'Name'");
  refused(s.Insert(fresh, NoteAt(EventType::kCreated, "a", 1, std::vector<std::string>(17, "x"))),
          "17 changed fields");
  AuditNote infinite = SuiteNote(EventType::kCreated);
  infinite.at = absl::InfiniteFuture();
  refused(s.Insert(fresh, infinite), "an infinite time");
  c.ExpectCode(s.Get("key_af2").status(), {absl::StatusCode::kNotFound},
               "a refused note still inserted the record");

  absl::StatusOr<KeyRecord> cur = s.Get("key_af1");
  if (!c.ExpectOk(cur, "Get key_af1")) return c.Take();
  refused(s.Update(*cur, SuiteNote(EventType::kCreated)).status(), "Update with a kCreated note");
  refused(s.Update(*cur, SuiteNote(EventType::kDeleted)).status(), "Update with a kDeleted note");
  refused(s.Delete("key_af1", std::nullopt, SuiteNote(EventType::kModified)),
          "Delete with a kModified note");
  c.ExpectCode(s.Insert(MakeRecord("key_af1"), SuiteNote(EventType::kCreated)),
               {absl::StatusCode::kAlreadyExists}, "duplicate Insert");
  KeyRecord stale = *cur;
  stale.version = 7;
  c.ExpectCode(s.Update(stale, SuiteNote(EventType::kModified)).status(),
               {absl::StatusCode::kAborted}, "stale Update");
  c.ExpectCode(s.Update(MakeRecord("key_af9"), SuiteNote(EventType::kModified)).status(),
               {absl::StatusCode::kNotFound}, "Update of a missing key");
  c.ExpectCode(s.Delete("key_af9", std::nullopt, SuiteNote(EventType::kDeleted)),
               {absl::StatusCode::kNotFound}, "Delete of a missing key");
  c.ExpectCode(s.Delete("key_af1", 5, SuiteNote(EventType::kDeleted)), {absl::StatusCode::kAborted},
               "stale Delete");

  absl::StatusOr<std::uint64_t> after = s.LastSequence();
  if (c.ExpectOk(after, "LastSequence")) {
    c.Expect(*after == *before, "a failed write moved LastSequence");
  }
  std::optional<std::vector<Event>> log = ReadWholeAudit(s, c, "after failed writes");
  if (log.has_value()) {
    c.Expect(log->size() == 1,
             absl::StrCat("failed writes left entries: ", log->size(), " instead of 1"));
  }
  absl::StatusOr<KeyRecord> still = s.Get("key_af1");
  if (c.ExpectOk(still, "Get key_af1")) {
    c.Expect(still->version == 1, "a refused Update or Delete changed the record");
  }
  return c.Take();
}

// ReadAudit's filters (key, actor, time range) and pages.
namespace {

Findings CheckAuditQueries(const std::shared_ptr<KeyStore>& store, const BackendHooks&) {
  Checker c;
  KeyStore& s = *store;
  // 12 keys: created by alice (even) or bob (odd) at t0 + i seconds; key 3 modified by carol.
  const std::int64_t t0 = 1'700'000'000;
  for (int i = 0; i < 12; ++i) {
    const std::string id = absl::StrCat("key_aq", i < 10 ? "0" : "", i);
    if (!c.ExpectOk(
            s.Insert(MakeRecord(id), NoteAt(EventType::kCreated, i % 2 ? "bob" : "alice", t0 + i)),
            absl::StrCat("Insert ", id))) {
      return c.Take();
    }
  }
  absl::StatusOr<KeyRecord> k3 = s.Get("key_aq03");
  if (!c.ExpectOk(k3, "Get key_aq03")) return c.Take();
  k3->name = "changed";
  if (!c.ExpectOk(s.Update(*k3, NoteAt(EventType::kModified, "carol", t0 + 100, {"name"})),
                  "Update key_aq03")) {
    return c.Take();
  }

  const auto read = [&](AuditQuery q, const std::string& what) -> std::vector<Event> {
    std::vector<Event> all;
    for (int pages = 0; pages < 100; ++pages) {
      absl::StatusOr<AuditPage> page = s.ReadAudit(q);
      if (!c.ExpectOk(page, what)) return all;
      c.Expect(page->events.size() <= q.limit, absl::StrCat(what, ": page over the limit"));
      all.insert(all.end(), page->events.begin(), page->events.end());
      if (!page->more) return all;
      c.Expect(!page->events.empty(), absl::StrCat(what, ": an empty page says more"));
      q.after = page->next_after;
    }
    c.Violation(absl::StrCat(what, ": pages never end"));
    return all;
  };
  const auto ordered = [&](const std::vector<Event>& v, const std::string& what) {
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (v[i - 1].sequence >= v[i].sequence) {
        c.Violation(absl::StrCat(what, ": not in sequence order"));
        return;
      }
    }
  };

  AuditQuery by_key;
  by_key.key_id = "key_aq03";
  std::vector<Event> k = read(by_key, "key filter");
  ordered(k, "key filter");
  c.Expect(k.size() == 2 && k[0].type == EventType::kCreated && k[1].type == EventType::kModified,
           absl::StrCat("key filter: ", k.size(), " entries instead of created + modified"));

  AuditQuery by_actor;
  by_actor.actor = "bob";
  by_actor.limit = 2;  // three pages
  std::vector<Event> b = read(by_actor, "actor filter, pages of 2");
  ordered(b, "actor filter");
  bool all_bob = b.size() == 6;
  for (const Event& e : b) all_bob = all_bob && e.actor == "bob";
  c.Expect(all_bob, absl::StrCat("actor filter: ", b.size(), " entries instead of bob's 6"));

  AuditQuery range;
  range.since = absl::FromUnixSeconds(t0 + 4);
  range.until = absl::FromUnixSeconds(t0 + 8);
  range.limit = 3;
  std::vector<Event> r = read(range, "time range");
  bool in_range = r.size() == 4;
  for (const Event& e : r) in_range = in_range && e.at >= *range.since && e.at < *range.until;
  c.Expect(in_range, absl::StrCat("time range [t0+4, t0+8): ", r.size(), " entries instead of 4"));

  AuditQuery combined;
  combined.actor = "alice";
  combined.since = absl::FromUnixSeconds(t0 + 5);
  std::vector<Event> ac = read(combined, "actor and since");
  c.Expect(ac.size() == 3, absl::StrCat("alice since t0+5: ", ac.size(), " entries instead of 3"));

  // Bounds with a sub-microsecond part count as their microsecond (truncated), like the times.
  AuditQuery fine;
  fine.since = absl::FromUnixSeconds(t0 + 4) + absl::Nanoseconds(500);
  fine.until = absl::FromUnixSeconds(t0 + 6) + absl::Nanoseconds(500);
  std::vector<Event> f = read(fine, "sub-microsecond bounds");
  c.Expect(f.size() == 2 && f[0].at == absl::FromUnixSeconds(t0 + 4) &&
               f[1].at == absl::FromUnixSeconds(t0 + 5),
           absl::StrCat("[t0+4s+500ns, t0+6s+500ns): ", f.size(),
                        " entries; expected those at t0+4 and t0+5"));

  AuditQuery beyond;
  beyond.after = ~std::uint64_t{0};
  absl::StatusOr<AuditPage> past_end = s.ReadAudit(beyond);
  if (c.ExpectOk(past_end, "after = 2^64-1")) {
    c.Expect(past_end->events.empty() && !past_end->more && past_end->next_after == beyond.after,
             "a query after the largest sequence must answer an empty last page");
  }

  AuditQuery none;
  none.key_id = "key_nobody";
  absl::StatusOr<AuditPage> empty = s.ReadAudit(none);
  if (c.ExpectOk(empty, "no match")) {
    c.Expect(empty->events.empty() && !empty->more && empty->next_after == 0,
             "a query matching nothing must answer an empty last page");
  }

  AuditQuery bad;
  bad.limit = 0;
  c.ExpectCode(s.ReadAudit(bad).status(), {absl::StatusCode::kInvalidArgument}, "limit 0");
  bad.limit = kMaxAuditLimit + 1;
  c.ExpectCode(s.ReadAudit(bad).status(), {absl::StatusCode::kInvalidArgument}, "limit 1001");
  bad.limit = 10;
  bad.since = absl::FromUnixSeconds(t0 + 5);
  bad.until = absl::FromUnixSeconds(t0 + 5);
  c.ExpectCode(s.ReadAudit(bad).status(), {absl::StatusCode::kInvalidArgument}, "since == until");
  return c.Take();
}

// Consumer cursors start at 0, move forward only, stay within the log, and are per name.
Findings CheckAuditCursors(const std::shared_ptr<KeyStore>& store, const BackendHooks&) {
  Checker c;
  KeyStore& s = *store;
  absl::StatusOr<std::uint64_t> fresh = s.AuditCursor("relay-a");
  if (c.ExpectOk(fresh, "AuditCursor of a new consumer")) {
    c.Expect(*fresh == 0, "a new consumer's cursor is not 0");
  }
  c.ExpectCode(s.AckAudit("relay-a", 1), {absl::StatusCode::kInvalidArgument},
               "AckAudit beyond an empty log");
  for (int i = 0; i < 3; ++i) {
    if (!c.ExpectOk(s.Insert(MakeRecord(absl::StrCat("key_ac", i)), SuiteNote(EventType::kCreated)),
                    "Insert")) {
      return c.Take();
    }
  }
  absl::StatusOr<std::uint64_t> last = s.LastSequence();
  if (!c.ExpectOk(last, "LastSequence")) return c.Take();
  c.ExpectOk(s.AckAudit("relay-a", *last - 1), "AckAudit");
  c.ExpectOk(s.AckAudit("relay-a", *last - 2), "AckAudit backwards");
  absl::StatusOr<std::uint64_t> got = s.AuditCursor("relay-a");
  if (c.ExpectOk(got, "AuditCursor")) {
    c.Expect(*got == *last - 1, "AckAudit moved a cursor backwards (or did not move it)");
  }
  absl::StatusOr<std::uint64_t> other = s.AuditCursor("relay-b");
  if (c.ExpectOk(other, "AuditCursor relay-b")) {
    c.Expect(*other == 0, "an ack of one consumer moved another's cursor");
  }
  c.ExpectCode(s.AckAudit("relay-a", *last + 1), {absl::StatusCode::kInvalidArgument},
               "AckAudit beyond LastSequence");
  c.ExpectCode(s.AckAudit("", 1), {absl::StatusCode::kInvalidArgument}, "empty consumer");
  c.ExpectCode(s.AuditCursor("bad name").status(), {absl::StatusCode::kInvalidArgument},
               "consumer with a space");
  c.ExpectOk(s.AckAudit("relay-a", *last), "AckAudit to the end");
  absl::StatusOr<std::uint64_t> end = s.AuditCursor("relay-a");
  if (c.ExpectOk(end, "AuditCursor")) c.Expect(*end == *last, "cursor not at the end");
  return c.Take();
}

}  // namespace

std::vector<Check> AuditChecks() {
  return {
      {"audit", "each write appends its audit entry", false, CheckAuditEntries},
      {"audit", "a failed write appends no audit entry", false, CheckAuditFailedWrites},
      {"audit", "the audit log filters and pages", false, CheckAuditQueries},
      {"audit", "audit cursors move forward only", false, CheckAuditCursors},
  };
}

}  // namespace keygate::conformance
