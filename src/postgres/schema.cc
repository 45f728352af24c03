// Schema of the PostgreSQL store (schema.h).
//
// Tables (in the store's schema, version 6):
//   keys          one row per key, the record columns of internal/record_columns.h plus
//                 `name_lower` (the ASCII-lowered name that search matches) and `sequence` (of
//                 the key's latest change; unique, indexed: the change feed's live keys). Text
//                 compared or ordered (id, owner, name_lower) uses the "C" collation: byte
//                 order, whatever the database's locale, as cursors and the other stores order
//                 ids.
//   digests       every digest that identifies a key: its current one and, during a roll's
//                 grace period, the previous one. Its primary key makes digests unique across
//                 current AND rolled secrets.
//   changes       the deleted keys (tombstones): one row per key id with the sequence of its
//                 deletion. The change feed is the keys by sequence merged with these.
//   audit         the audit log (keygate/audit.h), keyed by the change's sequence, written in
//                 the same transaction; indexed by (key_id, sequence) and (actor, sequence).
//   audit_cursors each named consumer's acknowledged sequence.
//   name_trigrams every run of three characters that is or was in a key's name_lower (one row
//                 each; never shrinks). A name search for one or two characters, which gives
//                 pg_trgm no trigram, asks the index for the runs that hold it
//                 (postgres_key_store.cc, List).
//   sequence_counter  one row: the last sequence assigned. A write takes the next numbers with
//                 UPDATE ... RETURNING, which row-locks the counter until the write commits, so
//                 writers commit in sequence order and the change feed has no gaps (a sequence
//                 object would hand out numbers that commit in any order, and a reader could
//                 pass a number whose transaction commits later).
//   schema_version  one row: the schema's version.
// Indexes: keys_one_active_personal (partial, unique) enforces "at most one ACTIVE personal key
// per (owner, environment)" in the database, so two servers provisioning at once cannot both
// succeed; keys_owner serves the owner filter in id order.
//
// Version 2 (from 1): name search through a trigram index (pg_trgm, GIN over name_lower), which
// answers a substring search in milliseconds at a million keys instead of a scan.
// Version 3 (from 2): the sequence moves onto the keys row and `changes` keeps only tombstones
// (it had a row per key), so that the feed reads keys in sequence order instead of joining each
// change row to its key: a cold load of a million keys reads one index range, not a million
// primary-key probes (docs/design.md, "The PostgreSQL store").
// Version 4 (from 3): name_trigrams, filled from the stored names, and keys_short_name (the keys
// whose name has fewer than three characters), so that a search for one or two characters that
// few names hold is answered through the indexes instead of a scan.
// Version 5 (from 4): keys.sealed_token, a recoverable key's sealed token (keygate/key.h); ''
// for existing keys (not recoverable); audit.webhook_url, the key's webhook URL at each change
// (where webhook delivery sends it), '' for existing entries. A column with a constant default
// rewrites no row. A keygate process that predates it and was running when the schema moved on (a
// new one refuses a newer schema) writes '' on insert and leaves the column alone on update, a roll
// included: KeyManager::RevealToken checks the opened token against the digest, so a stale copy is
// refused, never returned. Its bulk insert fails (its staging copy has one column too many)
// rather than write anything wrong.
// Version 6 (from 5): keys.sealed_webhook_secret, a key's sealed webhook signing secrets
// (keygate/key.h); '' for existing keys (signed with the deployment's secrets). As in version 5,
// a process that predates it leaves the column alone on update and fails its bulk insert.

#include "postgres/schema.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace keygate::internal {
namespace {

// pg_advisory_xact_lock key of migrations: "KGAT" "MIGR" (one lock for every schema: creating
// the shared pg_trgm extension must not race either).
constexpr std::int64_t kMigrationLockKey = 0x4B4741544D494752;

// $S: the quoted schema.
constexpr char kVersion1[] = R"sql(
CREATE TABLE $S.keys (
  id text COLLATE "C" PRIMARY KEY,
  name text NOT NULL,
  name_lower text COLLATE "C" NOT NULL,
  description text NOT NULL,
  owner text COLLATE "C" NOT NULL,
  kind bigint NOT NULL,
  environment text COLLATE "C" NOT NULL,
  scopes text NOT NULL,
  state bigint NOT NULL,
  created_us bigint NOT NULL,
  updated_us bigint NOT NULL,
  expires_us bigint,
  last_used_us bigint,
  rate_limit_rate bigint,
  rate_limit_period_us bigint,
  rate_limit_burst bigint,
  webhook_url text NOT NULL,
  accounts text NOT NULL,
  metadata text NOT NULL,
  digest bytea NOT NULL,
  hint text NOT NULL,
  previous_digest bytea,
  previous_hint text,
  previous_valid_until_us bigint,
  version bigint NOT NULL
);
CREATE INDEX keys_owner ON $S.keys (owner, id);
CREATE UNIQUE INDEX keys_one_active_personal ON $S.keys (owner, environment)
  WHERE kind = 1 AND state = 1;
CREATE TABLE $S.digests (
  digest bytea PRIMARY KEY,
  key_id text COLLATE "C" NOT NULL
);
CREATE INDEX digests_key ON $S.digests (key_id);
CREATE TABLE $S.changes (
  key_id text COLLATE "C" PRIMARY KEY,
  sequence bigint NOT NULL UNIQUE
);
CREATE TABLE $S.audit (
  sequence bigint PRIMARY KEY,
  at_us bigint NOT NULL,
  type bigint NOT NULL,
  actor text COLLATE "C" NOT NULL,
  key_id text COLLATE "C" NOT NULL,
  owner text NOT NULL,
  fields text NOT NULL,
  version bigint NOT NULL
);
CREATE INDEX audit_key ON $S.audit (key_id, sequence);
CREATE INDEX audit_actor ON $S.audit (actor, sequence);
CREATE TABLE $S.audit_cursors (
  consumer text COLLATE "C" PRIMARY KEY,
  sequence bigint NOT NULL
);
CREATE TABLE $S.sequence_counter (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  last bigint NOT NULL
);
INSERT INTO $S.sequence_counter (last) VALUES (0);
)sql";

// $T: the schema pg_trgm lives in (quoted).
constexpr char kVersion2[] = R"sql(
CREATE INDEX keys_name_trgm ON $S.keys USING gin (name_lower $T.gin_trgm_ops);
)sql";

// Every key has a change row (written in its transaction), so every key gets its sequence.
constexpr char kVersion3[] = R"sql(
ALTER TABLE $S.keys ADD COLUMN sequence bigint;
UPDATE $S.keys k SET sequence = c.sequence FROM $S.changes c WHERE c.key_id = k.id;
DELETE FROM $S.changes c USING $S.keys k WHERE k.id = c.key_id;
ALTER TABLE $S.keys ALTER COLUMN sequence SET NOT NULL;
CREATE UNIQUE INDEX keys_sequence ON $S.keys (sequence);
)sql";

// Characters as PostgreSQL counts them in the database's encoding. A trigger records each
// written name's runs, whichever keygate writes it (one that predates version 4 and still runs
// during a rolling upgrade included); a batch insert writes its names' runs itself and sets
// keygate.name_trigrams_written, which costs far less than cutting each name in the server.
constexpr char kVersion4[] = R"sql(
CREATE TABLE $S.name_trigrams (t text COLLATE "C" PRIMARY KEY);
INSERT INTO $S.name_trigrams (t)
  SELECT DISTINCT substr(k.name_lower, p.i, 3)
  FROM $S.keys k, generate_series(1, char_length(k.name_lower) - 2) p(i);
CREATE INDEX keys_short_name ON $S.keys (id) WHERE char_length(name_lower) < 3;
CREATE FUNCTION $S.record_name_trigrams() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO $S.name_trigrams (t)
    SELECT DISTINCT substr(NEW.name_lower, p.i, 3)
    FROM generate_series(1, char_length(NEW.name_lower) - 2) p(i)
    ON CONFLICT DO NOTHING;
  RETURN NULL;
END
$fn$;
CREATE TRIGGER keys_name_trigrams_insert AFTER INSERT ON $S.keys FOR EACH ROW
  WHEN (current_setting('keygate.name_trigrams_written', true) IS DISTINCT FROM 'on')
  EXECUTE FUNCTION $S.record_name_trigrams();
CREATE TRIGGER keys_name_trigrams_update AFTER UPDATE OF name_lower ON $S.keys FOR EACH ROW
  WHEN (OLD.name_lower IS DISTINCT FROM NEW.name_lower)
  EXECUTE FUNCTION $S.record_name_trigrams();
)sql";

constexpr char kVersion5[] = R"sql(
ALTER TABLE $S.keys ADD COLUMN sealed_token text NOT NULL DEFAULT '';
ALTER TABLE $S.audit ADD COLUMN webhook_url text NOT NULL DEFAULT '';
)sql";

constexpr char kVersion6[] = R"sql(
ALTER TABLE $S.keys ADD COLUMN sealed_webhook_secret text NOT NULL DEFAULT '';
)sql";

absl::StatusOr<std::string> TrigramSchema(PgConn& conn, std::string_view store_schema,
                                          absl::Time deadline) {
  const char kFind[] =
      "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
      "WHERE e.extname = 'pg_trgm'";
  absl::StatusOr<PgResult> r = conn.Exec(kFind, deadline);
  if (!r.ok()) return r.status();
  if (r->rows() == 0) {
    // In public, shared by every schema; a role that may not create there (PostgreSQL 15
    // revokes CREATE on public from other roles) creates it in the store's schema. Inside a
    // savepoint: a failed attempt must not abort the migration's transaction.
    const std::string attempts[] = {"public", std::string(store_schema)};
    absl::Status last;
    for (const std::string& target : attempts) {
      if (absl::Status st = conn.ExecScript("SAVEPOINT trgm", deadline); !st.ok()) return st;
      absl::StatusOr<PgResult> created = conn.Exec(
          absl::StrCat("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA ", QuoteIdent(target)),
          deadline);
      if (created.ok()) {
        last = conn.ExecScript("RELEASE SAVEPOINT trgm", deadline);
        if (!last.ok()) return last;
        break;
      }
      if (created.status().code() == absl::StatusCode::kUnavailable) return created.status();
      last = created.status();
      if (absl::Status st = conn.ExecScript("ROLLBACK TO SAVEPOINT trgm", deadline); !st.ok()) {
        return st;
      }
    }
    if (!last.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the pg_trgm extension is missing and could not be created (Debian: "
                       "postgresql-contrib; or CREATE EXTENSION pg_trgm as a superuser): ",
                       last.message()));
    }
    r = conn.Exec(kFind, deadline);
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return absl::InternalError("pg_trgm: created but not found");
  }
  return std::string(r->row(0).Text(0));
}

}  // namespace

std::string QuoteIdent(std::string_view name) {
  return absl::StrCat(
      "\"", absl::StrReplaceAll(absl::string_view(name.data(), name.size()), {{"\"", "\"\""}}),
      "\"");
}

absl::StatusOr<int> SchemaVersion(PgConn& conn, std::string_view schema, absl::Time deadline) {
  PgParams p;
  p.BindText(1, absl::StrCat(QuoteIdent(schema), ".schema_version"));
  absl::StatusOr<PgResult> exists = conn.Exec("SELECT to_regclass($1) IS NOT NULL", p, deadline);
  if (!exists.ok()) return exists.status();
  if (!exists->row(0).Bool(0)) return 0;
  absl::StatusOr<PgResult> v = conn.Exec(
      absl::StrCat("SELECT version FROM ", QuoteIdent(schema), ".schema_version"), deadline);
  if (!v.ok()) return v.status();
  if (v->rows() != 1) {
    return absl::DataLossError(absl::StrCat("schema ", std::string(schema), ": schema_version has ",
                                            v->rows(), " rows, expected 1"));
  }
  return static_cast<int>(v->row(0).Int(0));
}

absl::Status MigrateSchema(PgConn& conn, std::string_view schema, int target, absl::Time deadline) {
  const std::string s = QuoteIdent(schema);
  for (;;) {
    if (absl::Status st = conn.ExecScript("BEGIN", deadline); !st.ok()) return st;
    // Rolls back on every early return (a no-op after COMMIT).
    struct Rollback {
      PgConn& c;
      absl::Time d;
      bool done = false;
      ~Rollback() {
        if (!done && !c.broken()) (void)c.ExecScript("ROLLBACK", d);
      }
    } rollback{conn, deadline};
    // The migration's own deadline, not a call's: building an index takes its time.
    const std::int64_t ms =
        std::max<std::int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (absl::Status st = conn.ExecScript(
            absl::StrCat("SET LOCAL statement_timeout = ", ms, "; SET LOCAL lock_timeout = ", ms),
            deadline);
        !st.ok()) {
      return st;
    }
    PgParams lock;
    lock.BindInt(1, kMigrationLockKey);
    if (absl::StatusOr<PgResult> r = conn.Exec("SELECT pg_advisory_xact_lock($1)", lock, deadline);
        !r.ok()) {
      return r.status();
    }
    absl::StatusOr<int> version = SchemaVersion(conn, schema, deadline);
    if (!version.ok()) return version.status();
    if (*version > target) {
      return absl::FailedPreconditionError(
          absl::StrCat("schema ", std::string(schema), ": version ", *version,
                       " is newer than this keygate's (", target, "); upgrade keygate"));
    }
    if (*version == target) {
      rollback.done = true;
      return conn.ExecScript("COMMIT", deadline);
    }
    std::string sql;
    if (*version == 0) {
      sql = absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", s, ";\n", "CREATE TABLE ", s,
                         ".schema_version (version bigint NOT NULL);\n", "INSERT INTO ", s,
                         ".schema_version VALUES (0);\n",
                         absl::StrReplaceAll(kVersion1, {{"$S", s}}));
    } else if (*version == 1) {
      absl::StatusOr<std::string> trgm = TrigramSchema(conn, schema, deadline);
      if (!trgm.ok()) return trgm.status();
      sql = absl::StrReplaceAll(kVersion2, {{"$S", s}, {"$T", QuoteIdent(*trgm)}});
    } else if (*version == 2) {
      sql = absl::StrReplaceAll(kVersion3, {{"$S", s}});
    } else if (*version == 3) {
      sql = absl::StrReplaceAll(kVersion4, {{"$S", s}});
    } else if (*version == 4) {
      sql = absl::StrReplaceAll(kVersion5, {{"$S", s}});
    } else if (*version == 5) {
      sql = absl::StrReplaceAll(kVersion6, {{"$S", s}});
    }
    absl::StrAppend(&sql, "UPDATE ", s, ".schema_version SET version = ", *version + 1, ";");
    if (absl::Status st = conn.ExecScript(sql, deadline); !st.ok()) return st;
    rollback.done = true;
    if (absl::Status st = conn.ExecScript("COMMIT", deadline); !st.ok()) return st;
  }
}

}  // namespace keygate::internal
