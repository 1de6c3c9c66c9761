#include "net/asio_event_port.h"

#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <utility>

namespace switchboard::net {
namespace {

// The port attached on this thread (a thread has at most one KJ loop), for deferToDrainEnd.
thread_local AsioEventPort* tAttached = nullptr;

}  // namespace

AsioEventPort::DrainEndTask::~DrainEndTask() {
  if (queuedIn_ == nullptr) return;
  auto& queue = queuedIn_->drainEnd_;
  auto it = std::find(queue.begin(), queue.end(), this);
  if (it != queue.end()) *it = nullptr;
}

AsioEventPort::AsioEventPort(asio::io_context& io) : io_(io) {}

AsioEventPort::~AsioEventPort() noexcept(false) = default;

void AsioEventPort::attach(kj::EventLoop& loop, kj::WaitScope& waitScope) {
  loop_ = &loop;
  waitScope_ = &waitScope;
  tAttached = this;
  if (loop.isRunnable()) postDrain();
}

void AsioEventPort::detach() {
  loop_ = nullptr;
  waitScope_ = nullptr;
  if (tAttached == this) tAttached = nullptr;
  for (DrainEndTask* task : drainEnd_) task->queuedIn_ = nullptr;
  drainEnd_.clear();
}

void AsioEventPort::run() {
  running_ = true;
  KJ_DEFER(running_ = false);
  // Work left by a handler that threw, or made before run(): drained first.
  if (std::exchange(drainWanted_, false) || (loop_ != nullptr && loop_->isRunnable())) drain();
  while (io_.run_one() != 0) {
    if (std::exchange(drainWanted_, false)) drain();
  }
}

AsioEventPort::PostedWork::PostedWork() : port_(tAttached) {
  if (port_ != nullptr) was_ = std::exchange(port_->inPostedWork_, true);
}

AsioEventPort::PostedWork::~PostedWork() {
  if (port_ != nullptr) port_->inPostedWork_ = was_;
}

bool AsioEventPort::deferToDrainEnd(DrainEndTask& task) {
  AsioEventPort* port = tAttached;
  if (port == nullptr || !port->draining_) return false;
  if (task.queuedIn_ == nullptr) {
    task.queuedIn_ = port;
    port->drainEnd_.push_back(&task);
  }
  return true;
}

void AsioEventPort::resumeAfterSyncWait() {
  if (loop_ != nullptr && loop_->isRunnable()) postDrain();
}

bool AsioEventPort::wait() {
  if (woken_.exchange(false)) return true;
  ++syncWaitDepth_;
  // A sync wait may happen after io_context::stop() (shutdown); restart so run_one blocks
  // for the next handler instead of returning at once and spinning.
  if (io_.stopped()) io_.restart();
  io_.run_one();
  --syncWaitDepth_;
  return woken_.exchange(false);
}

bool AsioEventPort::poll() {
  if (!draining_) {
    ++syncWaitDepth_;
    if (io_.stopped()) io_.restart();
    io_.poll();
    --syncWaitDepth_;
  }
  return woken_.exchange(false);
}

void AsioEventPort::setRunnable(bool runnable) {
  if (!runnable) return;
  if (running_ && syncWaitDepth_ == 0 && !inPostedWork_) {
    // Inside run(): a drain in progress sees the work (and posts the next one if its budget
    // runs out); otherwise run() drains once the current handler returns.
    if (!draining_) drainWanted_ = true;
    return;
  }
  postDrain();
}

void AsioEventPort::wake() const {
  woken_.store(true);
  // wake() is const only because other threads may call it; the handler runs on the owner
  // thread, where mutating the port is fine.
  auto* self = const_cast<AsioEventPort*>(this);
  asio::post(io_, [self] { self->drain(); });
}

void AsioEventPort::postDrain() {
  if (drainPosted_) return;
  drainPosted_ = true;
  asio::post(io_, [this] {
    drainPosted_ = false;
    drain();
  });
}

void AsioEventPort::drain() {
  // Inside a sync wait the waiter turns the loop itself; running it here would nest.
  if (loop_ == nullptr || syncWaitDepth_ > 0 || draining_) return;
  draining_ = true;
  KJ_DEFER(draining_ = false);
  // Cross-thread events are only delivered by WaitScope::poll() (through poll() above).
  if (woken_.load()) waitScope_->poll();
  // Also after a poll: KJ 0.9.2 tells the port of a change only (setRunnable(true) when it
  // last said false), and only run() tells it that the queue ran dry; after a poll alone
  // the next event would not be signalled, and run() would never drain it.
  loop_->run(kMaxTurnsPerDrain);
  runDrainEndTasks();
  if (loop_->isRunnable()) postDrain();
}

void AsioEventPort::runDrainEndTasks() {
  // By index: a task may queue more (they are appended and run in this pass) or destroy one
  // still queued (its entry turns null).
  for (std::size_t i = 0; i < drainEnd_.size(); ++i) {
    DrainEndTask* task = std::exchange(drainEnd_[i], nullptr);
    if (task == nullptr) continue;
    task->queuedIn_ = nullptr;
    task->atDrainEnd();
  }
  drainEnd_.clear();
}

}  // namespace switchboard::net
