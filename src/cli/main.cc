// keygate: manage the API keys in a keygate SQLite database from the shell.
//
//   keygate [--db PATH] [--json] <command> [options]
//
// The database defaults to $KEYGATE_DB, else ./keygate.db; it must name a
// file (":memory:" and SQLite "file:" URIs are refused: keys created there
// would be stored nowhere, or somewhere else than the name says), and one
// another user owns or group or others may write is refused unless
// --allow-foreign-db (then a warning says so). Exit status:
//   0  success (for `verify`: the token is valid)
//   1  `verify` only: the token was rejected (the verdict says why)
//   2  usage error (bad flags or arguments; usage goes to stderr)
//   3  the command failed (store error, key not found, conflict, validation)
// Results go to stdout (JSON with --json); errors and notices to stderr.
// Text from records and errors is printed with control characters escaped
// (\n, \x1b, ...), so a stored value can neither forge lines nor drive the
// terminal; --json output is always valid UTF-8 (invalid bytes become
// U+FFFD).
// A token is printed only by `create` and `roll`, once; errors never contain
// one (anything shaped like a token is redacted).
//
// Deployment: the default keygate deployment (token prefix "kg"; environments
// preview (tag "test") and production (tag "live"); scopes read:all,
// write:all, admin). If $KEYGATE_PEPPER_FILE names a file, its bytes (one
// trailing newline removed, at least 32 bytes) are the HMAC pepper: the CLI
// and every server using the same database must use the same pepper, or
// tokens will not verify. It is read by ReadPepperFile (deployment.h): a
// regular file of at most 4 KiB, not a symbolic link, and private to its
// owner unless --allow-shared-pepper (then a warning says so).

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/format.h"
#include "cli/parse.h"

#include "keygate/deployment.h"
#include "keygate/http.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/token.h"
#include "keygate/verdict.h"

namespace keygate::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitDenied = 1;
constexpr int kExitUsage = 2;
constexpr int kExitFailed = 3;

constexpr char kTokenWarning[] =
    "This token is shown only once and cannot be recovered. Store it in a secret manager now.";

// A usage problem found after parsing (reported like a CLI11 error).
struct UsageError {
  std::string message;
};

struct Globals {
  std::string db;
  std::string db_source;  // where `db` came from, for messages
  bool json = false;
  std::string actor;
  bool allow_internal_webhooks = false;
  bool allow_shared_pepper = false;
  bool allow_foreign_db = false;
};

std::string DefaultDb() {
  const char* env = std::getenv("KEYGATE_DB");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("./keygate.db");
}

std::string DefaultActor() {
  for (const char* name : {"KEYGATE_ACTOR", "USER", "LOGNAME"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return v;
  }
  return "cli";
}

// Error text may quote user input or stored records: redacted (tokens) and
// escaped (control characters), like every other line we print.
std::string SafeMessage(std::string_view message) { return EscapeText(Redact(message)); }

int Fail(const absl::Status& s) {
  std::cerr << "keygate: " << SafeMessage(std::string(s.message())) << "\n";
  return kExitFailed;
}

// SQLite gives some names a meaning other than "this file": ":memory:" is a
// private in-memory database, "" a temporary one, and (Debian builds with
// SQLITE_USE_URI) "file:..." a URI whose path and mode may differ from the
// name. The CLI exists to change a database other processes read, so such a
// name would print tokens for keys stored nowhere; it is refused.
void CheckDatabasePath(const Globals& g) {
  if (g.db.empty()) throw UsageError{absl::StrCat(g.db_source, ": must name a database file")};
  if (g.db == ":memory:") {
    throw UsageError{absl::StrCat(g.db_source,
                                  ": ':memory:' is not a database file (keys created there "
                                  "would be stored nowhere); give a file path")};
  }
  if (g.db.rfind("file:", 0) == 0) {
    throw UsageError{absl::StrCat(g.db_source, ": '", g.db,
                                  "' would be opened as an SQLite URI, not as a file; give a "
                                  "plain path (./",
                                  g.db, " names a file of that name)")};
  }
}

// Notices go to stderr, escaped like everything else we print.
void Warn(std::string_view message) {
  std::cerr << "keygate: warning: " << SafeMessage(message) << "\n";
}

absl::StatusOr<std::shared_ptr<const Deployment>> LoadDeployment(const Globals& g) {
  DeploymentOptions o;
  const char* pepper_file = std::getenv("KEYGATE_PEPPER_FILE");
  if (pepper_file != nullptr && *pepper_file != '\0') {
    PepperFileOptions po;
    po.allow_group_or_world_access = g.allow_shared_pepper;
    absl::StatusOr<PepperFile> pepper = ReadPepperFile(pepper_file, po);
    if (!pepper.ok()) {
      return absl::Status(pepper.status().code(),
                          absl::StrCat("$KEYGATE_PEPPER_FILE: ", pepper.status().message()));
    }
    for (const std::string& w : pepper->warnings) Warn(w);
    o.pepper = std::move(pepper->pepper);
  }
  return Deployment::Create(std::move(o));
}

struct Session {
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<SqliteKeyStore> store;
  std::unique_ptr<KeyManager> manager;
};

// Throws UsageError for a database name that is not a plain path.
absl::StatusOr<Session> OpenSession(const Globals& g, bool create_if_missing,
                                    std::shared_ptr<const Deployment> deployment = nullptr) {
  CheckDatabasePath(g);
  Session s;
  if (deployment == nullptr) {
    absl::StatusOr<std::shared_ptr<const Deployment>> d = LoadDeployment(g);
    if (!d.ok()) return d.status();
    deployment = *std::move(d);
  }
  s.deployment = std::move(deployment);
  SqliteOptions so;
  so.path = g.db;
  so.create_if_missing = create_if_missing;
  so.allow_foreign_file = g.allow_foreign_db;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(so);
  if (!store.ok()) {
    const std::string_view msg(store.status().message().data(), store.status().message().size());
    if (!create_if_missing && msg.find("create_if_missing") != std::string_view::npos) {
      return absl::NotFoundError(absl::StrCat(
          "sqlite ", g.db,
          ": database file does not exist; create a key first (keygate create) or point --db / "
          "$KEYGATE_DB at a database"));
    }
    if (msg.find("allow_foreign_file") != std::string_view::npos) {
      return absl::Status(
          store.status().code(),
          absl::StrCat(store.status().message(), "; pass --allow-foreign-db to open it anyway"));
    }
    return store.status();
  }
  for (const std::string& w : (*store)->open_warnings()) Warn(w);
  s.store = *store;
  KeyManager::Options mo;
  mo.deployment = s.deployment;
  mo.store = s.store;
  mo.allow_internal_webhook_hosts = g.allow_internal_webhooks;
  s.manager = std::make_unique<KeyManager>(std::move(mo));
  return s;
}

// Key ids are "key_" + 22 base62; anything else (in particular a pasted
// token) is refused without being echoed.
void CheckKeyId(const std::string& id) {
  bool ok = id.size() > 4 && id.size() <= 64 && id.rfind("key_", 0) == 0;
  for (char c : id) {
    ok = ok &&
         ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
  }
  if (!ok) {
    TokenView v;
    if (ParseToken(id, &v) == TokenError::kNone || id.size() >= kMinTokenLength) {
      throw UsageError{"KEY_ID: that looks like a token, not a key id (key ids start with key_)"};
    }
    throw UsageError{"KEY_ID: not a key id (expected key_ followed by letters and digits)"};
  }
}

void PrintRecord(const Globals& g, const KeyRecord& r) {
  if (g.json) {
    JsonWriter w;
    WriteRecordJson(w, r);
    std::cout << w.str() << "\n";
  } else {
    std::cout << DescribeRecord(r);
  }
}

// The token goes to stdout alone (easy to capture); the warning to stderr.
void PrintCreated(const Globals& g, const CreatedKey& k, std::string_view what) {
  const std::string_view token = k.token.Reveal(InsecureSecretAccess::Get());
  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("token").String(token);
    w.Key("key");
    WriteRecordJson(w, k.record);
    w.EndObject();
    std::cout << w.str() << "\n";
  } else {
    std::cerr << what << " " << EscapeText(k.record.id) << " (" << EscapeText(k.record.name) << ", "
              << EscapeText(k.record.environment) << ").\n";
    std::cout << token << "\n";
  }
  std::cerr << kTokenWarning << "\n";
}

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

// ---------------------------------------------------------------------------
// Commands. Each returns the exit status.

struct CreateArgs {
  std::string name, owner, env, kind = "general", description, expires, rate, webhook;
  std::optional<std::uint32_t> burst;
  std::vector<std::string> scopes, accounts, meta;
};

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
  // ValidateCreate applies Create's own checks (fields and actor); only
  // conflicts with stored keys are left to the real run.
  {
    KeyManager::Options vo;
    vo.deployment = *d;
    vo.store = std::make_shared<MemoryKeyStore>();  // never written
    vo.allow_internal_webhook_hosts = g.allow_internal_webhooks;
    if (absl::Status v = KeyManager(std::move(vo)).ValidateCreate(req, g.actor); !v.ok()) {
      return Fail(v);
    }
  }
  absl::StatusOr<Session> s = OpenSession(g, /*create_if_missing=*/true, *d);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<CreatedKey> k = s->manager->Create(req, g.actor);
  if (!k.ok()) return Fail(k.status());
  PrintCreated(g, *k, "Created key");
  return kExitOk;
}

struct ListArgs {
  std::string env, owner, state, kind, search, cursor;
  std::size_t limit = 50;
  bool all = false;
};

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

struct ModifyArgs {
  std::string id;
  std::optional<std::string> name, description, expires, rate, webhook;
  std::optional<std::uint32_t> burst;
  std::vector<std::string> scopes, accounts, meta, unset_meta;
  bool no_scopes = false, no_expiry = false, no_rate_limit = false, no_accounts = false;
  std::optional<std::uint64_t> if_version;
};

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

enum class StateChange { kRevoke, kRestore };

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

struct VerifyArgs {
  std::string token;
  std::string env;
  std::vector<std::string> scopes;
  std::string account;
};

int RunVerify(const Globals& g, const VerifyArgs& a) {
  std::string token_storage;
  if (a.token == "-") {
    std::getline(std::cin, token_storage);
    while (!token_storage.empty() && (token_storage.back() == '\r' || token_storage.back() == ' ' ||
                                      token_storage.back() == '\t')) {
      token_storage.pop_back();
    }
  } else {
    token_storage = a.token;
    std::cerr << "(tip: 'keygate verify -' reads the token from stdin and keeps it out of "
                 "your shell history)\n";
  }
  const Secret token(token_storage);
  std::fill(token_storage.begin(), token_storage.end(), '\0');
  const std::string_view t = token.Reveal(InsecureSecretAccess::Get());

  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  const Deployment& d = *s->deployment;
  std::string env = a.env;
  if (env.empty()) {
    // The environment the token claims (its tag); a token without a known
    // tag is checked against the first environment and comes out malformed.
    TokenView v;
    const EnvironmentSpec* spec = nullptr;
    if (ParseToken(t, &v, d.token_prefix()) == TokenError::kNone) {
      spec = d.FindEnvironmentByTag(v.env_tag);
    }
    env = spec != nullptr ? spec->name : d.environments().front().name;
  } else if (d.FindEnvironment(env) == nullptr) {
    throw UsageError{absl::StrCat("--env: unknown environment '", Redact(env), "'")};
  }
  const RequireOptions options{.account = a.account};
  absl::StatusOr<Requirement> req =
      a.scopes.empty() ? Requirement::AnyValidKey(options)
                       : d.scopes().Require(absl::MakeConstSpan(a.scopes), options);
  if (!req.ok()) throw UsageError{Redact(std::string(req.status().message()))};
  absl::StatusOr<std::unique_ptr<ReferenceVerifier>> verifier = ReferenceVerifier::Create(
      {.deployment = s->deployment, .store = s->store, .environment = env});
  if (!verifier.ok()) return Fail(verifier.status());
  std::optional<KeyRecord> record;
  const Verdict verdict = (*verifier)->VerifyToken(t, *req, absl::Now(), &record);
  const HttpDecision http = DecideHttp(verdict, *req);
  const int status = verdict.ok() ? 200 : http.status;
  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("ok").Bool(verdict.ok());
    w.Key("outcome").String(OutcomeName(verdict.outcome));
    w.Key("environment").String(env);
    w.Key("http_status").Int(status);
    w.Key("key_id");
    if (verdict.key().empty()) {
      w.Null();
    } else {
      w.String(verdict.key());
    }
    if (record.has_value()) {
      w.Key("owner").String(record->owner);
      w.Key("name").String(record->name);
    }
    w.EndObject();
    std::cout << w.str() << "\n";
  } else if (verdict.ok()) {
    std::cout << "ok: " << EscapeText(verdict.key());
    if (record.has_value()) {
      std::cout << " (" << EscapeText(record->name) << ", owner " << EscapeText(record->owner)
                << ", " << EscapeText(env) << ")";
    }
    std::cout << "\n";
  } else {
    std::cout << "rejected: " << OutcomeName(verdict.outcome);
    if (!verdict.key().empty()) std::cout << " (key " << EscapeText(verdict.key()) << ")";
    std::cout << "; a server answers HTTP " << status << "\n";
  }
  if (verdict.outcome == Outcome::kUnavailable) return kExitFailed;
  return verdict.ok() ? kExitOk : kExitDenied;
}

int RunScopes(const Globals& g) {
  absl::StatusOr<std::shared_ptr<const Deployment>> d = LoadDeployment(g);
  if (!d.ok()) return Fail(d.status());
  const ScopeRegistry& reg = (*d)->scopes();
  JsonWriter w;
  std::vector<std::vector<std::string>> rows{{"SCOPE", "IMPLIES"}};
  w.BeginArray();
  for (const std::string& name : reg.names()) {
    std::vector<std::string> implied;
    for (const std::string& other : reg.Expand(reg.MaskOf(name))) {
      if (other != name) implied.push_back(other);
    }
    w.BeginObject().Key("name").String(name).Key("implies").StringArray(implied).EndObject();
    rows.push_back({name, implied.empty() ? "-" : absl::StrJoin(implied, ", ")});
  }
  w.EndArray();
  std::cout << (g.json ? w.str() + "\n" : Table(rows));
  return kExitOk;
}

int RunEnvs(const Globals& g) {
  absl::StatusOr<std::shared_ptr<const Deployment>> d = LoadDeployment(g);
  if (!d.ok()) return Fail(d.status());
  JsonWriter w;
  std::vector<std::vector<std::string>> rows{{"ENVIRONMENT", "TAG", "TOKENS LOOK LIKE"}};
  w.BeginArray();
  for (const EnvironmentSpec& e : (*d)->environments()) {
    const std::string example = absl::StrCat((*d)->token_prefix(), "_", e.tag, "_...");
    w.BeginObject().Key("name").String(e.name).Key("tag").String(e.tag);
    w.Key("token_prefix").String(absl::StrCat((*d)->token_prefix(), "_", e.tag, "_"));
    w.EndObject();
    rows.push_back({e.name, e.tag, example});
  }
  w.EndArray();
  std::cout << (g.json ? w.str() + "\n" : Table(rows));
  return kExitOk;
}

// The help of the deepest subcommand that was selected (usage on errors).
std::string SelectedHelp(const CLI::App& app) {
  const std::vector<CLI::App*> subs = app.get_subcommands();
  if (subs.empty()) return app.help();
  return subs.front()->help("keygate");
}

int Main(int argc, char** argv) {
  CLI::App app{"keygate: manage API keys in a keygate SQLite database.", "keygate"};
  app.require_subcommand(1);
  app.fallthrough();
  app.footer(
      "The database file (not :memory: or a file: URI) defaults to $KEYGATE_DB, else "
      "./keygate.db. $KEYGATE_PEPPER_FILE: a file holding the HMAC pepper (32+ bytes) the "
      "servers use.\nExit status: 0 ok; 1 verify "
      "rejected the token; 2 usage error; 3 the command failed.\nRun 'keygate <command> --help' "
      "for a command's options.");
  Globals g;
  g.db = DefaultDb();
  g.db_source = g.db == "./keygate.db" ? "database" : "$KEYGATE_DB";  // --db: set below
  g.actor = DefaultActor();
  CLI::Option* db_option =
      app.add_option("--db", g.db, "Database file (default: $KEYGATE_DB or ./keygate.db)");
  app.add_flag("--json", g.json, "Machine-readable JSON on stdout");
  app.add_option("--actor", g.actor, "Who the audit events name (default: $USER)");
  app.add_flag("--allow-internal-webhooks", g.allow_internal_webhooks,
               "Accept webhook URLs naming loopback, private or link-local addresses");
  app.add_flag("--allow-foreign-db", g.allow_foreign_db,
               "Open a database file another user owns, or group or others may write (warns)");
  app.add_flag("--allow-shared-pepper", g.allow_shared_pepper,
               "Read a $KEYGATE_PEPPER_FILE that group or others may read or write (warns)");

  int result = kExitOk;
  std::function<int()> run;

  CreateArgs ca;
  CLI::App* create = app.add_subcommand("create", "Create a key and print its token (once)");
  create->add_option("--name", ca.name, "Display name (1-128 bytes)")->required();
  create->add_option("--owner", ca.owner, "User id the key's actions are attributed to")
      ->required();
  create->add_option("--env,--environment", ca.env, "Environment (see 'keygate envs')")->required();
  create->add_option("--scope", ca.scopes, "Scope to grant (repeatable or comma-separated)")
      ->delimiter(',');
  create->add_option("--kind", ca.kind, "general (default) or personal");
  create->add_option("--description", ca.description, "Free text (0-1024 bytes)");
  create->add_option("--expires", ca.expires, "Expiry: a duration (30d, 12h) or RFC 3339 time");
  create->add_option("--rate", ca.rate, "Rate limit REQUESTS/PERIOD, e.g. 100/1m");
  create->add_option("--burst", ca.burst, "Burst for --rate (default: REQUESTS)");
  create->add_option("--webhook", ca.webhook, "Webhook URL (https only)");
  create->add_option("--account", ca.accounts, "Linked account (repeatable)");
  create->add_option("--meta", ca.meta, "Metadata KEY=VALUE (repeatable)");
  create->callback([&] { run = [&] { return RunCreate(g, ca); }; });

  ListArgs la;
  CLI::App* list = app.add_subcommand("list", "List keys (never tokens), filtered and paged");
  list->add_option("--env,--environment", la.env, "Only this environment");
  list->add_option("--owner", la.owner, "Only this owner");
  list->add_option("--state", la.state, "active or revoked");
  list->add_option("--kind", la.kind, "general or personal");
  list->add_option("--search,-s", la.search, "Name contains (case-insensitive)");
  list->add_option("--limit", la.limit, "Keys per page (1-1000, default 50)")
      ->check(CLI::Range(1, 1000));
  list->add_option("--cursor", la.cursor, "Continue after a previous page");
  list->add_flag("--all", la.all, "Follow cursors to the end");
  list->callback([&] { run = [&] { return RunList(g, la); }; });

  std::string show_id;
  CLI::App* show = app.add_subcommand("show", "Show one key's details");
  show->add_option("KEY_ID", show_id, "The key id (key_...)")->required();
  show->callback([&] { run = [&] { return RunShow(g, show_id); }; });

  ModifyArgs ma;
  CLI::App* modify = app.add_subcommand("modify", "Change a key's fields");
  modify->add_option("KEY_ID", ma.id, "The key id (key_...)")->required();
  modify->add_option("--name", ma.name, "New name");
  modify->add_option("--description", ma.description, "New description");
  modify->add_option("--scope", ma.scopes, "Replace the scopes (repeatable or comma-separated)")
      ->delimiter(',');
  modify->add_flag("--no-scopes", ma.no_scopes, "Remove every scope");
  modify->add_option("--expires", ma.expires, "New expiry: a duration or RFC 3339 time");
  modify->add_flag("--no-expiry", ma.no_expiry, "Never expire");
  modify->add_option("--rate", ma.rate, "New rate limit REQUESTS/PERIOD");
  modify->add_option("--burst", ma.burst, "New burst");
  modify->add_flag("--no-rate-limit", ma.no_rate_limit, "Use the environment default");
  modify->add_option("--webhook", ma.webhook, "New webhook URL (empty: none)");
  modify->add_option("--account", ma.accounts, "Replace the linked accounts (repeatable)");
  modify->add_flag("--no-accounts", ma.no_accounts, "Unlink every account");
  modify->add_option("--meta", ma.meta, "Set metadata KEY=VALUE (repeatable)");
  modify->add_option("--unset-meta", ma.unset_meta, "Remove metadata KEY (repeatable)");
  modify->add_option("--if-version", ma.if_version,
                     "Only if the key is still at this version (default: as read now)");
  modify->callback([&] { run = [&] { return RunModify(g, ma); }; });

  std::string revoke_id;
  CLI::App* revoke = app.add_subcommand("revoke", "Block a key (reversible with restore)");
  revoke->add_option("KEY_ID", revoke_id, "The key id (key_...)")->required();
  revoke->callback(
      [&] { run = [&] { return RunStateChange(g, revoke_id, StateChange::kRevoke); }; });

  std::string restore_id;
  CLI::App* restore = app.add_subcommand("restore", "Unblock a revoked key");
  restore->add_option("KEY_ID", restore_id, "The key id (key_...)")->required();
  restore->callback(
      [&] { run = [&] { return RunStateChange(g, restore_id, StateChange::kRestore); }; });

  std::string delete_id;
  bool delete_yes = false;
  CLI::App* del = app.add_subcommand("delete", "Delete a key permanently");
  del->add_option("KEY_ID", delete_id, "The key id (key_...)")->required();
  del->add_flag("--yes,-y", delete_yes, "Confirm the permanent deletion");
  del->callback([&] { run = [&] { return RunDelete(g, delete_id, delete_yes); }; });

  std::string roll_id;
  std::string roll_grace = "0s";
  CLI::App* roll = app.add_subcommand("roll", "Issue a new token for a key (printed once)");
  roll->add_option("KEY_ID", roll_id, "The key id (key_...)")->required();
  roll->add_option("--grace", roll_grace,
                   "How long the old token keeps working (default 0s; max 30d), e.g. 24h");
  roll->callback([&] { run = [&] { return RunRoll(g, roll_id, roll_grace); }; });

  VerifyArgs va;
  CLI::App* verify = app.add_subcommand(
      "verify", "Check a token; exit 0 only when it is valid. Use '-' to read it from stdin");
  verify
      ->add_option("TOKEN", va.token,
                   "The token, or - to read one line from stdin (keeps it out of shell history)")
      ->required();
  verify->add_option("--env,--environment", va.env,
                     "Environment of the server (default: the one the token names)");
  verify->add_option("--scope", va.scopes, "Required scope (repeatable or comma-separated)")
      ->delimiter(',');
  verify->add_option("--account", va.account, "Required linked account");
  verify->callback([&] { run = [&] { return RunVerify(g, va); }; });

  CLI::App* scopes = app.add_subcommand("scopes", "List the deployment's scopes");
  scopes->callback([&] { run = [&] { return RunScopes(g); }; });
  CLI::App* envs = app.add_subcommand("envs", "List the deployment's environments");
  envs->callback([&] { run = [&] { return RunEnvs(g); }; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "keygate: error: " << SafeMessage(e.what()) << "\n\n" << Redact(SelectedHelp(app));
    return kExitUsage;
  }
  if (db_option->count() > 0) g.db_source = "--db";
  try {
    result = run ? run() : kExitUsage;
  } catch (const UsageError& e) {
    std::cerr << "keygate: error: " << SafeMessage(e.message) << "\n\n" << SelectedHelp(app);
    return kExitUsage;
  }
  return result;
}

}  // namespace
}  // namespace keygate::cli

int main(int argc, char** argv) { return keygate::cli::Main(argc, argv); }
