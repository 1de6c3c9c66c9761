#include "session/live_session.h"

#include <spdlog/spdlog.h>

#include <asio/steady_timer.hpp>

#include "net/network_thread.h"

namespace switchboard::session {
namespace {

// How long a kicked phone has to take its "kicked" call before the connection
// is closed anyway.
constexpr auto kKickGrace = std::chrono::seconds(2);

class LoggingErrorHandler final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& exception) override {
    spdlog::debug("session task failed: {}", exception.getDescription().cStr());
  }
};
LoggingErrorHandler errorHandler;

std::uint64_t idOf(const OutboundMessage& message) {
  return message.id;
}
std::uint64_t idOf(const OutboundReceipt& receipt) {
  return receipt.rowId;
}

}  // namespace

// ---------------------------------------------------------------- Feed

// One ordered stream of durable items towards the phone: a window of pending
// items paged in from the store, then live pushes once caught up.
template <class Item>
struct LiveSession::Feed {
  std::deque<Item> pending;
  std::uint64_t cursor = 0;  // the highest id taken in, from the store or live
  bool caughtUp = false;     // the last page came back short: live pushes are accepted
  std::size_t callsInFlight = 0;

  enum class Offered { taken, skipped, full };
  // Takes a live push unless paging will find it or it was seen already. With
  // no room left the push is not taken either: the feed stops being caught up
  // and pages the item (still durable in the store) in later, in order.
  Offered offer(Item item, bool room) {
    if (!caughtUp || idOf(item) <= cursor) return Offered::skipped;
    if (!room) {
      caughtUp = false;
      return Offered::full;
    }
    cursor = idOf(item);
    pending.push_back(std::move(item));
    return Offered::taken;
  }
  template <class Load>
  void refill(std::size_t lowWater, std::size_t page, Load&& load) {
    if (caughtUp || page == 0 || pending.size() >= lowWater) return;
    std::vector<Item> items = load(cursor, page);
    for (Item& item : items) {
      cursor = std::max(cursor, idOf(item));
      pending.push_back(std::move(item));
    }
    if (items.size() < page) caughtUp = true;
  }
  std::vector<Item> take(std::size_t max) {
    std::vector<Item> batch;
    while (!pending.empty() && batch.size() < max) {
      batch.push_back(std::move(pending.front()));
      pending.pop_front();
    }
    return batch;
  }
};

// ---------------------------------------------------------------- LiveSession

LiveSession::LiveSession(SessionBackend& backend, net::NetworkThread& thread, SessionLimits limits,
                         SessionRef ref, proto::Inbox::Client inbox,
                         std::function<void()> closeConnection)
    : backend_(backend),
      thread_(thread),
      limits_(limits),
      ref_(std::move(ref)),
      inbox_(kj::mv(inbox)),
      closeConnection_(std::move(closeConnection)),
      messages_(std::make_unique<Feed<OutboundMessage>>()),
      receipts_(std::make_unique<Feed<OutboundReceipt>>()),
      tasks_(kj::heap<kj::TaskSet>(errorHandler)) {}

LiveSession::~LiveSession() {
  end();
}

std::size_t LiveSession::queueLength() const {
  return messages_->pending.size() + receipts_->pending.size() + messages_->callsInFlight +
         receipts_->callsInFlight + presenceInFlight_;
}

void LiveSession::start() {
  started_ = true;
  lastProgress_ = std::chrono::steady_clock::now();
  pump();
}

void LiveSession::push(OutboundMessage message) {
  if (ended_) return;
  offered(messages_->offer(std::move(message), queueLength() < limits_.maxQueue));
}

void LiveSession::push(OutboundReceipt receipt) {
  if (ended_) return;
  offered(receipts_->offer(std::move(receipt), queueLength() < limits_.maxQueue));
}

template <class Offered>
void LiveSession::offered(Offered outcome) {
  if (outcome == Offered::taken) {
    pump();
    return;
  }
  if (outcome != Offered::full) return;
  overflowed_ = true;
  checkStall();
}

// Full: the item waits in the store. A phone that is reading (an Inbox call
// returned recently) is only behind a burst and catches up by paging; one that
// has stopped reading is disconnected, so its backlog costs no memory. Checked
// on every refused push and by a timer, so a stall is caught even when the
// pushes stop.
void LiveSession::checkStall() {
  if (ended_ || !overflowed_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - lastProgress_ < limits_.stallTimeout) {
    if (stallTimerArmed_) return;
    stallTimerArmed_ = true;
    auto timer = std::make_shared<asio::steady_timer>(thread_.ioContext());
    timer->expires_at(lastProgress_ + limits_.stallTimeout);
    timer->async_wait([weak = weak_from_this(), timer](const std::error_code& error) {
      auto self = weak.lock();
      if (!self) return;
      self->stallTimerArmed_ = false;
      if (!error) self->checkStall();
    });
    return;
  }
  std::size_t length = queueLength();
  spdlog::warn("session {} of {}: queue full at {} and nothing read for {} ms, disconnecting",
               ref_.sessionId, ref_.phone, length,
               std::chrono::duration_cast<std::chrono::milliseconds>(now - lastProgress_).count());
  backend_.slowConsumer(*this, length);
  kick("too slow to read");
}

void LiveSession::push(OutboundPresence presence) {
  if (ended_ || presenceInFlight_ >= limits_.deliverWindow * limits_.deliverBatch) return;
  auto request = inbox_.presenceRequest();
  auto update = request.initUpdates(1)[0];
  update.setPhone(presence.phone);
  update.setState(static_cast<proto::PresenceState>(presence.state));
  update.setLastSeen(presence.lastSeen);
  update.setTyping(presence.typing);
  ++presenceInFlight_;
  tasks_->add(request.send().ignoreResult().then([this]() { --presenceInFlight_; },
                                                 [this](kj::Exception&& e) {
                                                   --presenceInFlight_;
                                                   fail(e);
                                                 }));
}

void LiveSession::pump() {
  if (!started_ || ended_) return;
  refill();
  if (messages_->caughtUp && receipts_->caughtUp) overflowed_ = false;
  pumpMessages();
  pumpReceipts();
  updateGauges();
}

void LiveSession::refill() {
  std::size_t lowWater = limits_.deliverBatch * limits_.deliverWindow;
  // Paging alone must not take the queue past maxQueue: a phone catching up on a
  // backlog larger than the limit is not a slow reader, and would otherwise be
  // kicked on every login.
  auto room = [this]() -> std::size_t {
    std::size_t length = queueLength();
    return length >= limits_.maxQueue ? 0 : std::min(limits_.loadPage, limits_.maxQueue - length);
  };
  messages_->refill(lowWater, room(), [&](std::uint64_t after, std::size_t limit) {
    return backend_.queuedMessages(ref_.phone, after, limit);
  });
  receipts_->refill(lowWater, room(), [&](std::uint64_t after, std::size_t limit) {
    return backend_.queuedReceipts(ref_.phone, after, limit);
  });
}

void LiveSession::pumpMessages() {
  Feed<OutboundMessage>& feed = *messages_;
  while (!ended_ && !feed.pending.empty() && feed.callsInFlight < limits_.deliverWindow) {
    std::vector<OutboundMessage> batch = feed.take(limits_.deliverBatch);
    auto request = inbox_.deliverRequest();
    auto list = request.initMessages(static_cast<unsigned>(batch.size()));
    std::vector<std::uint64_t> ids;
    ids.reserve(batch.size());
    for (unsigned i = 0; i < batch.size(); ++i) {
      const OutboundMessage& m = batch[i];
      auto out = list[i];
      out.setId(m.id);
      out.setFrom(m.from);
      out.setGroup(m.group);
      out.setClientMsgId(m.clientMsgId);
      out.setBody(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(m.body.data()), m.body.size()));
      out.setTimestamp(m.timestamp);
      ids.push_back(m.id);
    }
    ++feed.callsInFlight;
    tasks_->add(request.send().ignoreResult().then(
        [this, ids = std::move(ids)]() mutable {
          --messages_->callsInFlight;
          lastProgress_ = std::chrono::steady_clock::now();
          if (ended_) return;
          ref_.gauges->delivered += ids.size();
          backend_.messagesDelivered(*this, std::move(ids));
          pump();
        },
        [this](kj::Exception&& e) {
          --messages_->callsInFlight;
          fail(e);
        }));
  }
}

void LiveSession::pumpReceipts() {
  Feed<OutboundReceipt>& feed = *receipts_;
  while (!ended_ && !feed.pending.empty() && feed.callsInFlight < limits_.deliverWindow) {
    std::vector<OutboundReceipt> batch = feed.take(limits_.deliverBatch);
    auto request = inbox_.receiptRequest();
    auto list = request.initReceipts(static_cast<unsigned>(batch.size()));
    std::vector<std::uint64_t> rows;
    rows.reserve(batch.size());
    for (unsigned i = 0; i < batch.size(); ++i) {
      const OutboundReceipt& r = batch[i];
      auto out = list[i];
      out.setId(r.messageId);
      out.setBy(r.by);
      out.setKind(static_cast<proto::ReceiptKind>(r.kind));
      out.setTimestamp(r.timestamp);
      rows.push_back(r.rowId);
    }
    ++feed.callsInFlight;
    tasks_->add(request.send().ignoreResult().then(
        [this, rows = std::move(rows)]() mutable {
          --receipts_->callsInFlight;
          lastProgress_ = std::chrono::steady_clock::now();
          if (ended_) return;
          backend_.receiptsShown(std::move(rows));
          pump();
        },
        [this](kj::Exception&& e) {
          --receipts_->callsInFlight;
          fail(e);
        }));
  }
}

void LiveSession::updateGauges() {
  std::size_t length = queueLength();
  ref_.gauges->queueLength = length;
  if (length > ref_.gauges->maxQueueLength) ref_.gauges->maxQueueLength = length;
  if (length > limits_.alertQueue && !alerted_) {
    alerted_ = true;
    backend_.queueAlert(*this, length);
  } else if (length <= limits_.alertQueue / 2) {
    alerted_ = false;
  }
}

void LiveSession::fail(const kj::Exception& exception) {
  if (ended_) return;
  spdlog::debug("session {} of {}: inbox call failed, ending: {}", ref_.sessionId, ref_.phone,
                exception.getDescription().cStr());
  end();
}

void LiveSession::kick(std::string reason) {
  if (ended_) return;
  spdlog::info("kicking session {} of {}: {}", ref_.sessionId, ref_.phone, reason);
  auto request = inbox_.kickedRequest();
  request.setReason(reason);
  // The close must happen once, whichever comes first: the phone's answer, or
  // the grace period running out. Neither may touch `this`: the session ends now.
  auto close = std::make_shared<std::function<void()>>(std::move(closeConnection_));
  auto closeOnce = [close]() {
    if (*close) std::exchange(*close, nullptr)();
  };
  auto timer = std::make_shared<asio::steady_timer>(thread_.ioContext(), kKickGrace);
  timer->async_wait([timer, closeOnce](const std::error_code&) { closeOnce(); });
  thread_.addTask(request.send().ignoreResult().then(
      [timer, closeOnce]() {
        timer->cancel();
        closeOnce();
      },
      [timer, closeOnce](kj::Exception&&) {
        timer->cancel();
        closeOnce();
      }));
  end();
}

void LiveSession::end() {
  if (ended_) return;
  ended_ = true;
  ref_.gauges->queueLength = 0;
  backend_.sessionEnded(*this);
}

}  // namespace switchboard::session
