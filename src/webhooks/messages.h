// Webhook messages and the dispatcher's state file: what a message is (its type, id and
// payload), the file's schema and reading its delivery log (webhook_dispatcher.h). Private to
// keygate::webhooks.
//
// State file (SQLite, user_version 1):
//   position   one row: the audit sequence read up to.
//   endpoints  one row per key that has or had a webhook URL: its URL, its public fields as last
//              read (a deletion's payload), when a 410 disabled it, how many messages wait and
//              when its oldest is due. The workers pick endpoints by due time, so a backlog
//              behind one dead endpoint never delays another.
//   messages   one per queued event, keyed by the audit sequence (a re-read entry is ignored);
//              state as WebhookDelivery::State (0 pending, 1 delivered, 2 failed, 3 skipped).
//   attempts   one per attempt.
#ifndef KEYGATE_SRC_WEBHOOKS_MESSAGES_H_
#define KEYGATE_SRC_WEBHOOKS_MESSAGES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include "keygate/audit.h"
#include "keygate/key.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "sqlite/sqlite_db.h"

namespace keygate::webhooks_internal {

// The SQL that creates (or keeps) the state file's tables.
extern const char kStateSchema[];

// The message type an audit entry is sent as ("key.created", ...); nullopt: not sent (reveals,
// reseals).
std::optional<std::string> MessageType(const Event& e);

// The webhook-id of the message for entry `sequence` of key `key_id`: stable across attempts.
std::string MessageId(std::string_view key_id, std::uint64_t sequence);

// The key's public fields as the admin API shows them (never a token, digest or sealed copy).
std::string KeyJson(const KeyRecord& r);

// {"type", "timestamp", "data": {"key": <key_json>, "actor", "changed_fields", "version"}}.
std::string Payload(const std::string& type, const Event& e, const std::string& key_json);

// The delivery log, newest first (WebhookDispatcher::Deliveries). Errors: kInvalidArgument
// (limit), kDataLoss (a corrupt state), the file's.
absl::StatusOr<std::vector<WebhookDelivery>> ReadDeliveries(internal::SqliteDb& db,
                                                            std::string_view key_id,
                                                            std::size_t limit);

}  // namespace keygate::webhooks_internal

#endif  // KEYGATE_SRC_WEBHOOKS_MESSAGES_H_
