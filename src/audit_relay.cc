// AuditRelay (audit_relay.h).
//
// DeliverPending reads pages after the consumer's cursor and acknowledges each page's delivered
// prefix before reading the next, so a crash re-delivers at most one page. The background thread
// sleeps on a condition variable that store notifications (and the destructor) signal, with
// `retry` as the longest sleep: another process's writes reach it by subscription where the
// store supports that, and by the poll otherwise.

#include "keygate/audit_relay.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace keygate {

struct AuditRelay::Impl {
  Options options;

  std::mutex deliver_mu;  // serialises deliveries

  std::mutex mu;
  std::condition_variable wake;
  bool pending = false;                     // a notification arrived since the thread last looked
  bool stopping = false;                    // guarded by mu
  std::atomic<bool> stop_requested{false};  // read by Deliver between Emits
  std::thread thread;
  std::unique_ptr<Subscription> subscription;

  absl::StatusOr<std::size_t> Deliver() {
    std::lock_guard<std::mutex> lock(deliver_mu);
    KeyStore& store = *options.store;
    absl::StatusOr<std::uint64_t> cursor = store.AuditCursor(options.consumer);
    if (!cursor.ok()) return cursor.status();
    AuditQuery q;
    q.after = *cursor;
    q.limit = options.batch;
    std::size_t delivered = 0;
    for (;;) {
      absl::StatusOr<AuditPage> page = store.ReadAudit(q);
      if (!page.ok()) return page.status();
      std::uint64_t done = q.after;
      absl::Status emit_error;
      bool stopped = false;
      for (const Event& e : page->events) {
        // The destructor waits for the Emit in progress, not for the backlog.
        if (stop_requested.load(std::memory_order_acquire)) {
          stopped = true;
          break;
        }
        emit_error = options.sink->Emit(e);
        if (!emit_error.ok()) break;
        done = e.sequence;
        ++delivered;
      }
      if (done != q.after) {
        absl::Status ack = store.AckAudit(options.consumer, done);
        if (!emit_error.ok()) return emit_error;  // the first error wins
        if (!ack.ok()) return ack;
      }
      if (!emit_error.ok()) return emit_error;
      if (stopped || !page->more) return delivered;
      if (page->next_after <= q.after) {
        // A store that says "more" without moving on would keep us here forever.
        return absl::InternalError("audit relay: the store's ReadAudit does not advance");
      }
      q.after = page->next_after;
    }
  }

  void Run() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      pending = false;
      lock.unlock();
      const bool ok = Deliver().ok();
      lock.lock();
      if (stopping) break;
      // After an error wait the full `retry`; otherwise until the next change (or the poll).
      if (ok && pending) continue;
      wake.wait_for(lock, absl::ToChronoNanoseconds(options.retry),
                    [&] { return stopping || (ok && pending); });
    }
  }
};

AuditRelay::AuditRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<AuditRelay>> AuditRelay::Create(Options options) {
  if (!options.store) return absl::InvalidArgumentError("store: must be set");
  if (!options.sink) return absl::InvalidArgumentError("sink: must be set");
  if (absl::Status s = ValidateAuditConsumer(options.consumer); !s.ok()) return s;
  if (options.batch < 1 || options.batch > kMaxAuditLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch: must be between 1 and ", kMaxAuditLimit));
  }
  if (options.retry < absl::Milliseconds(1) || options.retry > absl::Hours(1)) {
    return absl::InvalidArgumentError("retry: must be between 1 ms and 1 h");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  return std::unique_ptr<AuditRelay>(new AuditRelay(std::move(impl)));
}

AuditRelay::~AuditRelay() {
  // The subscription first: once it is gone no callback touches `impl_`.
  std::unique_ptr<Subscription> subscription;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    subscription = std::move(impl_->subscription);
  }
  subscription.reset();
  impl_->stop_requested.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

absl::StatusOr<std::size_t> AuditRelay::DeliverPending() { return impl_->Deliver(); }

absl::Status AuditRelay::Start() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->thread.joinable()) return absl::FailedPreconditionError("relay: already started");
  }
  Impl* impl = impl_.get();
  absl::StatusOr<std::unique_ptr<Subscription>> sub = impl->options.store->Subscribe([impl] {
    {
      std::lock_guard<std::mutex> lock(impl->mu);
      impl->pending = true;
    }
    impl->wake.notify_all();
  });
  if (!sub.ok()) return sub.status();
  std::lock_guard<std::mutex> lock(impl->mu);
  if (impl->thread.joinable()) return absl::FailedPreconditionError("relay: already started");
  impl->subscription = *std::move(sub);
  try {
    impl->thread = std::thread([impl] { impl->Run(); });
  } catch (const std::system_error&) {
    return absl::ResourceExhaustedError("relay: cannot start a thread");
  }
  return absl::OkStatus();
}

}  // namespace keygate
