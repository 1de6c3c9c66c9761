#include "session/live_session.h"

#include <spdlog/spdlog.h>

#include <asio/steady_timer.hpp>

#include "net/network_thread.h"

namespace switchboard::session {
namespace {

using Clock = std::chrono::steady_clock;

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

// An item held in memory only: not yet durable, its ack still open.
template <class Item>
bool heldInMemory(const Item& item) {
  return !item.durability.stored();
}

// Items waiting for an Inbox call, oldest first: a vector and a read position.
// Unlike std::deque (libstdc++ allocates ~576 bytes when one is constructed), an
// empty queue holds no memory, which is what most idle sessions have; a busy
// one reuses its vector, compacting it once the taken half dominates.
template <class Item>
class PendingQueue {
 public:
  bool empty() const { return head_ == items_.size(); }
  std::size_t size() const { return items_.size() - head_; }
  Item& front() { return items_[head_]; }
  void push_back(Item item) { items_.push_back(std::move(item)); }
  void pop_front() {
    items_[head_] = Item();  // what it held (a body, an ack) goes now, not at compaction
    if (++head_ == items_.size()) {
      items_.clear();
      head_ = 0;
      // A burst's capacity is not kept by an idle session.
      if (items_.capacity() > kKeptCapacity) std::vector<Item>().swap(items_);
    } else if (head_ >= kKeptCapacity && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  auto begin() { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  auto end() { return items_.end(); }
  auto begin() const { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  auto end() const { return items_.end(); }

 private:
  static constexpr std::size_t kKeptCapacity = 64;
  std::vector<Item> items_;
  std::size_t head_ = 0;
};

}  // namespace

// ---------------------------------------------------------------- Feed

// One ordered stream of items towards the phone: items waiting for an Inbox
// call, and the batches whose calls are in flight.
template <class Item>
struct LiveSession::Feed {
  PendingQueue<Item> pending;
  std::list<std::vector<Item>> inFlight;  // one entry per Inbox call, oldest first
  std::list<std::vector<Item>> spare;     // empty nodes of returned calls (at most deliverWindow)
  std::size_t inFlightItems = 0;
  std::uint64_t cursor = 0;        // the highest store position paged in
  bool caughtUp = false;           // the last page came back short
  std::size_t spillsInFlight = 0;  // hand-over writes not yet committed

  // Offers are held in memory only while nothing of this phone's waits in the
  // store and no write of ours could still add to it.
  bool takesOffers() const { return caughtUp && spillsInFlight == 0; }

  std::vector<Item> nextBatch(std::size_t max) {
    std::vector<Item> batch;
    batch.reserve(std::min(max, pending.size()));
    while (!pending.empty() && batch.size() < max) {
      batch.push_back(std::move(pending.front()));
      pending.pop_front();
    }
    return batch;
  }
};

struct LiveSession::DeadlineTimer {
  explicit DeadlineTimer(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
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
  return messages_->pending.size() + receipts_->pending.size() + messages_->inFlightItems +
         receipts_->inFlightItems + presenceInFlight_;
}

void LiveSession::start(StoredAtStart stored) {
  started_ = true;
  lastProgress_ = Clock::now();
  if (stored == StoredAtStart::settling) {
    awaitingStore_ = true;
    ++messages_->spillsInFlight;
    ++receipts_->spillsInFlight;
  } else if (stored == StoredAtStart::nothing) {
    messages_->caughtUp = true;
    receipts_->caughtUp = true;
  }
  pump();
}

// ---------------------------------------------------------------- offers

bool LiveSession::offer(OutboundMessage& message) {
  return take(*messages_, message);
}

bool LiveSession::offer(OutboundReceipt& receipt) {
  return take(*receipts_, receipt);
}

template <class Item>
bool LiveSession::take(Feed<Item>& feed, Item& item) {
  if (ended_) return false;
  bool room = queueLength() < limits_.maxQueue;
  if (!started_ || !feed.takesOffers() || !room) {
    if (!room) {
      feed.caughtUp = false;
      overflowed_ = true;
      checkStall();
    }
    std::vector<Item> items;
    items.push_back(std::move(item));
    spill(feed, SpillKind::handOver, std::move(items));
    return true;
  }
  item.heldSince = Clock::now();
  feed.pending.push_back(std::move(item));
  armDeadline();
  pump();
  return true;
}

template <class Item>
void LiveSession::spill(Feed<Item>& feed, SpillKind kind, std::vector<Item> items) {
  if (items.empty()) return;
  if (kind == SpillKind::handOver) ++feed.spillsInFlight;
  if constexpr (std::is_same_v<Item, OutboundMessage>) {
    backend_.spillMessages(*this, kind, std::move(items));
  } else {
    backend_.spillReceipts(*this, kind, std::move(items));
  }
}

void LiveSession::spillDone(SpillKind kind, SpillFeed feed) {
  if (kind == SpillKind::keep || ended_) return;
  // The rows are visible now (or the write failed): page from where we were.
  // The write awaited by start(settling) is queued before any spill, so it is done first.
  awaitingStore_ = false;
  auto visible = [](auto& f) {
    if (f.spillsInFlight > 0) --f.spillsInFlight;
    f.caughtUp = false;
  };
  if (feed != SpillFeed::receipts) visible(*messages_);
  if (feed != SpillFeed::messages) visible(*receipts_);
  pump();
}

void LiveSession::storeChanged() {
  if (ended_) return;
  messages_->caughtUp = false;
  receipts_->caughtUp = false;
  pump();
}

LiveSession::RouteTo LiveSession::routeTo(const std::string& to) {
  if (auto it = routes_.find(to); it != routes_.end()) return {it->second, false};
  if (spareRoute_.empty()) return {routes_.try_emplace(to).first->second, true};
  spareRoute_.key() = to;
  spareRoute_.mapped() = SenderRoute{};
  return {routes_.insert(std::move(spareRoute_)).position->second, true};
}

void LiveSession::acknowledged(std::span<const std::string> recipients) {
  for (const std::string& recipient : recipients) {
    auto it = routes_.find(recipient);
    if (it != routes_.end() && --it->second.outstanding == 0) spareRoute_ = routes_.extract(it);
  }
}

// ---------------------------------------------------------------- durability deadline

template <class Item>
std::optional<Clock::time_point> oldestHeld(const std::list<std::vector<Item>>& inFlight,
                                            const PendingQueue<Item>& pending) {
  for (const auto& batch : inFlight) {
    for (const Item& item : batch) {
      if (heldInMemory(item)) return item.heldSince;
    }
  }
  for (const Item& item : pending) {
    if (heldInMemory(item)) return item.heldSince;
  }
  return std::nullopt;
}

void LiveSession::armDeadline() {
  if (deadlineArmed_ || ended_) return;
  // The oldest held item decides when to look again (items are held in order).
  auto oldest = oldestHeld(messages_->inFlight, messages_->pending);
  auto oldestReceipt = oldestHeld(receipts_->inFlight, receipts_->pending);
  if (!oldest || (oldestReceipt && *oldestReceipt < *oldest)) oldest = oldestReceipt;
  if (!oldest) return;
  if (!deadline_) deadline_ = std::make_unique<DeadlineTimer>(thread_.ioContext());
  deadlineArmed_ = true;
  deadline_->timer.expires_at(*oldest + limits_.durableAfter);
  deadline_->timer.async_wait([weak = weak_from_this()](const std::error_code& error) {
    auto self = weak.lock();
    if (!self) return;
    self->deadlineArmed_ = false;
    if (!error) self->deadlinePassed();
  });
}

template <class Item>
std::vector<Item> LiveSession::collectHeld(Feed<Item>& feed, Clock::time_point before) {
  std::vector<Item> copies;
  auto collect = [&](Item& item) {
    if (!heldInMemory(item) || item.heldSince > before) return;
    // The phone may still return it: whichever comes first settles the ack.
    item.durability.spilledRow = std::make_shared<SpilledRow>();
    copies.push_back(item);
  };
  for (auto& batch : feed.inFlight) {
    for (Item& item : batch) collect(item);
  }
  for (Item& item : feed.pending) collect(item);
  return copies;
}

// Items the phone has not taken within durableAfter are written to the store,
// so their senders get the tick without waiting on this phone any longer.
void LiveSession::deadlinePassed() {
  if (ended_) return;
  auto before = Clock::now() - limits_.durableAfter;
  spill(*messages_, SpillKind::keep, collectHeld(*messages_, before));
  spill(*receipts_, SpillKind::keep, collectHeld(*receipts_, before));
  armDeadline();
}

// ---------------------------------------------------------------- back-pressure

// Full: offers go to the store. A phone that is reading (an Inbox call
// returned recently) is only behind a burst and catches up by paging; one that
// has stopped reading is disconnected, so its backlog costs no memory. Checked
// on every refused offer and by a timer, so a stall is caught even when the
// offers stop.
void LiveSession::checkStall() {
  if (ended_ || !overflowed_) return;
  auto now = Clock::now();
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

namespace {

// Every Inbox call states its size: without a hint Cap'n Proto gives a call's
// message an 8 KiB first segment and zero-fills it, three times per message
// delivered (the call, the sender's reply, the "delivered" receipt).
constexpr std::uint64_t textWords(std::size_t bytes) {
  return (bytes + 8) / 8;  // with its NUL
}
constexpr std::uint64_t dataWords(std::size_t bytes) {
  return (bytes + 7) / 8;
}
constexpr std::uint64_t kListTagWords = 1;
constexpr std::uint64_t kMessageWords = 6;         // proto::Message: 3 data words, 3 pointers
constexpr std::uint64_t kReceiptWords = 4;         // proto::Receipt: 3 data words, 1 pointer
constexpr std::uint64_t kPresenceUpdateWords = 3;  // proto::PresenceUpdate: 2 data words, 1 pointer

capnp::MessageSize deliverSize(const std::vector<OutboundMessage>& batch) {
  std::uint64_t words = kListTagWords;
  for (const OutboundMessage& m : batch) {
    words += kMessageWords + textWords(m.from.size()) + textWords(m.clientMsgId.size()) +
             dataWords(m.body.size());
  }
  return {words, 0};
}

capnp::MessageSize receiptSize(const std::vector<OutboundReceipt>& batch) {
  std::uint64_t words = kListTagWords;
  for (const OutboundReceipt& r : batch) words += kReceiptWords + textWords(r.by.size());
  return {words, 0};
}

}  // namespace

void LiveSession::push(OutboundPresence presence) {
  if (ended_ || presenceInFlight_ >= limits_.deliverWindow * limits_.deliverBatch) return;
  auto request = inbox_.presenceRequest(capnp::MessageSize{
      kListTagWords + kPresenceUpdateWords + textWords(presence.phone.size()), 0});
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

// ---------------------------------------------------------------- the Inbox calls

void LiveSession::pump() {
  if (!started_ || ended_) return;
  refill();
  if (messages_->takesOffers() && receipts_->takesOffers()) overflowed_ = false;
  pumpFeed(*messages_, [this](const std::vector<OutboundMessage>& batch) {
    auto request = inbox_.deliverRequest(deliverSize(batch));
    auto list = request.initMessages(static_cast<unsigned>(batch.size()));
    for (unsigned i = 0; i < batch.size(); ++i) {
      const OutboundMessage& m = batch[i];
      auto out = list[i];
      out.setId(m.id);
      out.setFrom(m.from);
      out.setGroup(m.group);
      out.setClientMsgId(m.clientMsgId);
      out.setBody(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(m.body.data()), m.body.size()));
      out.setTimestamp(m.timestamp);
    }
    return request.send();
  });
  pumpFeed(*receipts_, [this](const std::vector<OutboundReceipt>& batch) {
    auto request = inbox_.receiptRequest(receiptSize(batch));
    auto list = request.initReceipts(static_cast<unsigned>(batch.size()));
    for (unsigned i = 0; i < batch.size(); ++i) {
      const OutboundReceipt& r = batch[i];
      auto out = list[i];
      out.setId(r.messageId);
      out.setBy(r.by);
      out.setKind(static_cast<proto::ReceiptKind>(r.kind));
      out.setTimestamp(r.timestamp);
    }
    return request.send();
  });
  updateGauges();
}

void LiveSession::refill() {
  if (awaitingStore_) return;
  std::size_t lowWater = limits_.deliverBatch * limits_.deliverWindow;
  // Paging alone must not take the queue past maxQueue: a phone catching up on a
  // backlog larger than the limit is not a slow reader, and would otherwise be
  // kicked on every login.
  auto room = [this]() -> std::size_t {
    std::size_t length = queueLength();
    return length >= limits_.maxQueue ? 0 : std::min(limits_.loadPage, limits_.maxQueue - length);
  };
  auto page = [&](auto& feed, auto&& load) {
    std::size_t limit = room();
    if (feed.caughtUp || limit == 0 || feed.pending.size() >= lowWater) return;
    auto items = load(feed.cursor, limit);
    for (auto& item : items) {
      feed.cursor = std::max(feed.cursor, item.durability.seq);
      feed.pending.push_back(std::move(item));
    }
    if (items.size() < limit && feed.spillsInFlight == 0) feed.caughtUp = true;
  };
  page(*messages_, [&](std::uint64_t after, std::size_t limit) {
    return backend_.queuedMessages(ref_.phone, after, limit, ref_.sessionId);
  });
  page(*receipts_, [&](std::uint64_t after, std::size_t limit) {
    return backend_.queuedReceipts(ref_.phone, after, limit, ref_.sessionId);
  });
}

template <class Item, class Send>
void LiveSession::pumpFeed(Feed<Item>& feed, Send&& send) {
  while (!ended_ && !feed.pending.empty() && feed.inFlight.size() < limits_.deliverWindow) {
    if (feed.spare.empty()) {
      feed.inFlight.emplace_back();
    } else {
      feed.inFlight.splice(feed.inFlight.end(), feed.spare, feed.spare.begin());
    }
    auto batch = std::prev(feed.inFlight.end());
    *batch = feed.nextBatch(limits_.deliverBatch);
    feed.inFlightItems += batch->size();
    tasks_->add(send(*batch).then(
        [this, &feed, batch](auto&&) {  // the response: Inbox calls return nothing
          // Returned: the phone has the batch, even if the session ended since.
          std::vector<Item> items = std::move(*batch);
          feed.inFlightItems -= items.size();
          feed.spare.splice(feed.spare.end(), feed.inFlight, batch);
          lastProgress_ = Clock::now();
          if constexpr (std::is_same_v<Item, OutboundMessage>) {
            ref_.gauges->delivered += items.size();
            backend_.messagesDelivered(*this, std::move(items));
          } else {
            for (Item& item : items) {
              auto ack = std::exchange(item.ack, nullptr);
              if (ack && item.durability.claimAck()) ack->settle();
            }
            backend_.receiptsShown(*this, std::move(items));
          }
          pump();
        },
        [this, &feed, batch](kj::Exception&& e) {
          // Not returned: end() writes the batch's held items to the store first.
          fail(e);
          feed.inFlightItems -= batch->size();
          feed.inFlight.erase(batch);
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

// ---------------------------------------------------------------- ending

void LiveSession::fail(const kj::Exception& exception) {
  if (ended_) return;
  spdlog::debug("session {} of {}: inbox call failed, ending: {}", ref_.sessionId, ref_.phone,
                exception.getDescription().cStr());
  end();
}

void LiveSession::kick(std::string reason, bool closeConnection) {
  if (ended_) return;
  spdlog::info("kicking session {} of {}: {}", ref_.sessionId, ref_.phone, reason);
  auto request = inbox_.kickedRequest(capnp::MessageSize{textWords(reason.size()) + 1, 0});
  request.setReason(reason);
  auto sent = request.send().ignoreResult();
  if (!closeConnection || !closeConnection_) {
    // The connection carries a newer session: tell this one, keep the line.
    thread_.addTask(kj::mv(sent).catch_([](kj::Exception&&) {}));
    end();
    return;
  }
  // The close must happen once, whichever comes first: the phone's answer, or
  // the grace period running out. Neither may touch `this`: the session ends now.
  auto close = std::make_shared<std::function<void()>>(std::move(closeConnection_));
  auto closeOnce = [close]() {
    if (*close) std::exchange(*close, nullptr)();
  };
  auto timer = std::make_shared<asio::steady_timer>(thread_.ioContext(), kKickGrace);
  timer->async_wait([timer, closeOnce](const std::error_code&) { closeOnce(); });
  thread_.addTask(kj::mv(sent).then(
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
  // Everything still held only in memory becomes durable for the next session;
  // a call in flight that returns after this still counts as delivered.
  // ended() is already true for the backend: it may let go of items another
  // copy of which still waits elsewhere (the cluster's stream).
  ended_ = true;
  auto all = Clock::time_point::max();
  spill(*messages_, SpillKind::handOver, collectHeld(*messages_, all));
  spill(*receipts_, SpillKind::handOver, collectHeld(*receipts_, all));
  if (deadline_) deadline_->timer.cancel();
  ref_.gauges->queueLength = 0;
  backend_.sessionEnded(*this);
}

}  // namespace switchboard::session
