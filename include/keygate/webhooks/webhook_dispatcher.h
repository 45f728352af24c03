// keygate/webhooks/webhook_dispatcher.h: delivers each key's lifecycle events to its webhook URL,
// signed, at least once and in order per key, from the store's audit log (component
// keygate::webhooks).
//
// The store's audit log is the outbox: every change of a key commits with its entry (audit.h).
// The dispatcher reads the entries after its position, turns those of keys with a webhook URL
// into messages ("key.created", "key.modified", "key.revoked", "key.restored", "key.rolled",
// "key.deleted"; reveals and reseals are not sent) and writes them, with its new position, in one
// transaction to a SQLite file of its own (`state_path`): a crash loses no committed event and
// sends none twice to the queue. Workers then POST each key's oldest pending message with a
// `WebhookSender` (SSRF-safe, webhook_sender.h), signed with `secrets` (Standard Webhooks, the
// same `webhook-id` on every attempt), and record every attempt. A failed attempt is retried
// after the next delay of `retry_schedule` (with jitter), the key's later messages waiting
// behind it; after the last delay the message is marked failed and the next one goes. A 410
// Gone disables the key's endpoint (its pending messages are skipped) until its URL changes.
//
// Where: the URL the key had at the change (Event::webhook_url; a deletion: before it), so an
// event is sent even when its key is gone by the time the entry is read.
//
// Payload: {"type": "key.rolled", "timestamp": <the change's time>, "data": {"key": <the key's
// public fields as the admin API shows them, read when the entry is queued (so possibly a later
// state, but always with the URL the message goes to, never a later one); for a deletion the
// last ones read, or only id, owner and webhook_url for a key deleted before any read>,
// "actor": ..., "changed_fields": [...], "version": ...}}. Never a token, a digest or a sealed
// value. The state file is created private to its owner (0600).
//
// Where it starts: a new state file starts at the consumer's acknowledged position in the store
// (`consumer`, KeyStore::AuditCursor), or at the log's end when the consumer is new: events from
// before the first run are not sent. The position is acknowledged in the store after each read.
// Run one dispatcher per deployment (two would each send every message).
//
// Ownership: shares the store (kept alive by the dispatcher); owns its threads, its sender and
// the state file's connection. Cost: a SQLite transaction per batch read and per attempt, plus
// the attempt itself (a name lookup and a TLS handshake); never on the verification path.
// Memory: a bounded batch of entries and one message per worker; a backlog stays in the file.
// Thread safety: thread-safe (Ingest calls take turns). Start/Stop from one thread. Attempts that
// cannot be recorded (a full disk) are made again after a second's pause: at least once.
//
// Example:
//   keygate::WebhookDispatcherOptions o;
//   o.store = store;
//   o.state_path = "/var/lib/myapp/webhooks.db";
//   o.secrets = {*keygate::WebhookSecret::Parse(secret_text)};
//   std::unique_ptr<keygate::WebhookDispatcher> d = *keygate::WebhookDispatcher::Create(o);
//   d->Start();
//   ...
//   d->Stop();

#ifndef KEYGATE_WEBHOOKS_WEBHOOK_DISPATCHER_H_
#define KEYGATE_WEBHOOKS_WEBHOOK_DISPATCHER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/key_store.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_sender.h"

namespace keygate {

struct WebhookDispatcherOptions {
  std::shared_ptr<KeyStore> store = {};  // required: its audit log is the outbox
  std::string state_path = {};           // required: the dispatcher's SQLite file (created)
  // Required: the signing secrets, the current one first; two while rotating (receivers holding
  // either accept).
  std::vector<WebhookSecret> secrets = {};
  WebhookSenderOptions sender = {};
  int threads = 4;  // 1 .. 64 attempts at once, at most one per key
  // The delays before the retries (1 .. 20 of them, each 1 ms .. 2 days); after the last, a
  // message is failed. Default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (a day and more).
  std::vector<absl::Duration> retry_schedule = {
      absl::Seconds(5), absl::Minutes(5), absl::Minutes(30), absl::Hours(2),
      absl::Hours(5),   absl::Hours(10),  absl::Hours(10)};
  double jitter = 0.2;                // each delay drawn from d * [1 - jitter, 1 + jitter]
  std::string consumer = "webhooks";  // the store's audit consumer name
  // How often the log and the queue are read when no change wakes the dispatcher.
  absl::Duration poll_interval = absl::Milliseconds(250);
  std::size_t batch = 256;  // audit entries read at once (1 .. 1000)
};

// One message as the delivery log has it.
struct WebhookDelivery {
  enum class State : std::uint8_t { kPending = 0, kDelivered = 1, kFailed = 2, kSkipped = 3 };
  struct Attempt {
    absl::Time at;
    int status = 0;  // 0: no response
    absl::Duration latency;
    std::string address;
    std::string error;
  };
  std::uint64_t sequence = 0;  // the audit entry's
  std::string key_id;
  std::string id;    // webhook-id
  std::string type;  // "key.created", ...
  std::string url;
  State state = State::kPending;
  absl::Time next_attempt;  // when pending
  std::vector<Attempt> attempts;
};

std::string_view WebhookDeliveryStateName(WebhookDelivery::State state) noexcept;

class WebhookDispatcher {
 public:
  // Opens (creating) the state file. Errors: kInvalidArgument naming the option ("store: must be
  // set", "secrets: at least one", "retry_schedule: ...", "threads: ..."), the sender's option
  // errors ("sender.ca_file: ..."), the file's errors (kFailedPrecondition, kPermissionDenied),
  // the store's (kUnavailable).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<WebhookDispatcher>> Create(
      WebhookDispatcherOptions options);

  WebhookDispatcher(const WebhookDispatcher&) = delete;
  WebhookDispatcher& operator=(const WebhookDispatcher&) = delete;
  ~WebhookDispatcher();  // Stop()

  // Starts the reader and the workers. Errors: kFailedPrecondition when already started;
  // Subscribe's errors.
  [[nodiscard]] absl::Status Start();
  // Stops reading and waits for the attempts in flight (each bounded by the sender's timeouts
  // and the name lookup); no new one starts; what is pending stays in the file for the next
  // Start. Idempotent.
  void Stop();

  // Reads the store's new entries into the queue now (Start does it on its own); returns how
  // many messages were queued. Errors: the store's; the file's.
  [[nodiscard]] absl::StatusOr<std::size_t> Ingest();

  // The delivery log, newest first: the messages of `key_id` (every key's when empty), at most
  // `limit` (1 .. 1000), each with its attempts.
  [[nodiscard]] absl::StatusOr<std::vector<WebhookDelivery>> Deliveries(std::string_view key_id,
                                                                        std::size_t limit) const;

  // The last error the background reader met (a store down, a full disk), or OK.
  absl::Status last_error() const;

 private:
  struct Impl;
  explicit WebhookDispatcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate

#endif  // KEYGATE_WEBHOOKS_WEBHOOK_DISPATCHER_H_
