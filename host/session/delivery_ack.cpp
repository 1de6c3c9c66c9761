#include "session/delivery_ack.h"

#include <kj/debug.h>

#include <utility>

#include "net/network_thread.h"

namespace switchboard::session {

DeliveryAck::DeliveryAck(net::NetworkThread& owner, std::uint32_t copies, bool tickMayRide,
                         kj::Own<kj::PromiseFulfiller<std::int64_t>> fulfiller)
    : owner_(owner), remaining_(copies), tickMayRide_(tickMayRide), fulfiller_(kj::mv(fulfiller)) {}

DeliveryAck::~DeliveryAck() {
  if (fulfiller_.get() == nullptr || owner_.isCurrent()) return;
  // Unsettled and released elsewhere: the fulfiller belongs to the owner's loop.
  auto orphan = std::make_shared<kj::Own<kj::PromiseFulfiller<std::int64_t>>>(kj::mv(fulfiller_));
  owner_.post([orphan]() {
    if (orphan->get() != nullptr && (*orphan)->isWaiting()) {
      (*orphan)->reject(KJ_EXCEPTION(FAILED, "the server stopped before the message was durable"));
    }
    *orphan = nullptr;
  });
}

std::pair<kj::Promise<void>, std::shared_ptr<DeliveryAck>> DeliveryAck::make(
    net::NetworkThread& owner, std::uint32_t copies) {
  auto paf = kj::newPromiseAndFulfiller<std::int64_t>();
  return {paf.promise.ignoreResult(),
          std::make_shared<DeliveryAck>(owner, copies, false, kj::mv(paf.fulfiller))};
}

std::pair<kj::Promise<std::int64_t>, std::shared_ptr<DeliveryAck>> DeliveryAck::makeForSend(
    net::NetworkThread& owner, std::uint32_t copies) {
  auto paf = kj::newPromiseAndFulfiller<std::int64_t>();
  return {kj::mv(paf.promise),
          std::make_shared<DeliveryAck>(owner, copies, copies == 1, kj::mv(paf.fulfiller))};
}

void DeliveryAck::listen(std::weak_ptr<AckListener> listener, std::vector<std::string> recipients) {
  listener_ = std::move(listener);
  recipients_ = std::move(recipients);
}

void DeliveryAck::listen(std::weak_ptr<AckListener> listener, std::string recipient) {
  listener_ = std::move(listener);
  recipient_ = std::move(recipient);
}

std::span<const std::string> DeliveryAck::recipients() const {
  if (!recipients_.empty()) return recipients_;
  return {&recipient_, recipient_.empty() ? 0u : 1u};
}

void DeliveryAck::settle() {
  if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  if (owner_.isCurrent()) {
    finishOnOwner();
  } else {
    owner_.post([self = shared_from_this()]() { self->finishOnOwner(); });
  }
}

void DeliveryAck::settleDelivered(std::int64_t atMs, TickSender& sender, std::string to,
                                  OutboundReceipt tick) {
  {
    std::lock_guard lock(errorMutex_);
    if (tickMayRide_) deliveredAt_ = atMs;
    PendingTick pending{&sender, std::move(to), std::move(tick)};
    if (after_.empty()) {
      after_.first = std::move(pending);
    } else {
      after_.rest.emplace_back(std::move(pending));
    }
  }
  settle();
}

void DeliveryAck::AfterReply::run() {
  auto send = [](PendingTick& pending) {
    pending.sender->sendTick(pending.to, std::move(pending.tick));
  };
  if (first) send(*first);
  for (auto& item : rest) {
    if (auto* pending = std::get_if<PendingTick>(&item)) {
      send(*pending);
    } else {
      std::get<std::function<void()>>(item)();
    }
  }
}

void DeliveryAck::afterReply(std::function<void()> fn) {
  {
    std::lock_guard lock(errorMutex_);
    if (!replied_) {
      after_.rest.emplace_back(std::move(fn));
      return;
    }
  }
  owner_.post([&owner = owner_, fn = std::move(fn)]() mutable {
    owner.addTask(kj::evalLast(std::move(fn)));
  });
}

void DeliveryAck::fail(const std::string& error) {
  {
    std::lock_guard lock(errorMutex_);
    if (!error_) error_ = error;
  }
  settle();
}

void DeliveryAck::finishOnOwner() {
  auto listener = listener_.lock();
  if (listener) listener->acknowledged(recipients());
  // A send's listener is its sender's session: the reply reaches only a live one.
  bool replyArrives = listener && !listener->ended();
  if (fulfiller_.get() == nullptr) return;
  std::optional<std::string> error;
  AfterReply after;
  std::int64_t tickInReply = 0;
  {
    std::lock_guard lock(errorMutex_);
    error = error_;
    replied_ = true;
    // A reply that cannot arrive (the sender's session ended, or the call was
    // cancelled) cannot carry the tick; it is sent (or queued) on its own. One
    // copy: after_ holds nothing but that copy's tick.
    if (deliveredAt_ != 0 && replyArrives && fulfiller_->isWaiting()) {
      tickInReply = deliveredAt_;
      after_ = AfterReply();
    } else {
      after = std::exchange(after_, AfterReply());
    }
  }
  if (error) {
    fulfiller_->reject(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                     kj::heapString(error->data(), error->size())));
  } else {
    fulfiller_->fulfill(kj::cp(tickInReply));
  }
  if (!after.empty()) {
    // evalLast: once every event the resolution set off has run, the RPC
    // system's Return among them, so the reply is on the wire first. (A post()
    // to the asio loop could run before the KJ turn that writes the reply.)
    owner_.addTask(kj::evalLast([after = std::move(after)]() mutable { after.run(); }));
  }
  fulfiller_ = nullptr;
}

}  // namespace switchboard::session
