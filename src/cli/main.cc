// keygate: manage the API keys in a keygate database from the shell.
//
//   keygate [--db PATH|URL] [--json] <command> [options]
//
// The database defaults to $KEYGATE_DB, else ./keygate.db. A value starting
// with postgresql:// or postgres:// (libpq's URI form; sslmode and the other
// parameters pass through) is a PostgreSQL database, its tables in the schema
// --db-schema (default keygate), created on first use; it is never printed
// (it may hold a password): errors name host, port, database and user. Any
// other value is a SQLite file: ":memory:" and SQLite "file:" URIs are
// refused (keys created there would be stored nowhere, or somewhere else than
// the name says), and a file another user owns or group or others may write
// is refused unless --allow-foreign-db (then a warning says so). Exit status:
//   0  success (for `verify`: the token is valid)
//   1  `verify` only: the token was rejected (the verdict says why)
//   2  usage error (bad flags or arguments; usage goes to stderr)
//   3  the command failed (store error, key not found, conflict, validation)
// Results go to stdout (JSON with --json); errors and notices to stderr.
// Text from records and errors is printed with control characters escaped
// (\n, \x1b, ...), so a stored value can neither forge lines nor drive the
// terminal; --json output is always valid UTF-8 (invalid bytes become
// U+FFFD).
// A token is printed only by `create` and `roll`, once, and by `reveal` for a
// recoverable key; errors never contain one (anything shaped like a token is
// redacted).
//
// Every change (create, modify, revoke, restore, delete, roll) and every reveal is recorded in
// the database's audit log, in the change's own transaction, under --actor
// (default $KEYGATE_ACTOR, else $USER, else $LOGNAME, else "cli");
// `keygate audit` prints the log, filtered by key, actor and time.
//
// Deployment: the default keygate deployment (token prefix "kg"; environments
// preview (tag "test") and production (tag "live"); scopes read:all,
// write:all, admin). If $KEYGATE_PEPPER_FILE names a file, its bytes (one
// trailing newline removed, at least 32 bytes) are the HMAC pepper: the CLI
// and every server using the same database must use the same pepper, or
// tokens will not verify. It is read by ReadPepperFile (deployment.h): a
// regular file of at most 4 KiB, not a symbolic link, and private to its
// owner unless --allow-shared-pepper (then a warning says so).
//
// Recoverable keys (off by default): with --kek-file (or $KEYGATE_KEK_FILE)
// naming a key-encryption key, read like the pepper (Envelope, envelope.h),
// every token created or rolled is also kept sealed in the database, and
// `reveal` prints it again. After moving to a new KEK, `reseal` with the old
// one as --previous-kek-file rewraps every sealed token under the new one.
//
// Webhooks (off by default): `serve` with --webhook-state (or $KEYGATE_WEBHOOK_STATE) naming the
// dispatcher's state file also runs a WebhookDispatcher on the database, signing with the
// secrets of --webhook-secret-file (or $KEYGATE_WEBHOOK_SECRET_FILE: one whsec_... a line, the
// current one first, read like the pepper). `webhooks deliveries` prints the delivery log that
// state file holds. With --webhook-secret-per-key (and --kek-file), keys get signing secrets of
// their own instead: `create` prints a key's once, `webhooks roll-secret` replaces it, and the
// dispatcher opens them with the KEK.

#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/format.h"

namespace keygate::cli {
namespace {

std::string DefaultDb() {
  const char* env = std::getenv("KEYGATE_DB");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("./keygate.db");
}

// $KEYGATE_PREVIOUS_KEK_FILES: paths separated by ':'.
std::vector<std::string> DefaultPreviousKeks() {
  std::vector<std::string> out;
  const char* env = std::getenv("KEYGATE_PREVIOUS_KEK_FILES");
  if (env == nullptr) return out;
  std::string current;
  for (const char* p = env;; ++p) {
    if (*p == ':' || *p == '\0') {
      if (!current.empty()) out.push_back(current);
      current.clear();
      if (*p == '\0') break;
    } else {
      current.push_back(*p);
    }
  }
  return out;
}

std::string DefaultActor() {
  for (const char* name : {"KEYGATE_ACTOR", "USER", "LOGNAME"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return v;
  }
  return "cli";
}

// The help of the deepest subcommand that was selected (usage on errors).
std::string SelectedHelp(const CLI::App& app) {
  const std::vector<CLI::App*> subs = app.get_subcommands();
  if (subs.empty()) return app.help();
  return subs.front()->help("keygate");
}

int Main(int argc, char** argv) {
  CLI::App app{"keygate: manage API keys in a keygate database (a SQLite file or PostgreSQL).",
               "keygate"};
  app.require_subcommand(1);
  app.fallthrough();
  app.footer(
      "The database (a SQLite file, not :memory: or a file: URI; or a PostgreSQL URL, "
      "postgresql://...) defaults to $KEYGATE_DB, else ./keygate.db. $KEYGATE_PEPPER_FILE: a file "
      "holding the HMAC pepper (32+ bytes) the "
      "servers use. $KEYGATE_KEK_FILE: a key-encryption key (32+ bytes) that turns on "
      "recoverable keys. $KEYGATE_WEBHOOK_STATE, $KEYGATE_WEBHOOK_SECRET_FILE, "
      "$KEYGATE_WEBHOOK_SECRET_PER_KEY=1: as --webhook-state, --webhook-secret-file, "
      "--webhook-secret-per-key.\nExit status: 0 ok; 1 verify "
      "rejected the token; 2 usage error; 3 the command failed.\nRun 'keygate <command> --help' "
      "for a command's options.");
  Globals g;
  g.db = DefaultDb();
  g.db_source = g.db == "./keygate.db" ? "database" : "$KEYGATE_DB";  // --db: set below
  g.actor = DefaultActor();
  CLI::Option* db_option = app.add_option(
      "--db", g.db,
      "SQLite database file, or PostgreSQL URL postgresql://... (default: $KEYGATE_DB or "
      "./keygate.db)");
  app.add_option("--db-schema", g.db_schema,
                 "PostgreSQL only: the schema holding keygate's tables (default: keygate)");
  app.add_flag("--json", g.json, "Machine-readable JSON on stdout");
  app.add_option("--actor", g.actor,
                 "Who the audit log names for a change (default: $KEYGATE_ACTOR, $USER)");
  app.add_flag("--allow-internal-webhooks", g.allow_internal_webhooks,
               "Accept webhook URLs naming loopback, private or link-local addresses");
  app.add_flag("--allow-foreign-db", g.allow_foreign_db,
               "Open a database file another user owns, or group or others may write (warns)");
  app.add_flag("--allow-shared-pepper", g.allow_shared_pepper,
               "Read a $KEYGATE_PEPPER_FILE that group or others may read or write (warns)");
  if (const char* kek = std::getenv("KEYGATE_KEK_FILE"); kek != nullptr && *kek != '\0') {
    g.kek_file = kek;
    g.kek_source = "$KEYGATE_KEK_FILE";
  }
  g.previous_kek_files = DefaultPreviousKeks();
  CLI::Option* kek_option =
      app.add_option("--kek-file", g.kek_file,
                     "Key-encryption key file (32+ bytes, mode 0600): keep new tokens "
                     "recoverable, allow reveal (default: $KEYGATE_KEK_FILE; none: off)");
  app.add_option("--previous-kek-file", g.previous_kek_files,
                 "An older key-encryption key, to open what it sealed (repeatable; default: "
                 "$KEYGATE_PREVIOUS_KEK_FILES, ':'-separated)");
  app.add_flag("--allow-shared-kek", g.allow_shared_kek,
               "Read key-encryption key files that group or others may read or write (warns)");
  if (const char* state = std::getenv("KEYGATE_WEBHOOK_STATE");
      state != nullptr && *state != '\0') {
    g.webhook_state = state;
    g.webhook_state_source = "$KEYGATE_WEBHOOK_STATE";
  }
  if (const char* secrets = std::getenv("KEYGATE_WEBHOOK_SECRET_FILE");
      secrets != nullptr && *secrets != '\0') {
    g.webhook_secret_file = secrets;
    g.webhook_secret_source = "$KEYGATE_WEBHOOK_SECRET_FILE";
  }
  CLI::Option* webhook_state_option = app.add_option(
      "--webhook-state", g.webhook_state,
      "The webhook dispatcher's state file, its queue and delivery log: serve runs the "
      "dispatcher on it, webhooks reads it (default: $KEYGATE_WEBHOOK_STATE; none: webhooks off)");
  CLI::Option* webhook_secret_option = app.add_option(
      "--webhook-secret-file", g.webhook_secret_file,
      "Webhook signing secrets, one whsec_... a line, the current one first (mode 0600; default: "
      "$KEYGATE_WEBHOOK_SECRET_FILE)");
  app.add_flag("--allow-shared-webhook-secret", g.allow_shared_webhook_secret,
               "Read a webhook secret file that group or others may read or write (warns)");
  if (const char* per_key = std::getenv("KEYGATE_WEBHOOK_SECRET_PER_KEY");
      per_key != nullptr && std::string_view(per_key) == "1") {
    g.webhook_secret_per_key = true;
  }
  app.add_flag("--webhook-secret-per-key", g.webhook_secret_per_key,
               "Give each key with a webhook URL its own signing secret, sealed with --kek-file "
               "(create prints it once; default: $KEYGATE_WEBHOOK_SECRET_PER_KEY=1)");

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

  std::string reveal_id;
  CLI::App* reveal = app.add_subcommand(
      "reveal", "Print a recoverable key's token again (needs --kek-file; audited)");
  reveal->add_option("KEY_ID", reveal_id, "The key id (key_...)")->required();
  reveal->callback([&] { run = [&] { return RunReveal(g, reveal_id); }; });

  CLI::App* reseal = app.add_subcommand(
      "reseal",
      "Rewrap every recoverable key's token under --kek-file (after a KEK rotation; the old "
      "KEK as --previous-kek-file)");
  reseal->callback([&] { run = [&] { return RunReseal(g); }; });

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

  AuditArgs aa;
  CLI::App* audit =
      app.add_subcommand("audit", "Show the audit log (who changed which key, when), oldest first");
  audit->add_option("--key", aa.key, "Only this key's entries (key_...)");
  audit->add_option("--actor", aa.actor, "Only entries by this actor");
  audit->add_option("--since", aa.since,
                    "Only entries at or after: a duration ago (24h, 7d) or RFC 3339 time");
  audit->add_option("--until", aa.until,
                    "Only entries before: a duration ago (1h) or RFC 3339 time");
  audit->add_option("--limit", aa.limit, "Print at most N entries (default: all)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}));
  audit->add_option("--after", aa.after, "Only entries after this sequence number (resume)");
  audit->callback([&] { run = [&] { return RunAudit(g, aa); }; });

  CLI::App* webhooks = app.add_subcommand(
      "webhooks", "Read the webhook delivery log (--webhook-state: the dispatcher's state file)");
  webhooks->require_subcommand(1);
  WebhookDeliveriesArgs wda;
  CLI::App* deliveries = webhooks->add_subcommand(
      "deliveries",
      "Webhook messages, newest first: webhook-id, type, key, URL, state, and each attempt");
  deliveries->add_option("KEY_ID", wda.key, "Only this key's messages (default: every key's)");
  deliveries->add_option("--limit", wda.limit, "At most N messages (1-1000, default 50)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000}));
  std::string roll_secret_id;
  std::string roll_secret_overlap = "0s";
  CLI::App* roll_secret = webhooks->add_subcommand(
      "roll-secret",
      "Give a key a new webhook signing secret, printed once (--webhook-secret-per-key)");
  roll_secret->add_option("KEY_ID", roll_secret_id, "The key id (key_...)")->required();
  roll_secret->add_option("--overlap", roll_secret_overlap,
                          "How long the previous secret keeps signing too, e.g. 24h (default: "
                          "0s, it stops at once, as roll --grace)");
#ifdef KEYGATE_HAVE_WEBHOOKS
  deliveries->callback([&] { run = [&] { return RunWebhookDeliveries(g, wda); }; });
  roll_secret->callback(
      [&] { run = [&] { return RunWebhookRollSecret(g, roll_secret_id, roll_secret_overlap); }; });
#else
  for (CLI::App* c : {deliveries, roll_secret}) {
    c->callback([&] {
      run = []() -> int { throw UsageError{absl::StrCat("webhooks: ", kBuiltWithoutWebhooks)}; };
    });
  }
#endif

  CLI::App* scopes = app.add_subcommand("scopes", "List the deployment's scopes");
  scopes->callback([&] { run = [&] { return RunScopes(g); }; });
  CLI::App* envs = app.add_subcommand("envs", "List the deployment's environments");
  envs->callback([&] { run = [&] { return RunEnvs(g); }; });

#ifdef KEYGATE_HAVE_SERVE
  ServeArgs sa;
  CLI::App* serve = app.add_subcommand(
      "serve", "Serve the admin API over HTTPS on this database (prints its URL)");
  serve->add_option("--listen", sa.listen, "Address to listen on (default: 127.0.0.1)");
  serve->add_option("--port", sa.port, "HTTPS port (default: 8443; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  serve->add_option("--cert", sa.cert, "TLS certificate chain (PEM; default: self-signed)");
  serve->add_option("--key", sa.key, "TLS private key (PEM)");
  serve->add_option("--write-cert", sa.write_cert,
                    "Write the self-signed certificate (not its key) to this file");
  serve->add_option("--port-file", sa.port_file, "Write the port to this file once listening");
  serve->add_option("--env,--environment", sa.env,
                    "Environment of the admin keys it accepts (default: production)");
  serve->add_option("--base-path", sa.base_path, "Where the API is mounted (default: /admin)");
  serve
      ->add_option("--webhook-threads", sa.webhook_threads,
                   "With --webhook-state: deliveries at once, at most one per key (default: 4)")
      ->check(CLI::Range(1, 64));
  serve->add_option("--webhook-ca-file", sa.webhook_ca_file,
                    "With --webhook-state: trust these certificate authorities (PEM) for webhook "
                    "receivers instead of the system's");
  serve->add_option("--webhook-expiring-lead", sa.webhook_expiring_lead,
                    "With --webhook-state: send key.expiring this long before a key expires "
                    "(default: 7d; 0s: never)");
  serve->callback([&] { run = [&] { return RunServe(g, sa); }; });
#endif

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
  if (kek_option->count() > 0) g.kek_source = "--kek-file";
  if (webhook_state_option->count() > 0) g.webhook_state_source = "--webhook-state";
  if (webhook_secret_option->count() > 0) {
    g.webhook_secret_source = "--webhook-secret-file";
    g.webhook_secret_flag = true;
  }
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
