#pragma once
// The delivery transport's outbox: the thread that publishes what send() is given into the
// SB_INBOX stream, notices the nodes holding the recipients, rechecks notices that got no
// answer, and runs the removals and answers queued with later(). What it guarantees is in
// delivery_transport.h ("The outbox"); this is its inside, shared by delivery_transport.cpp
// (which owns one) and delivery_outbox.cpp (which runs it). Internal to host/cluster.
//
// Threads: send(), later() and length() are called from any thread; onPubAck() and
// onAnswer() run on libnats threads; everything else runs on the outbox's own thread.
// `mutex` guards the queues, windows and maps (a member's comment says where it differs).

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cluster/delivery_transport.h"

namespace switchboard::cluster {

class NatsLink;

struct DeliveryTransport::Outbox {
  using Clock = std::chrono::steady_clock;

  // One envelope on its way: queued, then published, then acknowledged.
  struct Item {
    Envelope envelope;
    std::function<void(SendOutcome)> done;
    std::optional<std::string> charged;  // the node whose window counts it (set at publish)
    SendOutcome outcome;
    Clock::time_point publishedAt{};
    std::uint64_t order = 0;  // the order of send() calls
    std::uint64_t epoch = 0;  // the link's disconnects() when it was published
    bool noticed = true;      // false: a duplicate whose first copy is gone (not noticed)
  };
  using OwnedItem = std::unique_ptr<Item>;
  // What a notice batch or a recheck named: enough to recheck it.
  struct Noticed {
    std::string recipient;
    std::uint64_t serverId = 0;
  };
  struct Batch {
    Clock::time_point sentAt;
    std::unordered_map<std::string, std::size_t> charges;  // node -> envelopes
    std::vector<Noticed> noticed;
    int rechecks = 0;  // 0: a notice batch; else the how-many-th recheck this is
  };
  struct Removal {
    Clock::time_point sentAt;
    DeliveryTransport::RemovalDone done;
  };
  struct CachedLocation {
    std::optional<std::string> node;
    Clock::time_point fetchedAt;
  };

  // Opens its JetStream context and its answers' subscription on `transport`'s link and starts
  // the outbox thread. Throws ClusterError if libnats refuses either.
  explicit Outbox(DeliveryTransport& transport);
  // Stops the thread, waits (up to 1 s, if connected) for PubAcks in flight, and fails what is
  // still held with "the node is shutting down" (its `done` runs here).
  ~Outbox();

  // Any thread: queues `envelope` at the FIFO's tail; `done` runs on the outbox thread once
  // it is in the stream and noticed, or failed (DeliveryTransport::send).
  void send(Envelope envelope, std::function<void(SendOutcome)> done);
  // Any thread: `job` runs on the outbox thread, after the notices of PubAcks already in.
  void later(std::function<void()> job);
  // Any thread: envelopes held (queued, parked, awaiting a PubAck or being noticed).
  std::size_t length() const;

  // ---- on libnats threads

  // A PubAck (or its failure) for a message published by publish(): the item moves to
  // `acked` (or fails its run). An item given up on already is not found and ignored.
  static void onPubAck(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error, void* closure);
  // An answer on this outbox's subjects: a notice batch's releases its window charges, a
  // removal's runs its `done` with JetStream's verdict.
  static void onAnswer(natsConnection*, natsSubscription*, natsMsg* raw, void* closure);

  // JetStream's answer to a delete or purge: {"success":true,...} when done,
  // {"error":{...}} (or an empty "no responders" status) when not.
  static bool reportsSuccess(natsMsg* answer);

  // ---- the outbox thread

  // The thread's loop until `stopping`: notices and jobs first, then time-outs, rechecks and
  // parked envelopes, then publishing from the FIFO's head while its node's window has room.
  void run();
  // Runs one later() job; what it throws is logged, not propagated.
  static void runJob(const std::function<void()>& job);

  // Mutex held (released while asking `hold`): what to do with envelopes
  // for `recipient` now.
  DeliveryTransport::Hold isHeld(const std::string& recipient, std::unique_lock<std::mutex>& lock);

  // Mutex held. Not in the stream, behind envelopes for its recipient that
  // are not either: it fails, and the sender's node keeps it behind them.
  // (None of the recipient's awaits a PubAck: the first failure failed them
  // all, and nothing was published for it since.)
  void keepBehind(OwnedItem item);

  // Mutex held (released while asking `hold`). Envelopes that wait for their
  // recipient's kept rows: once those are in the stream they go back to the
  // head of the queue, in order (nothing for the recipient was published
  // meanwhile, and what was sent later is behind them); if the rows stay
  // kept (the move failed, NATS went away) they are kept too, behind them.
  bool lookAgainAtParked(std::unique_lock<std::mutex>& lock);

  // Mutex held. PubAcks that can no longer come (the link was lost since the
  // publish; `all`: it is away now) are given up at once, in the order of the
  // sends, before any envelope sent after them fails or is published: an
  // envelope that failed at once (or went into the stream after the return)
  // while an earlier one waited out its PubAck time-out would otherwise be
  // ahead of it once the sender's node moves what it kept into the stream.
  // One that JetStream had stored after all is then in the stream twice, with
  // one message id: the phone drops the repeat.
  void giveUpPublished(bool all);

  // Mutex held. `failed` is not in the stream. With it fail every envelope
  // for its recipient that still awaits its PubAck, earlier or later, in send
  // order: the sender's node keeps them as one run, in order, and moves them
  // into the stream in that order. (Left alone, a later one could land in the
  // stream ahead of the kept ones, and an earlier one fail after them: a
  // publish can fail at once while the link still counts as connected, before
  // its earlier neighbours' PubAcks time out.) One that JetStream stores after
  // all is in the stream twice with one message id: the phone drops the repeat.
  void failRun(OwnedItem failed);

  // Publishes `item` asynchronously (its PubAck comes to onPubAck); a publish libnats refuses
  // at once fails its run.
  void publish(OwnedItem item);

  // PubAcks are in: tell the nodes holding the recipients (one batch per node,
  // flushed), then let each sender know, in order.
  void notice(std::deque<OwnedItem>& items);

  // Each message put into the stream (not a duplicate) is written to sb_sent
  // (its sender and clientMsgId: the id and time it was given) without
  // waiting: a re-send after the sender moved to another node is answered
  // there with the first id (ClusterDirectory::sentBy). A plain publish to
  // the bucket's subject, with no reply subject: JetStream stores it and
  // sends no PubAck (nothing here would read one). Written after the notices
  // and flushed with them (when there are any) before the senders' acks.
  // Lost with the link: then only the stream's own duplicate window remains
  // for that message.
  void rememberSent(const std::deque<OwnedItem>& items);

  // A message whose PubAck says duplicate (sent before with the same
  // clientMsgId, perhaps on another node that died before answering): the
  // copy the stream holds carries the id its sender was first given. It is
  // read back by its sequence (a round trip, for duplicates only); its id and
  // time are reported to the sender, and it is what the recipient's node is
  // noticed of. A copy gone already (taken by the phone) is not noticed again.
  void readBackStored(Item& item);

  // One notice batch to `node`, as a request whose answer releases what it
  // counts against the windows (`charged`, per envelope). True if published.
  bool sendBatch(const std::string& node, const QueuedEnvelope* envelopes,
                 const std::string* charged, std::size_t count);

  // A notice batch or a recheck (`attempt` > 0; `charged` null) to `node`'s
  // `subject`, as a request answered on this outbox's "n." subjects; one not
  // published is rechecked later (recheckLater). True if published.
  bool request(const std::string& subject, const std::string& node, const QueuedEnvelope* envelopes,
               const std::string* charged, std::size_t count, int attempt);

  // Mutex held. A notice batch (or recheck) that got no answer: its
  // envelopes are rechecked once the link is up, unless that was the last try.
  void recheckLater(Batch& batch);

  // Outbox thread: one recheck to `node`, as a request like a notice batch
  // (a recheck that gets no answer is rechecked again, up to the last try).
  void sendRecheck(const std::string& node, const QueuedEnvelope* envelopes, std::size_t count,
                   int attempt);

  // Outbox thread, mutex held (released while sending): the rechecks due, to
  // the nodes holding their phones now, as requests. A recheck names envelopes
  // (recipient and server id) whose notice may be lost; that node looks in the
  // stream for those phones if they are live there and it holds none of them.
  bool sendRechecks(std::unique_lock<std::mutex>& lock);

  // Runs `item`'s `done` with its outcome (what it throws is logged).
  static void finish(Item& item);

  // Where `phone` is, as the cache has it (for kLocationCacheTtl) or as
  // `locate` says now. Outbox thread only; nullopt also when NATS is away.
  std::optional<std::string> cachedLocation(const std::string& phone);

  // The chain of notices (prevServerId): per recipient, the last envelope
  // this node put into the stream and noticed. Forgotten past kChained
  // recipients (their next notice names none: no check, nothing wrong).
  static constexpr std::size_t kChained = 100000;
  std::uint64_t chainOne(const std::string& recipient, std::uint64_t serverId);
  void chain(std::vector<QueuedEnvelope>& queued);

  // Mutex held: a batch's envelopes stop counting against their windows.
  void release(const Batch& batch);
  void releaseOne(const std::string& node, std::size_t count);

  // Mutex held (released while calling out): what got no answer in time.
  void expire(std::unique_lock<std::mutex>& lock);

  DeliveryTransport& transport;
  NatsLink& link;
  const std::string prefix;
  jsCtx* jetStream = nullptr;
  natsSubscription* answers = nullptr;

  mutable std::mutex mutex;
  std::condition_variable wake;
  std::function<std::optional<std::string>(const std::string&)> locate;
  std::function<DeliveryTransport::Hold(const std::string&)> hold;
  std::deque<OwnedItem> queue;  // not yet published, in order
  // Recipient -> envelopes waiting for its kept rows to move (Hold::wait), in order.
  std::unordered_map<std::string, std::deque<OwnedItem>> parked;
  std::uint64_t waited = 0;                           // envelopes ever parked (mutex)
  bool lookAgain = false;                             // holdChanged() since the last look
  std::atomic<std::uint64_t> publishedCount{0};       // outbox thread writes
  std::unordered_map<natsMsg*, OwnedItem> published;  // waiting for their PubAcks
  std::deque<OwnedItem> acked;                        // PubAck (or failure) in
  std::deque<std::function<void()>> jobs;             // removals and answers to send
  std::unordered_map<std::uint64_t, Batch> batches;   // notice batches not answered yet
  struct PendingRecheck {
    std::vector<Noticed> noticed;
    int attempt = 1;
  };
  std::vector<PendingRecheck> toRecheck;  // batches unanswered, to recheck when connected
  std::uint64_t rechecksSent = 0;
  std::unordered_map<std::uint64_t, Removal> removals;    // removals not answered yet
  std::unordered_map<std::string, std::size_t> inWindow;  // node -> envelopes counted
  std::uint64_t nextToken = 1;
  std::uint64_t nextOrder = 0;
  std::uint64_t epochSeen = 0;  // the link's disconnects() giveUpPublished last acted on
  // Recipients with envelopes that failed and whose `done` has not run yet:
  // nothing more is published for them meanwhile.
  std::unordered_map<std::string, std::size_t> failing;
  Clock::time_point lastExpiry{};
  bool stopping = false;
  std::unordered_map<std::string, CachedLocation> locations;   // outbox thread only
  std::unordered_map<std::string, std::uint64_t> lastNoticed;  // recipient -> server id (mutex)
  std::thread thread;
};

}  // namespace switchboard::cluster
