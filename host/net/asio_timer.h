#pragma once
// A kj::Timer for a thread whose KJ event loop runs on an asio::io_context (the network
// threads' KJ-over-Asio loop has no timer of its own; kj-http needs one for its time-outs).
//
// now() is the monotonic clock (kj::systemPreciseMonotonicClock). atTime()/afterDelay()
// resolve on the loop's thread once the time has come, through an asio::steady_timer;
// dropping the promise cancels the timer. Create, use and destroy the AsioTimer on the
// io_context's thread; promises must not outlive it.

#include <kj/timer.h>

#include <asio/io_context.hpp>

namespace switchboard::net {

class AsioTimer final : public kj::Timer {
 public:
  explicit AsioTimer(asio::io_context& io) : io_(io) {}

  kj::TimePoint now() const override;
  kj::Promise<void> atTime(kj::TimePoint time) override;
  kj::Promise<void> afterDelay(kj::Duration delay) override;

 private:
  asio::io_context& io_;
};

}  // namespace switchboard::net
