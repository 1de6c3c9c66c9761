// One logged-in phone: its Inbox capability and what is on its way to it.
//
// Ownership and threads: a LiveSession belongs to the network thread whose
// connection logged it in. Every method is for that thread only; other threads
// reach it by posting there and locking the weak reference in the SessionTable.
// It is kept alive by the Session capability the phone holds (and by its own
// calls in flight); when the phone drops the capability or the connection
// ends, the session ends.
//
// Delivery: messages and receipts are durable before they get here (the store
// is the queue; this is a window onto it). A session pages what was queued
// while the phone was away out of the store, oldest first, and accepts live
// pushes once it has caught up; a push that arrives before that is ignored,
// because paging will find it. Inbox.deliver returning means the phone has the
// batch: only then is the backend told, and it marks the rows delivered.
// Several deliver calls may be in flight; Cap'n Proto keeps them in order.
//
// Back-pressure: the outbound queue in memory is bounded by `maxQueue`. Past
// `alertQueue` the backend raises an alert (once per crossing). A push that
// finds the queue full is not taken: it stays durable in the store and is paged
// in, in order, as the phone reads (the store is the spill). If the phone has
// also not finished an Inbox call for `stallTimeout`, it has stopped reading:
// the session is kicked with "too slow to read" and its connection closed. So a
// stalled reader cannot grow the server's memory, and a healthy phone hit by a
// burst (a thousand "delivered" receipts at once) is never disconnected.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <kj/async.h>

#include "session/outbound.h"
#include "session/session_table.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::session {

struct SessionLimits {
  std::size_t maxQueue = 10000;   // messages + receipts in memory; past it: kicked
  std::size_t alertQueue = 1000;  // queue length that raises an alert
  std::size_t deliverBatch = 64;  // messages per Inbox.deliver (proto maxDeliverBatch)
  std::size_t deliverWindow = 4;  // Inbox calls in flight per feed
  std::size_t loadPage = 256;     // rows read from the store at a time
  // With the queue full, a phone that finished no Inbox call for this long is
  // disconnected as too slow to read.
  std::chrono::milliseconds stallTimeout{5000};
};

class LiveSession;

// The durable side of a session, implemented by the messaging service. Called
// on the session's thread; implementations must not block (reads are short
// indexed SQLite reads; writes are queued).
class SessionBackend {
 public:
  // Queued messages for `phone` with id > afterId, oldest first, at most `limit`.
  virtual std::vector<OutboundMessage> queuedMessages(const std::string& phone,
                                                      std::uint64_t afterId, std::size_t limit) = 0;
  virtual std::vector<OutboundReceipt> queuedReceipts(const std::string& phone,
                                                      std::uint64_t afterRow,
                                                      std::size_t limit) = 0;
  // The phone has these messages: mark them delivered and tell their senders.
  virtual void messagesDelivered(const LiveSession& session, std::vector<std::uint64_t> ids) = 0;
  // The phone has these receipts: forget them.
  virtual void receiptsShown(std::vector<std::uint64_t> rowIds) = 0;
  // Called once when the session ends, for whatever reason.
  virtual void sessionEnded(const LiveSession& session) = 0;
  // The queue passed the alert threshold.
  virtual void queueAlert(const LiveSession& session, std::size_t length) = 0;
  // The queue passed its limit: the session is being kicked as too slow.
  virtual void slowConsumer(const LiveSession& session, std::size_t length) = 0;

 protected:
  ~SessionBackend() = default;
};

class LiveSession : public std::enable_shared_from_this<LiveSession> {
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
  bool ended() const { return ended_; }
  std::size_t queueLength() const;

  // Starts pushing what was queued. Call once, after the session is in the table.
  void start();

  void push(OutboundMessage message);
  void push(OutboundReceipt receipt);
  void push(OutboundPresence presence);

  // Tells the phone why, then closes its connection. Ends the session now.
  void kick(std::string reason);
  // Ends the session (logout, the phone dropped it). Idempotent.
  void end();

 private:
  template <class Item>
  struct Feed;

  template <class Offered>
  void offered(Offered outcome);
  void checkStall();
  void pump();
  void pumpMessages();
  void pumpReceipts();
  void refill();
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
  std::size_t presenceInFlight_ = 0;
  bool started_ = false;
  bool ended_ = false;
  bool alerted_ = false;
  bool overflowed_ = false;  // a push found the queue full; the store holds the rest
  bool stallTimerArmed_ = false;
  std::chrono::steady_clock::time_point lastProgress_;  // an Inbox call last returned
  kj::Own<kj::TaskSet> tasks_;  // Inbox calls in flight; cancelled with the session
};

}  // namespace switchboard::session
