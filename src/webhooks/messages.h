// Webhook messages and the dispatcher's state file: what a message is (its type, id and
// payload), the file's schema and reading its delivery log (webhook_dispatcher.h). Private to
// keygate::webhooks.
//
// State file (SQLite, user_version 2):
//   position   one row: the audit sequence read up to.
//   endpoints  one row per key that has or had a webhook URL: its URL, its public fields and its
//              sealed signing secrets as last read (a deletion's payload and signature; NULL:
//              the key was never read, so whether it has secrets of its own is unknown), when a
//              410 disabled it, until when its rate-limit events are coalesced, how many
//              messages wait and when its oldest is due. The workers pick endpoints by due time,
//              so a backlog behind one dead endpoint never delays another.
//   messages   one per queued event, in queue order (`id`); `webhook_id` is unique, so an entry
//              read again, or an expiry or a rate-limit window seen again, is ignored;
//              `sequence` is the audit entry's (0: key.expiring, key.rate_limited); state as
//              WebhookDelivery::State (0 pending, 1 delivered, 2 failed, 3 skipped).
//   attempts   one per attempt, by message id.
// Version 1 (the first dispatcher's) keyed messages by the audit sequence; MigrateState moves
// it to version 2 in one transaction, ids and webhook-ids unchanged.
#ifndef KEYGATE_SRC_WEBHOOKS_MESSAGES_H_
#define KEYGATE_SRC_WEBHOOKS_MESSAGES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "keygate/audit.h"
#include "keygate/key.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "sqlite/sqlite_db.h"

namespace keygate::webhooks_internal {

// Creates the state file's tables, or migrates an older file, in one transaction. Errors:
// kFailedPrecondition for a file of a newer version; the file's.
absl::Status MigrateState(internal::SqliteDb& db);

// The message type an audit entry is sent as ("key.created", ...); nullopt: not sent (reveals,
// reseals).
std::optional<std::string> MessageType(const Event& e);

// The webhook-id of the message for entry `sequence` of key `key_id`: stable across attempts.
std::string MessageId(std::string_view key_id, std::uint64_t sequence);

// The key's public fields as the admin API shows them (never a token, digest or sealed copy).
std::string KeyJson(const KeyRecord& r);

// {"type", "timestamp", "data": {"key": <key_json>, "actor", "changed_fields", "version"}}.
std::string Payload(const std::string& type, const Event& e, const std::string& key_json);

// key.expiring: {"type", "timestamp": now, "data": {"key", "expires"}}; its webhook-id names the
// expiry, so each expiry is announced once.
std::string ExpiringPayload(const std::string& key_json, absl::Time expires, absl::Time now);
std::string ExpiringId(std::string_view key_id, absl::Time expires);

// key.rate_limited: {"type", "timestamp": first denial, "data": {"key", "denied",
// "first_denied"}}; its webhook-id names the first denial.
std::string RateLimitedPayload(const std::string& key_json, std::uint64_t denied,
                               absl::Time first_denied);
std::string RateLimitedId(std::string_view key_id, absl::Time first_denied);

// The delivery log, newest first (WebhookDispatcher::Deliveries). Errors: kInvalidArgument
// (limit), kDataLoss (a corrupt state), the file's.
absl::StatusOr<std::vector<WebhookDelivery>> ReadDeliveries(internal::SqliteDb& db,
                                                            std::string_view key_id,
                                                            std::size_t limit);

}  // namespace keygate::webhooks_internal

#endif  // KEYGATE_SRC_WEBHOOKS_MESSAGES_H_
