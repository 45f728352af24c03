// The conformance suite, List: filters, pagination and cursors.
// See suite.h.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "key_store_conformance/suite.h"
#include "keygate/digest.h"
#include "keygate/key.h"
#include "keygate/key_store.h"

namespace keygate::conformance {
namespace {

// Ten records spread over the filter dimensions.
void InsertListFixture(KeyStore& store, Checker& c) {
  struct Row {
    const char* id;
    const char* owner;
    const char* env;
    KeyKind kind;
    KeyState state;
    const char* name;
  };
  using K = KeyKind;
  using S = KeyState;
  const Row rows[] = {
      {"key_l00", "alice", "production", K::kGeneral, S::kActive, "CI Pipeline"},
      {"key_l01", "alice", "production", K::kGeneral, S::kRevoked, "ci backup"},
      {"key_l02", "alice", "preview", K::kGeneral, S::kActive, "Deploy bot"},
      {"key_l03", "alice", "production", K::kPersonal, S::kActive, "personal"},
      {"key_l04", "bob", "production", K::kPersonal, S::kActive, "personal"},
      {"key_l05", "bob", "preview", K::kGeneral, S::kRevoked, "nightly-ci"},
      {"key_l06", "bob", "production", K::kGeneral, S::kActive, "metrics 100%"},
      {"key_l07", "carol", "preview", K::kPersonal, S::kRevoked, "personal"},
      {"key_l08", "carol", "production", K::kGeneral, S::kActive, "a_b reporter"},
      {"key_l09", "carol", "production", K::kGeneral, S::kActive, "aXb reporter"},
  };
  for (const Row& row : rows) {
    KeyRecord r = MakeRecord(row.id, row.owner, row.env, row.kind, row.name);
    r.state = row.state;
    KEYGATE_ASSERT_OK(SuiteInsert(store, r));
  }
}

void ListFilters(const std::shared_ptr<KeyStore>& store, Checker& c) {
  InsertListFixture(*store, c);
  using V = std::vector<std::string>;
  ListFilter f;
  KEYGATE_EXPECT(ListAllIds(*store, f, c).size() == 10);

  f = {};
  f.owner = "bob";
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l04", "key_l05", "key_l06"});
  f = {};
  f.owner = "Bob";  // owners match exactly
  KEYGATE_EXPECT(ListAllIds(*store, f, c).empty());

  f = {};
  f.environment = "preview";
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l02", "key_l05", "key_l07"});

  f = {};
  f.state = KeyState::kRevoked;
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l01", "key_l05", "key_l07"});
  f.state = KeyState::kActive;
  KEYGATE_EXPECT(ListAllIds(*store, f, c).size() == 7);

  f = {};
  f.kind = KeyKind::kPersonal;
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l03", "key_l04", "key_l07"});

  f = {};
  f.name_contains = "ci";  // "CI Pipeline", "ci backup", "nightly-ci"
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l00", "key_l01", "key_l05"});
  f.name_contains = "PIPE";
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l00"});
  f.name_contains = "a_b";  // '_' is literal, not a wildcard
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l08"});
  f.name_contains = "100%";  // so is '%'
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l06"});
  f.name_contains = "%";
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l06"});
  f.name_contains = "no such name";
  KEYGATE_EXPECT(ListAllIds(*store, f, c).empty());

  // All filters together (AND).
  f = {};
  f.owner = "alice";
  f.environment = "production";
  f.state = KeyState::kActive;
  f.kind = KeyKind::kGeneral;
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l00"});
  f.name_contains = "ci";
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l00"});
  f.state = KeyState::kRevoked;
  KEYGATE_EXPECT(ListAllIds(*store, f, c) == V{"key_l01"});
  f.kind = KeyKind::kPersonal;
  KEYGATE_EXPECT(ListAllIds(*store, f, c).empty());

  // Listed records are complete.
  ListOptions o;
  o.filter.owner = "carol";
  o.filter.environment = "preview";
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_ASSERT_OK(page);
  KEYGATE_ASSERT(page->keys.size() == 1);
  absl::StatusOr<KeyRecord> got = store->Get("key_l07");
  KEYGATE_ASSERT_OK(got);
  KEYGATE_EXPECT(page->keys[0] == *got);
  KEYGATE_EXPECT(page->next_cursor.empty());
}

void ListPagination(const std::shared_ptr<KeyStore>& store, Checker& c) {
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) {
    // Insert in a scrambled order: pages follow ids, not insertion order.
    const int n = (i * 7) % 25;
    std::string id = absl::StrCat("key_p", n < 10 ? "0" : "", n);
    KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord(id, n % 2 ? "odd" : "even")));
    all.push_back(id);
  }
  std::sort(all.begin(), all.end());

  ListOptions o;
  o.limit = 7;
  std::size_t pages = 0;
  KEYGATE_EXPECT(ListAllIds(*store, o, c, &pages) == all);
  KEYGATE_EXPECT(pages == 4);  // 7 + 7 + 7 + 4

  // An exact multiple: the last full page has no cursor.
  o.limit = 5;
  KEYGATE_EXPECT(ListAllIds(*store, o, c, &pages) == all);
  KEYGATE_EXPECT(pages == 5);
  o.limit = 25;
  KEYGATE_EXPECT(ListAllIds(*store, o, c, &pages) == all);
  KEYGATE_EXPECT(pages == 1);
  o.limit = 1;
  KEYGATE_EXPECT(ListAllIds(*store, o, c, &pages) == all);
  KEYGATE_EXPECT(pages == 25);

  // Pagination with a filter: cursors skip non-matching records.
  o.limit = 4;
  o.filter.owner = "odd";
  std::vector<std::string> odd;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (std::stoi(all[i].substr(5)) % 2) odd.push_back(all[i]);
  }
  KEYGATE_EXPECT(ListAllIds(*store, o, c, &pages) == odd);
  KEYGATE_EXPECT(pages == 3);  // 12 odd: 4 + 4 + 4

  // The same cursor gives the same page (cursors are stateless).
  ListOptions first;
  first.limit = 10;
  absl::StatusOr<ListPage> p1 = store->List(first);
  KEYGATE_ASSERT_OK(p1);
  KEYGATE_ASSERT_FALSE(p1->next_cursor.empty());
  ListOptions second = first;
  second.cursor = p1->next_cursor;
  absl::StatusOr<ListPage> a = store->List(second);
  absl::StatusOr<ListPage> b = store->List(second);
  KEYGATE_ASSERT_OK(a);
  KEYGATE_ASSERT_OK(b);
  KEYGATE_EXPECT(Ids(a->keys) == Ids(b->keys));
  KEYGATE_EXPECT(a->next_cursor == b->next_cursor);
}

void ListPaginationStableUnderWrites(const std::shared_ptr<KeyStore>& store, Checker& c) {
  for (int i = 10; i < 30; ++i) {
    KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord(absl::StrCat("key_s", i))));
  }
  ListOptions o;
  o.limit = 6;
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_ASSERT_OK(page);
  std::vector<std::string> seen = Ids(page->keys);
  KEYGATE_ASSERT(seen.back() == "key_s15");

  // Between pages: insert before and after the cursor, delete a record
  // already returned and one not yet returned, and update one ahead.
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_s05")));  // before: not seen
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_s35")));  // after: seen
  KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_s12", std::nullopt));
  KEYGATE_ASSERT_OK(SuiteDelete(*store, "key_s20", std::nullopt));
  absl::StatusOr<KeyRecord> s25 = store->Get("key_s25");
  KEYGATE_ASSERT_OK(s25);
  KeyRecord edit = *s25;
  edit.name = "edited";
  KEYGATE_ASSERT_OK(SuiteUpdate(*store, edit));

  o.cursor = page->next_cursor;
  std::vector<std::string> rest = ListAllIds(*store, o, c);
  seen.insert(seen.end(), rest.begin(), rest.end());
  std::vector<std::string> expected;
  for (int i = 10; i < 30; ++i) {
    if (i != 20) expected.push_back(absl::StrCat("key_s", i));
  }
  expected.push_back("key_s35");
  KEYGATE_EXPECT(seen == expected);
}

void ListRejectsBadArguments(const std::shared_ptr<KeyStore>& store, Checker& c) {
  KEYGATE_ASSERT_OK(SuiteInsert(*store, MakeRecord("key_x1")));
  ListOptions o;
  o.limit = 0;
  KEYGATE_EXPECT(store->List(o).status().code() == absl::StatusCode::kInvalidArgument);
  o.limit = kMaxListLimit + 1;
  KEYGATE_EXPECT(store->List(o).status().code() == absl::StatusCode::kInvalidArgument);
  o.limit = 1;
  KEYGATE_ASSERT_OK(store->List(o));
  o.limit = kMaxListLimit;
  absl::StatusOr<ListPage> page = store->List(o);
  KEYGATE_ASSERT_OK(page);
  KEYGATE_EXPECT(page->keys.size() == 1);

  for (const char* bad : {"%%not a cursor%%", "\x01\x02\x03"}) {
    o.cursor = bad;
    KEYGATE_EXPECT(store->List(o).status().code() == absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace

// List cursors name an id: a well-formed one, made by the store or by hand,
// resumes after the id it names whatever the filter, whether or not a key
// has that id; anything else is kInvalidArgument.
Findings CheckHandBuiltCursors(const std::shared_ptr<KeyStore>& store, const BackendHooks& hooks) {
  Checker c;
  KeyStore& s = *store;
  std::vector<std::string> all;
  for (int i = 10; i < 30; ++i) {
    const std::string id = absl::StrCat("key_hc", i);
    if (!c.ExpectOk(SuiteInsert(s, MakeRecord(id, i % 2 ? "odd" : "even")),
                    absl::StrCat("setup: Insert ", id))) {
      return c.Take();
    }
    all.push_back(id);
  }
  // The ids after key_hc<from>; only the odd-owned ones if `odd_only`.
  auto expected_after = [&](int from, bool odd_only) {
    std::vector<std::string> out;
    for (int i = from + 1; i < 30; ++i) {
      if (i >= 10 && (!odd_only || i % 2 == 1)) out.push_back(absl::StrCat("key_hc", i));
    }
    return out;
  };

  std::vector<std::string> malformed = {"%%not a cursor%%", std::string("\x01\x02\x03"),
                                        std::string(1, '\0'), " "};
  malformed.insert(malformed.end(), hooks.malformed_cursors.begin(), hooks.malformed_cursors.end());
  for (const std::string& bad : malformed) {
    ListOptions o;
    o.cursor = bad;
    c.ExpectCode(s.List(o).status(), {absl::StatusCode::kInvalidArgument},
                 absl::StrCat("List with the malformed cursor \"", absl::CHexEscape(bad), "\""));
  }

  // A cursor the store made names the last id of its page, not a filter or
  // a position: another filter resumes after the same id, and so does the
  // cursor once that key is gone.
  ListOptions first;
  first.limit = 5;
  absl::StatusOr<ListPage> page = s.List(first);
  if (!c.ExpectOk(page, "List of the first page")) return c.Take();
  if (!c.Expect(Ids(page->keys) == std::vector<std::string>(all.begin(), all.begin() + 5) &&
                    !page->next_cursor.empty(),
                "the first page of 5 is key_hc10..key_hc14 with a next cursor")) {
    return c.Take();
  }
  const std::string made = page->next_cursor;
  ListOptions odd;
  odd.cursor = made;
  odd.filter.owner = "odd";
  std::vector<std::string> got = PageThrough(s, odd, c, "store-made cursor, other filter");
  c.Expect(
      got == expected_after(14, true),
      absl::StrCat("the store's cursor after key_hc14 with another filter gave ", Joined(got)));

  if (!hooks.cursor_for) {
    c.Skip("hand-built cursors: the backend's test gives no BackendHooks::cursor_for");
  } else {
    struct Case {
      std::string names;  // the id the cursor names
      bool odd_only;
      std::size_t limit;
      std::vector<std::string> expected;
    };
    const std::vector<Case> cases = {
        {"key_hc14", false, 100, expected_after(14, false)},
        {"key_hc14", true, 100, expected_after(14, true)},
        {"key_hc14", false, 4, expected_after(14, false)},     // followed page by page
        {"key_hc14~", false, 100, expected_after(14, false)},  // no such key
        {"key_hc1", false, 100, all},                          // before every key
        {"key_a", false, 3, all},
        {"key_hc29", false, 100, {}},  // the last key
        {"key_zz", false, 100, {}},    // after every key
    };
    for (const Case& k : cases) {
      ListOptions o;
      o.cursor = hooks.cursor_for(k.names);
      o.limit = k.limit;
      if (k.odd_only) o.filter.owner = "odd";
      const std::string what = absl::StrCat("a hand-built cursor naming ", k.names,
                                            k.odd_only ? " (owner odd)" : "", " limit ", k.limit);
      got = PageThrough(s, o, c, what);
      c.Expect(got == k.expected,
               absl::StrCat(what, " gave ", Joined(got), ", expected ", Joined(k.expected)));
    }
    // The store's own cursor and the hand-built one resume alike.
    ListOptions by_hand;
    by_hand.limit = 5;
    by_hand.cursor = hooks.cursor_for("key_hc14");
    ListOptions by_store = by_hand;
    by_store.cursor = made;
    absl::StatusOr<ListPage> h = s.List(by_hand);
    absl::StatusOr<ListPage> m = s.List(by_store);
    if (c.ExpectOk(h, "List from a hand-built cursor") &&
        c.ExpectOk(m, "List from the store's cursor")) {
      c.Expect(Ids(h->keys) == Ids(m->keys),
               "a hand-built cursor and the store's cursor for one id resume differently");
    }
  }

  // The key the cursor names is deleted: the cursor still resumes after it.
  if (c.ExpectOk(SuiteDelete(s, "key_hc14", std::nullopt), "Delete key_hc14")) {
    ListOptions o;
    o.cursor = made;
    got = PageThrough(s, o, c, "store-made cursor after its key was deleted");
    c.Expect(got == expected_after(14, false),
             absl::StrCat("the store's cursor after the deleted key_hc14 gave ", Joined(got)));
  }
  return c.Take();
}

std::vector<Check> ListChecks() {
  return {
      {"list", "list filters by owner, environment, state, kind and name", false,
       Simple(ListFilters)},
      {"list", "list pages by cursor without duplicates or gaps", false, Simple(ListPagination)},
      {"list", "list cursors stay valid across writes", false,
       Simple(ListPaginationStableUnderWrites)},
      {"list", "list rejects bad limits and cursors", false, Simple(ListRejectsBadArguments)},
      {"list", "a cursor resumes after the id it names", false, CheckHandBuiltCursors},
  };
}

}  // namespace keygate::conformance
