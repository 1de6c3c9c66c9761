#include "net/asio_event_port.h"

#include <asio/io_context.hpp>
#include <asio/post.hpp>

namespace switchboard::net {

AsioEventPort::AsioEventPort(asio::io_context& io) : io_(io) {}

AsioEventPort::~AsioEventPort() noexcept(false) = default;

void AsioEventPort::attach(kj::EventLoop& loop, kj::WaitScope& waitScope) {
  loop_ = &loop;
  waitScope_ = &waitScope;
  if (loop.isRunnable()) postDrain();
}

void AsioEventPort::detach() {
  loop_ = nullptr;
  waitScope_ = nullptr;
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
  if (runnable) postDrain();
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
  if (woken_.load()) {
    // Cross-thread events are only delivered by WaitScope::poll() (through poll() above).
    waitScope_->poll();
  } else {
    loop_->run(kMaxTurnsPerDrain);
  }
  if (loop_->isRunnable()) postDrain();
}

}  // namespace switchboard::net
