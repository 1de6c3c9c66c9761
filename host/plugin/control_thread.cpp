#include "plugin/control_thread.h"

namespace switchboard::plugin {

ControlThread::ControlThread() : thread_([this] { loop(); }) {}

ControlThread::~ControlThread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void ControlThread::post(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !onThisThread()) return;
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
}

void ControlThread::loop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace switchboard::plugin
