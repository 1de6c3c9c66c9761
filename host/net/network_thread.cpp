#include "net/network_thread.h"

#include "net/asio_event_port.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

namespace switchboard::net {

namespace detail {

std::exception_ptr toStdException(kj::Exception&& exception) {
  return std::make_exception_ptr(std::runtime_error(exception.getDescription().cStr()));
}

std::exception_ptr currentExceptionAsStd() {
  try {
    throw;
  } catch (kj::Exception& exception) {
    return toStdException(kj::mv(exception));
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace detail

namespace {

class TaskFailureLog final : public kj::TaskSet::ErrorHandler {
 public:
  explicit TaskFailureLog(const std::string& threadName) : threadName_(threadName) {}
  void taskFailed(kj::Exception&& exception) override {
    spdlog::error("[{}] task failed: {}", threadName_, exception.getDescription().cStr());
  }

 private:
  const std::string& threadName_;
};

}  // namespace

// ------------------------------------------------------------------------------------ Impl

struct NetworkThread::Impl {
  enum class State { kIdle, kRunning, kClosed };

  explicit Impl(std::string threadName) : name(std::move(threadName)), io(1) {}

  void run(std::promise<void>& ready);

  const std::string name;
  asio::io_context io;
  std::thread thread;
  std::mutex joinMutex;

  mutable std::mutex stateMutex;
  State state = State::kIdle;  // guarded by stateMutex

  std::atomic<std::thread::id> loopThreadId{};
  kj::Own<const kj::Executor> executor;  // set before start() returns
  kj::TaskSet* tasks = nullptr;          // loop thread only; null outside run()
};

void NetworkThread::Impl::run(std::promise<void>& ready) {
  AsioEventPort port(io);
  kj::EventLoop loop(port);
  kj::WaitScope waitScope(loop);
  port.attach(loop, waitScope);
  TaskFailureLog failureLog(name);
  std::optional<kj::TaskSet> taskSet;
  taskSet.emplace(failureLog);
  tasks = &*taskSet;
  executor = loop.getExecutor().addRef();
  loopThreadId = std::this_thread::get_id();
  auto work = asio::make_work_guard(io);
  ready.set_value();

  for (;;) {
    try {
      port.run();  // returns on stop()
      break;
    } catch (std::exception& exception) {
      spdlog::error("[{}] handler threw: {}", name, exception.what());
    }
  }

  {
    std::lock_guard lock(stateMutex);
    state = State::kClosed;
  }
  work.reset();
  io.restart();
  // Everything post() accepted before the close runs exactly once.
  try {
    io.poll();
  } catch (std::exception& exception) {
    spdlog::error("[{}] handler threw during stop: {}", name, exception.what());
  }
  tasks = nullptr;
  taskSet.reset();
  loop.run();
  port.detach();
}

// -------------------------------------------------------------------------- NetworkThread

NetworkThread::NetworkThread(std::string name) : impl_(std::make_unique<Impl>(std::move(name))) {}

NetworkThread::~NetworkThread() {
  stop();
}

void NetworkThread::start() {
  {
    std::lock_guard lock(impl_->stateMutex);
    if (impl_->state != Impl::State::kIdle) {
      throw std::logic_error("network thread " + impl_->name + " started twice");
    }
    impl_->state = Impl::State::kRunning;
  }
  std::promise<void> ready;
  auto readyFuture = ready.get_future();
  impl_->thread = std::thread([this, &ready] {
    try {
      impl_->run(ready);
    } catch (kj::Exception& exception) {
      spdlog::critical("[{}] loop died: {}", impl_->name, exception.getDescription().cStr());
      std::terminate();
    }
  });
  readyFuture.wait();
}

void NetworkThread::stop() {
  {
    std::lock_guard lock(impl_->stateMutex);
    if (impl_->state == Impl::State::kIdle) {
      impl_->state = Impl::State::kClosed;
      return;
    }
  }
  impl_->io.stop();
  if (isCurrent()) return;
  std::lock_guard joinLock(impl_->joinMutex);
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool NetworkThread::isRunning() const {
  std::lock_guard lock(impl_->stateMutex);
  return impl_->state == Impl::State::kRunning;
}

bool NetworkThread::isCurrent() const {
  return impl_->loopThreadId.load() == std::this_thread::get_id();
}

const std::string& NetworkThread::name() const {
  return impl_->name;
}

bool NetworkThread::post(std::function<void()> fn) {
  std::lock_guard lock(impl_->stateMutex);
  if (impl_->state == Impl::State::kClosed) return false;
  asio::post(impl_->io, [impl = impl_.get(), fn = std::move(fn)] {
    // A burst of posted functions shares one drain, queued behind them.
    AsioEventPort::PostedWork posted;
    try {
      fn();
    } catch (kj::Exception& exception) {
      spdlog::error("[{}] posted function threw: {}", impl->name,
                    exception.getDescription().cStr());
    } catch (std::exception& exception) {
      spdlog::error("[{}] posted function threw: {}", impl->name, exception.what());
    }
  });
  return true;
}

void NetworkThread::addTask(kj::Promise<void> task) {
  KJ_REQUIRE(isCurrent() && impl_->tasks != nullptr, "addTask() off the loop thread");
  impl_->tasks->add(kj::mv(task));
}

const kj::Executor& NetworkThread::executor() const {
  KJ_REQUIRE(impl_->executor.get() != nullptr, "network thread not started");
  return *impl_->executor;
}

asio::io_context& NetworkThread::ioContext() {
  return impl_->io;
}

}  // namespace switchboard::net
