// The verifier's lock-free read path (index.h): ReferenceVerifier's steps
// over the published table.

#include "verifier/index.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "internal/epoch.h"
#include "internal/gcra.h"
#include "internal/verdict_access.h"
#include "keygate/bearer.h"
#include "keygate/key.h"
#include "keygate/token.h"

namespace keygate::internal {

namespace {

// Counts a denial of slot `s` of `t` at `now_ns` in its cell, whose time is
// Unix seconds held to [1, 2^32 - 1] (0 marks a time not written yet).
// Out of line and cold: the success path keeps Check's code compact, and
// Check keeps only the table, not the slot index, for it.
[[gnu::noinline, gnu::cold]] void RecordDenial(const Table& t, const Slot& s,
                                               std::int64_t now_ns) noexcept {
  const auto second = static_cast<std::uint32_t>(std::clamp<std::int64_t>(
      now_ns / 1'000'000'000, 1, std::numeric_limits<std::uint32_t>::max()));
  NoteDenial(t.denials[static_cast<std::size_t>(&s - t.slots)], second);
}

}  // namespace

std::string IdOf(const Table& t, std::size_t slot) {
  const std::uint64_t c = t.slots[slot].ctrl.load(std::memory_order_relaxed);
  if ((c & kFlagIdInExtra) != 0) return t.extras[c >> kExtraShift]->id;
  std::string id(kKeyIdLength, '\0');
  UnpackKeyId(t.ids[slot], id.data());
  return id;
}

IndexReader::IndexReader(ReaderConfig config)
    : config_(std::move(config)), canonical_(config_.prefix, config_.env_tag) {}

Verdict IndexReader::VerifyHeader(std::string_view authorization, const Requirement& req,
                                  const absl::Time* now) const noexcept {
  std::string_view token;
  // 0. The shape nearly every request has, recognised in one pass; anything
  // else takes the general parsers below, which reach the same verdicts.
  switch (canonical_.MatchHeader(authorization, &token)) {
    case CanonicalMatch::kOk:
      return Lookup(token, req, now);
    case CanonicalMatch::kBadChecksum: {
      Verdict v;
      v.outcome = Outcome::kMalformed;
      return v;
    }
    case CanonicalMatch::kOther:
      break;
  }
  // 1. The header.
  switch (ParseBearer(authorization, &token)) {
    case BearerParse::kOk:
      break;
    case BearerParse::kMissing:
    case BearerParse::kWrongScheme: {  // no Bearer credentials (RFC 6750 3.1)
      Verdict v;
      v.outcome = Outcome::kMissing;
      return v;
    }
    case BearerParse::kMalformed: {
      Verdict v;
      v.outcome = Outcome::kInvalidRequest;
      return v;
    }
  }
  // The recogniser has seen this token already (inside a header it did not
  // take); the general parsers reach the same verdict on any token.
  return VerifyGeneral(token, req, now);
}

Verdict IndexReader::VerifyToken(std::string_view token, const Requirement& req,
                                 const absl::Time* now) const noexcept {
  switch (canonical_.MatchToken(token)) {
    case CanonicalMatch::kOk:
      return Lookup(token, req, now);
    case CanonicalMatch::kBadChecksum: {
      Verdict v;
      v.outcome = Outcome::kMalformed;
      return v;
    }
    case CanonicalMatch::kOther:
      break;
  }
  return VerifyGeneral(token, req, now);
}

Verdict IndexReader::VerifyGeneral(std::string_view token, const Requirement& req,
                                   const absl::Time* now) const noexcept {
  Verdict v;
  // 2. Format, prefix and checksum, before any hashing.
  TokenView view;
  if (ParseToken(token, &view, config_.prefix) != TokenError::kNone) {
    v.outcome = Outcome::kMalformed;
    return v;
  }
  // 3. The environment tag.
  if (view.env_tag != config_.env_tag) {
    v.outcome = Outcome::kMalformed;
    for (const std::string& tag : config_.other_tags) {
      if (view.env_tag == tag) v.outcome = Outcome::kWrongEnvironment;
    }
    return v;
  }
  return Lookup(token, req, now);
}

Verdict IndexReader::Lookup(std::string_view token, const Requirement& req,
                            const absl::Time* now) const noexcept {
  Verdict v;
  // 4. Hash and look up.
  Digest digest;
  if (!config_.hasher->Hash(token, &digest)) {
    v.outcome = Outcome::kUnavailable;
    return v;
  }
  const DigestKey d = KeyOf(digest);
  EpochReadGuard guard;
  if (!guard.ok()) {
    v.outcome = Outcome::kUnavailable;
    return v;
  }
  const Table* t = table_.load(std::memory_order_seq_cst);
  const std::uint64_t home = Home(d.w[0], t->capacity);
  // The slot and its key id are in different arrays: start both misses now.
  __builtin_prefetch(&t->slots[home]);
  __builtin_prefetch(&t->ids[home]);
  // At load 0.7 a third of the keys sit past their home slot (linear
  // probing), most of those in the next one.
  __builtin_prefetch(&t->slots[NextSlot(home, t->capacity)]);
  const std::int64_t now_ns = NowNs(now != nullptr ? *now : config_.clock->Now());
  std::uint64_t c = 0;
  std::int64_t found = FindSlot(*t, d, &c);
  std::int64_t valid_until = kNever;  // a previous secret's grace deadline
  if (found < 0) {
    v.outcome = Outcome::kUnknown;
    return v;
  }
  if ((c & (kFlagRolled | kFlagAwait)) != 0) {
    // A key mid-roll, or past one: its current slot is its only truth
    // (verifier_index.h). The writer gives such slots a side record
    // (BuildImages, ApplyRecord); should that ever not hold, fail closed.
    const KeyExtra* extra = (c & kFlagHasExtra) != 0 ? t->extras[c >> kExtraShift] : nullptr;
    if (extra == nullptr) {
      v.outcome = Outcome::kUnavailable;
      return v;
    }
    std::uint64_t cc = 0;
    if ((c & kFlagRolled) == 0) {
      // A new current secret whose roll has not happened yet.
      const std::int64_t p = FindSlot(*t, KeyOf(extra->replaces), &cc);
      if (p >= 0 && (cc & kFlagRolled) == 0) {
        v.outcome = Outcome::kUnknown;
        return v;
      }
    } else {
      // A previous secret: superseded once its current one is gone or rolled.
      const std::int64_t j = FindSlot(*t, KeyOf(extra->current), &cc);
      if (j < 0 || (cc & kFlagRolled) != 0) {
        v.outcome = Outcome::kUnknown;
        return v;
      }
      valid_until = t->slots[static_cast<std::size_t>(found)].tat.load(std::memory_order_relaxed);
      found = j;
      c = cc;
    }
  }
  return Check(*t, static_cast<std::size_t>(found), c, req, now_ns, valid_until);
}

Verdict IndexReader::Check(const Table& t, std::size_t i, std::uint64_t c, const Requirement& req,
                           std::int64_t now_ns, std::int64_t valid_until) const noexcept {
  Verdict v;
  Slot& s = t.slots[i];
  const KeyExtra* extra = (c & kFlagHasExtra) != 0 ? t.extras[c >> kExtraShift] : nullptr;
  const std::uint64_t pidx = (c >> kPolicyShift) & kPolicyMask;
  // The writer gives every slot that needs a side record one (BuildImages);
  // should that ever not hold, fail closed rather than dereference null.
  const bool id_in_extra = (c & kFlagIdInExtra) != 0;
  if (extra == nullptr && (id_in_extra || pidx == kPolicyInExtra)) {
    v.outcome = Outcome::kUnavailable;
    return v;
  }
  if (!id_in_extra) {
    UnpackKeyId(t.ids[i], internal::VerdictAccess::KeyBuffer(v));
    internal::VerdictAccess::SetKeySize(v, kKeyIdLength);
  } else if (extra->id.size() <= kKeyIdLength) {
    v.set_key(extra->id);
  } else {
    // An id a verdict cannot carry whole (key.h, kKeyIdLength): cut off, it
    // could name another key. ReferenceVerifier answers the same.
    v.outcome = Outcome::kUnavailable;
    return v;
  }

  // 5. A previous secret past its grace deadline.
  if (!(now_ns < valid_until)) {
    v.outcome = Outcome::kExpired;
    return v;
  }
  // 6-8. State, expiry, environment.
  if ((c & kFlagRevoked) != 0) {
    v.outcome = Outcome::kRevoked;
    return v;
  }
  if (s.expires_ns <= now_ns) {
    v.outcome = Outcome::kExpired;
    return v;
  }
  if ((c & kFlagWrongEnv) != 0) {
    v.outcome = Outcome::kWrongEnvironment;
    return v;
  }
  // 9. The linked account.
  if (!req.account().empty()) {
    if (extra == nullptr ||
        !std::binary_search(extra->accounts.begin(), extra->accounts.end(), req.account(),
                            [](std::string_view a, std::string_view b) { return a < b; })) {
      v.outcome = Outcome::kAccountDenied;
      return v;
    }
  }
  // 10. Scopes.
  if (config_.evaluator == nullptr) {
    if (!MaskSatisfies(s.scopes, req)) {
      v.outcome = Outcome::kInsufficientScope;
      return v;
    }
  } else {
    GrantedScopes granted;
    granted.mask = s.scopes;
    if (extra != nullptr) granted.names = extra->scope_names;
    if (!config_.evaluator->Allows(granted, req)) {
      v.outcome = Outcome::kInsufficientScope;
      return v;
    }
  }

  // 11. Rate limits: the key's (in its current slot, which a previous
  // secret's lookup has moved to) and optionally its owner's.
  const GcraPolicy* key_policy = nullptr;
  if (pidx == kPolicyInExtra) {
    key_policy = &extra->policy;
  } else if (pidx != kPolicyNone) {
    key_policy = &policies_[pidx];
  }
  std::atomic<std::int64_t>* key_tat = key_policy != nullptr ? &s.tat : nullptr;
  GcraCell* owner_cell = extra != nullptr ? extra->owner_cell : nullptr;
  LimitDecision decision{LimitResult::kAllowed, {}};
  if (owner_cell == nullptr && config_.local_limiter) {
    if (key_tat != nullptr) {
      decision = internal::GcraAcquireOne(*key_policy, *key_tat, req.cost(), now_ns);
    }
  } else {
    LimitRef refs[2];
    std::size_t n = 0;
    if (key_tat != nullptr) refs[n++] = internal::GcraAccess::Ref(key_policy, key_tat, v.key());
    if (owner_cell != nullptr)
      refs[n++] = LimitRef{&config_.owner_policy, owner_cell, extra->owner_subject};
    if (n != 0) decision = config_.limiter->Acquire({refs, n}, req.cost(), now_ns);
  }
  v.rate = decision.status;
  switch (decision.result) {
    case LimitResult::kAllowed:
      break;
    case LimitResult::kDenied:
      // Counted for the usage batch (KeyUsage::denied), off the success
      // path, in the slot's cell of its own array (verifier_index.h).
      if (config_.record_usage) RecordDenial(t, s, now_ns);
      v.outcome = Outcome::kRateLimited;
      return v;
    case LimitResult::kUnavailable:
      v.outcome = Outcome::kUnavailable;
      return v;
  }

  // Usage: in the slot's own line, which the TAT update (if any) has already
  // brought into this core's cache in exclusive state.
  if (config_.record_usage) {
    Slot& u = s;
    u.uses.fetch_add(1, std::memory_order_relaxed);
    const std::uint32_t sec =
        now_ns <= 0 ? 0u
                    : static_cast<std::uint32_t>(std::min<std::int64_t>(
                          now_ns / 1'000'000'000, std::numeric_limits<std::uint32_t>::max()));
    if (u.last_used_s.load(std::memory_order_relaxed) != sec) {
      u.last_used_s.store(sec, std::memory_order_relaxed);
    }
  }
  v.outcome = Outcome::kOk;
  return v;
}

}  // namespace keygate::internal
