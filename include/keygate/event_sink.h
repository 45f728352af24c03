// keygate/event_sink.h: where audit log entries go (a log file, a SIEM, a queue).
//
// `AuditRelay` (audit_relay.h) reads a store's audit log (audit.h) and calls `Emit` for each entry,
// in sequence order, at least once: after a crash or a failed `Emit`, entries from the last
// acknowledged one are emitted again, so a sink that must not see duplicates drops entries whose
// `sequence` it has already seen.
//
// Example:
//   keygate::CollectingEventSink sink;  // keeps events in memory
//   ... relay->DeliverPending() ...
//   for (const keygate::Event& e : sink.Events()) std::cout << e << "\n";
//
// Thread safety: implementations must be thread-safe. Errors: an `Emit` error stops the round; the
// relay retries that entry later.

#ifndef KEYGATE_EVENT_SINK_H_
#define KEYGATE_EVENT_SINK_H_

#include <mutex>
#include <ostream>
#include <vector>

#include "absl/status/status.h"

#include "keygate/audit.h"

namespace keygate {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Takes one entry; OK once it is durable (or handed on) as far as this sink promises.
  [[nodiscard]] virtual absl::Status Emit(const Event& event) = 0;
};

// Keeps every event in memory (tests, demos).
class CollectingEventSink final : public EventSink {
 public:
  [[nodiscard]] absl::Status Emit(const Event& event) override;
  std::vector<Event> Events() const;

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
};

// Writes one line per event (operator<< of audit.h) and flushes; kUnavailable when the stream
// fails.
class OstreamEventSink final : public EventSink {
 public:
  explicit OstreamEventSink(std::ostream& os) : os_(os) {}
  [[nodiscard]] absl::Status Emit(const Event& event) override;

 private:
  std::mutex mu_;
  std::ostream& os_;
};

}  // namespace keygate

#endif  // KEYGATE_EVENT_SINK_H_
