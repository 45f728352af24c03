// The verifier index's packed key ids, slot mapping and rate-limit denial
// cells (src/internal).

#include "internal/verifier_index.h"

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "internal/base62.h"

namespace keygate::internal {
namespace {

std::string Unpacked(const IdEntry& e) {
  std::string id(26, '?');
  UnpackKeyId(e, id.data());
  return id;
}

TEST_CASE("Packed key ids round-trip", "[verifier][index]") {
  std::mt19937_64 rng(7);
  // Every digit at every position (the first tail character: 0-3 only).
  for (std::size_t pos = 0; pos < 22; ++pos) {
    for (int d = 0; d < (pos == 0 ? 4 : 62); ++d) {
      std::string id = "key_";
      for (std::size_t k = 0; k < 22; ++k) {
        id.push_back(k == pos ? kBase62Alphabet[d] : kBase62Alphabet[rng() % (k == 0 ? 4 : 62)]);
      }
      IdEntry e;
      REQUIRE(PackKeyId(id, &e));
      REQUIRE(Unpacked(e) == id);
    }
  }
  // The extremes: all-lowest and all-highest digits.
  for (const std::string id : {"key_0000000000000000000000", "key_3zzzzzzzzzzzzzzzzzzzzz"}) {
    IdEntry e;
    REQUIRE(PackKeyId(id, &e));
    CHECK(Unpacked(e) == id);
  }
}

TEST_CASE("Distinct key ids pack to distinct entries", "[verifier][index]") {
  IdEntry a, b;
  REQUIRE(PackKeyId("key_0abcdefghijklmnopqrstu", &a));
  // Each single-character change (including the character that straddles
  // the two words) changes the entry.
  for (std::size_t k = 4; k < 26; ++k) {
    std::string id = "key_0abcdefghijklmnopqrstu";
    id[k] = id[k] == '1' ? '2' : '1';
    REQUIRE(PackKeyId(id, &b));
    CHECK_FALSE(a == b);
  }
}

TEST_CASE("Key ids that do not pack are refused untouched", "[verifier][index]") {
  const std::vector<std::string> bad = {
      "",
      "key_",
      "key_0abcdefghijklmnopqrst",    // 21 tail chars
      "key_0abcdefghijklmnopqrstuv",  // 23
      "kez_0abcdefghijklmnopqrstu",
      "KEY_0abcdefghijklmnopqrstu",
      "key_4abcdefghijklmnopqrstu",  // first tail char past '3'
      "key_zabcdefghijklmnopqrstu",
      "key_0abcdefghij-lmnopqrstu",  // not base62
      "key_0abcdefghijklmnopqrst ",
      std::string("key_0abcdefghij\0lmnopqrstu", 26),
  };
  for (const std::string& id : bad) {
    IdEntry e;
    e.w[0] = 0x1234;
    CHECK_FALSE(PackKeyId(id, &e));
    CHECK(e.w[0] == 0x1234);
    CHECK(e.w[1] == 0);
  }
}

TEST_CASE("Slot homes cover any capacity evenly", "[verifier][index]") {
  std::mt19937_64 rng(11);
  for (std::uint64_t cap : {1ull, 3ull, 1000ull, 14'286'848ull, (1ull << 32) - 2}) {
    for (int i = 0; i < 1000; ++i) REQUIRE(Home(rng(), cap) < cap);
    CHECK(Home(~0ull, cap) == cap - 1);
    CHECK(Home(0, cap) == 0);
    CHECK(NextSlot(cap - 1, cap) == 0);
  }
  // 70 buckets (not a power of two), 70 000 uniform hashes: every bucket
  // within 20 % of the mean (the standard deviation is 3.2 %).
  std::vector<int> count(70, 0);
  for (int i = 0; i < 70'000; ++i) ++count[Home(rng(), 70)];
  for (int c : count) {
    CHECK(c > 800);
    CHECK(c < 1200);
  }
}

TEST_CASE("A denial cell counts denials and keeps the earliest second", "[verifier][index]") {
  std::uint64_t cell = 0;
  std::uint32_t count = 0;
  std::uint32_t first = 0;
  CHECK_FALSE(TakeDenials(cell, &count, &first));
  NoteDenial(cell, 100);
  NoteDenial(cell, 100);
  NoteDenial(cell, 250);
  NoteDenial(cell, 99);  // a reader whose clock read an earlier second
  REQUIRE(TakeDenials(cell, &count, &first));
  CHECK(count == 4);
  CHECK(first == 99);
  CHECK(cell == 0);
  CHECK_FALSE(TakeDenials(cell, &count, &first));  // taken once
  // The next window starts afresh.
  NoteDenial(cell, 300);
  REQUIRE(TakeDenials(cell, &count, &first));
  CHECK(count == 1);
  CHECK(first == 300);
}

TEST_CASE("A denial cell is not taken before its first denial's time is written",
          "[verifier][index]") {
  // What a reader between its add and its CAS leaves behind.
  std::uint64_t cell = kOneDenial * 2;
  std::uint32_t count = 0;
  std::uint32_t first = 0;
  CHECK_FALSE(TakeDenials(cell, &count, &first));
  CHECK(cell == kOneDenial * 2);
  // A count that wraps carries out of the word, never into the time.
  cell = ~std::uint64_t{0} << 32 | 7;
  NoteDenial(cell, 9);
  CHECK(cell == 7);
  NoteDenial(cell, 9);
  REQUIRE(TakeDenials(cell, &count, &first));
  CHECK(count == 1);
  CHECK(first == 7);
}

// Readers add while a taker empties the cell: the counts taken sum to the
// denials noted, and every take has a time one of the readers gave.
TEST_CASE("A denial cell loses no denial to concurrent takes", "[verifier][index][concurrent]") {
  constexpr int kReaders = 3;
  constexpr std::uint32_t kPerReader = 20'000;
  std::uint64_t cell = 0;
  std::atomic<int> running{kReaders};
  std::vector<std::thread> readers;
  readers.reserve(kReaders);
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      for (std::uint32_t i = 0; i < kPerReader; ++i) {
        NoteDenial(cell, 1000 + static_cast<std::uint32_t>(r) * 10 + i % 7);
      }
      running.fetch_sub(1);
    });
  }
  std::uint64_t taken = 0;
  int takes = 0;
  int bad_times = 0;
  auto take = [&] {
    std::uint32_t count = 0;
    std::uint32_t first = 0;
    if (!TakeDenials(cell, &count, &first)) return;
    taken += count;
    ++takes;
    if (first < 1000 || first >= 1000 + kReaders * 10) ++bad_times;
  };
  while (running.load() != 0) take();
  for (std::thread& t : readers) t.join();
  take();
  CHECK(taken == std::uint64_t{kReaders} * kPerReader);
  CHECK(bad_times == 0);
  CHECK(takes >= 1);
  CHECK(cell == 0);
}

}  // namespace
}  // namespace keygate::internal
