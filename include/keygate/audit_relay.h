// keygate/audit_relay.h: feeds an EventSink from a store's audit log (audit.h), at least once and
// in order, resuming after a restart from the last entry the consumer acknowledged.
//
// The relay keeps its position in the store itself (`KeyStore::AckAudit` under `consumer`), so a
// process that crashes between a commit and its delivery delivers the entry after it restarts.
// Several relays may share a consumer name (e.g. one per server): each entry is then delivered at
// least once overall, possibly by more than one of them.
//
// Example:
//   keygate::AuditRelay::Options o;
//   o.store = store;
//   o.sink = std::make_shared<keygate::OstreamEventSink>(audit_file);
//   o.consumer = "audit-file";
//   absl::StatusOr<std::unique_ptr<keygate::AuditRelay>> relay =
//       keygate::AuditRelay::Create(std::move(o));
//   (*relay)->Start();  // or call DeliverPending() when convenient
//
// Ownership: shares the store and the sink. Thread safety: thread-safe; deliveries are serialised.
// Cost: one ReadAudit per batch and one AckAudit per delivered batch.

#ifndef KEYGATE_AUDIT_RELAY_H_
#define KEYGATE_AUDIT_RELAY_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/event_sink.h"
#include "keygate/key_store.h"

namespace keygate {

class AuditRelay {
 public:
  struct Options {
    std::shared_ptr<KeyStore> store;  // required
    std::shared_ptr<EventSink> sink;  // required
    std::string consumer;             // required; see ValidateAuditConsumer (audit.h)
    std::size_t batch = 100;          // entries per read, 1 .. kMaxAuditLimit
    // Start(): how long to wait after a store or sink error, and at most between two polls
    // (changes by other processes arrive by subscription too).
    absl::Duration retry = absl::Seconds(1);
  };

  // Errors: kInvalidArgument naming the option.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<AuditRelay>> Create(Options options);

  // Stops the thread Start() started: the Emit in progress finishes (and is acknowledged), the
  // rest of a backlog waits for the next relay.
  ~AuditRelay();
  AuditRelay(const AuditRelay&) = delete;
  AuditRelay& operator=(const AuditRelay&) = delete;

  // Emits every entry after the consumer's acknowledged position and acknowledges them; returns
  // how many were emitted. Errors: the first Emit error (entries before it are acknowledged, it
  // and later ones are not), the store's, kInternal for a store whose pages do not advance.
  [[nodiscard]] absl::StatusOr<std::size_t> DeliverPending();

  // Delivers in a background thread on every store change, retrying errors after `retry`.
  // Errors: kFailedPrecondition (already started), the store's Subscribe errors.
  [[nodiscard]] absl::Status Start();

 private:
  struct Impl;
  explicit AuditRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_AUDIT_RELAY_H_
