// Helpers shared by the unit tests.
#ifndef KEYGATE_TESTS_TEST_UTIL_H_
#define KEYGATE_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/audit.h"
#include "keygate/key_store.h"
#include "keygate/key_store_wrapper.h"
#include "keygate/scope.h"
#include "keygate/secret.h"

namespace keygate::testing {

// `prefix` and the bytes of `id` in lower-case hex: the List cursor form of the SQL stores
// ("s1." SQLite, "p1." PostgreSQL).
inline std::string HexCursor(std::string_view prefix, std::string_view id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(prefix);
  for (const char ch : id) {
    const auto u = static_cast<unsigned char>(ch);
    out.push_back(kHex[u >> 4]);
    out.push_back(kHex[u & 0xF]);
  }
  return out;
}

inline std::string StatusText(const absl::Status& s) { return s.ToString(); }
template <typename T>
std::string StatusText(const absl::StatusOr<T>& s) {
  return s.status().ToString();
}

// Audit notes for direct store writes in tests (actor "test", a fixed time).
inline AuditNote TestNote(EventType type, std::initializer_list<std::string> fields = {}) {
  return AuditNote{type, "test", absl::FromUnixSeconds(1'700'000'000), fields};
}
// The value of `v`; fails the test case when it holds an error.
template <typename T>
T MustOk(absl::StatusOr<T> v) {
  INFO(StatusText(v));
  REQUIRE(v.ok());
  return *std::move(v);
}

// A store's audit log, read afresh on each call, without the entries of
// direct store writes in tests (actor "test", TestNote).
class AuditView {
 public:
  explicit AuditView(std::shared_ptr<KeyStore> store) : store_(std::move(store)) {}
  std::vector<Event> Events() const {
    std::vector<Event> all;
    AuditQuery q;
    q.limit = kMaxAuditLimit;
    for (;;) {
      absl::StatusOr<AuditPage> page = store_->ReadAudit(q);
      INFO(StatusText(page));
      REQUIRE(page.ok());
      for (Event& e : page->events) {
        if (e.actor != "test") all.push_back(std::move(e));
      }
      if (!page->more) return all;
      q.after = page->next_after;
    }
  }

 private:
  std::shared_ptr<KeyStore> store_;
};

inline AuditNote CreatedNote() { return TestNote(EventType::kCreated); }
inline AuditNote ModifiedNote() { return TestNote(EventType::kModified); }
inline AuditNote DeletedNote() { return TestNote(EventType::kDeleted); }

// A route requirement from `registry`, failing the test case when the
// registry refuses it (an unknown scope, a bad option).
inline Requirement MustRequire(const ScopeRegistry& registry,
                               std::initializer_list<std::string_view> names,
                               const RequireOptions& options = {}) {
  absl::StatusOr<Requirement> r = registry.Require(names, options);
  REQUIRE(r.ok());
  return *std::move(r);
}

// A requirement only a custom evaluator can satisfy (see
// Requirement::ForEvaluator), failing the test case when refused.
inline Requirement MustForEvaluator(std::string_view scope_name,
                                    const RequireOptions& options = {}) {
  absl::StatusOr<Requirement> r = Requirement::ForEvaluator(scope_name, options);
  REQUIRE(r.ok());
  return *std::move(r);
}

// AnyValidKey with options, failing the test case when refused.
inline Requirement MustAnyValidKey(const RequireOptions& options) {
  absl::StatusOr<Requirement> r = Requirement::AnyValidKey(options);
  REQUIRE(r.ok());
  return *std::move(r);
}

// A token's text, for tests only.
inline std::string Text(const Secret& s) {
  return std::string(s.Reveal(InsecureSecretAccess::Get()));
}

// Forwards every KeyStore call to `inner` (KeyStoreWrapper), except
// TouchLastUsed, which it leaves to KeyStore's default implementation
// (Get + Update). Tests derive from it to intercept one call.
class ForwardingStore : public KeyStoreWrapper {
 public:
  explicit ForwardingStore(std::shared_ptr<KeyStore> inner) : KeyStoreWrapper(std::move(inner)) {}
  absl::Status TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                             absl::Duration min_advance) override {
    return KeyStore::TouchLastUsed(updates, min_advance);
  }

 protected:
  KeyStore& inner() { return target(); }
};

}  // namespace keygate::testing

// REQUIRE that a Status / StatusOr is ok, printing the status when it is not.
#define REQUIRE_OK(expr)                                     \
  do {                                                       \
    const auto& require_ok_value_ = (expr);                  \
    INFO(::keygate::testing::StatusText(require_ok_value_)); \
    REQUIRE(require_ok_value_.ok());                         \
  } while (false)

#endif  // KEYGATE_TESTS_TEST_UTIL_H_
