#pragma once
// One network thread: an Asio io_context and a KJ event loop sharing one OS thread.

#include <kj/async.h>

#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace asio {
class io_context;
}

namespace switchboard::net {

namespace detail {
template <class T>
struct SyncResult {
  using Type = T;
  static constexpr bool kIsPromise = false;
};
template <class T>
struct SyncResult<kj::Promise<T>> {
  using Type = T;
  static constexpr bool kIsPromise = true;
};
// Turn a KJ exception into a std::runtime_error on the KJ thread that made it, so nothing
// KJ-owned crosses to the waiting thread.
std::exception_ptr toStdException(kj::Exception&& exception);
std::exception_ptr currentExceptionAsStd();
}  // namespace detail

// Owns a std::thread running an asio::io_context with a kj::EventLoop (over AsioEventPort)
// and a kj::WaitScope, so KJ promises, Cap'n Proto RPC and Asio handlers all run on it.
//
// Lifetime: start() spawns the thread and returns once the loop runs; stop() may be called
// from any thread (also the loop thread itself, which then only requests the stop) and is
// idempotent; the destructor stops and joins. On stop, functions already accepted by post()
// still run, then the tasks given to addTask() are cancelled on the loop thread, then the
// loop is destroyed. Objects holding KJ state on this thread (listeners, connections) must
// be destroyed before stop(), on this thread: a KJ object belongs to its loop.
//
// Threading: post(), runSync(), executor(), isCurrent() and stop() are thread-safe;
// addTask() is for the loop thread only.
class NetworkThread {
 public:
  explicit NetworkThread(std::string name = "net");
  ~NetworkThread();
  NetworkThread(const NetworkThread&) = delete;
  NetworkThread& operator=(const NetworkThread&) = delete;

  void start();
  void stop();
  bool isRunning() const;
  // True when called on this loop's thread.
  bool isCurrent() const;
  const std::string& name() const;

  // Runs `fn` on the loop thread inside the KJ context (it may create promises and call
  // addTask). An exception escaping `fn` is logged. Returns false, and destroys `fn` on the
  // calling thread, once the thread has stopped.
  bool post(std::function<void()> fn);

  // Runs `fn` on the loop thread and blocks until it finishes; if `fn` returns a
  // kj::Promise<T>, also waits for that promise and returns its T. Exceptions (KJ ones
  // converted to std::runtime_error) are rethrown here. Throws std::logic_error on the loop
  // thread itself (it would deadlock) and std::runtime_error if the thread has stopped; a
  // promise cancelled by stop() surfaces as std::future_error (broken_promise).
  template <class F>
  auto runSync(F&& fn) -> typename detail::SyncResult<std::invoke_result_t<F&>>::Type;

  // Detaches `task` onto the loop: it runs until done, or is cancelled at stop(). A failure
  // is logged. Loop thread only.
  void addTask(kj::Promise<void> task);

  // The loop's kj::Executor (valid from start(); after stop, calls through it fail cleanly).
  const kj::Executor& executor() const;
  asio::io_context& ioContext();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

template <class F>
auto NetworkThread::runSync(F&& fn) -> typename detail::SyncResult<std::invoke_result_t<F&>>::Type {
  using Traits = detail::SyncResult<std::invoke_result_t<F&>>;
  using T = typename Traits::Type;
  if (isCurrent()) throw std::logic_error("runSync() on its own NetworkThread would deadlock");
  // The std::promise lives only in the posted function and its continuation: if either is
  // destroyed without running, the future reports broken_promise instead of hanging.
  auto done = std::make_shared<std::promise<T>>();
  std::future<T> future = done->get_future();
  bool posted = post([this, &fn, done]() {
    try {
      if constexpr (Traits::kIsPromise) {
        auto fail = [done](kj::Exception&& exception) {
          done->set_exception(detail::toStdException(kj::mv(exception)));
        };
        if constexpr (std::is_void_v<T>) {
          addTask(fn().then([done]() { done->set_value(); }, kj::mv(fail)));
        } else {
          addTask(fn().then([done](T&& value) { done->set_value(kj::mv(value)); }, kj::mv(fail)));
        }
      } else if constexpr (std::is_void_v<T>) {
        fn();
        done->set_value();
      } else {
        done->set_value(fn());
      }
    } catch (...) {
      done->set_exception(detail::currentExceptionAsStd());
    }
  });
  if (!posted) throw std::runtime_error("network thread " + name() + " is not running");
  return future.get();
}

}  // namespace switchboard::net
