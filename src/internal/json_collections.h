// Minimal JSON for the stores' list/map columns (SQLite, PostgreSQL): strings, arrays of strings
// and flat string-to-string objects. Kept in JSON (rather than a private encoding) so operators
// can read the columns in the database's shell and query them with its JSON functions.
#ifndef KEYGATE_SRC_INTERNAL_JSON_COLLECTIONS_H_
#define KEYGATE_SRC_INTERNAL_JSON_COLLECTIONS_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "internal/json_string.h"  // AppendJsonString, JsonString

namespace keygate::internal {

// Strings are written byte for byte (internal::AppendJsonStringPreservingBytes):
// a value that is not valid UTF-8 still reads back exactly as given.
std::string EncodeJsonStringArray(const std::vector<std::string>& values);
std::string EncodeJsonStringMap(const std::map<std::string, std::string>& values);

// Strict decoders for what the encoders write (any valid JSON of that shape
// is accepted; whitespace allowed). Return false on anything else.
bool DecodeJsonStringArray(std::string_view json, std::vector<std::string>* out);
bool DecodeJsonStringMap(std::string_view json, std::map<std::string, std::string>* out);

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_JSON_COLLECTIONS_H_
