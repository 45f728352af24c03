// Schema of the SQLite store (schema.h).
//
// Tables (version 6; what changed in versions 2 to 6 is at the end):
//   keys      one row per key. `pk` is an internal integer id (FTS rowid,
//             digests and change-log link); `id` is the public key id. Lists and maps
//             are JSON text; times are integer microseconds since the Unix
//             epoch (NULL: unset; INT64_MIN/MAX: infinite); kind and state are
//             the enum values (kind 1 personal, 2 general; state 1 active,
//             2 revoked). `name_lower` is the ASCII-lowercased name that name
//             search matches.
//   digests   every digest that identifies a key: its current one (slot 0)
//             and, during a roll's grace period, the previous one (slot 1).
//             The primary key makes digests unique across current AND rolled
//             secrets, which a unique index on keys.digest alone could not.
//             No foreign key and no index by key_pk: the store removes a
//             key's digests by value (it knows them from the keys row).
//   changes   the change log: one row per key id holding the sequence of
//             its latest change (the key's older row is deleted when it
//             changes again; AUTOINCREMENT never reuses a sequence, not even
//             after a delete). A new key's pk is the sequence of its insert,
//             so pks are never reused either; changes.key_pk and
//             keys.change_seq point at each other, and reading the log is a
//             range scan plus a rowid lookup per key. A deleted key keeps its
//             row as a tombstone (key_pk 0) so followers learn about the
//             delete; inserting the same id again removes the tombstone
//             (found through the partial index changes_tombstones), so the
//             feed never lists an id twice.
//   key_names FTS5 trigram index over keys.name_key (external content), the
//             lowered name plus a U+0001 terminator, so that every occurrence
//             of a 2-character needle starts some trigram (key_names_vocab
//             lists them): substring search in milliseconds at a million
//             keys. detail=none: the index holds which rows contain each
//             trigram, not where, so a needle is looked up as the AND of its
//             trigrams and the candidates are checked with instr();
//             columnsize=0: no per-row size table (nothing ranks by it). The store maintains it in
//             the same transaction as the row, with explicit statements rather than triggers: a
//             trigger makes every INSERT a statement transaction, and FTS5 flushes its pending
//             index at each statement savepoint, which made bulk inserts five times slower.
//   audit     the audit log (keygate/audit.h): one row per successful write, keyed by the
//             change's sequence and written in the same transaction; `type` is the EventType
//             value, `fields` a JSON array of field names, `version` 0 for a delete. Indexed by
//             (key_id, sequence) and (actor, sequence) for the filters of ReadAudit.
//   audit_cursors  each named consumer's acknowledged sequence (KeyStore::AckAudit).
//
// Indexes: the partial unique index keys_one_active_personal enforces "at
// most one ACTIVE personal key per (owner, environment)" in the database
// itself, so two processes provisioning at once cannot both succeed.
// keys_owner serves the owner filter (in id order, for pagination);
// keys_revoked is partial because revoked keys are few and "active" is
// served by the id order; environment and kind have too few values for an
// index to beat the id-ordered scan, so they have none.
//
// Version 2 (from 1): bulk inserts were 46 k keys/s at a million keys, below
// the 50 k target; the profile put half the insert time in the two tables
// below. The digests table drops its foreign key and its index digests_key:
// in a WITHOUT ROWID table a secondary index repeats the 32-byte primary key,
// so digests_key was as large as the table itself (44 MiB at 1 M keys), and
// the foreign key made every digest insert look its parent up. key_names is
// rebuilt with detail=none and columnsize=0: no position lists, no
// key_names_docsize table. Together: ~75 k keys/s (bench/README.md).
//
// Version 3 (from 2): an id deleted and inserted again left its old
// tombstones in the log, so ChangesSince listed the id once per past delete
// (key_store.h promises one entry per key). Tombstones are now marked by
// key_pk 0 and indexed by id (a partial index: live keys' rows are not in
// it, so inserts of new ids pay one lookup in a small index), and an insert
// removes the id's tombstone. The migration marks the existing tombstones
// and drops those of ids that are live again or were deleted again later (a
// rowid lookup per change row: about a second at a million keys).
//
// Version 4 (from 3): the audit log and its consumer cursors. Existing keys get no entries: the
// log starts at the upgrade.
//
// Version 5 (from 4): keys.sealed_token, a recoverable key's sealed token (keygate/key.h);
// existing keys get '' (not recoverable); audit.webhook_url, the key's webhook URL at each
// change (where webhook delivery sends it); existing entries get ''. Adding a column with a
// constant default rewrites no row.
//
// Version 6 (from 5): keys.sealed_webhook_secret, a key's sealed webhook signing secrets
// (keygate/key.h); existing keys get '' (signed with the deployment's secrets).

#include "sqlite/schema.h"

#include <cstddef>

namespace keygate::internal {

const char* const kMigrations[] = {
    // 0 -> 1: the initial schema.
    R"sql(
CREATE TABLE keys (
  pk INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  name_lower TEXT NOT NULL,
  name_key TEXT GENERATED ALWAYS AS (name_lower || char(1)) VIRTUAL,
  description TEXT NOT NULL,
  owner TEXT NOT NULL,
  kind INTEGER NOT NULL,
  environment TEXT NOT NULL,
  scopes TEXT NOT NULL,
  state INTEGER NOT NULL,
  created_us INTEGER NOT NULL,
  updated_us INTEGER NOT NULL,
  expires_us INTEGER,
  last_used_us INTEGER,
  rate_limit_rate INTEGER,
  rate_limit_period_us INTEGER,
  rate_limit_burst INTEGER,
  webhook_url TEXT NOT NULL,
  accounts TEXT NOT NULL,
  metadata TEXT NOT NULL,
  digest BLOB NOT NULL,
  hint TEXT NOT NULL,
  previous_digest BLOB,
  previous_hint TEXT,
  previous_valid_until_us INTEGER,
  version INTEGER NOT NULL,
  change_seq INTEGER NOT NULL
) STRICT;

CREATE INDEX keys_owner ON keys(owner, id);
CREATE INDEX keys_revoked ON keys(id) WHERE state = 2;
CREATE UNIQUE INDEX keys_one_active_personal ON keys(owner, environment)
  WHERE kind = 1 AND state = 1;

CREATE TABLE digests (
  digest BLOB PRIMARY KEY,
  key_pk INTEGER NOT NULL REFERENCES keys(pk) ON DELETE CASCADE,
  slot INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX digests_key ON digests(key_pk);

CREATE TABLE changes (
  sequence INTEGER PRIMARY KEY AUTOINCREMENT,
  key_id TEXT NOT NULL,
  key_pk INTEGER NOT NULL
) STRICT;

CREATE VIRTUAL TABLE key_names USING fts5(
  name_key, content='keys', content_rowid='pk', tokenize='trigram case_sensitive 1');
CREATE VIRTUAL TABLE key_names_vocab USING fts5vocab(key_names, 'row');
)sql",
    // 1 -> 2: faster bulk inserts (see above). The name index is rebuilt from
    // the keys table; the digests are copied into a table without the foreign
    // key (SQLite cannot drop one in place).
    R"sql(
DROP TABLE key_names_vocab;
DROP TABLE key_names;
CREATE VIRTUAL TABLE key_names USING fts5(
  name_key, content='keys', content_rowid='pk', tokenize='trigram case_sensitive 1',
  detail=none, columnsize=0);
INSERT INTO key_names(key_names) VALUES ('rebuild');
CREATE VIRTUAL TABLE key_names_vocab USING fts5vocab(key_names, 'row');
CREATE TABLE digests_v2 (
  digest BLOB PRIMARY KEY,
  key_pk INTEGER NOT NULL,
  slot INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO digests_v2(digest, key_pk, slot) SELECT digest, key_pk, slot FROM digests;
DROP TABLE digests;
ALTER TABLE digests_v2 RENAME TO digests;
)sql",
    // 2 -> 3: one change row per key id (see above). A row that is not its
    // live key's latest change is a tombstone; of an id's tombstones only the
    // newest stays, and none if the id is live again.
    R"sql(
UPDATE changes SET key_pk = 0 WHERE NOT EXISTS
  (SELECT 1 FROM keys k WHERE k.pk = changes.key_pk AND k.change_seq = changes.sequence);
CREATE INDEX changes_tombstones ON changes(key_id) WHERE key_pk = 0;
DELETE FROM changes WHERE key_pk = 0 AND (
  EXISTS (SELECT 1 FROM keys k WHERE k.id = changes.key_id) OR
  sequence < (SELECT max(c2.sequence) FROM changes c2
              WHERE c2.key_id = changes.key_id AND c2.key_pk = 0));
)sql",
    // 3 -> 4: the audit log (see above).
    R"sql(
CREATE TABLE audit (
  sequence INTEGER PRIMARY KEY,
  at_us INTEGER NOT NULL,
  type INTEGER NOT NULL,
  actor TEXT NOT NULL,
  key_id TEXT NOT NULL,
  owner TEXT NOT NULL,
  fields TEXT NOT NULL,
  version INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_key ON audit(key_id, sequence);
CREATE INDEX audit_actor ON audit(actor, sequence);
CREATE TABLE audit_cursors (
  consumer TEXT PRIMARY KEY,
  sequence INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
)sql",
    // 4 -> 5: recoverable keys, webhook URLs in the audit log (see above).
    R"sql(
ALTER TABLE keys ADD COLUMN sealed_token TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN webhook_url TEXT NOT NULL DEFAULT '';
)sql",
    // 5 -> 6: per-key webhook secrets (see above).
    R"sql(
ALTER TABLE keys ADD COLUMN sealed_webhook_secret TEXT NOT NULL DEFAULT '';
)sql",
};

const std::size_t kMigrationCount = sizeof(kMigrations) / sizeof(kMigrations[0]);

}  // namespace keygate::internal
