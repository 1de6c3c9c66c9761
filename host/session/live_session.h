// One logged-in phone: its Inbox capability and what is on its way to it.
//
// Ownership and threads: a LiveSession belongs to the network thread whose
// connection logged it in. Every method is for that thread only; other threads
// reach it by posting there and locking the weak reference in the SessionTable.
// It is kept alive by the Session capability the phone holds (and by its own
// calls in flight); when the phone drops the capability or the connection
// ends, the session ends.
//
// Delivery: a session takes messages and receipts from two sources, offers
// (items handed to it in memory by senders) and the durable queue in the store
// (rows written while the phone was away, paged in oldest first). The rule that
// keeps both in order: while the session is *caught up* (its last page came
// back short and no write of its own is in flight) an offer is held in memory
// and goes out in the next Inbox call; otherwise the offer is written to the
// store ("spilled") and reaches the phone by paging, after everything stored
// before it. Inbox.deliver returning means the phone has the batch: each
// item's ack settles then (the sender's "sent" tick), or earlier if the item
// became durable first.
//
// Durability: an item held in memory whose Inbox call has not returned within
// `durableAfter` is written to the store and stays held (paging skips rows
// this session holds). When the session ends, every held item not yet durable
// is written, so nothing acknowledged is lost and the next session finds it.
//
// Back-pressure: the queue in memory is bounded by `maxQueue`. Past
// `alertQueue` the backend raises an alert (once per crossing). An offer that
// finds the queue full is spilled, so memory stays bounded and the phone
// catches up by paging. If the phone has also not finished an Inbox call for
// `stallTimeout`, it has stopped reading: it is kicked with "too slow to read".
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <kj/async.h>

#include "session/delivery_ack.h"
#include "session/outbound.h"
#include "session/session_table.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::session {

struct SessionLimits {
  std::size_t maxQueue = 10000;   // messages + receipts in memory; past it offers spill
  std::size_t alertQueue = 1000;  // queue length that raises an alert
  std::size_t deliverBatch = 64;  // messages per Inbox.deliver (proto maxDeliverBatch)
  std::size_t deliverWindow = 4;  // Inbox calls in flight per feed
  std::size_t loadPage = 256;     // rows read from the store at a time
  // With the queue full, a phone that finished no Inbox call for this long is
  // disconnected as too slow to read.
  std::chrono::milliseconds stallTimeout{5000};
  // An item held in memory whose Inbox call has not returned for this long is
  // written to the store (and its sender acknowledged once that is durable).
  std::chrono::milliseconds durableAfter{200};
};

class LiveSession;

// Why the session writes items to the store.
enum class SpillKind : std::uint8_t {
  handOver,  // the items leave the session (queue full, not caught up, session ended)
  keep,      // a deadline passed: the items stay held, the rows only make them durable
};

// What the store may hold for a phone when its session starts.
enum class StoredAtStart : std::uint8_t {
  unknown,   // page what waits now
  nothing,   // the backend knows nothing waits: the feeds start caught up, no page is
             // read, and a write committed later tells the session (storeChanged)
  settling,  // a write that changes this phone's queue is in flight: paging waits
             // for spillDone(SpillKind::handOver), and offers spill meanwhile
};

// Which of a session's feeds a spill wrote: each counts its own writes in
// flight, and pages again only once they are all visible.
enum class SpillFeed : std::uint8_t { messages, receipts, both };

// The durable side of a session, implemented by the messaging service. Called
// on the session's thread; implementations must not block (reads are short
// indexed SQLite reads; writes are queued).
class SessionBackend {
 public:
  // Stored messages for `phone` after store position `afterSeq`, oldest first,
  // at most `limit`, leaving out rows `holder` (a session id) holds itself.
  virtual std::vector<OutboundMessage> queuedMessages(const std::string& phone,
                                                      std::uint64_t afterSeq, std::size_t limit,
                                                      std::uint64_t holder) = 0;
  virtual std::vector<OutboundReceipt> queuedReceipts(const std::string& phone,
                                                      std::uint64_t afterSeq, std::size_t limit,
                                                      std::uint64_t holder) = 0;
  // Writes `items` to the store in this order (rows held by the session for
  // SpillKind::keep), settles their acks once durable (or fails them), then
  // calls `session.spillDone(kind)` on the session's thread if it still lives.
  // When the session is ending, session.ended() is already true.
  virtual void spillMessages(LiveSession& session, SpillKind kind,
                             std::vector<OutboundMessage> items) = 0;
  virtual void spillReceipts(LiveSession& session, SpillKind kind,
                             std::vector<OutboundReceipt> items) = 0;
  // The phone returned Inbox.deliver for these: settle their acks, forget
  // their stored rows and tell the senders "delivered" (after their "sent").
  virtual void messagesDelivered(const LiveSession& session,
                                 std::vector<OutboundMessage> items) = 0;
  // The phone returned Inbox.receipt for these: forget their stored rows.
  virtual void receiptsShown(const LiveSession& session, std::vector<OutboundReceipt> items) = 0;
  // Called once when the session ends, for whatever reason.
  virtual void sessionEnded(const LiveSession& session) = 0;
  // The queue passed the alert threshold.
  virtual void queueAlert(const LiveSession& session, std::size_t length) = 0;
  // The queue is full and the phone stopped reading: the session is being kicked.
  virtual void slowConsumer(const LiveSession& session, std::size_t length) = 0;

 protected:
  ~SessionBackend() = default;
};

// Where a sender's recent items to one recipient went, kept while any of them
// is unacknowledged, so the next item to that recipient takes the same way and
// cannot overtake them (messaging decides; the session only keeps the map).
struct SenderRoute {
  std::optional<SessionAddress> session;  // the recipient's session; none: the store
  std::uint32_t outstanding = 0;          // items on this route not yet acknowledged
  bool remote = false;  // cluster mode: the cluster's stream (the phone is elsewhere or away)
};

class LiveSession : public std::enable_shared_from_this<LiveSession>, public AckListener {
 public:
  // `closeConnection` drops the phone's connection (used after a kick).
  LiveSession(SessionBackend& backend, net::NetworkThread& thread, SessionLimits limits,
              SessionRef ref, proto::Inbox::Client inbox, std::function<void()> closeConnection);
  ~LiveSession();
  LiveSession(const LiveSession&) = delete;
  LiveSession& operator=(const LiveSession&) = delete;

  const std::string& phone() const { return ref_.phone; }
  std::uint64_t id() const { return ref_.sessionId; }
  const SessionRef& ref() const { return ref_; }
  net::NetworkThread& thread() const { return thread_; }
  bool ended() const override { return ended_; }
  std::size_t queueLength() const;

  // Starts delivering: pages what was queued while the phone was away, as
  // `stored` says (StoredAtStart). Call once, after the session is in the table.
  void start(StoredAtStart stored);

  // Offers an item. Returns false (and leaves the item untouched) once the
  // session has ended: the caller then stores it.
  bool offer(OutboundMessage& message);
  bool offer(OutboundReceipt& receipt);
  void push(OutboundPresence presence);

  // Someone else committed rows for this phone: page them in.
  void storeChanged();
  // A spill of this session's `feed` is done (or failed): the rows are visible.
  void spillDone(SpillKind kind, SpillFeed feed);
  // The write awaited by start() is done: both feeds may page.
  void spillDone(SpillKind kind) { spillDone(kind, SpillFeed::both); }

  // The sender side: the route of this phone's unacknowledged items to `to`,
  // made empty (and `fresh` true) when there is none; acknowledged() removes
  // it once its last item is acknowledged. The node of the last route removed
  // is kept for the next one, so a phone sending to one peer at a time makes
  // no allocation per message.
  struct RouteTo {
    SenderRoute& way;
    bool fresh;
  };
  RouteTo routeTo(const std::string& to);
  // Per recipient: a step the first send to it must finish before it is
  // routed (in a cluster, learning a recipient registered elsewhere). Later
  // sends to that recipient wait behind it, so they keep their order.
  std::unordered_map<std::string, kj::ForkedPromise<void>>& sendGates() { return sendGates_; }
  void acknowledged(std::span<const std::string> recipients) override;

  // Tells the phone why, then closes its connection, unless told to keep it
  // (a newer session lives on the same connection). Ends the session now.
  void kick(std::string reason, bool closeConnection = true);
  // Ends the session (logout, the phone dropped it). Idempotent.
  void end();

 private:
  template <class Item>
  struct Feed;
  struct DeadlineTimer;

  template <class Item>
  bool take(Feed<Item>& feed, Item& item);
  template <class Item>
  void spill(Feed<Item>& feed, SpillKind kind, std::vector<Item> items);
  template <class Item, class Send>
  void pumpFeed(Feed<Item>& feed, Send&& send);
  template <class Item>
  std::vector<Item> collectHeld(Feed<Item>& feed, std::chrono::steady_clock::time_point before);

  void checkStall();
  void pump();
  void refill();
  void armDeadline();
  void deadlinePassed();
  void updateGauges();
  void fail(const kj::Exception& exception);

  SessionBackend& backend_;
  net::NetworkThread& thread_;
  const SessionLimits limits_;
  const SessionRef ref_;
  proto::Inbox::Client inbox_;
  std::function<void()> closeConnection_;
  std::unique_ptr<Feed<OutboundMessage>> messages_;
  std::unique_ptr<Feed<OutboundReceipt>> receipts_;
  std::unordered_map<std::string, SenderRoute> routes_;
  std::unordered_map<std::string, SenderRoute>::node_type spareRoute_;  // see routeTo
  std::unordered_map<std::string, kj::ForkedPromise<void>> sendGates_;
  std::unique_ptr<DeadlineTimer> deadline_;  // made on first use
  std::size_t presenceInFlight_ = 0;
  bool started_ = false;
  bool ended_ = false;
  bool alerted_ = false;
  bool overflowed_ = false;  // an offer found the queue full; the store holds the rest
  bool stallTimerArmed_ = false;
  bool deadlineArmed_ = false;
  bool awaitingStore_ = false;  // StoredAtStart::settling: no paging until that write is done
  std::chrono::steady_clock::time_point lastProgress_;  // an Inbox call last returned
  kj::Own<kj::TaskSet> tasks_;  // Inbox calls in flight; cancelled with the session
};

}  // namespace switchboard::session
