// The plugin manager's one thread of its own.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <type_traits>

namespace switchboard::plugin {

// Runs posted tasks one at a time, in order, on a thread it owns. Loads,
// swaps and rollbacks run here so they never interleave and never run on a
// caller's thread inside a call gate. post() may be called from any thread,
// including from a task; run() blocks until the task ran (never call it from
// a task: it would wait for itself). Destruction runs the tasks already
// queued, then joins; posts after that are dropped.
class ControlThread {
 public:
  ControlThread();
  ~ControlThread();
  ControlThread(const ControlThread&) = delete;
  ControlThread& operator=(const ControlThread&) = delete;

  void post(std::function<void()> task);

  template <class F>
  std::invoke_result_t<F&> run(F&& f) {
    using R = std::invoke_result_t<F&>;
    auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(f));
    auto future = task->get_future();
    post([task] { (*task)(); });
    return future.get();
  }

  bool onThisThread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace switchboard::plugin
