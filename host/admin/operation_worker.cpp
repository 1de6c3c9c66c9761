#include "admin/operation_worker.h"

#include <spdlog/spdlog.h>

#include <exception>

namespace switchboard::admin {

OperationWorker::OperationWorker() : thread_([this] { run(); }) {}

OperationWorker::~OperationWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void OperationWorker::post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
}

void OperationWorker::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job();
    } catch (const std::exception& e) {
      spdlog::error("admin operation failed: {}", e.what());
    } catch (...) {
      spdlog::error("admin operation failed with a non-standard exception");
    }
  }
}

}  // namespace switchboard::admin
