// The keygate CLI's `audit` command: the database's audit log, oldest first
// (commands.h).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "cli/parse.h"

#include "keygate/audit.h"

namespace keygate::cli {

int RunAudit(const Globals& g, const AuditArgs& a) {
  AuditQuery q;
  if (!a.key.empty()) {
    CheckKeyId(a.key, "--key");
    q.key_id = a.key;
  }
  if (a.actor.has_value()) {
    // The filter is held to what a recorded actor can be: a token pasted
    // here is refused, not searched for (and not echoed).
    if (absl::Status s = ValidateActor(*a.actor); !s.ok()) {
      throw UsageError{absl::StrCat("--", s.message())};
    }
    q.actor = *a.actor;
  }
  const absl::Time now = absl::Now();
  if (!a.since.empty()) {
    absl::Time t;
    if (absl::Status s = ParseTimeBound("--since", a.since, now, &t); !s.ok()) {
      throw UsageError{std::string(s.message())};
    }
    q.since = t;
  }
  if (!a.until.empty()) {
    absl::Time t;
    if (absl::Status s = ParseTimeBound("--until", a.until, now, &t); !s.ok()) {
      throw UsageError{std::string(s.message())};
    }
    q.until = t;
  }
  if (q.since.has_value() && q.until.has_value() && *q.since >= *q.until) {
    throw UsageError{"--until: must be later than --since"};
  }
  q.after = a.after;
  absl::StatusOr<Session> s = OpenSession(g, /*create_if_missing=*/false);
  if (!s.ok()) return Fail(s.status());

  // Page through the log until it ends or --limit entries are in hand.
  std::vector<Event> events;
  bool more = false;
  for (;;) {
    std::size_t want = kMaxAuditLimit;
    if (a.limit.has_value()) want = std::min(want, *a.limit - events.size());
    q.limit = want;
    absl::StatusOr<AuditPage> page = s->manager->ReadAudit(q);
    if (!page.ok()) return Fail(page.status());
    for (Event& e : page->events) events.push_back(std::move(e));
    q.after = page->next_after;
    more = page->more;
    if (!more || (a.limit.has_value() && events.size() >= *a.limit)) break;
  }

  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("events").BeginArray();
    for (const Event& e : events) WriteEventJson(w, e);
    w.EndArray();
    w.Key("more").Bool(more);
    w.Key("next_after").Uint(q.after);
    w.EndObject();
    std::cout << w.str() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"SEQ", "TIME", "EVENT", "KEY", "ACTOR", "OWNER", "FIELDS", "VERSION"});
  for (const Event& e : events) {
    rows.push_back({absl::StrCat(e.sequence), HumanTime(e.at), std::string(EventTypeName(e.type)),
                    e.key_id, e.actor, e.owner,
                    e.changed_fields.empty() ? "-" : absl::StrJoin(e.changed_fields, ","),
                    absl::StrCat(e.version)});
  }
  std::cout << Table(rows);
  if (more) {
    std::cerr << "More entries follow: add --after " << q.after << " (or raise --limit).\n";
  }
  return kExitOk;
}

}  // namespace keygate::cli
