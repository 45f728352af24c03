// A webhook delivery log entry as JSON, the one form the admin API (GET .../webhook-deliveries)
// and `keygate webhooks deliveries --json` write. Header-only: keygate::admin uses it without
// linking keygate::webhooks (only WebhookDelivery, a plain struct, comes from its header).
#ifndef KEYGATE_SRC_INTERNAL_WEBHOOK_DELIVERY_JSON_H_
#define KEYGATE_SRC_INTERNAL_WEBHOOK_DELIVERY_JSON_H_

#include <string_view>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"

#include "internal/json_writer.h"
#include "keygate/webhooks/webhook_dispatcher.h"

namespace keygate::internal {

// "pending", "delivered", "failed", "skipped" (WebhookDeliveryStateName's names).
inline std::string_view DeliveryStateText(WebhookDelivery::State state) noexcept {
  switch (state) {
    case WebhookDelivery::State::kPending:
      return "pending";
    case WebhookDelivery::State::kDelivered:
      return "delivered";
    case WebhookDelivery::State::kFailed:
      return "failed";
    case WebhookDelivery::State::kSkipped:
      return "skipped";
  }
  return "unknown";
}

// {"id", "key_id", "type", "url", "state", "sequence" (null: not from the audit log),
// "next_attempt" (null unless pending), "attempts": [{"at", "status" (null: no response),
// "latency_ms" (with the microseconds the log keeps), "address" (null: no connection), "error"
// (null: none)}]}.
inline void WriteDeliveryJson(JsonWriter& w, const WebhookDelivery& d) {
  const auto text_or_null = [&w](std::string_view s) {
    if (s.empty()) {
      w.Null();
    } else {
      w.String(s);
    }
  };
  w.BeginObject();
  w.Key("id").String(d.id);
  w.Key("key_id").String(d.key_id);
  w.Key("type").String(d.type);
  w.Key("url").String(d.url);
  w.Key("state").String(DeliveryStateText(d.state));
  w.Key("sequence");
  if (d.sequence == 0) {
    w.Null();
  } else {
    w.Uint(d.sequence);
  }
  w.Key("next_attempt");
  if (d.state == WebhookDelivery::State::kPending) {
    w.Time(d.next_attempt);
  } else {
    w.Null();
  }
  w.Key("attempts").BeginArray();
  for (const WebhookDelivery::Attempt& a : d.attempts) {
    w.BeginObject();
    w.Key("at").Time(a.at);
    w.Key("status");
    if (a.status == 0) {
      w.Null();
    } else {
      w.Int(a.status);
    }
    w.Key("latency_ms").Raw(absl::StrFormat("%.3f", absl::ToDoubleMilliseconds(a.latency)));
    w.Key("address");
    text_or_null(a.address);
    w.Key("error");
    text_or_null(a.error);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

}  // namespace keygate::internal

#endif  // KEYGATE_SRC_INTERNAL_WEBHOOK_DELIVERY_JSON_H_
