// Shared by the keygate CLI's commands: the database, the deployment, ids and
// printing (commands.h).

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/format.h"

#include "keygate/deployment.h"
#include "keygate/envelope.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#ifdef KEYGATE_HAVE_POSTGRES
#include "keygate/postgres/postgres_key_store.h"
#endif
#include "keygate/secret.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/token.h"

namespace keygate::cli {
namespace {

constexpr char kTokenWarning[] =
    "This token is shown only once and cannot be recovered. Store it in a secret manager now.";
constexpr char kRecoverableWarning[] =
    "This token is kept encrypted: whoever holds the key-encryption key and the database can "
    "read it again (keygate reveal, recorded in the audit log). Store it in a secret manager.";

}  // namespace

// Error text may quote user input or stored records: redacted (tokens) and
// escaped (control characters), like every other line we print.
std::string SafeMessage(std::string_view message) { return EscapeText(Redact(message)); }

int Fail(const absl::Status& s) {
  std::cerr << "keygate: " << SafeMessage(std::string(s.message())) << "\n";
  return kExitFailed;
}

bool IsPostgresUrl(std::string_view db) {
  return db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0;
}

// SQLite gives some names a meaning other than "this file": ":memory:" is a
// private in-memory database, "" a temporary one, and (Debian builds with
// SQLITE_USE_URI) "file:..." a URI whose path and mode may differ from the
// name. The CLI exists to change a database other processes read, so such a
// name would print tokens for keys stored nowhere; it is refused.
void CheckDatabasePath(const Globals& g) {
  if (IsPostgresUrl(g.db)) {
#ifndef KEYGATE_HAVE_POSTGRES
    throw UsageError{
        absl::StrCat(g.db_source,
                     ": a PostgreSQL URL, but this keygate was built without PostgreSQL support "
                     "(keygate::postgres; Debian: libpq-dev, then rebuild)")};
#else
    return;
#endif
  }
  if (g.db_schema.has_value()) {
    throw UsageError{
        absl::StrCat("--db-schema: only for a PostgreSQL database (", g.db_source,
                     " is a SQLite file path; a PostgreSQL one starts with postgresql://)")};
  }
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

namespace {

// The envelope of recoverable keys, or null when no KEK file is named. Errors name the flag or
// variable that named the file.
absl::StatusOr<std::shared_ptr<const Envelope>> LoadEnvelope(const Globals& g) {
  if (g.kek_file.empty()) {
    if (!g.previous_kek_files.empty()) {
      throw UsageError{"--previous-kek-file: needs --kek-file (or $KEYGATE_KEK_FILE) as well"};
    }
    return std::shared_ptr<const Envelope>();
  }
  EnvelopeOptions eo;
  eo.kek_file = g.kek_file;
  eo.previous_kek_files = g.previous_kek_files;
  eo.allow_group_or_world_access = g.allow_shared_kek;
  absl::StatusOr<std::shared_ptr<const Envelope>> env = Envelope::Create(eo);
  if (!env.ok()) {
    std::string msg(env.status().message());
    if (msg.rfind("kek_file: ", 0) == 0) {
      msg = absl::StrCat(g.kek_source, ": ", msg.substr(10));
    } else if (msg.rfind("previous_kek_files", 0) == 0) {
      msg = absl::StrCat("--previous-kek-file", msg.substr(18));
    }
    return absl::Status(env.status().code(), msg);
  }
  for (const std::string& w : (*env)->warnings()) Warn(w);
  return env;
}

absl::StatusOr<std::shared_ptr<KeyStore>> OpenSqlite(const Globals& g, bool create_if_missing) {
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
  return std::shared_ptr<KeyStore>(*std::move(store));
}

// The store's errors name the database by host, port, name and user, never
// by the URL (which may hold a password): printed as they are.
absl::StatusOr<std::shared_ptr<KeyStore>> OpenPostgres(const Globals& g) {
#ifdef KEYGATE_HAVE_POSTGRES
  PostgresOptions po;
  po.url = g.db;
  if (g.db_schema.has_value()) po.schema = *g.db_schema;
  po.pool_size = 1;  // one command, one thread
  absl::StatusOr<std::unique_ptr<PostgresKeyStore>> store = PostgresKeyStore::Create(po);
  if (!store.ok()) {
    // Option errors name the option's field ("url: ...", "schema: ..."):
    // named here by the flag the user gave.
    const std::string msg(store.status().message());
    for (const auto& [field, flag] :
         {std::pair<std::string, std::string>{"url: ", g.db_source}, {"schema: ", "--db-schema"}}) {
      if (msg.rfind(field, 0) == 0) {
        return absl::Status(store.status().code(), flag + ": " + msg.substr(field.size()));
      }
    }
    return store.status();
  }
  return std::shared_ptr<KeyStore>(*std::move(store));
#else
  (void)g;  // CheckDatabasePath refused the URL already
  return absl::FailedPreconditionError("built without PostgreSQL support");
#endif
}

}  // namespace

absl::StatusOr<Session> OpenSession(const Globals& g, bool create_if_missing,
                                    std::shared_ptr<const Deployment> deployment) {
  CheckDatabasePath(g);
  Session s;
  if (deployment == nullptr) {
    absl::StatusOr<std::shared_ptr<const Deployment>> d = LoadDeployment(g);
    if (!d.ok()) return d.status();
    deployment = *std::move(d);
  }
  s.deployment = std::move(deployment);
  absl::StatusOr<std::shared_ptr<KeyStore>> store =
      IsPostgresUrl(g.db) ? OpenPostgres(g) : OpenSqlite(g, create_if_missing);
  if (!store.ok()) return store.status();
  s.store = *std::move(store);
  KeyManager::Options mo;
  mo.deployment = s.deployment;
  mo.store = s.store;
  mo.allow_internal_webhook_hosts = g.allow_internal_webhooks;
  absl::StatusOr<std::shared_ptr<const Envelope>> envelope = LoadEnvelope(g);
  if (!envelope.ok()) return envelope.status();
  mo.envelope = *std::move(envelope);
  s.envelope = mo.envelope;
  if (g.webhook_secret_per_key && mo.envelope == nullptr) {
    throw UsageError{
        "--webhook-secret-per-key: needs --kek-file (or $KEYGATE_KEK_FILE): keys' webhook "
        "secrets are kept sealed with it"};
  }
  mo.webhook_secret_per_key = g.webhook_secret_per_key;
  absl::StatusOr<std::unique_ptr<KeyManager>> manager = KeyManager::Create(std::move(mo));
  if (!manager.ok()) return manager.status();
  s.manager = *std::move(manager);
  return s;
}

// Key ids are "key_" + 22 base62; anything else (in particular a pasted
// token) is refused without being echoed. Errors name `what` (the argument).
void CheckKeyId(const std::string& id, std::string_view what) {
  bool ok = id.size() > 4 && id.size() <= 64 && id.rfind("key_", 0) == 0;
  for (char c : id) {
    ok = ok &&
         ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
  }
  if (!ok) {
    TokenView v;
    if (ParseToken(id, &v) == TokenError::kNone || id.size() >= kMinTokenLength) {
      throw UsageError{absl::StrCat(
          std::string(what), ": that looks like a token, not a key id (key ids start with key_)")};
    }
    throw UsageError{absl::StrCat(std::string(what),
                                  ": not a key id (expected key_ followed by letters and digits)")};
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
    if (k.webhook_secret.has_value()) {
      w.Key("webhook_secret").String(k.webhook_secret->text().Reveal(InsecureSecretAccess::Get()));
    }
    w.Key("key");
    WriteRecordJson(w, k.record);
    w.EndObject();
    std::cout << w.str() << "\n";
  } else {
    std::cerr << what << " " << EscapeText(k.record.id) << " (" << EscapeText(k.record.name) << ", "
              << EscapeText(k.record.environment) << ").\n";
    std::cout << token << "\n";
    // A key's own webhook secret: the second line.
    if (k.webhook_secret.has_value()) {
      std::cout << k.webhook_secret->text().Reveal(InsecureSecretAccess::Get()) << "\n";
    }
  }
  std::cerr << (k.record.sealed_token.empty() ? kTokenWarning : kRecoverableWarning) << "\n";
  if (k.webhook_secret.has_value() && !g.json) std::cerr << kWebhookSecretWarning << "\n";
}

}  // namespace keygate::cli
