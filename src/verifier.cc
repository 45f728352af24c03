// The hot-path verifier (verifier.h): a facade over its parts, each owning
// its own state and lock (docs/design.md, "The verifier's units"):
//   verifier/index.h   the published index and the lock-free Verify path
//   verifier/writer.h  applies records and changes; rebuilds and reloads
//   verifier/feed.h    the store subscription, polling and periodic resync
//   verifier/usage.h   usage counts, the UsageSink and last_used writes

#include "keygate/verifier.h"

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "verifier/feed.h"
#include "verifier/index.h"
#include "verifier/usage.h"
#include "verifier/writer.h"

namespace keygate {

namespace {

// Checks every option once, here, so that no call has to.
absl::StatusOr<const EnvironmentSpec*> ValidateOptions(const VerifierOptions& options) {
  if (options.deployment == nullptr) return absl::InvalidArgumentError("deployment: required");
  if (options.store == nullptr) return absl::InvalidArgumentError("store: required");
  absl::StatusOr<const EnvironmentSpec*> found =
      options.deployment->Environment(options.environment);
  if (!found.ok()) return found.status();
  if (options.feed_batch == 0 || options.feed_batch > kMaxListLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("feed_batch: must be between 1 and ", kMaxListLimit));
  }
  if (options.follow_changes && options.poll_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("poll_interval: must be positive");
  }
  if (options.full_resync_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("full_resync_interval: must not be negative");
  }
  if (options.usage_flush_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("usage_flush_interval: must not be negative");
  }
  // The background threads wait on std::chrono deadlines; an infinite (or
  // huge) interval would overflow them into a busy loop.
  for (const auto& [field, value] :
       {std::pair<const char*, absl::Duration>{"poll_interval", options.poll_interval},
        {"full_resync_interval", options.full_resync_interval},
        {"usage_flush_interval", options.usage_flush_interval}}) {
    if (value > kMaxVerifierInterval) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": must be at most 365 days"));
    }
  }
  if (options.expected_keys > kMaxExpectedKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected_keys: must be at most ", kMaxExpectedKeys));
  }
  if (options.owner_rate_limit.has_value()) {
    if (absl::Status s = ValidateRateLimitPolicy(*options.owner_rate_limit, "owner_rate_limit");
        !s.ok()) {
      return s;
    }
  }
  return *found;
}

}  // namespace

struct Verifier::Impl {
  Impl(VerifierOptions o, internal::ReaderConfig rc, internal::WriterConfig wc)
      : options(std::move(o)),
        reader(std::move(rc)),
        usage(reader, {options.store.get(), options.usage_sink.get(), options.last_used_granularity,
                       options.usage_flush_interval}),
        writer(reader, usage, std::move(wc)),
        feed(writer, {options.store.get(), options.sync_in_callback, options.poll_interval,
                      options.full_resync_interval}) {}

  void Shutdown();

  VerifierOptions options;  // keeps what the parts point to alive
  internal::IndexReader reader;
  internal::UsageCollector usage;
  internal::IndexWriter writer;
  internal::FeedFollower feed;

  std::mutex shutdown_mu;  // held throughout Shutdown
  bool shut_down = false;  // under shutdown_mu
};

void Verifier::Impl::Shutdown() {
  // Held throughout, so that a second caller returns only once the threads
  // have stopped and the last flush is done, as the first does.
  std::lock_guard<std::mutex> lock(shutdown_mu);
  if (shut_down) return;
  shut_down = true;
  feed.Stop();
  usage.Stop();
  if (options.record_usage) (void)usage.Flush();
}

Verifier::Verifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Verifier::~Verifier() {
  if (impl_ != nullptr) impl_->Shutdown();
}

absl::StatusOr<std::unique_ptr<Verifier>> Verifier::Create(VerifierOptions options) {
  absl::StatusOr<const EnvironmentSpec*> env = ValidateOptions(options);
  if (!env.ok()) return env.status();

  if (options.rate_limiter == nullptr) options.rate_limiter = std::make_shared<LocalRateLimiter>();
  if (options.clock == nullptr) {
    options.clock = std::shared_ptr<const Clock>(&SystemClock::Get(), [](const Clock*) {});
  }
  internal::ReaderConfig rc;
  rc.hasher = &options.deployment->hasher();
  rc.prefix = options.deployment->token_prefix();
  rc.env_tag = (*env)->tag;
  for (const EnvironmentSpec& e : options.deployment->environments()) {
    if (e.name != (*env)->name) rc.other_tags.push_back(e.tag);
  }
  if (options.scope_evaluator != nullptr &&
      dynamic_cast<const MaskScopeEvaluator*>(options.scope_evaluator.get()) == nullptr) {
    rc.evaluator = options.scope_evaluator.get();
  }
  rc.limiter = options.rate_limiter.get();
  rc.local_limiter = dynamic_cast<LocalRateLimiter*>(rc.limiter) != nullptr;
  if (options.owner_rate_limit.has_value()) {
    rc.owner_policy = GcraPolicy::Compile(*options.owner_rate_limit);
  }
  rc.clock = options.clock.get();
  rc.record_usage = options.record_usage;
  internal::WriterConfig wc;
  wc.deployment = options.deployment.get();
  wc.store = options.store.get();
  wc.env_name = (*env)->name;
  wc.feed_batch = options.feed_batch;
  wc.expected_keys = options.expected_keys;

  auto impl = std::make_unique<Impl>(std::move(options), std::move(rc), std::move(wc));
  if (!impl->reader.ok()) {
    return absl::ResourceExhaustedError("verifier: cannot allocate the policy table");
  }
  Impl* p = impl.get();
  if (absl::Status s = p->writer.Reload(); !s.ok()) return s;

  std::unique_ptr<Verifier> v(new Verifier(std::move(impl)));
  if (p->options.follow_changes) {
    if (absl::Status s = p->feed.Start(); !s.ok()) return s;
  }
  if (p->options.record_usage) p->usage.Start();
  return v;
}

Verdict Verifier::Verify(std::string_view authorization,
                         const Requirement& requirement) const noexcept {
  return impl_->reader.VerifyHeader(authorization, requirement, nullptr);
}

Verdict Verifier::Verify(std::string_view authorization, const Requirement& requirement,
                         absl::Time now) const noexcept {
  return impl_->reader.VerifyHeader(authorization, requirement, &now);
}

Verdict Verifier::VerifyToken(std::string_view token,
                              const Requirement& requirement) const noexcept {
  return impl_->reader.VerifyToken(token, requirement, nullptr);
}

Verdict Verifier::VerifyToken(std::string_view token, const Requirement& requirement,
                              absl::Time now) const noexcept {
  return impl_->reader.VerifyToken(token, requirement, &now);
}

absl::Status Verifier::Sync() { return impl_->writer.Sync(); }

absl::Status Verifier::Refresh(std::string_view key_id) { return impl_->writer.Refresh(key_id); }

absl::Status Verifier::Reload() { return impl_->writer.Reload(); }

absl::Status Verifier::FlushUsage() { return impl_->usage.Flush(); }

void Verifier::Shutdown() { impl_->Shutdown(); }

VerifierStats Verifier::Stats() const { return impl_->writer.Stats(); }

}  // namespace keygate
