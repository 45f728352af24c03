// Memory for the verifier's index; see verifier_index.h.

#include "internal/verifier_index.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

#include "internal/base62.h"

namespace keygate::internal {
namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;

}  // namespace

bool PackKeyId(std::string_view id, IdEntry* out) noexcept {
  constexpr std::size_t kTail = 22;
  if (id.size() != 4 + kTail || id.substr(0, 4) != "key_") return false;
  IdEntry e;
  for (std::size_t k = 0; k < kTail; ++k) {
    const std::uint64_t d = kBase62Digit[static_cast<unsigned char>(id[4 + k])];
    if (d == kNotBase62) return false;
    if (k == 0) {
      if (d > 3) return false;
      e.w[1] |= d << 62;
      continue;
    }
    // Character k (1..21) at bits 6(k-1) .. 6(k-1)+5; the 11th straddles.
    const std::size_t pos = 6 * (k - 1);
    e.w[pos / 64] |= d << (pos % 64);
    if (pos % 64 > 58) e.w[pos / 64 + 1] |= d >> (64 - pos % 64);
  }
  *out = e;
  return true;
}

ZeroArray::ZeroArray(std::size_t bytes, Pages pages) {
  if (bytes == 0) return;
  // Round large arrays up to whole huge pages so THP can back all of them.
  const std::size_t rounded = bytes >= kHugePage ? (bytes + kHugePage - 1) & ~(kHugePage - 1)
                                                 : (bytes + 4095) & ~std::size_t{4095};
  void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;
  if (rounded >= kHugePage) {  // advisory; errors are fine
    madvise(p, rounded, pages == Pages::kHuge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  }
  data_ = p;
  bytes_ = rounded;
}

ZeroArray::~ZeroArray() {
  if (data_ != nullptr) munmap(data_, bytes_);
}

Table::Table(std::size_t cap, std::uint64_t gen)
    : slot_mem_(cap * sizeof(Slot)),
      key_id_mem_(cap * sizeof(IdEntry)),
      extra_mem_(cap * sizeof(std::uintptr_t)),  // one pointer per side record
      id_mem_(cap * sizeof(std::uint32_t)),
      denial_mem_(cap * sizeof(std::uint64_t), ZeroArray::Pages::kSmall) {
  if (!slot_mem_.ok() || !key_id_mem_.ok() || !extra_mem_.ok() || !id_mem_.ok() ||
      !denial_mem_.ok()) {
    return;
  }
  // mmap memory is zero, which is exactly the value of a default-constructed
  // Slot except for the TAT; construct properly anyway (it also faults the
  // pages in now, during a rebuild, rather than on the first inserts).
  auto* s = static_cast<Slot*>(slot_mem_.data());
  for (std::size_t i = 0; i < cap; ++i) new (&s[i]) Slot();
  auto* e = static_cast<IdEntry*>(key_id_mem_.data());
  for (std::size_t i = 0; i < cap; ++i) new (&e[i]) IdEntry();
  slots = s;
  ids = e;
  // Pointers and integers: zero bytes are valid values (implicit lifetime).
  extras = static_cast<const KeyExtra**>(extra_mem_.data());
  id_index = static_cast<std::uint32_t*>(id_mem_.data());
  // Left untouched: a denial maps its page.
  denials = static_cast<std::uint64_t*>(denial_mem_.data());
  capacity = cap;
  generation = gen;
}

Table::~Table() {
  if (slots != nullptr) {
    for (std::size_t i = 0; i < capacity; ++i) slots[i].~Slot();
  }
}

std::size_t Table::OtherBytes() const noexcept {
  std::size_t extra_bytes = 0;
  for (const auto& e : extra_owner) {
    if (e != nullptr) extra_bytes += sizeof(KeyExtra);
  }
  // The side-record pointer array is mapped for the worst case (one per
  // slot) but only its used pages are ever touched.
  const std::size_t extra_ptr_bytes =
      (extra_count * sizeof(std::uintptr_t) + 4095) & ~std::size_t{4095};
  // The denial cells are counted whole, as if every key had been denied
  // (pages nobody was denied in are never resident).
  return key_id_mem_.bytes() + extra_ptr_bytes + id_mem_.bytes() + denial_mem_.bytes() +
         extra_bytes + extra_owner.capacity() * sizeof(extra_owner[0]);
}

}  // namespace keygate::internal
