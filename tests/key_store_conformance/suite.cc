// The conformance suite's runner, report and shared helpers (suite.h).

#include "key_store_conformance/suite.h"

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "keygate/digest.h"
#include "keygate/key.h"
#include "keygate/key_store.h"
#include "keygate/testing/key_store_conformance.h"

namespace keygate::conformance {

// ---------------------------------------------------------------------------
// Checker

bool Checker::ExpectCode(const absl::Status& s, const std::vector<absl::StatusCode>& codes,
                         const std::string& what) {
  for (absl::StatusCode code : codes) {
    if (s.code() == code) return true;
  }
  std::string wanted;
  for (absl::StatusCode code : codes) {
    absl::StrAppend(&wanted, wanted.empty() ? "" : " or ", absl::StatusCodeToString(code));
  }
  Violation(absl::StrCat(what, ": expected ", wanted, ", got ", s.ToString()));
  return false;
}

void Checker::Violation(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  // A broken store can fail the same way thousands of times; the first few
  // say enough.
  if (findings_.violations.size() < kMaxViolations) findings_.violations.emplace_back(what);
}

void Checker::Skip(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  findings_.skipped.emplace_back(why);
}

void Checker::NotApplicable(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  findings_.not_applicable = why;
}

Findings Checker::Take() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(findings_);
}

std::string Where(std::string_view file, int line, std::string_view expression) {
  const std::size_t slash = file.find_last_of('/');
  if (slash != std::string_view::npos) file.remove_prefix(slash + 1);
  return absl::StrCat("failed: ", std::string(expression), " (", std::string(file), ":", line, ")");
}

CheckFn Simple(SimpleFn fn) {
  return [fn](const std::shared_ptr<KeyStore>& store, const BackendHooks& /*hooks*/) {
    Checker c;
    fn(store, c);
    return c.Take();
  };
}

CheckFn IfPromised(bool BackendHooks::*promise, std::string_view promise_name, SimpleFn fn) {
  return [promise, name = std::string(promise_name), fn](const std::shared_ptr<KeyStore>& store,
                                                         const BackendHooks& hooks) {
    Checker c;
    if (hooks.*promise) {
      fn(store, c);
    } else {
      c.NotApplicable(absl::StrCat("the backend does not promise it (", name, " unset)"));
    }
    return c.Take();
  };
}

// ---------------------------------------------------------------------------
// Helpers

bool StressEnabled() {
  const char* v = std::getenv("KEYGATE_STRESS");
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

// A whole-microsecond time, so that every backend round-trips it exactly.
absl::Time BaseTime() { return absl::FromUnixMicros(1'700'000'000'123'456); }

// A distinct, deterministic digest per seed (SplitMix64 over an FNV-1a hash).
Digest DigestFor(std::string_view seed) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : seed) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  Digest d{};
  for (std::size_t i = 0; i < d.size(); i += 8) {
    h += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = h;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    for (std::size_t j = 0; j < 8; ++j) d[i + j] = static_cast<std::uint8_t>(z >> (8 * j));
  }
  return d;
}

// A minimal valid record; the digest is derived from the id.
KeyRecord MakeRecord(std::string id, std::string owner, std::string environment, KeyKind kind,
                     std::string name) {
  KeyRecord r;
  r.name = name.empty() ? absl::StrCat("name of ", id) : std::move(name);
  r.owner = std::move(owner);
  r.environment = std::move(environment);
  r.kind = kind;
  r.state = KeyState::kActive;
  r.created = BaseTime();
  r.updated = BaseTime();
  r.digest = DigestFor(id);
  r.hint = "kg_live_...abcd";
  r.id = std::move(id);
  return r;
}

// The record as any conforming store returns it: times at microseconds.
KeyRecord AtMicros(KeyRecord r) {
  r.created = TruncateToMicros(r.created);
  r.updated = TruncateToMicros(r.updated);
  if (r.expires) r.expires = TruncateToMicros(*r.expires);
  if (r.last_used) r.last_used = TruncateToMicros(*r.last_used);
  if (r.previous) r.previous->valid_until = TruncateToMicros(r.previous->valid_until);
  return r;
}

// Polls `pred` (backends may notify asynchronously). The deadline only
// guards against a hang (sanitizers, a loaded machine): no timing claim.
bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

std::vector<std::string> Ids(const std::vector<KeyRecord>& records) {
  std::vector<std::string> ids;
  for (const KeyRecord& r : records) ids.push_back(r.id);
  return ids;
}

// Every record, by List with the largest pages, or nullopt after reporting.
std::optional<std::vector<KeyRecord>> ReadAllRecords(KeyStore& store, Checker& c,
                                                     const std::string& what) {
  std::vector<KeyRecord> all;
  ListOptions o;
  o.limit = kMaxListLimit;
  for (int pages = 0; pages < 1000; ++pages) {
    absl::StatusOr<ListPage> page = store.List(o);
    if (!c.ExpectOk(page, absl::StrCat(what, ": List"))) return std::nullopt;
    for (KeyRecord& r : page->keys) all.push_back(std::move(r));
    if (page->next_cursor.empty()) return all;
    o.cursor = page->next_cursor;
  }
  c.Violation(absl::StrCat(what, ": List did not reach its last page"));
  return std::nullopt;
}

// The whole change feed from the start, or nullopt after reporting.
std::optional<std::vector<Change>> ReadAllChanges(KeyStore& store, Checker& c,
                                                  const std::string& what) {
  std::vector<Change> all;
  std::uint64_t cursor = 0;
  for (int batches = 0; batches < 1000; ++batches) {
    absl::StatusOr<ChangeBatch> b = store.ChangesSince(cursor, kMaxListLimit);
    if (!c.ExpectOk(b, absl::StrCat(what, ": ChangesSince"))) return std::nullopt;
    for (Change& ch : b->changes) all.push_back(std::move(ch));
    cursor = b->next_sequence;
    if (!b->more) return all;
  }
  c.Violation(absl::StrCat(what, ": the change feed did not end"));
  return std::nullopt;
}

// Ids of every page from `options` on, checking each page's size and order;
// reports and returns what it has on an error.
std::vector<std::string> PageThrough(KeyStore& store, ListOptions options, Checker& c,
                                     const std::string& what) {
  std::vector<std::string> ids;
  for (int pages = 0; pages < 1000; ++pages) {
    absl::StatusOr<ListPage> page = store.List(options);
    if (!c.ExpectOk(page, absl::StrCat(what, ": List"))) return ids;
    c.Expect(page->keys.size() <= options.limit,
             absl::StrCat(what, ": a page holds more than the limit"));
    for (const KeyRecord& r : page->keys) {
      c.Expect(ids.empty() || ids.back() < r.id,
               absl::StrCat(what, ": ", r.id, " out of order or twice, after ",
                            ids.empty() ? "" : ids.back()));
      ids.push_back(r.id);
    }
    if (page->next_cursor.empty()) return ids;
    c.Expect(page->keys.size() == options.limit,
             absl::StrCat(what, ": a page short of the limit has a next cursor"));
    options.cursor = page->next_cursor;
  }
  c.Violation(absl::StrCat(what, ": List did not reach its last page"));
  return ids;
}

std::string Joined(const std::vector<std::string>& ids) {
  std::string out = "[";
  for (const std::string& id : ids) absl::StrAppend(&out, out.size() > 1 ? " " : "", id);
  return out + "]";
}

std::uint64_t LastSeq(KeyStore& store, Checker& c) {
  absl::StatusOr<std::uint64_t> s = store.LastSequence();
  if (!c.ExpectOk(s, "LastSequence")) return 0;
  return *s;
}

std::vector<std::string> ListAllIds(KeyStore& store, ListOptions options, Checker& c,
                                    std::size_t* pages) {
  std::vector<std::string> ids;
  std::size_t n = 0;
  for (;;) {
    absl::StatusOr<ListPage> page = store.List(options);
    if (!c.ExpectOk(page, "List")) break;
    c.Expect(page->keys.size() <= options.limit, "List: a page holds more than the limit");
    for (const KeyRecord& r : page->keys) {
      c.Expect(ids.empty() || ids.back() < r.id,
               absl::StrCat("List: ", r.id, " out of order or twice"));
      ids.push_back(r.id);
    }
    ++n;
    if (!c.Expect(n < 10'000, "List did not reach its last page")) break;
    if (page->next_cursor.empty()) break;
    c.Expect(page->keys.size() == options.limit,
             "List: a page short of the limit has a next cursor");
    options.cursor = page->next_cursor;
  }
  if (pages != nullptr) *pages = n;
  return ids;
}

std::vector<std::string> ListAllIds(KeyStore& store, const ListFilter& filter, Checker& c) {
  ListOptions o;
  o.filter = filter;
  o.limit = kMaxListLimit;
  return ListAllIds(store, o, c);
}

// ---------------------------------------------------------------------------
// The suite

Outcome OutcomeOf(const Findings& findings) {
  if (!findings.violations.empty()) return Outcome::kFailed;
  if (!findings.not_applicable.empty()) return Outcome::kNotApplicable;
  return Outcome::kPassed;
}

std::string_view OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kPassed:
      return "PASS";
    case Outcome::kFailed:
      return "FAIL";
    case Outcome::kNotApplicable:
      return "N/A";
  }
  return "FAIL";
}

const std::vector<Check>& Checks() {
  static const std::vector<Check>* const checks = [] {
    auto* all = new std::vector<Check>;
    for (std::vector<Check> (*group)() : {WriteChecks, ListChecks, FeedChecks, SubscriptionChecks,
                                          ConcurrencyChecks, AuditChecks}) {
      for (Check& check : group()) all->push_back(std::move(check));
    }
    return all;
  }();
  return *checks;
}

Findings RunCheck(const Check& check, const StoreFactory& factory, const BackendHooks& hooks) {
  absl::StatusOr<std::shared_ptr<KeyStore>> store =
      factory ? factory() : absl::InvalidArgumentError("factory: not set");
  if (!store.ok() || *store == nullptr) {
    Findings f;
    f.violations.push_back(absl::StrCat(
        "the store factory failed: ", store.ok() ? "it returned null" : store.status().ToString()));
    return f;
  }
  return check.run(*store, hooks);
}

std::vector<CheckResult> RunSuite(const StoreFactory& factory, const BackendHooks& hooks,
                                  const std::function<bool(const Check&)>& select) {
  std::vector<CheckResult> results;
  for (const Check& check : Checks()) {
    if (select && !select(check)) continue;
    CheckResult r;
    r.group = check.group;
    r.name = check.name;
    r.findings = RunCheck(check, factory, hooks);
    r.outcome = OutcomeOf(r.findings);
    results.push_back(std::move(r));
  }
  return results;
}

std::string FormatReport(const std::vector<CheckResult>& results) {
  std::string out;
  int counts[3] = {0, 0, 0};
  for (const CheckResult& r : results) {
    ++counts[static_cast<int>(r.outcome)];
    absl::StrAppend(&out, std::string(OutcomeName(r.outcome)), " ", r.group, ": ", r.name);
    if (r.outcome == Outcome::kNotApplicable)
      absl::StrAppend(&out, ": ", r.findings.not_applicable);
    out += "\n";
    for (const std::string& v : r.findings.violations) absl::StrAppend(&out, "    ", v, "\n");
    for (const std::string& s : r.findings.skipped) absl::StrAppend(&out, "    skipped: ", s, "\n");
  }
  absl::StrAppend(&out, counts[0], " passed, ", counts[1], " failed, ", counts[2],
                  " not applicable\n");
  return out;
}

bool AllPassed(const std::vector<CheckResult>& results) {
  for (const CheckResult& r : results) {
    if (r.outcome == Outcome::kFailed) return false;
  }
  return true;
}

}  // namespace keygate::conformance
