#include "net/asio_timer.h"

#include <asio/steady_timer.hpp>

#include <chrono>
#include <memory>

namespace switchboard::net {
namespace {

// Owns the asio::steady_timer behind one promise. The handler touches only the shared slot,
// which the destructor clears, so a cancelled wait that completes later does nothing.
class TimerWait {
 public:
  TimerWait(kj::PromiseFulfiller<void>& fulfiller, asio::io_context& io,
            std::chrono::nanoseconds delay)
      : slot_(std::make_shared<kj::PromiseFulfiller<void>*>(&fulfiller)), timer_(io, delay) {
    timer_.async_wait([slot = slot_](const asio::error_code&) {
      if (kj::PromiseFulfiller<void>* waiting = *slot) {
        *slot = nullptr;
        waiting->fulfill();
      }
    });
  }
  ~TimerWait() {
    *slot_ = nullptr;
    timer_.cancel();
  }
  TimerWait(const TimerWait&) = delete;
  TimerWait& operator=(const TimerWait&) = delete;

 private:
  std::shared_ptr<kj::PromiseFulfiller<void>*> slot_;  // null once fired or dropped
  asio::steady_timer timer_;
};

}  // namespace

kj::TimePoint AsioTimer::now() const {
  return kj::systemPreciseMonotonicClock().now();
}

kj::Promise<void> AsioTimer::atTime(kj::TimePoint time) {
  return afterDelay(time - now());
}

kj::Promise<void> AsioTimer::afterDelay(kj::Duration delay) {
  if (delay <= 0 * kj::NANOSECONDS) return kj::READY_NOW;
  return kj::newAdaptedPromise<void, TimerWait>(io_,
                                                std::chrono::nanoseconds(delay / kj::NANOSECONDS));
}

}  // namespace switchboard::net
