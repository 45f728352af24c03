// The default KeyStore::TouchLastUsed, for stores that do not override it.

#include "keygate/key_store.h"

#include "absl/time/clock.h"

namespace keygate {
namespace {

constexpr int kTouchAttempts = 8;

}  // namespace

absl::Status KeyStore::TouchLastUsed(absl::Span<const LastUsedUpdate> updates,
                                     absl::Duration min_advance) {
  absl::Status first_error;
  for (const LastUsedUpdate& u : updates) {
    for (int attempt = 0; attempt < kTouchAttempts; ++attempt) {
      absl::StatusOr<KeyRecord> r = Get(u.key_id);
      if (!r.ok()) {
        if (r.status().code() != absl::StatusCode::kNotFound && first_error.ok()) {
          first_error = r.status();
        }
        break;
      }
      if (r->last_used.has_value() &&
          (u.last_used <= *r->last_used || u.last_used - *r->last_used < min_advance)) {
        break;
      }
      r->last_used = u.last_used;
      // A store without its own TouchLastUsed records usage as a modification.
      const AuditNote note{EventType::kModified, "keygate:usage", absl::Now(), {"last_used"}};
      absl::StatusOr<KeyRecord> updated = Update(*r, note);
      if (updated.ok()) break;
      // kAborted: a management change won the race; re-read and retry on
      // top of it, never over it.
      if (updated.status().code() == absl::StatusCode::kAborted) continue;
      if (updated.status().code() != absl::StatusCode::kNotFound && first_error.ok()) {
        first_error = updated.status();
      }
      break;
    }
  }
  return first_error;
}

}  // namespace keygate
