// keygate/change_notifier.h: the subscriber side of a `KeyStore`, for backends to compose. A
// write that calls `Notify()` after its commit returns only once every subscriber has finished a
// callback round that started after the call: revocation is linearizable.
// Callbacks run on a notifying thread, one at a time per subscription; a notification arriving
// during a round on another thread is folded into one more round there, and waited for. A
// callback may write to the store (that `Notify()` does not wait), and may destroy its own
// Subscription or the store. Ownership: a Subscription may outlive its notifier (it is then
// inert). Thread safety: thread-safe. Cost: with no subscriber, `Notify()` is one atomic load;
// otherwise a mutex per subscriber plus the callbacks (writers wait for slow ones).
//
// Example (a backend):
//   absl::Status MyStore::Insert(const KeyRecord& r) {
//     if (absl::Status s = Commit(r); !s.ok()) return s;  // store lock released here
//     notifier_.Notify();
//     return absl::OkStatus();
//   }
//   // Subscribe(f): return notifier_.Subscribe(std::move(f)); AwaitSubscribers(): Notify().

#ifndef KEYGATE_CHANGE_NOTIFIER_H_
#define KEYGATE_CHANGE_NOTIFIER_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"

#include "keygate/key_store.h"

namespace keygate {

class ChangeNotifier {
 public:
  ChangeNotifier();
  // Subscriptions stay valid and become inert; a round already running finishes.
  ~ChangeNotifier();
  ChangeNotifier(const ChangeNotifier&) = delete;
  ChangeNotifier& operator=(const ChangeNotifier&) = delete;

  // Adds `on_change` (called with no lock held). Destroying the result waits for a callback
  // running on another thread; then it never runs again. Errors: kInvalidArgument (empty).
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      std::function<void()> on_change);

  // After a commit, store locks released (and for AwaitSubscribers): returns once each subscriber
  // finished a round started after this call, run here unless another thread runs one. From
  // inside any callback it does not wait for another thread.
  void Notify();

  // For a commit no caller waits on (a poller's): as Notify, but leaves the round to a thread
  // already running one.
  void NotifyWithoutWaiting();

  // Whether any Subscription is live (a hint: may change at once).
  [[nodiscard]] bool HasSubscribers() const noexcept;

 private:
  struct Registry;
  class SubscriptionImpl;
  void Dispatch(bool wait);

  std::shared_ptr<Registry> registry_;
};

}  // namespace keygate

#endif  // KEYGATE_CHANGE_NOTIFIER_H_
