// Event names, printing and the bundled sinks.

#include "keygate/event_sink.h"

#include <atomic>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "catch.h"

namespace keygate {
namespace {

Event Sample() {
  Event e;
  e.sequence = 12;
  e.type = EventType::kModified;
  e.at = absl::FromUnixSeconds(1'700'000'000);
  e.actor = "bob";
  e.key_id = "key_0123456789abcdefghijkl";
  e.owner = "alice";
  e.changed_fields = {"name", "scopes"};
  e.version = 3;
  return e;
}

TEST_CASE("Event types have stable names", "[events]") {
  CHECK(EventTypeName(EventType::kCreated) == "created");
  CHECK(EventTypeName(EventType::kModified) == "modified");
  CHECK(EventTypeName(EventType::kRevoked) == "revoked");
  CHECK(EventTypeName(EventType::kRestored) == "restored");
  CHECK(EventTypeName(EventType::kDeleted) == "deleted");
  CHECK(EventTypeName(EventType::kRolled) == "rolled");
  CHECK(EventTypeName(EventType::kRevealed) == "revealed");
  CHECK(EventTypeName(EventType::kUnspecifiedDoNotUse) == "unspecified");
  CHECK(EventTypeName(static_cast<EventType>(200)) == "unspecified");
  for (EventType t :
       {EventType::kCreated, EventType::kModified, EventType::kRevoked, EventType::kRestored,
        EventType::kDeleted, EventType::kRolled, EventType::kRevealed}) {
    CHECK(ParseEventType(EventTypeName(t)) == t);
  }
  CHECK(ParseEventType("unspecified") == std::nullopt);
  CHECK(ParseEventType("Created") == std::nullopt);
}

TEST_CASE("Events print as one line with actor, key, owner, fields and version", "[events]") {
  std::ostringstream os;
  os << Sample();
  CHECK(os.str() ==
        "#12 modified key_0123456789abcdefghijkl by bob (owner alice) fields=[name,scopes] v3 at "
        "2023-11-14T22:13:20+00:00");
  // Text from records other code wrote cannot split or forge the log line.
  Event forged = Sample();
  forged.owner = "alice)\nmodified key_x by root (owner root";
  forged.actor = "bob\x1b[2K";
  std::ostringstream fo;
  fo << forged;
  CHECK(fo.str().find('\n') == std::string::npos);
  CHECK(fo.str().find('\x1b') == std::string::npos);
  CHECK(fo.str().find("by bob\\x1b[2K (owner alice)\\nmodified") != std::string::npos);
}

TEST_CASE("CollectingEventSink keeps events from many threads", "[events][concurrent]") {
  CollectingEventSink sink;
  std::atomic<int> refused{0};  // Catch2 assertions are not thread-safe: counted, checked after
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&sink, &refused, t] {
      for (int i = 0; i < 250; ++i) {
        Event e = Sample();
        e.version = static_cast<std::uint64_t>(t * 1000 + i);
        if (!sink.Emit(e).ok()) refused.fetch_add(1);
      }
    });
  }
  for (std::thread& th : pool) th.join();
  CHECK(refused.load() == 0);
  const std::vector<Event> events = sink.Events();
  CHECK(events.size() == 1000);
  std::vector<bool> seen(4000, false);
  for (const Event& e : events) seen[e.version] = true;
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i < 250; ++i) CHECK(seen[static_cast<std::size_t>(t * 1000 + i)]);
  }
}

TEST_CASE("OstreamEventSink writes one line per event", "[events]") {
  std::ostringstream os;
  OstreamEventSink sink(os);
  CHECK(sink.Emit(Sample()).ok());
  Event d = Sample();
  d.type = EventType::kDeleted;
  d.changed_fields.clear();
  d.version = 0;
  CHECK(sink.Emit(d).ok());
  std::ostringstream expected;
  expected << Sample() << "\n" << d << "\n";
  CHECK(os.str() == expected.str());
  // A stream that fails is an error the relay retries, not a lost event.
  os.setstate(std::ios::badbit);
  CHECK(sink.Emit(d).code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("Audit consumer names are checked", "[events]") {
  CHECK(ValidateAuditConsumer("webhooks").ok());
  CHECK(ValidateAuditConsumer("siem.prod:eu-1_a").ok());
  CHECK(ValidateAuditConsumer(std::string(64, 'a')).ok());
  CHECK(ValidateAuditConsumer("").code() == absl::StatusCode::kInvalidArgument);
  CHECK(ValidateAuditConsumer(std::string(65, 'a')).code() == absl::StatusCode::kInvalidArgument);
  CHECK(ValidateAuditConsumer("a b").code() == absl::StatusCode::kInvalidArgument);
  CHECK(ValidateAuditConsumer("a\nb").code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace keygate
