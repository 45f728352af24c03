// Runs the installed KeyStore conformance suite against MapStore, a store
// defined here, outside keygate's tree. Exit status 0: every check passed,
// the corrupt-record check among them (MapStore gives its hook); and without
// the hook that check reports "not applicable", never "passed".

#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "keygate/testing/key_store_conformance.h"
#include "map_store.h"

namespace conformance = keygate::conformance;

namespace {

absl::StatusOr<std::shared_ptr<keygate::KeyStore>> NewStore() {
  return std::shared_ptr<keygate::KeyStore>(std::make_shared<custom::MapStore>());
}

conformance::BackendHooks Hooks() {
  conformance::BackendHooks hooks;
  hooks.cursor_for = [](std::string_view id) { return "c:" + std::string(id); };
  hooks.malformed_cursors = {"c:", "c", "C:key_hc14", "key_hc14"};
  hooks.corrupt_record = [](keygate::KeyStore& store, std::string_view id) {
    auto* map = dynamic_cast<custom::MapStore*>(&store);
    if (map == nullptr) return absl::InvalidArgumentError("store: not a MapStore");
    return map->Corrupt(id);
  };
  hooks.touch_is_not_a_change = true;        // TouchLastUsed is overridden
  hooks.writes_wait_for_subscribers = true;  // a ChangeNotifier
  return hooks;
}

constexpr std::string_view kCorruptCheck =
    "a corrupt record reads as data loss and as deleted in the feed";

}  // namespace

int main() {
  const std::vector<conformance::CheckResult> results = conformance::RunSuite(NewStore, Hooks());
  std::cout << conformance::FormatReport(results);
  bool ok = conformance::AllPassed(results) && results.size() == conformance::Checks().size();
  for (const conformance::CheckResult& r : results) {
    if (r.outcome != conformance::Outcome::kPassed) {
      std::cerr << "custom_store_test: not passed: " << r.name << "\n";
      ok = false;
    }
  }

  conformance::BackendHooks no_hook = Hooks();
  no_hook.corrupt_record = nullptr;
  const std::vector<conformance::CheckResult> without = conformance::RunSuite(
      NewStore, no_hook, [](const conformance::Check& c) { return c.name == kCorruptCheck; });
  if (without.size() != 1 || without[0].outcome != conformance::Outcome::kNotApplicable) {
    std::cerr << "custom_store_test: without corrupt_record the corrupt-record check is not "
                 "reported as not applicable\n"
              << conformance::FormatReport(without);
    ok = false;
  }
  return ok ? 0 : 1;
}
