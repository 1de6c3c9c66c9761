#pragma once
// Bringing a result computed on another thread (the store writer, a worker) back to a
// KJ loop as the resolution of a promise.

#include <kj/async.h>
#include <kj/debug.h>

#include <memory>
#include <mutex>
#include <string_view>
#include <type_traits>

namespace switchboard::net {

template <class T>
struct PendingCompletion;
template <class T>
PendingCompletion<T> makeCompletion();

// The thread-safe half of a completion: call it once, from any thread, with the result.
//
// - Copyable (fits in a std::function); all copies share one fulfiller, and only the first
//   complete()/fail() counts: later calls are ignored.
// - When the last copy is destroyed without having been called, the promise rejects
//   ("completion abandoned"), so a lost callback never leaves a loop waiting forever.
// - If the promise was dropped (the KJ side cancelled), calling it is a harmless no-op.
// The promise side belongs to the loop thread that called makeCompletion().
template <class T>
class Completion {
 public:
  template <class... Value>
  void complete(Value&&... value) const {
    auto fulfiller = state_->take();
    if (fulfiller.get() != nullptr) fulfiller->fulfill(std::forward<Value>(value)...);
  }
  template <class... Value>
  void operator()(Value&&... value) const {
    complete(std::forward<Value>(value)...);
  }
  void fail(std::string_view message) const {
    auto fulfiller = state_->take();
    if (fulfiller.get() != nullptr) {
      fulfiller->reject(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                      kj::heapString(message.data(), message.size())));
    }
  }

 private:
  struct State {
    std::mutex mutex;
    kj::Own<kj::CrossThreadPromiseFulfiller<T>> fulfiller;
    kj::Own<kj::CrossThreadPromiseFulfiller<T>> take() {
      std::lock_guard lock(mutex);
      return kj::mv(fulfiller);
    }
    ~State() noexcept(false) {
      if (fulfiller.get() != nullptr) {
        fulfiller->reject(KJ_EXCEPTION(FAILED, "completion abandoned without a result"));
      }
    }
  };
  explicit Completion(std::shared_ptr<State> state) : state_(std::move(state)) {}

  std::shared_ptr<State> state_;

  friend PendingCompletion<T> makeCompletion<T>();
};

template <class T>
struct PendingCompletion {
  kj::Promise<T> promise;    // consume on the loop thread that made it
  Completion<T> completion;  // hand to any thread
};

// Call on a thread with a KJ event loop (e.g. a NetworkThread, inside post()/a KJ callback).
template <class T>
PendingCompletion<T> makeCompletion() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
  auto state = std::make_shared<typename Completion<T>::State>();
  state->fulfiller = kj::mv(paf.fulfiller);
  return PendingCompletion<T>{kj::mv(paf.promise), Completion<T>(std::move(state))};
}

}  // namespace switchboard::net
