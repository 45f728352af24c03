// Name search and the List query of the SQLite KeyStore: the filter as SQL,
// name_contains answered through the trigram index (key_names, schema.cc)
// or by walking the keys in id order, and the page cursor. Private to
// keygate::sqlite.
#ifndef KEYGATE_SRC_SQLITE_LIST_QUERY_H_
#define KEYGATE_SRC_SQLITE_LIST_QUERY_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "keygate/key_store.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {

// What the name index holds for a name: lowered, plus the terminator that
// lets 2-character needles be found through trigrams (see schema.cc).
std::string NameKey(std::string_view name);

// The key id a List cursor continues after ("" for an empty cursor: the
// first page). kInvalidArgument when `cursor` is not one this store returned.
absl::StatusOr<std::string> DecodeListCursor(std::string_view cursor);

// One page of at most `limit` keys matching `f` with ids after `after`, in
// id order; the caller holds the store mutex. `path` names the file in
// errors.
absl::StatusOr<ListPage> ListKeys(SqliteDb& db, const ListFilter& f, const std::string& after,
                                  std::size_t limit, std::string_view path);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_SQLITE_LIST_QUERY_H_
