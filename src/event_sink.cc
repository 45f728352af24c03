// The bundled sinks (event_sink.h).

#include "keygate/event_sink.h"

#include <mutex>
#include <ostream>
#include <vector>

#include "absl/status/status.h"

namespace keygate {

absl::Status CollectingEventSink::Emit(const Event& event) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(event);
  return absl::OkStatus();
}

std::vector<Event> CollectingEventSink::Events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

absl::Status OstreamEventSink::Emit(const Event& event) {
  std::lock_guard<std::mutex> lock(mu_);
  os_ << event << "\n";
  os_.flush();
  if (!os_) return absl::UnavailableError("event sink: the output stream failed");
  return absl::OkStatus();
}

}  // namespace keygate
