// keygate/event_sink.h: the audit trail of key management.
//
// `KeyManager` emits one `Event` per successful mutation (create, provision,
// modify, revoke, restore, delete, roll). Events name the actor, the key id and
// the fields that changed; they never contain a token, a digest or a pepper.
// Sinks forward them to an audit log or a webhook queue.
//
// Example:
//
//   keygate::CollectingEventSink sink;      // keeps events in memory
//   ... manager operations ...
//   for (const keygate::Event& e : sink.Events()) std::cout << e << "\n";
//
// Thread safety: `Emit` may be called from several threads at once;
// implementations must be thread-safe. `Emit` is called after the store
// committed the change and must not throw.

#ifndef KEYGATE_EVENT_SINK_H_
#define KEYGATE_EVENT_SINK_H_

#include <cstdint>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace keygate {

enum class EventType : std::uint8_t {
  kUnspecifiedDoNotUse = 0,
  kCreated,
  kModified,
  kRevoked,
  kRestored,
  kDeleted,
  kRolled,
};

std::string_view EventTypeName(EventType type) noexcept;  // "created", ...

// `changed_fields` by type: created: the fields the request set ("name",
// "owner", "kind", "environment" always; "description", "scopes", "expires",
// "rate_limit", "webhook_url", "accounts", "metadata" when given); modified:
// the fields whose value changed; revoked/restored: {"state"}; rolled:
// {"token"} (the name of what changed, never its value); deleted: {}.
struct Event {
  EventType type = EventType::kUnspecifiedDoNotUse;
  absl::Time at;
  std::string actor;  // who did it (a user id, "system", ...)
  std::string key_id;
  std::string owner;                        // the key's owner
  std::vector<std::string> changed_fields;  // e.g. {"name", "scopes"}
  std::uint64_t version = 0;                // the record version after the change (0: deleted)
};

// "created key_... by alice (owner alice) fields=[...] v1". Ids, actor and
// owner are printed with control characters escaped (\n, \x1b, ...): one
// event is always one line.
std::ostream& operator<<(std::ostream& os, const Event& event);

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Emit(const Event& event) noexcept = 0;
};

// Discards events.
class NullEventSink final : public EventSink {
 public:
  void Emit(const Event&) noexcept override {}
};

// Keeps every event in memory (tests, demos). Thread-safe.
class CollectingEventSink final : public EventSink {
 public:
  void Emit(const Event& event) noexcept override;
  std::vector<Event> Events() const;

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
};

// Writes one line per event to a stream. Thread-safe (serialises writes).
class OstreamEventSink final : public EventSink {
 public:
  explicit OstreamEventSink(std::ostream& os) : os_(os) {}
  void Emit(const Event& event) noexcept override;

 private:
  std::mutex mu_;
  std::ostream& os_;
};

}  // namespace keygate

#endif  // KEYGATE_EVENT_SINK_H_
