// Name search and the List query of the SQLite KeyStore (list_query.h).

#include "sqlite/list_query.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "sqlite/record_row.h"
#include "sqlite/sqlite_db.h"

namespace keygate::internal {
namespace {

constexpr char kCursorPrefix[] = "s1.";

// Name searches whose FTS candidate set reaches this many rows are answered by
// walking the keys in id order instead: the matches are then dense enough
// that a page fills after a short walk, while sorting that many FTS hits by id
// would cost more than the walk.
constexpr int kDenseSearchThreshold = 4000;
// A 2-character needle that starts more distinct trigrams than this is
// common enough for the id-order walk.
constexpr std::size_t kMaxPrefixTerms = 128;

std::string HexEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(kHex[u >> 4]);
    out.push_back(kHex[u & 0xF]);
  }
  return out;
}

bool HexDecode(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out->clear();
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]);
    const int lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

std::size_t CodePoints(std::string_view s) {
  std::size_t n = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

// Valid UTF-8 without control characters (the index terminator is U+0001):
// what the trigram index can answer exactly.
bool IndexableNeedle(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    if (c < 0x20 || c == 0x7F) return false;
    if (c < 0x80) {
      len = 1;
    } else if ((c & 0xE0) == 0xC0 && c >= 0xC2) {
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
    } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
      len = 4;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

std::string FtsPhrase(std::string_view needle) {
  std::string out = "\"";
  for (const char c : needle) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// The FTS5 query for a needle of 3 or more characters: each of its distinct
// trigrams, ANDed. The index keeps no positions (detail=none, which makes it
// far cheaper to maintain), so it cannot match the needle as a phrase; the
// names that hold every trigram are a small superset of those that contain
// the needle, and the instr() filter in List makes the answer exact.
std::string TrigramQuery(std::string_view needle) {
  std::vector<std::size_t> starts;  // byte offset of each code point, then the end
  for (std::size_t i = 0; i < needle.size(); ++i) {
    if ((static_cast<unsigned char>(needle[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  starts.push_back(needle.size());
  std::vector<std::string_view> grams;
  for (std::size_t i = 0; i + 3 < starts.size(); ++i) {
    grams.push_back(needle.substr(starts[i], starts[i + 3] - starts[i]));
  }
  std::sort(grams.begin(), grams.end());
  grams.erase(std::unique(grams.begin(), grams.end()), grams.end());
  std::string out;
  for (const std::string_view g : grams) {
    absl::StrAppend(&out, out.empty() ? "" : " AND ", FtsPhrase(g));
  }
  return out;
}

}  // namespace

// What the name index holds for a name: lowered, plus the terminator that
// lets 2-character needles be found through trigrams (see schema.cc).
std::string NameKey(std::string_view name) {
  std::string k = ToLowerAscii(name);
  k.push_back('\x01');
  return k;
}

absl::StatusOr<std::string> DecodeListCursor(std::string_view cursor) {
  std::string after;
  if (!cursor.empty()) {
    const std::string_view c = cursor;
    constexpr std::size_t kPrefixSize = sizeof(kCursorPrefix) - 1;
    if (c.size() <= kPrefixSize || c.substr(0, kPrefixSize) != kCursorPrefix ||
        !HexDecode(c.substr(kPrefixSize), &after) || after.empty()) {
      return absl::InvalidArgumentError("cursor: not a cursor returned by this store");
    }
  }
  return after;
}

absl::StatusOr<ListPage> ListKeys(SqliteDb& db, const ListFilter& f, const std::string& after,
                                  std::size_t limit, std::string_view path) {
  const std::string needle = ToLowerAscii(f.name_contains);

  // Candidates from the trigram index, as an FTS5 query; empty: walk the
  // keys in id order instead.
  std::string match;
  const std::size_t chars = CodePoints(needle);
  if (IndexableNeedle(needle) && chars >= 3) {
    match = TrigramQuery(needle);
  } else if (IndexableNeedle(needle) && chars == 2) {
    // Every occurrence of a 2-character needle starts a trigram (names end
    // with a terminator), so the trigrams that start with it are the terms
    // to look up. None: no name contains it. Very many: it is common, and
    // the id-order walk fills a page quickly.
    absl::StatusOr<Statement> terms = db.Prepare(
        absl::StrCat("SELECT term FROM key_names_vocab WHERE term >= ?1 AND term < ?2 LIMIT ",
                     kMaxPrefixTerms + 1));
    if (!terms.ok()) return terms.status();
    terms->BindText(1, needle);
    // U+10FFFF is F4 8F BF BF: "\xF4\x90" sorts after every 3-character
    // term that starts with the needle.
    terms->BindText(2, needle + "\xF4\x90");
    std::vector<std::string> found;
    while (true) {
      absl::StatusOr<bool> row = terms->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      found.emplace_back(terms->Text(0));
    }
    if (found.empty()) return ListPage{};
    if (found.size() <= kMaxPrefixTerms) {
      for (const std::string& t : found) {
        absl::StrAppend(&match, match.empty() ? "" : " OR ", FtsPhrase(t));
      }
    }
  }
  bool use_fts = false;
  if (!match.empty()) {
    // How many names contain the needle, up to the threshold (a few ms at
    // most): few -> fetch them through the trigram index; many -> walk in
    // id order, where a page fills quickly.
    absl::StatusOr<Statement> probe = db.Prepare(absl::StrCat(
        "SELECT count(*) FROM (SELECT 1 FROM key_names WHERE key_names MATCH ?1 LIMIT ",
        kDenseSearchThreshold, ")"));
    if (!probe.ok()) return probe.status();
    probe->BindText(1, match);
    absl::StatusOr<bool> row = probe->Step();
    if (!row.ok()) return row.status();
    use_fts = *row && probe->Int(0) < kDenseSearchThreshold;
  }

  // Enum values are inlined (not bound) so the planner can use the partial
  // index on revoked keys; everything user-supplied is bound.
  std::string sql = absl::StrCat("SELECT ", kRecordColumns, " FROM keys k WHERE 1");
  std::vector<std::string> texts;
  if (f.owner.has_value()) {
    absl::StrAppend(&sql, " AND k.owner = ?", texts.size() + 1);
    texts.push_back(*f.owner);
  }
  if (f.environment.has_value()) {
    absl::StrAppend(&sql, " AND k.environment = ?", texts.size() + 1);
    texts.push_back(*f.environment);
  }
  if (f.state.has_value()) {
    absl::StrAppend(&sql, " AND k.state = ", static_cast<int>(*f.state));
  }
  if (f.kind.has_value()) {
    absl::StrAppend(&sql, " AND k.kind = ", static_cast<int>(*f.kind));
  }
  if (!after.empty()) {
    absl::StrAppend(&sql, " AND k.id > ?", texts.size() + 1);
    texts.push_back(after);
  }
  if (!needle.empty()) {
    absl::StrAppend(&sql, " AND instr(k.name_lower, ?", texts.size() + 1, ") > 0");
    texts.push_back(needle);
  }
  if (use_fts) {
    absl::StrAppend(&sql, " AND k.pk IN (SELECT rowid FROM key_names WHERE key_names MATCH ?",
                    texts.size() + 1, ")");
    texts.push_back(match);
  }
  // The limit is bound too: the connection caches each distinct SQL text for
  // its lifetime, so the text may vary only with the filter's shape (a few
  // hundred at most), never with a value.
  absl::StrAppend(&sql, " ORDER BY k.id LIMIT ?", texts.size() + 1);

  absl::StatusOr<Statement> q = db.Prepare(sql);
  if (!q.ok()) return q.status();
  for (std::size_t i = 0; i < texts.size(); ++i) q->BindText(static_cast<int>(i + 1), texts[i]);
  q->BindInt(static_cast<int>(texts.size() + 1), static_cast<std::int64_t>(limit) + 1);
  ListPage page;
  while (true) {
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (page.keys.size() == limit) {
      page.next_cursor = absl::StrCat(kCursorPrefix, HexEncode(page.keys.back().id));
      break;
    }
    absl::StatusOr<KeyRecord> r = DecodeRecord(*q, 0, path);
    if (!r.ok()) return r.status();
    page.keys.push_back(*std::move(r));
  }
  return page;
}

}  // namespace keygate::internal
