// The writer's index from key id to slots (id_index.h).

#include "verifier/id_index.h"

#include <bit>
#include <functional>

namespace keygate::internal {

namespace {

struct IdProbe {
  std::uint64_t pos;
  std::uint32_t tag;    // already shifted into place
  std::uint32_t shift;  // bits below the tag
};

IdProbe StartIdProbe(const Table& t, std::string_view id) noexcept {
  const std::uint64_t h = std::hash<std::string_view>{}(id);
  // slot + 2 <= capacity + 1 < 2^shift.
  const auto shift = static_cast<std::uint32_t>(std::bit_width(t.capacity + 1));
  const std::uint32_t tag = shift >= 32 ? 0u : static_cast<std::uint32_t>((h >> 40) << shift);
  // The position from the hash's low half, the tag from its high bits.
  return {Home(h << 32, t.capacity), tag, shift};
}

inline std::uint32_t SlotBits(const IdProbe& p, std::uint32_t entry) noexcept {
  return p.shift >= 32 ? entry : entry & ((std::uint32_t{1} << p.shift) - 1);
}

}  // namespace

std::uint64_t IdIndexHome(const Table& t, std::string_view id) noexcept {
  return StartIdProbe(t, id).pos;
}

void IdIndexInsert(Table& t, std::string_view id, std::size_t slot) {
  IdProbe p = StartIdProbe(t, id);
  while (t.id_index[p.pos] >= 2) p.pos = NextSlot(p.pos, t.capacity);
  t.id_index[p.pos] = p.tag | static_cast<std::uint32_t>(slot + 2);
}

void IdIndexRemove(Table& t, std::string_view id, std::size_t slot) {
  IdProbe p = StartIdProbe(t, id);
  while (t.id_index[p.pos] != 0) {
    if (t.id_index[p.pos] == (p.tag | static_cast<std::uint32_t>(slot + 2))) {
      t.id_index[p.pos] = 1;
      return;
    }
    p.pos = NextSlot(p.pos, t.capacity);
  }
}

bool IdIs(const Table& t, std::size_t slot, std::string_view id) noexcept {
  const std::uint64_t c = t.slots[slot].ctrl.load(std::memory_order_relaxed);
  if ((c & kFlagIdInExtra) != 0) return t.extras[c >> kExtraShift]->id == id;
  IdEntry packed;
  return PackKeyId(id, &packed) && packed == t.ids[slot];
}

SlotList IdIndexFind(const Table& t, std::string_view id) {
  SlotList out;
  IdProbe p = StartIdProbe(t, id);
  const std::uint32_t tag_mask = ~SlotBits(p, 0xFFFFFFFFu);
  while (t.id_index[p.pos] != 0) {
    const std::uint32_t e = t.id_index[p.pos];
    if (e >= 2 && (e & tag_mask) == p.tag) {
      const std::size_t slot = SlotBits(p, e) - 2;
      if (IdIs(t, slot, id)) out.push_back(slot);
    }
    p.pos = NextSlot(p.pos, t.capacity);
  }
  return out;
}

}  // namespace keygate::internal
