// Encoding a KeyRecord as a key row and decoding a stored row. Private to keygate::sqlite;
// its own unit so that fuzz/record_row_fuzz.cc can feed it any row a damaged
// or hand-edited database could hold.
#ifndef KEYGATE_SRC_SQLITE_RECORD_ROW_H_
#define KEYGATE_SRC_SQLITE_RECORD_ROW_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "internal/record_columns.h"  // TimeToMicros, MicrosToTime, ToLowerAscii
#include "keygate/key.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {

// Decodes the kRecordColumns of the current row of `s`, starting at column
// `first`. Errors: kDataLoss "sqlite <path>: <KeyLabel(id)>: corrupt row
// (column <name>)" (record_columns.h: DecodeRecordColumns).
absl::StatusOr<KeyRecord> DecodeRecord(const Statement& s, int first, std::string_view path);

// Binds ?1..?23 the record columns of `r` but version (record_columns.h), ?24 the lowered
// name, ?28 the sealed token and ?29 the sealed webhook secret, as kInsertKeySql and kUpdateKeySql
// (sqlite_key_store.cc) name them; the caller binds ?25 version, ?26 change_seq and ?27 pk.
void BindRecord(Statement& s, const KeyRecord& r);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_RECORD_ROW_H_
