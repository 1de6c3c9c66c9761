// Carrying messages and receipts between nodes, with the single-node guarantees.
//
// The queue is one JetStream stream, SB_INBOX, subject sb.inbox.<recipient>:
// everything that waits for a phone, whichever node it was sent on and
// whichever node the phone will log in on. It plays the role SQLite's messages
// table plays on one node (docs/architecture.md, "The store is the queue"):
// - publish() returns once JetStream has stored the envelope (its PubAck):
//   that is the "durable" of "delivered or durable", and the stream sequence
//   identifies the envelope in the stream.
// - send() is the same without waiting: many envelopes are in flight on one
//   connection (JetStream stores one connection's publishes in the order they
//   were made), and each one's `done` runs once its PubAck is in and the node
//   holding the recipient has been sent a live notice (flushed). That is the
//   sending side's fast path; see "The outbox" below.
// - Exactly once: the publish carries Nats-Msg-Id = sender + recipient +
//   clientMsgId (the recipient because a group send puts one copy per member
//   into the stream), so a retry within the stream's duplicate window is not
//   stored again and gets the first copy's server id back (duplicate = true);
//   send() reads that copy back and reports the message id it carries
//   (storedMessageId), and notices it rather than the repeat.
// - Order per (sender, recipient): one node publishes one sender's envelopes
//   in the order it acknowledges them (send() is one FIFO, publish() runs on
//   the serial worker), JetStream numbers them in that order. Rows a node
//   hands back come later in the stream than they were sent; the importing
//   node orders each import by sending time (host/messaging/cluster_import.cpp).
// - Live notices: core NATS messages to the node holding the recipient
//   (sb.node.<node>.inbox), a NoticeBatch of envelopes with their server ids.
//   They may be lost (that node died, NATS blinked): the envelope still waits
//   in the stream, and pending() finds it when the phone next logs in, anywhere.
// - remove() / removeLater() delete an envelope the phone has taken, so the
//   stream holds what waits, not history. MaxAge expires what nobody took.
//
// The outbox (send()). One thread of its own, so neither direction waits on
// the other: the link's worker imports, the outbox publishes.
// - Where the recipient is comes from `locate` (set once with setLocator; a
//   KV read), cached for kLocationCacheTtl. The notice goes to the node the
//   cache names when the PubAck comes in; a node that took the phone over
//   waits kLocationCacheTtl + a margin after its claim before it trusts
//   notices alone (cluster_delivery.cpp), so a stale entry costs nothing.
// - Back-pressure: a notice batch that the sender counts is a request; the
//   receiving node answers it once every envelope in it is delivered, durable
//   there, or left in the stream. At most `windowPerNode` envelopes are
//   published towards one node and not yet answered for; past that the
//   outbox stops publishing (the FIFO's head waits, and everything behind it)
//   and the phones' sends wait for their acks. A batch not answered within
//   `noticeTimeout` (the node stopped, or is gone: "no responders" answers at
//   once) stops counting.
// - Sent: each message put into the stream is also written, without
//   waiting, to the KV bucket sb_sent (sender and clientMsgId -> the id and
//   time it was given; kept for the duplicate window), so the node a sender
//   moves to can answer a re-send with the first id (ClusterDirectory::sentBy).
// - Notices chain: each names the envelope this node noticed before it for
//   the same recipient (prevServerId), so the receiving node sees a notice
//   missing before the next one arrives, and a later envelope does not
//   overtake the lost one from memory (StreamIntake).
// - Lost notices: a notice batch not answered within `noticeTimeout` (lost
//   on the way, the answer lost, or never sent because the link blinked
//   after the PubAck) is *rechecked*: the outbox sends the node holding each
//   phone now a recheck (a request on sb.node.<node>.recheck naming the
//   envelopes by recipient and server id), again after each `noticeTimeout`
//   without an answer, up to kRecheckAttempts times. The receiving node looks
//   in the stream for a live phone that does not hold them (an import), so
//   a lost notice costs seconds, not the phone's next login. Notices cost
//   nothing more when nothing is lost: the answers already exist.
// - Kept rows moving: while the sender's node moves rows it kept for a
//   recipient into the stream, `hold` says Hold::wait and the recipient's
//   envelopes wait in the outbox (in memory, in order, out of the FIFO so
//   other recipients go on); once the rows are in, they are published first.
//
// Blocking calls (publish, pending, remove) belong on the link's worker
// thread. listen() delivers notices on the given network thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct __natsConnection;
struct __natsSubscription;
struct __natsMsg;

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::cluster {

class NatsLink;

struct Envelope {
  enum class Kind : std::uint8_t { message, delivered, read };
  Kind kind = Kind::message;
  std::string sender;
  std::string recipient;
  std::string clientMsgId;
  std::string body;  // bytes
  std::int64_t sentAtMs = 0;
  std::string group;
  std::uint64_t receiptOf = 0;  // receipts: the server id they are about
  std::uint64_t messageId = 0;  // messages: the id the sender was given
  // The Nats-Msg-Id to deduplicate on; empty: derived from the envelope
  // (m/<sender>/<clientMsgId>, d/ or r/<recipient>/<reader>/<receiptOf>).
  std::string exactlyOnceKey;
};

// A phone's presence or typing, for the other nodes (PresenceNotice in
// proto/cluster.capnp).
struct PresenceNotice {
  std::string node;
  std::string phone;
  std::uint8_t state = 0;
  std::int64_t lastSeen = 0;
  bool typing = false;
  std::string to;
  std::vector<std::string> contacts;
};

// "Close the session `sessionId` of `phone` on your node": what a node that
// took a phone over (a login, a new device) tells the node that held it.
// Sent as a request (handOver) it also asks that node to move what its store
// holds for the phone into the stream before it answers; `replyTo` is then
// the request's reply subject (filled in on the receiving side).
struct KickNotice {
  std::string phone;
  std::uint64_t sessionId = 0;  // 0: no session to close, a handover only
  std::string reason;
  std::string replyTo{};
};

struct QueuedEnvelope {
  std::uint64_t serverId = 0;
  Envelope envelope;
  // In a live notice: the server id of the envelope the noticing node put
  // into the stream for the same recipient before this one, noticed before
  // it (0: none it knows of). A phone live on the receiving node that has
  // not seen that one's notice lost it (see StreamIntake).
  std::uint64_t prevServerId = 0;
};

struct PublishResult {
  std::uint64_t serverId = 0;
  bool duplicate = false;  // the same exactly-once key was published before
  // send() of a message that is a duplicate: the message id and time of the
  // copy the stream holds (read back by its sequence), which the sender was
  // given when it first sent it (perhaps on another node). 0 when that copy
  // has left the stream already (taken), or for anything else.
  std::uint64_t storedMessageId = 0;
  std::int64_t storedSentAtMs = 0;
};

// Live notices as a node receives them: envelopes in the order their PubAcks
// came in. `replyTo` (empty when the sender asked for no answer) is given to
// answerNotices() once every envelope is delivered, durable here, or left in
// the stream.
struct NoticeBatch {
  std::vector<QueuedEnvelope> items;
  std::string replyTo{};
  std::string node{};  // the node that sent it
};

// How many times a sender rechecks a notice batch that got no answer.
inline constexpr int kRecheckAttempts = 3;

// How long a node trusts what `locate` said about a phone.
inline constexpr std::chrono::milliseconds kLocationCacheTtl{1000};

struct DeliveryTransportOptions {
  std::string node;                             // this node's name
  std::chrono::seconds duplicateWindow{600};    // exactly-once memory
  std::chrono::seconds maxAge{30 * 24 * 3600};  // offline expiry
  std::size_t windowPerNode = 8192;             // envelopes towards one node not yet answered
  std::chrono::milliseconds noticeTimeout{5000};
};

// What the outbox tells the sender about one envelope: its result once it is
// in the stream and noticed, or why it is not in the stream.
struct SendOutcome {
  std::optional<PublishResult> published;
  std::string error;  // when not published
};

class DeliveryTransport {
 public:
  DeliveryTransport(NatsLink& link, DeliveryTransportOptions options);
  ~DeliveryTransport();
  DeliveryTransport(const DeliveryTransport&) = delete;
  DeliveryTransport& operator=(const DeliveryTransport&) = delete;

  PublishResult publish(const Envelope& envelope);

  // ---- the outbox (see the top of this file)
  // Where a phone's session is (its node), nullopt when it has none. Runs on
  // the outbox thread and may block (a KV read). Set once, before send().
  void setLocator(std::function<std::optional<std::string>(const std::string& phone)> locate);
  // What the outbox does with an envelope for a recipient whose earlier
  // items the sender's node keeps out of the stream (to move them in first).
  enum class Hold {
    publish,  // nothing kept: publish it
    wait,     // kept rows are being moved into the stream: it waits here, in
              // memory and in order (the recipient's later envelopes behind it)
    keep,     // kept rows wait for NATS: it fails ("kept behind ..."), and the
              // sender's node keeps it too, behind them
  };
  // Asked on the outbox thread before each publish, and again for envelopes
  // that wait, until it says publish or keep; must not block. Set once,
  // before send().
  void setHold(std::function<Hold(const std::string& recipient)> hold);
  // The answer of `hold` changed for some recipient: envelopes that wait are
  // looked at again now (else within 100 ms). Any thread, never blocks.
  void holdChanged();
  // Any thread. `done` runs on the outbox thread, in the order of the sends
  // for envelopes that are published; it must not block. While the link is
  // degraded (or when the transport is destroyed first) it runs with the error.
  // Order per recipient across a failure: once an envelope fails (not in the
  // stream), every envelope for its recipient still awaiting its PubAck fails
  // with it, and nothing more for that recipient is published until its
  // `done` has run and `hold` no longer names the recipient (those fail too:
  // "kept behind earlier envelopes ..."). PubAcks awaited when the link is
  // lost are given up at once. Failures for a recipient are thus a run of its
  // consecutive sends, and their `done`s run in send order. (A failed one
  // that JetStream stored after all is there twice, under one message id.)
  void send(Envelope envelope, std::function<void(SendOutcome)> done);
  // Envelopes sent and not yet done, and those counted against a node's window.
  std::size_t outboxLength() const;

  // What the outbox did, since start (for metrics and tests; any thread).
  struct Counts {
    std::uint64_t published = 0;  // envelopes in the stream through the outbox (PubAck in)
    std::uint64_t waited = 0;     // envelopes that waited for kept rows to move (Hold::wait)
    std::uint64_t rechecks = 0;   // rechecks sent for notice batches that got no answer
  };
  Counts counts() const;

  // Notices of envelopes put into the stream without the outbox (rows moved
  // in): batches, flushed, as requests like the outbox's (counted against no
  // window), so one that gets no answer within `noticeTimeout`, or could not
  // be sent (degraded), is rechecked like theirs. Any thread; when it returns
  // NATS has the notice, or its recheck is due.
  // They join the recipients' chains of notices (prevServerId) as the
  // outbox's do.
  void notify(const std::string& node, std::vector<QueuedEnvelope> queued);
  // What waits for `recipient` with a server id above `afterId`, oldest first.
  std::vector<QueuedEnvelope> pending(const std::string& recipient, std::uint64_t afterId,
                                      std::size_t limit);
  void remove(std::uint64_t serverId);
  // The stream's last sequence now (0 when empty).
  std::uint64_t lastSequence();
  // Which of `serverIds` (envelopes of `recipient`) are still in the stream,
  // in ascending order: the others were removed (taken) or expired. One direct
  // get per id found, plus one per run of ids gone (usually one in all).
  std::vector<std::uint64_t> stillStored(const std::string& recipient,
                                         std::vector<std::uint64_t> serverIds);
  // Without waiting, from any thread: `done(removed)` runs on a libnats (or
  // the outbox) thread once JetStream answered (`removed` says whether it
  // reported success), or with false when the link was down or no answer came
  // within the notice time-out (the envelope may then still be in the stream).
  using RemovalDone = std::function<void(bool removed)>;
  void removeLater(std::uint64_t serverId, RemovalDone done);

  // Starts receiving this node's notices: `handler` runs on `thread`. Once;
  // libnats re-subscribes by itself after a reconnect. Needs no connection
  // (it takes effect when NATS is reachable); when connected, nats-server has
  // the subscription when this returns (a notice published after it is not
  // dropped for want of interest). The subscription has no pending limit: the
  // senders' windows bound it.
  void listen(net::NetworkThread& thread, std::function<void(NoticeBatch)> handler);
  // Rechecks (see "The outbox" above): `handler` runs on `thread` with the
  // envelopes a sender noticed here without getting an answer (recipient and
  // server id only); it answers with answerNotices(replyTo). Once.
  void listenRechecks(net::NetworkThread& thread, std::function<void(NoticeBatch)> handler);
  // Answers a batch's sender (any thread, never blocks; nothing when
  // `replyTo` is empty or NATS is away).
  void answerNotices(const std::string& replyTo);
  // answerNotices for holders that may outlive the transport (what waits
  // for a batch at shutdown): the function does nothing once it is gone.
  std::function<void(const std::string& replyTo)> noticeAnswerer();

  // Kick notices, core NATS on sb.node.<node>.kick: fire and forget (a no-op
  // while degraded). listenKicks() runs `handler` on `thread`; once.
  void sendKick(const std::string& node, const KickNotice& notice);
  void listenKicks(net::NetworkThread& thread, std::function<void(KickNotice)> handler);
  // A handover: the kick notice as a request on the same subject, so it stays
  // in order with the notices sent before it. Blocks (worker thread) until
  // `node` answers: true; false when no node answers within `timeout` or NATS
  // is away (logged). The kick handler answers with answerHandover() once done.
  bool handOver(const std::string& node, const KickNotice& notice,
                std::chrono::milliseconds timeout);
  void answerHandover(const KickNotice& notice);
  // Presence notices, core NATS on sb.presence.<phone>: every node hears every
  // phone's (a small cluster's worth; no durability). Not flushed.
  void publishPresence(const PresenceNotice& notice);
  void listenPresence(net::NetworkThread& thread, std::function<void(PresenceNotice)> handler);

 private:
  void ensureStream();
  // A JetStream API request from the outbox thread without waiting; `done`
  // runs once it is answered, failed, or unanswered within the notice time-out.
  void streamRequestLater(std::string subject, std::string request, RemovalDone done);
  // One subscription: each message is decoded on the libnats thread (`decode`
  // throws on bytes it cannot read: the message is dropped, logged) and handed
  // to its handler on the listening network thread. A T with a `replyTo`
  // member is given the message's reply subject.
  struct Listener {
    std::function<void(__natsMsg*)> onMessage;  // decodes, then posts to the thread
    __natsSubscription* subscription = nullptr;
  };
  template <class T>
  void subscribe(const std::string& subject, net::NetworkThread& thread,
                 T (*decode)(const void* data, std::size_t size), std::function<void(T)> handler);
  static void onMessage(__natsConnection*, __natsSubscription*, __natsMsg* msg, void* listener);

  struct Outbox;
  struct Liveness {
    std::mutex mutex;
    DeliveryTransport* transport = nullptr;  // null once destroyed
  };

  NatsLink& link_;
  const DeliveryTransportOptions options_;
  std::mutex mutex_;
  bool streamReady_ = false;
  std::vector<std::unique_ptr<Listener>> listeners_;  // listen*() calls; once each
  std::unique_ptr<Outbox> outbox_;
  std::shared_ptr<Liveness> liveness_;
};

// The stream subject an envelope for `recipient` is stored under, and the
// subject of a node's live notices.
std::string inboxSubject(const std::string& recipient);
std::string nodeNoticeSubject(const std::string& node);
std::string nodeKickSubject(const std::string& node);
std::string nodeRecheckSubject(const std::string& node);

}  // namespace switchboard::cluster
