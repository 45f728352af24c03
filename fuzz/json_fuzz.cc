// libFuzzer target: the JSON list and map columns of the SQLite store
// (src/internal/json_collections.h), which read whatever a database file holds.
// Invariants:
//   - whatever decodes, re-encodes to text that decodes to the same value,
//     and encoding is then stable (decode . encode is the identity on
//     encoder output);
//   - any strings at all (the input cut at NUL bytes, not valid UTF-8
//     included) encode to JSON that decodes back byte for byte, as a list
//     and as a map.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "internal/json_collections.h"

namespace {

using keygate::internal::DecodeJsonStringArray;
using keygate::internal::DecodeJsonStringMap;
using keygate::internal::EncodeJsonStringArray;
using keygate::internal::EncodeJsonStringMap;

void CheckArray(const std::vector<std::string>& values) {
  const std::string json = EncodeJsonStringArray(values);
  std::vector<std::string> back;
  if (!DecodeJsonStringArray(json, &back) || back != values) std::abort();
  if (EncodeJsonStringArray(back) != json) std::abort();
}

void CheckMap(const std::map<std::string, std::string>& values) {
  const std::string json = EncodeJsonStringMap(values);
  std::map<std::string, std::string> back;
  if (!DecodeJsonStringMap(json, &back) || back != values) std::abort();
  if (EncodeJsonStringMap(back) != json) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  std::vector<std::string> list;
  if (DecodeJsonStringArray(in, &list)) CheckArray(list);
  std::map<std::string, std::string> map;
  if (DecodeJsonStringMap(in, &map)) CheckMap(map);

  std::vector<std::string> pieces;
  std::size_t start = 0;
  for (std::size_t nul = in.find('\0'); nul != std::string_view::npos; nul = in.find('\0', start)) {
    pieces.emplace_back(in.substr(start, nul - start));
    start = nul + 1;
  }
  pieces.emplace_back(in.substr(start));
  CheckArray(pieces);
  std::map<std::string, std::string> pairs;
  for (std::size_t i = 0; i + 1 < pieces.size(); i += 2) pairs[pieces[i]] = pieces[i + 1];
  CheckMap(pairs);
  return 0;
}
