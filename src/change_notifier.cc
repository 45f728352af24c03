// ChangeNotifier (keygate/change_notifier.h).
//
// Each subscription counts the notifications it received (`requested`) and
// the ones a whole callback round has covered (`completed`). A notifier takes
// a ticket and returns once `completed` reaches it: it runs the rounds itself
// when no other thread does, or waits for the thread that does, whose loop
// runs one more round for every ticket taken while it was in a callback.

#include "keygate/change_notifier.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace keygate {
namespace {

// How many subscriber callbacks (of any notifier) this thread is inside. A
// notification from inside one never waits for a round on another thread:
// two callbacks that each write, each waiting for the other's round, would
// deadlock.
thread_local int callback_depth = 0;

struct SubscriberState {
  explicit SubscriberState(std::function<void()> cb) : callback(std::move(cb)) {}

  std::mutex mu;
  std::condition_variable idle;
  bool active = true;    // false once the Subscription is being destroyed
  bool running = false;  // a thread is inside the round loop
  std::thread::id runner;
  std::uint64_t requested = 0;  // notifications received
  std::uint64_t completed = 0;  // every notification <= this was followed by a whole round
  const std::function<void()> callback;
};

// Delivers one notification to `s`; see the top of this file. Returns
// without waiting when the subscription is gone, when this thread is the
// one running the rounds (a callback notifying its own subscription), and,
// when a round runs on another thread, if `wait` is false or this thread is
// inside a callback: the running loop covers the ticket.
void Deliver(const std::shared_ptr<SubscriberState>& s, bool wait) {
  std::unique_lock<std::mutex> lock(s->mu);
  const std::uint64_t ticket = ++s->requested;
  const std::thread::id self = std::this_thread::get_id();
  for (;;) {
    if (!s->active || s->completed >= ticket) return;
    if (!s->running) break;
    if (s->runner == self || !wait || callback_depth > 0) return;
    s->idle.wait(lock);
  }
  s->running = true;
  s->runner = self;
  while (s->active && s->completed < s->requested) {
    const std::uint64_t round = s->requested;
    lock.unlock();
    ++callback_depth;
    s->callback();
    --callback_depth;
    lock.lock();
    s->completed = round;
    s->idle.notify_all();
  }
  s->running = false;
  s->runner = std::thread::id();
  s->idle.notify_all();
}

}  // namespace

struct ChangeNotifier::Registry {
  std::mutex mu;
  std::vector<std::shared_ptr<SubscriberState>> subs;  // guarded by mu
  std::atomic<std::size_t> count{0};                   // subs.size()

  void Remove(const std::shared_ptr<SubscriberState>& s) {
    std::lock_guard<std::mutex> lock(mu);
    subs.erase(std::remove(subs.begin(), subs.end(), s), subs.end());
    count.store(subs.size(), std::memory_order_release);
  }
};

class ChangeNotifier::SubscriptionImpl final : public Subscription {
 public:
  SubscriptionImpl(std::shared_ptr<SubscriberState> sub, std::weak_ptr<Registry> registry)
      : sub_(std::move(sub)), registry_(std::move(registry)) {}

  ~SubscriptionImpl() override {
    {
      std::unique_lock<std::mutex> lock(sub_->mu);
      sub_->active = false;
      sub_->idle.notify_all();  // notifiers waiting for a round: it is not coming
      const std::thread::id self = std::this_thread::get_id();
      sub_->idle.wait(lock, [&] { return !sub_->running || sub_->runner == self; });
    }
    if (std::shared_ptr<Registry> r = registry_.lock()) r->Remove(sub_);
  }

  SubscriptionImpl(const SubscriptionImpl&) = delete;
  SubscriptionImpl& operator=(const SubscriptionImpl&) = delete;

 private:
  const std::shared_ptr<SubscriberState> sub_;
  const std::weak_ptr<Registry> registry_;
};

ChangeNotifier::ChangeNotifier() : registry_(std::make_shared<Registry>()) {}
ChangeNotifier::~ChangeNotifier() = default;

absl::StatusOr<std::unique_ptr<Subscription>> ChangeNotifier::Subscribe(
    std::function<void()> on_change) {
  if (!on_change) return absl::InvalidArgumentError("on_change: must be callable");
  auto sub = std::make_shared<SubscriberState>(std::move(on_change));
  {
    std::lock_guard<std::mutex> lock(registry_->mu);
    registry_->subs.push_back(sub);
    registry_->count.store(registry_->subs.size(), std::memory_order_release);
  }
  return std::unique_ptr<Subscription>(
      std::make_unique<SubscriptionImpl>(std::move(sub), registry_));
}

void ChangeNotifier::Notify() { Dispatch(/*wait=*/true); }

void ChangeNotifier::NotifyWithoutWaiting() { Dispatch(/*wait=*/false); }

bool ChangeNotifier::HasSubscribers() const noexcept {
  return registry_->count.load(std::memory_order_acquire) > 0;
}

void ChangeNotifier::Dispatch(bool wait) {
  if (!HasSubscribers()) return;
  // A callback may destroy this notifier (its store): from here on only
  // locals are used.
  std::vector<std::shared_ptr<SubscriberState>> subs;
  {
    const std::shared_ptr<Registry> registry = registry_;
    std::lock_guard<std::mutex> lock(registry->mu);
    subs = registry->subs;
  }
  for (const std::shared_ptr<SubscriberState>& s : subs) Deliver(s, wait);
}

}  // namespace keygate
