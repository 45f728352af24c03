// AuditRelay: the audit log reaches a sink in order, at least once, and
// resumes from the consumer's acknowledged position.

#include "keygate/audit_relay.h"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "catch.h"
#include "keygate/deployment.h"
#include "keygate/event_sink.h"
#include "keygate/key_manager.h"
#include "keygate/memory_key_store.h"
#include "test_util.h"

namespace keygate {
namespace {

// Keeps what it is given; fails the Emit of chosen sequences while told to.
class FlakySink final : public EventSink {
 public:
  absl::Status Emit(const Event& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (fail_from_ != 0 && event.sequence >= fail_from_) {
      return absl::UnavailableError("sink down");
    }
    seen_.push_back(event.sequence);
    cv_.notify_all();
    return absl::OkStatus();
  }
  void FailFrom(std::uint64_t sequence) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_from_ = sequence;
  }
  std::vector<std::uint64_t> Seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  // Waits until `n` events arrived (or a generous bound passed; the caller checks).
  void AwaitCount(std::size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return seen_.size() >= n; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t fail_from_ = 0;
  std::vector<std::uint64_t> seen_;
};

struct Fixture {
  Fixture() {
    KeyManager::Options o;
    o.deployment = *Deployment::Create({});
    o.store = store;
    manager = testing::MustOk(KeyManager::Create(std::move(o)));
  }
  std::string Create(const std::string& name) {
    CreateKeyRequest r;
    r.name = name;
    r.owner = "alice";
    r.environment = "production";
    return testing::MustOk(manager->Create(r, "alice")).record.id;
  }
  std::unique_ptr<AuditRelay> Relay(std::shared_ptr<EventSink> sink, std::string consumer) {
    AuditRelay::Options o;
    o.store = store;
    o.sink = std::move(sink);
    o.consumer = std::move(consumer);
    o.batch = 2;  // several pages
    o.retry = absl::Milliseconds(5);
    return testing::MustOk(AuditRelay::Create(std::move(o)));
  }
  std::shared_ptr<MemoryKeyStore> store = std::make_shared<MemoryKeyStore>();
  std::unique_ptr<KeyManager> manager;
};

std::vector<std::uint64_t> Range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t s = from; s <= to; ++s) v.push_back(s);
  return v;
}

TEST_CASE("AuditRelay::Create checks its options", "[audit]") {
  Fixture f;
  auto sink = std::make_shared<CollectingEventSink>();
  const auto code = [&](AuditRelay::Options o) {
    return AuditRelay::Create(std::move(o)).status();
  };
  AuditRelay::Options ok{f.store, sink, "audit", 100, absl::Seconds(1)};
  CHECK(code(ok).ok());
  AuditRelay::Options o = ok;
  o.store = nullptr;
  CHECK(code(o).message() == "store: must be set");
  o = ok;
  o.sink = nullptr;
  CHECK(code(o).message() == "sink: must be set");
  o = ok;
  o.consumer = "no spaces";
  CHECK(code(o).code() == absl::StatusCode::kInvalidArgument);
  o = ok;
  o.batch = 0;
  CHECK(code(o).code() == absl::StatusCode::kInvalidArgument);
  o = ok;
  o.retry = absl::ZeroDuration();
  CHECK(code(o).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("AuditRelay delivers the log in order and only once per acknowledgement", "[audit]") {
  Fixture f;
  for (int i = 0; i < 5; ++i) f.Create(absl::StrCat("k", i));
  auto sink = std::make_shared<CollectingEventSink>();
  std::unique_ptr<AuditRelay> relay = f.Relay(sink, "audit");
  CHECK(testing::MustOk(relay->DeliverPending()) == 5);
  CHECK(testing::MustOk(relay->DeliverPending()) == 0);
  CHECK(testing::MustOk(f.store->AuditCursor("audit")) == 5);
  const std::string id = f.Create("k5");
  REQUIRE(f.manager->Revoke(id, "bob").ok());
  CHECK(testing::MustOk(relay->DeliverPending()) == 2);
  const std::vector<Event> events = sink->Events();
  REQUIRE(events.size() == 7);
  for (std::size_t i = 0; i < events.size(); ++i) CHECK(events[i].sequence == i + 1);
  CHECK(events.back().type == EventType::kRevoked);
  CHECK(events.back().actor == "bob");

  // A new relay under the same name resumes; another name starts over.
  auto again = std::make_shared<CollectingEventSink>();
  CHECK(testing::MustOk(f.Relay(again, "audit")->DeliverPending()) == 0);
  CHECK(testing::MustOk(f.Relay(again, "siem")->DeliverPending()) == 7);
}

TEST_CASE("AuditRelay retries from the first entry its sink refused", "[audit]") {
  Fixture f;
  for (int i = 0; i < 6; ++i) f.Create(absl::StrCat("k", i));
  auto sink = std::make_shared<FlakySink>();
  sink->FailFrom(4);
  std::unique_ptr<AuditRelay> relay = f.Relay(sink, "audit");
  CHECK(relay->DeliverPending().status().code() == absl::StatusCode::kUnavailable);
  CHECK(sink->Seen() == Range(1, 3));
  CHECK(testing::MustOk(f.store->AuditCursor("audit")) == 3);  // what was delivered
  sink->FailFrom(0);
  CHECK(testing::MustOk(relay->DeliverPending()) == 3);
  CHECK(sink->Seen() == Range(1, 6));  // nothing skipped, nothing repeated here
}

TEST_CASE("A started AuditRelay follows new writes and retries a failing sink",
          "[audit][concurrent]") {
  Fixture f;
  f.Create("before");
  auto sink = std::make_shared<FlakySink>();
  std::unique_ptr<AuditRelay> relay = f.Relay(sink, "audit");
  REQUIRE(relay->Start().ok());
  CHECK(relay->Start().code() == absl::StatusCode::kFailedPrecondition);
  sink->AwaitCount(1);
  sink->FailFrom(3);
  for (int i = 0; i < 4; ++i) f.Create(absl::StrCat("k", i));
  sink->AwaitCount(2);
  sink->FailFrom(0);  // the relay's retry delivers the rest
  sink->AwaitCount(5);
  relay.reset();  // stops the thread
  CHECK(sink->Seen() == Range(1, 5));
  CHECK(testing::MustOk(f.store->AuditCursor("audit")) == 5);
}

// Blocks each Emit until the test lets it through.
class GatedSink final : public EventSink {
 public:
  absl::Status Emit(const Event& event) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return passes_ > 0; });
    --passes_;
    --waiting_;
    seen_.push_back(event.sequence);
    return absl::OkStatus();
  }
  void AwaitWaiting() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return waiting_ > 0; });
  }
  void Pass(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    passes_ += n;
    cv_.notify_all();
  }
  std::vector<std::uint64_t> Seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  int passes_ = 0;
  std::vector<std::uint64_t> seen_;
};

TEST_CASE("Destroying a started AuditRelay waits for one Emit, not the backlog",
          "[audit][concurrent]") {
  Fixture f;
  for (int i = 0; i < 50; ++i) f.Create(absl::StrCat("k", i));
  auto sink = std::make_shared<GatedSink>();
  std::unique_ptr<AuditRelay> relay = f.Relay(sink, "audit");
  REQUIRE(relay->Start().ok());
  sink->AwaitWaiting();  // the first Emit is in progress
  std::thread destroy([&] { relay.reset(); });
  // Let the Emit in progress finish once the destructor has asked to stop;
  // a relay that ignored the request would go on through all 50 entries,
  // each let through by the generous pass count below.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  sink->Pass(1000);
  destroy.join();
  const std::vector<std::uint64_t> seen = sink->Seen();
  CHECK(seen.size() < 50);
  REQUIRE_FALSE(seen.empty());
  CHECK(testing::MustOk(f.store->AuditCursor("audit")) == seen.back());  // acknowledged
  // The next relay under that name picks up where it stopped.
  auto rest = std::make_shared<CollectingEventSink>();
  CHECK(testing::MustOk(f.Relay(rest, "audit")->DeliverPending()) == 50 - seen.size());
}

}  // namespace
}  // namespace keygate
