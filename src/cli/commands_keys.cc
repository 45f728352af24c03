// The keygate CLI's key commands: create, list, show, modify, revoke,
// restore, delete and roll (commands.h).

#include <cstdint>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "cli/parse.h"

#include "keygate/audit.h"
#include "keygate/deployment.h"
#include "keygate/key_manager.h"

namespace keygate::cli {
namespace {

std::map<std::string, std::string> ParseMetadata(const std::vector<std::string>& items) {
  std::map<std::string, std::string> m;
  for (const std::string& kv : items) {
    const std::size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw UsageError{"--meta: expected KEY=VALUE"};
    }
    m[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return m;
}

}  // namespace

int RunCreate(const Globals& g, const CreateArgs& a) {
  CreateKeyRequest req;
  req.name = a.name;
  req.owner = a.owner;
  req.environment = a.env;
  req.description = a.description;
  req.scopes = a.scopes;
  req.webhook_url = a.webhook;
  req.accounts = a.accounts;
  req.metadata = ParseMetadata(a.meta);
  if (!ParseKeyKind(a.kind, &req.kind)) throw UsageError{"--kind: expected general or personal"};
  if (!a.expires.empty()) {
    absl::Time t;
    if (absl::Status s = ParseExpires(a.expires, absl::Now(), &t); !s.ok()) {
      throw UsageError{std::string(s.message())};
    }
    req.expires = t;
  }
  if (!a.rate.empty()) {
    absl::StatusOr<RateLimitPolicy> p = ParseRate(a.rate, a.burst);
    if (!p.ok()) throw UsageError{std::string(p.status().message())};
    req.rate_limit = *p;
  } else if (a.burst.has_value()) {
    throw UsageError{"--burst: needs --rate"};
  }
  CheckDatabasePath(g);
  absl::StatusOr<std::shared_ptr<const Deployment>> d = LoadDeployment(g);
  if (!d.ok()) return Fail(d.status());
  // Opening creates the database file, so everything that can be refused
  // without it is refused first: a refused create leaves no file behind.
  // These are Create's own checks (actor and fields); only conflicts with
  // stored keys are left to the real run.
  if (absl::Status v = ValidateActor(g.actor); !v.ok()) return Fail(v);
  if (absl::Status v = ValidateCreateKeyRequest(**d, req, absl::Now(), g.allow_internal_webhooks);
      !v.ok()) {
    return Fail(v);
  }
  absl::StatusOr<Session> s = OpenSession(g, /*create_if_missing=*/true, *d);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<CreatedKey> k = s->manager->Create(req, g.actor);
  if (!k.ok()) return Fail(k.status());
  PrintCreated(g, *k, "Created key");
  return kExitOk;
}

int RunList(const Globals& g, const ListArgs& a) {
  ListOptions o;
  if (!a.env.empty()) o.filter.environment = a.env;
  if (!a.owner.empty()) o.filter.owner = a.owner;
  if (!a.state.empty()) {
    KeyState st;
    if (!ParseKeyState(a.state, &st)) throw UsageError{"--state: expected active or revoked"};
    o.filter.state = st;
  }
  if (!a.kind.empty()) {
    KeyKind k;
    if (!ParseKeyKind(a.kind, &k)) throw UsageError{"--kind: expected general or personal"};
    o.filter.kind = k;
  }
  o.filter.name_contains = a.search;
  o.limit = a.limit;
  o.cursor = a.cursor;
  absl::StatusOr<Session> s = OpenSession(g, /*create_if_missing=*/false);
  if (!s.ok()) return Fail(s.status());
  std::vector<KeyRecord> keys;
  std::string next;
  for (;;) {
    absl::StatusOr<ListPage> page = s->manager->List(o);
    if (!page.ok()) return Fail(page.status());
    for (KeyRecord& r : page->keys) keys.push_back(std::move(r));
    next = page->next_cursor;
    if (!a.all || next.empty()) break;
    o.cursor = next;
  }
  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("keys").BeginArray();
    for (const KeyRecord& r : keys) WriteRecordJson(w, r);
    w.EndArray();
    w.Key("next_cursor").String(next);
    w.EndObject();
    std::cout << w.str() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "NAME", "ENVIRONMENT", "SCOPES", "STATE", "CREATED", "LAST USED", "HINT"});
  for (const KeyRecord& r : keys) {
    rows.push_back({r.id, r.name, r.environment,
                    r.scopes.empty() ? "-" : absl::StrJoin(r.scopes, ","),
                    std::string(KeyStateName(r.state)), HumanTime(r.created),
                    r.last_used ? HumanTime(*r.last_used) : "never", r.hint});
  }
  std::cout << Table(rows);
  if (!next.empty()) {
    std::cerr << "More keys follow: add --cursor " << EscapeText(next) << " (or --all).\n";
  }
  return kExitOk;
}

int RunShow(const Globals& g, const std::string& id) {
  CheckKeyId(id);
  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<KeyRecord> r = s->manager->Get(id);
  if (!r.ok()) return Fail(r.status());
  PrintRecord(g, *r);
  return kExitOk;
}

int RunModify(const Globals& g, const ModifyArgs& a) {
  CheckKeyId(a.id);
  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<KeyRecord> cur = s->manager->Get(a.id);
  if (!cur.ok()) return Fail(cur.status());
  KeyUpdate u;
  bool any = false;
  if (a.name) u.name = *a.name, any = true;
  if (a.description) u.description = *a.description, any = true;
  if (!a.scopes.empty() || a.no_scopes) u.scopes = a.scopes, any = true;
  if (a.no_expiry) {
    u.expires = std::optional<absl::Time>();
    any = true;
  } else if (a.expires) {
    absl::Time t;
    if (absl::Status st = ParseExpires(*a.expires, absl::Now(), &t); !st.ok()) {
      throw UsageError{std::string(st.message())};
    }
    u.expires = std::optional<absl::Time>(t);
    any = true;
  }
  if (a.no_rate_limit) {
    u.rate_limit = std::optional<RateLimitPolicy>();
    any = true;
  } else if (a.rate) {
    absl::StatusOr<RateLimitPolicy> p = ParseRate(*a.rate, a.burst);
    if (!p.ok()) throw UsageError{std::string(p.status().message())};
    u.rate_limit = std::optional<RateLimitPolicy>(*p);
    any = true;
  } else if (a.burst) {
    if (!cur->rate_limit) throw UsageError{"--burst: the key has no rate limit; give --rate"};
    RateLimitPolicy p = *cur->rate_limit;
    p.burst = *a.burst;
    u.rate_limit = std::optional<RateLimitPolicy>(p);
    any = true;
  }
  if (a.webhook) u.webhook_url = *a.webhook, any = true;
  if (!a.accounts.empty() || a.no_accounts) u.accounts = a.accounts, any = true;
  if (!a.meta.empty() || !a.unset_meta.empty()) {
    std::map<std::string, std::string> m = cur->metadata;
    for (const auto& [k, v] : ParseMetadata(a.meta)) m[k] = v;
    for (const std::string& k : a.unset_meta) m.erase(k);
    u.metadata = m;
    any = true;
  }
  if (!any) throw UsageError{"nothing to modify: give at least one field option"};
  absl::StatusOr<KeyRecord> r =
      s->manager->Modify(a.id, u, a.if_version.value_or(cur->version), g.actor);
  if (!r.ok()) return Fail(r.status());
  if (g.json) {
    PrintRecord(g, *r);
  } else {
    std::cout << "Modified " << EscapeText(r->id) << " (now version " << r->version << ").\n";
  }
  return kExitOk;
}

int RunStateChange(const Globals& g, const std::string& id, StateChange change) {
  CheckKeyId(id);
  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<KeyRecord> r = change == StateChange::kRevoke ? s->manager->Revoke(id, g.actor)
                                                               : s->manager->Restore(id, g.actor);
  if (!r.ok()) return Fail(r.status());
  if (g.json) {
    PrintRecord(g, *r);
  } else {
    std::cout << (change == StateChange::kRevoke ? "Revoked " : "Restored ") << EscapeText(r->id)
              << " (" << EscapeText(r->name) << ").\n";
  }
  return kExitOk;
}

int RunDelete(const Globals& g, const std::string& id, bool yes) {
  CheckKeyId(id);
  if (!yes) {
    throw UsageError{
        "delete is permanent (the token then verifies as unknown); add --yes "
        "to confirm, or use revoke to block the key reversibly"};
  }
  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  if (absl::Status st = s->manager->Delete(id, g.actor); !st.ok()) return Fail(st);
  if (g.json) {
    JsonWriter w;
    w.BeginObject().Key("deleted").String(id).EndObject();
    std::cout << w.str() << "\n";
  } else {
    std::cout << "Deleted " << id << ".\n";
  }
  return kExitOk;
}

int RunRoll(const Globals& g, const std::string& id, const std::string& grace_text) {
  CheckKeyId(id);
  absl::Duration grace;
  if (!ParseDurationWithDays(grace_text, &grace)) {
    throw UsageError{"--grace: expected a duration such as 0s, 1h or 7d"};
  }
  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<CreatedKey> k = s->manager->Roll(id, grace, g.actor);
  if (!k.ok()) return Fail(k.status());
  PrintCreated(g, *k, "Rolled key");
  if (!g.json) {
    if (k->record.previous.has_value()) {
      std::cerr << "The previous token keeps working until "
                << HumanTime(k->record.previous->valid_until) << ".\n";
    } else {
      std::cerr << "The previous token stopped working.\n";
    }
  }
  return kExitOk;
}

int RunReveal(const Globals& g, const std::string& id) {
  CheckKeyId(id);
  if (g.kek_file.empty()) {
    throw UsageError{
        "reveal: needs the key-encryption key (--kek-file or $KEYGATE_KEK_FILE); without it "
        "tokens are kept only as hashes"};
  }
  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<RevealedKey> k = s->manager->RevealToken(id, g.actor);
  if (!k.ok()) return Fail(k.status());
  const std::string_view token = k->token.Reveal(InsecureSecretAccess::Get());
  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("token").String(token);
    w.Key("key");
    WriteRecordJson(w, k->record);
    w.EndObject();
    std::cout << w.str() << "\n";
  } else {
    std::cerr << "Token of key " << EscapeText(k->record.id) << " (" << EscapeText(k->record.name)
              << ", " << EscapeText(k->record.environment)
              << "); the audit log records this reveal.\n";
    std::cout << token << "\n";
  }
  return kExitOk;
}

int RunReseal(const Globals& g) {
  if (g.kek_file.empty()) {
    throw UsageError{
        "reseal: needs the new key-encryption key (--kek-file) and the old one "
        "(--previous-kek-file)"};
  }
  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  std::uint64_t recoverable = 0;
  std::uint64_t resealed = 0;
  ListOptions o;
  o.limit = kMaxListLimit;
  for (;;) {
    absl::StatusOr<ListPage> page = s->manager->List(o);
    if (!page.ok()) return Fail(page.status());
    for (const KeyRecord& r : page->keys) {
      // Sealed values: a recoverable token, a webhook secret of the key's own, or both.
      if (r.sealed_token.empty() && r.sealed_webhook_secret.empty()) continue;
      ++recoverable;
      absl::StatusOr<bool> wrote = s->manager->ResealToken(r.id, g.actor);
      // A key deleted since the page was read has nothing left to reseal.
      if (!wrote.ok() && wrote.status().code() == absl::StatusCode::kNotFound) continue;
      if (!wrote.ok()) return Fail(wrote.status());
      if (*wrote) ++resealed;
    }
    if (page->next_cursor.empty()) break;
    o.cursor = page->next_cursor;
  }
  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("recoverable").Uint(recoverable);
    w.Key("resealed").Uint(resealed);
    w.EndObject();
    std::cout << w.str() << "\n";
  } else {
    std::cout << "Resealed " << resealed << " of " << recoverable
              << " keys with sealed values (recoverable tokens, webhook secrets) under the "
                 "primary key-encryption key.\n";
  }
  return kExitOk;
}

}  // namespace keygate::cli
