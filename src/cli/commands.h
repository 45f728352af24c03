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
};

// An open database (SQLite or PostgreSQL) and a manager over it.
struct Session {
  std::shared_ptr<const Deployment> deployment;
  std::shared_ptr<KeyStore> store;
  std::unique_ptr<KeyManager> manager;
};

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

// `keygate serve` (commands_serve.cc): the admin API over HTTPS until SIGINT or SIGTERM.
struct ServeArgs {
  std::string listen = "127.0.0.1";
  int port = 8443;                 // 0: any free port
  std::string cert, key;           // PEM files; none: a self-signed certificate for localhost
  std::string write_cert;          // where to write the self-signed certificate (not its key)
  std::string port_file;           // where to write the port once listening
  std::string env = "production";  // the environment of the admin keys it accepts
  std::string base_path = "/admin";
};
int RunServe(const Globals& g, const ServeArgs& a);

}  // namespace keygate::cli

#endif  // KEYGATE_SRC_CLI_COMMANDS_H_
