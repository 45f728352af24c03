// Internal to the `keygate` command-line tool: the options every command
// shares, opening the database, printing, and the commands themselves. main.cc
// wires the options to these; each command returns the process exit status
// (main.cc lists them) or throws UsageError.
#ifndef KEYGATE_SRC_CLI_COMMANDS_H_
#define KEYGATE_SRC_CLI_COMMANDS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "keygate/deployment.h"
#include "keygate/key.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#ifdef KEYGATE_HAVE_WEBHOOKS
#include "keygate/webhooks/webhook_dispatcher.h"
#endif

namespace keygate::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitDenied = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitFailed = 3;

// A usage problem found after parsing (reported like a CLI11 error).
struct UsageError {
  std::string message;
};

struct Globals {
  // A SQLite file path, or a PostgreSQL URL (postgresql://... or postgres://...).
  std::string db;
  std::string db_source;                 // where `db` came from, for messages
  std::optional<std::string> db_schema;  // --db-schema: PostgreSQL only (default "keygate")
  bool json = false;
  std::string actor;
  bool allow_internal_webhooks = false;
  bool allow_shared_pepper = false;
  bool allow_foreign_db = false;
  // Recoverable keys: the key-encryption key's file (--kek-file, else $KEYGATE_KEK_FILE; empty:
  // off) and older ones still needed to open what they sealed (--previous-kek-file, else
  // $KEYGATE_PREVIOUS_KEK_FILES, colon-separated).
  std::string kek_file;
  std::string kek_source;  // where `kek_file` came from, for messages
  std::vector<std::string> previous_kek_files;
  bool allow_shared_kek = false;
  // Webhooks (`serve` runs the dispatcher, `webhooks` reads its log): the dispatcher's state
  // file (--webhook-state, else $KEYGATE_WEBHOOK_STATE; empty: off) and the file of its signing
  // secrets, one whsec_... a line, the current one first (--webhook-secret-file, else
  // $KEYGATE_WEBHOOK_SECRET_FILE).
  std::string webhook_state;
  std::string webhook_state_source;  // where `webhook_state` came from, for messages
  std::string webhook_secret_file;
  std::string webhook_secret_source;  // where `webhook_secret_file` came from
  bool webhook_secret_flag = false;   // given as --webhook-secret-file, not by the environment
  bool allow_shared_webhook_secret = false;
  // Keys get webhook secrets of their own, sealed with the KEK (--webhook-secret-per-key, else
  // $KEYGATE_WEBHOOK_SECRET_PER_KEY=1): `create` prints a key's once, `webhooks roll-secret`
  // replaces it.
  bool webhook_secret_per_key = false;
};

// An open database (SQLite or PostgreSQL) and a manager over it.
struct Session {
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<KeyStore> store;
  std::unique_ptr<KeyManager> manager;
  std::shared_ptr<const Envelope> envelope;  // --kek-file's; null without
};

// Shown with a key's own webhook secret (create, webhooks roll-secret).
inline constexpr char kWebhookSecretWarning[] =
    "This webhook secret is shown only once (it is kept encrypted, for signing): give it to the "
    "key's webhook receiver now.";

// Error text may quote user input or stored records: redacted (tokens) and
// escaped (control characters), like every other line we print.
std::string SafeMessage(std::string_view message);

// Prints the error (SafeMessage) and returns kExitFailed.
int Fail(const absl::Status& s);

// Notices go to stderr, escaped like everything else we print.
void Warn(std::string_view message);

// Whether `db` names a PostgreSQL database (libpq's URI form) rather than a SQLite file.
bool IsPostgresUrl(std::string_view db);

// Throws UsageError for a database name that is neither a plain file path nor a PostgreSQL URL
// (nor one in a build without PostgreSQL support), and for --db-schema without such a URL. A
// URL is never echoed: it may hold a password.
void CheckDatabasePath(const Globals& g);

absl::StatusOr<std::shared_ptr<const Deployment>> LoadDeployment(const Globals& g);

// Opens the SQLite file or the PostgreSQL database that `g.db` names (create_if_missing: SQLite
// only; a PostgreSQL database must exist, its tables are created on first use). Errors name the
// database without a password. Throws UsageError as CheckDatabasePath.
absl::StatusOr<Session> OpenSession(const Globals& g, bool create_if_missing,
                                    std::shared_ptr<const Deployment> deployment = nullptr);

// Key ids are "key_" + 22 base62; anything else (in particular a pasted
// token) is refused (UsageError, naming `what`) without being echoed.
void CheckKeyId(const std::string& id, std::string_view what = "KEY_ID");

void PrintRecord(const Globals& g, const KeyRecord& r);

// The token goes to stdout alone (easy to capture); the warning to stderr.
void PrintCreated(const Globals& g, const CreatedKey& k, std::string_view what);

// ---------------------------------------------------------------------------
// Commands (commands_keys.cc, commands_info.cc, commands_audit.cc).

struct CreateArgs {
  std::string name, owner, env, kind = "general", description, expires, rate, webhook;
  std::optional<std::uint32_t> burst;
  std::vector<std::string> scopes, accounts, meta;
};

int RunCreate(const Globals& g, const CreateArgs& a);

struct ListArgs {
  std::string env, owner, state, kind, search, cursor;
  std::size_t limit = 50;
  bool all = false;
};

int RunList(const Globals& g, const ListArgs& a);

int RunShow(const Globals& g, const std::string& id);

struct ModifyArgs {
  std::string id;
  std::optional<std::string> name, description, expires, rate, webhook;
  std::optional<std::uint32_t> burst;
  std::vector<std::string> scopes, accounts, meta, unset_meta;
  bool no_scopes = false, no_expiry = false, no_rate_limit = false, no_accounts = false;
  std::optional<std::uint64_t> if_version;
};

int RunModify(const Globals& g, const ModifyArgs& a);

enum class StateChange { kRevoke, kRestore };
int RunStateChange(const Globals& g, const std::string& id, StateChange change);

int RunDelete(const Globals& g, const std::string& id, bool yes);

int RunRoll(const Globals& g, const std::string& id, const std::string& grace_text);
// Recoverable keys (needs a KEK): print a key's token (recorded in the audit log); rewrap every
// recoverable key under the primary KEK after a rotation.
int RunReveal(const Globals& g, const std::string& id);
int RunReseal(const Globals& g);

struct VerifyArgs {
  std::string token;
  std::string env;
  std::vector<std::string> scopes;
  std::string account;
};

int RunVerify(const Globals& g, const VerifyArgs& a);

int RunScopes(const Globals& g);

int RunEnvs(const Globals& g);

struct AuditArgs {
  std::string key, since, until;     // empty: no filter
  std::optional<std::string> actor;  // unset: any actor
  std::optional<std::size_t> limit;  // at most this many entries (unset: all)
  std::uint64_t after = 0;           // only entries with a larger sequence
};
int RunAudit(const Globals& g, const AuditArgs& a);

// `keygate serve` (commands_serve.cc): the admin API over HTTPS until SIGINT or SIGTERM; with
// --webhook-state, a webhook dispatcher on the same store.
struct ServeArgs {
  std::string listen = "127.0.0.1";
  int port = 8443;                 // 0: any free port
  std::string cert, key;           // PEM files; none: a self-signed certificate for localhost
  std::string write_cert;          // where to write the self-signed certificate (not its key)
  std::string port_file;           // where to write the port once listening
  std::string env = "production";  // the environment of the admin keys it accepts
  std::string base_path = "/admin";
  std::optional<int> webhook_threads;        // unset: the dispatcher's default
  std::string webhook_ca_file;               // empty: the system's certificate authorities
  std::string webhook_expiring_lead = "7d";  // key.expiring this long before; 0s: never
};
int RunServe(const Globals& g, const ServeArgs& a);

// The usage error of webhook commands and flags in a keygate built without keygate::webhooks.
inline constexpr char kBuiltWithoutWebhooks[] =
    "this keygate was built without webhook delivery (keygate::webhooks; Debian: "
    "libcurl4-openssl-dev, then rebuild)";

// `keygate webhooks ...` (commands_webhooks.cc, built with keygate::webhooks).
struct WebhookDeliveriesArgs {
  std::string key;  // empty: every key's
  std::size_t limit = 50;
};
int RunWebhookDeliveries(const Globals& g, const WebhookDeliveriesArgs& a);
// `keygate webhooks roll-secret KEY_ID [--overlap D]`: a new signing secret for the key, printed
// once; the previous one signs too for the overlap.
int RunWebhookRollSecret(const Globals& g, const std::string& id, const std::string& overlap);

#ifdef KEYGATE_HAVE_WEBHOOKS
// How `serve` runs the dispatcher.
struct WebhookRunOptions {
  std::optional<int> threads;
  std::string ca_file;
  absl::Duration expiring_lead = absl::Hours(24 * 7);
};

// A dispatcher on `store` with the state file and secrets `g` names (not started), opening keys'
// own secrets with the KEK when --kek-file is given. `run`: for delivering (the secret file is
// then required unless keys have their own secrets); null: only to read the delivery log (the
// state file must exist; nothing is signed, so the secret file is optional). Throws UsageError
// for a missing or conflicting flag; errors name the flag or variable that named the file.
absl::StatusOr<std::unique_ptr<WebhookDispatcher>> OpenWebhookDispatcher(
    const Globals& g, std::shared_ptr<KeyStore> store, std::shared_ptr<const Envelope> envelope,
    const WebhookRunOptions* run);
#endif

}  // namespace keygate::cli

#endif  // KEYGATE_SRC_CLI_COMMANDS_H_
