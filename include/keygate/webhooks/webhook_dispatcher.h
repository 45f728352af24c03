// keygate/webhooks/webhook_dispatcher.h: delivers each key's events to its webhook URL, signed,
// at least once and in order per key, from the store's audit log (component keygate::webhooks).
//
// The store's audit log is the outbox: every change of a key commits with its entry (audit.h).
// The dispatcher reads the entries after its position, turns those of keys with a webhook URL
// into messages ("key.created", "key.modified", "key.revoked", "key.restored", "key.rolled",
// "key.deleted"; reveals, reseals and new signing secrets are not sent) and writes them, with its
// new position, in one transaction to a SQLite file of its own (`state_path`): a crash loses no
// committed event and sends none twice to the queue. Two more events do not come from the log:
// "key.expiring", queued once per expiry when an active key's `expires` comes within
// `expiring_lead` (the keys are scanned every `expiring_scan_interval`), and "key.rate_limited",
// queued when a verifier reports denials through `RateLimitSink()`, at most once per key per
// `rate_limited_window` (the first denial of the window; later ones are coalesced into nothing).
// Workers then POST each key's oldest pending message with a `WebhookSender` (SSRF-safe,
// webhook_sender.h), signed (Standard Webhooks, the same `webhook-id` on every attempt), and
// record every attempt.
//
// Signing: a key with its own secrets (KeyManager::Options::webhook_secret_per_key) is signed
// with them, opened with `envelope` at each attempt from the copy the dispatcher keeps of the
// key's last read state (so a deleted key's last messages are still signed, and a rolled secret
// signs from the roll's entry on, next to the previous one during its overlap); any other key
// with `secrets`, the deployment's (never a key that has its own: its receiver would refuse
// them). A message that cannot be signed is not sent: the attempt fails with the reason.
//
// Retries: a failed attempt is retried after the next delay of `retry_schedule` (with jitter),
// the key's later messages waiting behind it; after the last delay the message is marked failed
// and the next one goes. A 410 Gone disables the key's endpoint (its pending messages are
// skipped) until its URL changes.
//
// Where: the URL the key had at the change (Event::webhook_url; a deletion: before it), so an
// event is sent even when its key is gone by the time the entry is read.
//
// Payloads: {"type": "key.rolled", "timestamp": <the change's time>, "data": {"key": <the key's
// public fields as the admin API shows them, read when the entry is queued (so possibly a later
// state, but always with the URL the message goes to, never a later one); for a deletion the
// last ones read, or only id, owner and webhook_url for a key deleted before any read>,
// "actor": ..., "changed_fields": [...], "version": ...}}. Never a token, a digest or a sealed
// value. "key.expiring": {"type", "timestamp", "data": {"key", "expires"}}; "key.rate_limited":
// {"type", "timestamp": the first denial, "data": {"key", "denied": the denials in the verifier's
// batch that opened the window, "first_denied"}}. The state file is created private to its owner
// (0600).
//
// Where it starts: a new state file starts at the consumer's acknowledged position in the store
// (`consumer`, KeyStore::AuditCursor), or at the log's end when the consumer is new: events from
// before the first run are not sent. The position is acknowledged in the store after each read.
// Run one dispatcher per deployment (two would each send every message).
//
// Ownership: shares the store (kept alive by the dispatcher); owns its threads, its sender and
// the state file's connection. Cost: a SQLite transaction per batch read and per attempt (no
// fsync: a power loss can only make attempts happen again), plus the attempt itself (a name
// lookup, and a TLS handshake when no kept connection fits: webhook_sender.h); a read of every
// active key per expiring_scan_interval; never on the verification path (bench/README.md:
// thousands of deliveries a second on two cores).
// Memory: a bounded batch of entries or keys and one message per worker, and at most
// kMaxRateLimitInbox keys' denials waiting to be queued (more are dropped and counted in
// last_error); a backlog stays in the file.
// Thread safety: thread-safe (Ingest and ScanExpiring calls take turns). Start/Stop from one
// thread. Attempts that cannot be recorded (a full disk) are made again after a second's pause:
// at least once.
//
// Example:
//   keygate::WebhookDispatcherOptions o;
//   o.store = store;
//   o.state_path = "/var/lib/myapp/webhooks.db";
//   o.secrets = {*keygate::WebhookSecret::Parse(secret_text)};  // and/or o.envelope (per key)
//   std::unique_ptr<keygate::WebhookDispatcher> d = *keygate::WebhookDispatcher::Create(o);
//   d->Start();
//   verifier_options.usage_sink = d->RateLimitSink();  // key.rate_limited
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

#include "keygate/envelope.h"
#include "keygate/key_store.h"
#include "keygate/usage.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_sender.h"

namespace keygate {

struct WebhookDispatcherOptions {
  std::shared_ptr<KeyStore> store = {};  // required: its audit log is the outbox
  std::string state_path = {};           // required: the dispatcher's SQLite file (created)
  // The deployment's signing secrets, the current one first; two while rotating (receivers
  // holding either accept). Required unless `envelope` is set.
  std::vector<WebhookSecret> secrets = {};
  // Opens keys' own secrets (KeyRecord::sealed_webhook_secret). Set it where keys may have
  // their own: then a key's messages are never signed with `secrets` (but during the overlap of
  // its first roll), and a key deleted before the dispatcher first read it is not signed at all
  // (whether it had its own is unknown). Null: a key with its own secrets is not signed either
  // (fail closed); others with `secrets`.
  std::shared_ptr<const Envelope> envelope = {};
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
  // key.expiring this long before an active key's expiry (zero: never; at most 365 days); the
  // keys are read this often (1 s .. 1 day) and at Start, on a thread of their own.
  absl::Duration expiring_lead = absl::Hours(24 * 7);
  absl::Duration expiring_scan_interval = absl::Minutes(5);
  // At most one key.rate_limited per key per window (1 s .. 30 days).
  absl::Duration rate_limited_window = absl::Hours(1);
};

// Keys whose denials may wait in memory to be queued as key.rate_limited.
inline constexpr std::size_t kMaxRateLimitInbox = 10000;

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
  std::uint64_t sequence = 0;  // the audit entry's; 0 for key.expiring and key.rate_limited
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
  // Opens (creating or migrating) the state file. Errors: kInvalidArgument naming the option
  // ("store: must be set", "secrets: at least one unless envelope is set", "retry_schedule: ...",
  // "threads: ..."), the sender's option errors ("sender.ca_file: ..."), the file's errors
  // (kFailedPrecondition, kPermissionDenied), the store's (kUnavailable).
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

  // Reads the store's new entries (and the denials RateLimitSink holds) into the queue now
  // (Start does it on its own); returns how many messages were queued. Also before Start and
  // after Stop. Errors: the store's; the file's.
  [[nodiscard]] absl::StatusOr<std::size_t> Ingest();
  // Reads the keys and queues key.expiring for those whose expiry is now within expiring_lead
  // (Start does it every expiring_scan_interval); returns how many were queued. Errors: the
  // store's; the file's.
  [[nodiscard]] absl::StatusOr<std::size_t> ScanExpiring();

  // A sink for VerifierOptions::usage_sink: keys with denials (KeyUsage::denied) become
  // key.rate_limited messages (queued by the dispatcher's reader, or the next Ingest, not on the
  // verifier's thread). It may outlive the dispatcher (it then drops what it gets). Cost per
  // batch: a lock and a map insert per denied key. Denials are observations, not commits:
  // those not queued yet are lost when the process ends (a verifier's last usage batch after
  // Stop is queued by the next Ingest, or not at all).
  std::shared_ptr<UsageSink> RateLimitSink();

  // The delivery log, newest first: the messages of `key_id` (every key's when empty), at most
  // `limit` (1 .. 1000), each with its attempts. Cost: 1 + `limit` indexed queries under the
  // state file's lock (workers recording attempts wait). Errors: kInvalidArgument (limit),
  // kDataLoss (a corrupt state file), the file's.
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
