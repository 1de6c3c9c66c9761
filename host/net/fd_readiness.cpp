#include "net/fd_readiness.h"

#include <memory>

namespace switchboard::net {
namespace {

// Shared by the KJ-side adapter and the Asio handler; the adapter clears `fulfiller` when
// the promise is dropped, and only the owner thread ever touches it.
struct WaitSlot {
  kj::PromiseFulfiller<void>* fulfiller;  // not owned; null once the promise is gone
};

class ReadinessAdapter {
 public:
  ReadinessAdapter(kj::PromiseFulfiller<void>& fulfiller,
                   asio::posix::stream_descriptor& descriptor,
                   asio::posix::stream_descriptor::wait_type type)
      : slot_(std::make_shared<WaitSlot>(WaitSlot{&fulfiller})) {
    descriptor.async_wait(type, [slot = slot_](const asio::error_code&) {
      // Errors included: the next syscall on the descriptor reports what happened.
      if (slot->fulfiller != nullptr) {
        auto* fulfiller = slot->fulfiller;
        slot->fulfiller = nullptr;
        fulfiller->fulfill();
      }
    });
  }
  ~ReadinessAdapter() { slot_->fulfiller = nullptr; }
  ReadinessAdapter(const ReadinessAdapter&) = delete;
  ReadinessAdapter& operator=(const ReadinessAdapter&) = delete;

 private:
  std::shared_ptr<WaitSlot> slot_;
};

}  // namespace

kj::Promise<void> whenReadable(asio::posix::stream_descriptor& descriptor) {
  return kj::newAdaptedPromise<void, ReadinessAdapter>(descriptor,
                                                       asio::posix::stream_descriptor::wait_read);
}

kj::Promise<void> whenWritable(asio::posix::stream_descriptor& descriptor) {
  return kj::newAdaptedPromise<void, ReadinessAdapter>(descriptor,
                                                       asio::posix::stream_descriptor::wait_write);
}

}  // namespace switchboard::net
