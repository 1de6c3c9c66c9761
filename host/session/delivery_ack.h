// The "sent" tick of one call that hands items to phones (a send, a group
// send, a receipt): the call's promise resolves once every copy it made is
// delivered to its phone or durable in the store, and rejects if a copy could
// be neither (the store refused the write).
//
// The "delivered" tick of a one-copy send rides in the send's reply when the
// copy was delivered (not stored) and the sender is still waiting for the
// reply: the promise then yields the delivery time and no separate receipt is
// made. Otherwise the tick goes out on its own, after the reply (see
// settleDelivered).
//
// Threads: made on the caller's network thread, whose loop owns the promise.
// settle(), settleDelivered() and fail() may be called from any thread, once
// per copy; the last one resolves the promise on the owner's thread (directly
// when already there, otherwise by one post). The listener, when set, is told
// there too, just before.
//
// A copy that is never settled (a bug, or shutdown) leaves the promise to be
// rejected when the ack is destroyed; the fulfiller is always destroyed on the
// owner's thread.
#pragma once

#include <kj/async.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "session/outbound.h"

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::session {

// Told on the owner's thread when an ack settles (the sender's session keeps
// per-recipient routes open until then).
class AckListener {
 public:
  virtual void acknowledged(std::span<const std::string> recipients) = 0;
  // An ended listener (the sender's session) gets no more replies.
  virtual bool ended() const = 0;

 protected:
  ~AckListener() = default;
};

// Sends a "delivered" tick that could not ride in its send's reply, on the
// owner's thread, after that reply (the messaging service routes it to the
// sender). Outlives every ack.
class TickSender {
 public:
  virtual void sendTick(const std::string& to, OutboundReceipt tick) = 0;

 protected:
  ~TickSender() = default;
};

class DeliveryAck : public std::enable_shared_from_this<DeliveryAck> {
 public:
  DeliveryAck(net::NetworkThread& owner, std::uint32_t copies, bool tickMayRide,
              kj::Own<kj::PromiseFulfiller<std::int64_t>> fulfiller);
  ~DeliveryAck();
  DeliveryAck(const DeliveryAck&) = delete;
  DeliveryAck& operator=(const DeliveryAck&) = delete;

  // Makes a promise and the ack that settles it, for `copies` copies, on the
  // calling thread (which must be `owner`'s).
  static std::pair<kj::Promise<void>, std::shared_ptr<DeliveryAck>> make(net::NetworkThread& owner,
                                                                         std::uint32_t copies);
  // The same for a send: the promise yields the time (ms since the epoch) the
  // one copy was delivered when that tick rides in the reply, and 0 when it
  // does not (the copy was stored, the send had several copies, or nobody
  // waited for the reply any more).
  static std::pair<kj::Promise<std::int64_t>, std::shared_ptr<DeliveryAck>> makeForSend(
      net::NetworkThread& owner, std::uint32_t copies);

  // One copy is durable (or needs no tick).
  void settle();
  // One copy reached its phone at `atMs`. If the tick cannot ride in the reply,
  // `sender.sendTick(to, tick)` runs on the owner's thread once the promise has
  // resolved and its reply had its turn (a "delivered" receipt must not
  // overtake the "sent" reply of the same send). The tick is kept as plain
  // data: a one-copy send's costs no allocation.
  void settleDelivered(std::int64_t atMs, TickSender& sender, std::string to, OutboundReceipt tick);
  // Runs `fn` on the owner's thread after the reply, without settling a copy:
  // the tick of a copy that another path settled (its write committed before
  // the phone returned it). Once the reply went out, `fn` is posted to the
  // owner and runs after that turn's events.
  void afterReply(std::function<void()> fn);
  // One copy could not be made durable; the promise rejects with `error` (the
  // first one reported) once every copy is settled or failed.
  void fail(const std::string& error);

  // Optional: whom to tell on the owner's thread, for which recipients. Set
  // before the ack is shared. The listener is held weakly.
  void listen(std::weak_ptr<AckListener> listener, std::vector<std::string> recipients);
  // The same for one recipient (a send), kept without a vector.
  void listen(std::weak_ptr<AckListener> listener, std::string recipient);

 private:
  // A delivered copy's tick, sent on its own unless it rides in the reply.
  struct PendingTick {
    TickSender* sender = nullptr;
    std::string to;
    OutboundReceipt tick;
  };
  // What runs after the reply, in the order it was added: each delivered
  // copy's tick, and the afterReply() functions.
  struct AfterReply {
    std::optional<PendingTick> first;  // inline: a send has one copy
    std::vector<std::variant<PendingTick, std::function<void()>>> rest;
    bool empty() const { return !first && rest.empty(); }
    void run();
  };

  void finishOnOwner();
  std::span<const std::string> recipients() const;

  net::NetworkThread& owner_;
  std::atomic<std::uint32_t> remaining_;
  const bool tickMayRide_;  // one copy, and the reply can carry its tick
  std::mutex errorMutex_;
  std::optional<std::string> error_;
  kj::Own<kj::PromiseFulfiller<std::int64_t>> fulfiller_;  // owner thread only
  std::weak_ptr<AckListener> listener_;
  std::string recipient_;                // listen() with one recipient
  std::vector<std::string> recipients_;  // listen() with several
  // Guarded by errorMutex_: when the one copy was delivered, if its tick may
  // ride in the reply, and what runs after the reply (each delivered copy's
  // tick).
  std::int64_t deliveredAt_ = 0;
  AfterReply after_;
  bool replied_ = false;  // finishOnOwner took after_
};

}  // namespace switchboard::session
