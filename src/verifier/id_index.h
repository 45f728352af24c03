// The writer's index from key id to slots (private), kept in each Table's
// `id_index` array: open addressing by a hash of the id. An entry is 0
// (empty), 1 (deleted) or (tag << shift) | (slot + 2), where the tag holds
// bits of the id's hash, so a probe that meets another key's entry almost
// never has to read that key's slot (a cache miss per probe).
//
// Thread safety: writer only (under IndexWriter's lock); readers never read
// the id index.

#ifndef KEYGATE_SRC_VERIFIER_ID_INDEX_H_
#define KEYGATE_SRC_VERIFIER_ID_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/container/inlined_vector.h"

#include "internal/verifier_index.h"

namespace keygate::internal {

// A key has at most two slots (current and previous secret): no allocation.
using SlotList = absl::InlinedVector<std::size_t, 2>;

// Where a probe for `id` starts: the id index entry to prefetch.
std::uint64_t IdIndexHome(const Table& t, std::string_view id) noexcept;

void IdIndexInsert(Table& t, std::string_view id, std::size_t slot);
void IdIndexRemove(Table& t, std::string_view id, std::size_t slot);
// The slots (live or retired) of key `id`.
SlotList IdIndexFind(const Table& t, std::string_view id);
// True if `slot` belongs to key `id` (compared in place, no allocation).
bool IdIs(const Table& t, std::size_t slot, std::string_view id) noexcept;

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_VERIFIER_ID_INDEX_H_
