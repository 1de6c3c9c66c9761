// A thread for the operator's blocking operations (plugin loads and rollbacks,
// whose canary may take seconds), so no network thread ever waits on them.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace switchboard::admin {

// Runs posted jobs one at a time, in order, on its own thread. A job reports
// its outcome itself (typically by posting to a network thread); an exception
// escaping a job is logged and the worker goes on. post() is thread-safe.
// Destruction runs the jobs already posted, then joins: the owner destroys
// the worker before anything a job touches.
class OperationWorker {
 public:
  OperationWorker();
  ~OperationWorker();
  OperationWorker(const OperationWorker&) = delete;
  OperationWorker& operator=(const OperationWorker&) = delete;

  void post(std::function<void()> job);

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace switchboard::admin
