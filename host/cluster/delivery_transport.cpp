#include "cluster/delivery_transport.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>

#include "cluster/cluster_records.h"
#include "cluster/kv_bucket.h"
#include "cluster/nats_link.h"
#include "net/network_thread.h"
#include "switchboard/proto/cluster.capnp.h"

namespace switchboard::cluster {

namespace {

constexpr const char* kStream = "SB_INBOX";

using Wire = proto::cluster::Envelope;

void fillEnvelope(Wire::Builder out, const Envelope& envelope, std::uint64_t serverId) {
  out.setKind(static_cast<Wire::Kind>(envelope.kind));
  out.setSender(envelope.sender);
  out.setRecipient(envelope.recipient);
  out.setClientMsgId(envelope.clientMsgId);
  out.setBody(
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(envelope.body.data()), envelope.body.size()));
  out.setSentAtMs(envelope.sentAtMs);
  out.setGroup(envelope.group);
  out.setReceiptOf(envelope.receiptOf);
  out.setServerId(serverId);
  out.setMessageId(envelope.messageId);
}

std::string envelopeBytes(const Envelope& envelope, std::uint64_t serverId) {
  capnp::MallocMessageBuilder message;
  fillEnvelope(message.initRoot<Wire>(), envelope, serverId);
  return recordBytes(message);
}

std::string noticeBatchBytes(const std::string& node, const QueuedEnvelope* items,
                             std::size_t count) {
  capnp::MallocMessageBuilder message;
  auto batch = message.initRoot<proto::cluster::NoticeBatch>();
  batch.setNode(node);
  auto list = batch.initEnvelopes(static_cast<unsigned>(count));
  for (unsigned i = 0; i < count; ++i) {
    fillEnvelope(list[i], items[i].envelope, items[i].serverId);
    list[i].setPrevServerId(items[i].prevServerId);
  }
  return recordBytes(message);
}

// How many bytes of envelopes one notice batch carries at most: well under
// the server's max_payload (1 MiB by default). A batch over it is refused by
// libnats ("Maximum Payload Exceeded"), and its envelopes, already in the
// stream, would reach a live phone only at its next login: an export after an
// outage (hundreds of messages and thousands of receipts at once) did that.
std::size_t noticeBatchLimit(natsConnection* connection) {
  constexpr std::size_t kMost = 256 * 1024;
  std::int64_t max = connection != nullptr ? natsConnection_GetMaxPayload(connection) : 0;
  if (max <= 0) return kMost;
  return std::min(kMost, static_cast<std::size_t>(max) / 2);
}

// Cuts `items` into runs, in order, each of at most about `limit` bytes once
// encoded (always at least one envelope: a single one fits, as the stream
// took it). Returns the end index of each run.
std::vector<std::size_t> noticeRuns(const std::vector<QueuedEnvelope>& items, std::size_t limit) {
  std::vector<std::size_t> ends;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Envelope& e = items[i].envelope;
    // The text and data fields, plus the struct and its pointers, padded.
    std::size_t size = e.body.size() + e.sender.size() + e.recipient.size() + e.clientMsgId.size() +
                       e.group.size() + 160;
    if (bytes > 0 && bytes + size > limit) {
      ends.push_back(i);
      bytes = 0;
    }
    bytes += size;
  }
  if (!items.empty()) ends.push_back(items.size());
  return ends;
}

QueuedEnvelope envelopeFrom(Wire::Reader in, std::uint64_t serverId) {
  QueuedEnvelope queued;
  queued.serverId = serverId != 0 ? serverId : in.getServerId();
  queued.prevServerId = in.getPrevServerId();
  Envelope& e = queued.envelope;
  e.kind = static_cast<Envelope::Kind>(in.getKind());
  e.sender = in.getSender();
  e.recipient = in.getRecipient();
  e.clientMsgId = in.getClientMsgId();
  auto body = in.getBody();
  e.body.assign(reinterpret_cast<const char*>(body.begin()), body.size());
  e.sentAtMs = in.getSentAtMs();
  e.group = in.getGroup();
  e.receiptOf = in.getReceiptOf();
  e.messageId = in.getMessageId();
  return queued;
}

QueuedEnvelope envelopeFrom(const void* data, std::size_t size, std::uint64_t serverId) {
  RecordReader reader(data, size);
  return envelopeFrom(reader.get<Wire>(), serverId);
}

// The exactly-once key JetStream deduplicates on.
std::string messageId(const Envelope& envelope) {
  if (!envelope.exactlyOnceKey.empty()) return envelope.exactlyOnceKey;
  switch (envelope.kind) {
    case Envelope::Kind::message:
      // The recipient too: a group send puts one copy per member into the stream.
      return "m/" + encodeKeyToken(envelope.sender) + "/" + encodeKeyToken(envelope.recipient) +
             "/" + encodeKeyToken(envelope.clientMsgId);
    case Envelope::Kind::delivered:
    case Envelope::Kind::read:
      // The reader too: every member of a group receipts the same message id.
      return std::string(envelope.kind == Envelope::Kind::read ? "r/" : "d/") +
             encodeKeyToken(envelope.recipient) + "/" + encodeKeyToken(envelope.sender) + "/" +
             std::to_string(envelope.receiptOf);
  }
  return {};
}

struct MsgDeleter {
  void operator()(natsMsg* msg) const { natsMsg_Destroy(msg); }
};
using OwnedMsg = std::unique_ptr<natsMsg, MsgDeleter>;

}  // namespace

std::string inboxSubject(const std::string& recipient) {
  return "sb.inbox." + encodeKeyToken(recipient);
}

std::string nodeNoticeSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".inbox";
}

std::string nodeRecheckSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".recheck";
}

std::string nodeKickSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".kick";
}

void DeliveryTransport::ensureStream() {
  link_.requireConnected();
  std::lock_guard lock(mutex_);
  if (streamReady_) return;
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = kStream;
  const char* subjects[] = {"sb.inbox.>"};
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  config.Duplicates =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.duplicateWindow).count();
  config.MaxAge = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.maxAge).count();
  config.AllowDirect = true;  // pending() reads with direct get, next by subject
  jsErrCode error = static_cast<jsErrCode>(0);
  jsStreamInfo* info = nullptr;
  natsStatus status = js_AddStream(&info, link_.jetStream(), &config, nullptr, &error);
  if (info != nullptr) jsStreamInfo_Destroy(info);
  if (status != NATS_OK) {
    // Another node made it first (same settings): bind to it.
    info = nullptr;
    requireOk(js_GetStreamInfo(&info, link_.jetStream(), kStream, nullptr, nullptr),
              std::string("stream ") + kStream);
    jsStreamInfo_Destroy(info);
  }
  // Listed is not yet listening (a fresh cluster's nodes race for that
  // moment): used only once a publish to it is answered, as a bucket is.
  awaitStreamListening(link_, inboxSubject("sb_ready_probe"), std::string("stream ") + kStream);
  streamReady_ = true;
}

namespace {

// The stream message for `envelope`, with its exactly-once key.
OwnedMsg streamMessage(const Envelope& envelope) {
  std::string bytes = envelopeBytes(envelope, 0);
  std::string subject = inboxSubject(envelope.recipient);
  natsMsg* raw = nullptr;
  requireOk(
      natsMsg_Create(&raw, subject.c_str(), nullptr, bytes.data(), static_cast<int>(bytes.size())),
      "envelope");
  OwnedMsg msg(raw);
  std::string id = messageId(envelope);
  requireOk(natsMsgHeader_Set(msg.get(), "Nats-Msg-Id", id.c_str()), "envelope header");
  return msg;
}

}  // namespace

PublishResult DeliveryTransport::publish(const Envelope& envelope) {
  ensureStream();
  OwnedMsg msg = streamMessage(envelope);
  jsPubAck* ack = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  requireOk(js_PublishMsg(&ack, link_.jetStream(), msg.get(), nullptr, &error),
            "publishing to " + inboxSubject(envelope.recipient));
  PublishResult result{ack->Sequence, ack->Duplicate};
  jsPubAck_Destroy(ack);
  return result;
}

std::vector<QueuedEnvelope> DeliveryTransport::pending(const std::string& recipient,
                                                       std::uint64_t afterId, std::size_t limit) {
  ensureStream();
  std::string subject = inboxSubject(recipient);
  std::vector<QueuedEnvelope> out;
  std::uint64_t from = afterId + 1;
  while (out.size() < limit) {
    jsDirectGetMsgOptions options;
    jsDirectGetMsgOptions_Init(&options);
    options.Sequence = from;
    options.NextBySubject = subject.c_str();
    natsMsg* raw = nullptr;
    natsStatus status = js_DirectGetMsg(&raw, link_.jetStream(), kStream, nullptr, &options);
    OwnedMsg msg(raw);
    if (status == NATS_NOT_FOUND) break;
    requireOk(status, "reading " + subject);
    const char* sequence = nullptr;
    requireOk(natsMsgHeader_Get(msg.get(), "Nats-Sequence", &sequence), "direct get sequence");
    std::uint64_t serverId = std::strtoull(sequence, nullptr, 10);
    out.push_back(envelopeFrom(natsMsg_GetData(msg.get()),
                               static_cast<std::size_t>(natsMsg_GetDataLength(msg.get())),
                               serverId));
    from = serverId + 1;
  }
  return out;
}

std::vector<std::uint64_t> DeliveryTransport::stillStored(const std::string& recipient,
                                                          std::vector<std::uint64_t> serverIds) {
  std::sort(serverIds.begin(), serverIds.end());
  serverIds.erase(std::unique(serverIds.begin(), serverIds.end()), serverIds.end());
  std::vector<std::uint64_t> stored;
  auto next = serverIds.begin();
  while (next != serverIds.end()) {
    // The recipient's first envelope at or after the next id asked about:
    // every id asked about below it is gone.
    auto first = pending(recipient, *next - std::min<std::uint64_t>(*next, 1), 1);
    if (first.empty()) break;  // none of the rest is there
    std::uint64_t found = first.front().serverId;
    next = std::lower_bound(next, serverIds.end(), found);
    if (next != serverIds.end() && *next == found) {
      stored.push_back(found);
      ++next;
    }
  }
  return stored;
}

void DeliveryTransport::remove(std::uint64_t serverId) {
  ensureStream();
  jsErrCode error = static_cast<jsErrCode>(0);
  natsStatus status = js_DeleteMsg(link_.jetStream(), kStream, serverId, nullptr, &error);
  if (status == NATS_OK || status == NATS_NOT_FOUND) return;
  // Already gone (a repeat, or expired): JetStream answers "no message found"
  // (API error 10057) rather than a status of its own.
  const char* detail = nats_GetLastError(nullptr);
  if (error == 10057 ||
      (detail != nullptr && std::string(detail).find("no message found") != std::string::npos)) {
    return;
  }
  requireOk(status, "removing envelope " + std::to_string(serverId));
}

std::uint64_t DeliveryTransport::lastSequence() {
  ensureStream();
  jsStreamInfo* info = nullptr;
  requireOk(js_GetStreamInfo(&info, link_.jetStream(), kStream, nullptr, nullptr),
            std::string("stream ") + kStream);
  std::uint64_t last = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  return last;
}

template <class T>
void DeliveryTransport::subscribe(const std::string& subject, net::NetworkThread& thread,
                                  T (*decode)(const void*, std::size_t),
                                  std::function<void(T)> handler) {
  auto listener = std::make_unique<Listener>();
  listener->onMessage = [&thread, decode, handler = std::move(handler)](natsMsg* msg) {
    std::optional<T> item;
    try {
      item = decode(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    } catch (...) {
      spdlog::warn("cluster: dropped an unreadable message on {}", natsMsg_GetSubject(msg));
      return;
    }
    if constexpr (requires { item->replyTo; }) {
      const char* reply = natsMsg_GetReply(msg);
      if (reply != nullptr) item->replyTo = reply;
    }
    thread.post([handler, item = std::move(*item)]() mutable { handler(std::move(item)); });
  };
  requireOk(natsConnection_Subscribe(&listener->subscription, link_.connection(), subject.c_str(),
                                     &DeliveryTransport::onMessage, listener.get()),
            "subscribing to " + subject);
  listeners_.push_back(std::move(listener));
  // libnats only queues the SUB for its flusher: until nats-server has it, what is published to
  // the subject is dropped for want of interest. A round trip makes the subscription live when
  // this returns (the contract of listen()); without NATS it is sent on reconnect.
  if (!link_.isConnected()) return;
  natsStatus flushed = natsConnection_FlushTimeout(
      link_.connection(), static_cast<std::int64_t>(link_.options().operationTimeout.count()));
  if (flushed != NATS_OK) {
    spdlog::debug("cluster: subscription to {} not confirmed yet: {}", subject,
                  natsStatus_GetText(flushed));
  }
}

// On a libnats thread.
void DeliveryTransport::onMessage(natsConnection*, natsSubscription*, natsMsg* raw,
                                  void* listener) {
  OwnedMsg msg(raw);
  static_cast<Listener*>(listener)->onMessage(msg.get());
}

namespace {
NoticeBatch noticeBatchFrom(const void* data, std::size_t size) {
  RecordReader reader(data, size);
  NoticeBatch batch;
  auto in = reader.get<proto::cluster::NoticeBatch>();
  batch.node = in.getNode();
  for (auto envelope : in.getEnvelopes()) batch.items.push_back(envelopeFrom(envelope, 0));
  return batch;
}
}  // namespace

void DeliveryTransport::listen(net::NetworkThread& thread,
                               std::function<void(NoticeBatch)> handler) {
  subscribe<NoticeBatch>(nodeNoticeSubject(options_.node), thread, &noticeBatchFrom,
                         std::move(handler));
  // Nothing is dropped for being slow: the senders' windows bound what waits.
  natsSubscription_SetPendingLimits(listeners_.back()->subscription, -1, -1);
}

void DeliveryTransport::listenRechecks(net::NetworkThread& thread,
                                       std::function<void(NoticeBatch)> handler) {
  subscribe<NoticeBatch>(nodeRecheckSubject(options_.node), thread, &noticeBatchFrom,
                         std::move(handler));
}

// ---------------------------------------------------------------- kick notices

namespace {
std::string kickBytes(const KickNotice& notice) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::KickNotice>();
  out.setPhone(notice.phone);
  out.setSessionId(notice.sessionId);
  out.setReason(notice.reason);
  return recordBytes(message);
}
}  // namespace

void DeliveryTransport::sendKick(const std::string& node, const KickNotice& notice) {
  if (!link_.isConnected()) return;
  std::string bytes = kickBytes(notice);
  std::string subject = nodeKickSubject(node);
  natsStatus status = natsConnection_Publish(link_.connection(), subject.c_str(), bytes.data(),
                                             static_cast<int>(bytes.size()));
  if (status != NATS_OK) {
    spdlog::warn("cluster: kick of {} on {} not sent: {}", notice.phone, node,
                 natsStatus_GetText(status));
  }
}

void DeliveryTransport::listenKicks(net::NetworkThread& thread,
                                    std::function<void(KickNotice)> handler) {
  subscribe<KickNotice>(
      nodeKickSubject(options_.node), thread,
      [](const void* data, std::size_t size) {
        RecordReader reader(data, size);
        auto in = reader.get<proto::cluster::KickNotice>();
        return KickNotice{in.getPhone(), in.getSessionId(), in.getReason(), {}};
      },
      std::move(handler));
}

// ---------------------------------------------------------------- handovers

bool DeliveryTransport::handOver(const std::string& node, const KickNotice& notice,
                                 std::chrono::milliseconds timeout) {
  if (!link_.isConnected()) return false;
  std::string bytes = kickBytes(notice);
  std::string subject = nodeKickSubject(node);
  natsMsg* raw = nullptr;
  natsStatus status = natsConnection_Request(&raw, link_.connection(), subject.c_str(),
                                             bytes.data(), static_cast<int>(bytes.size()),
                                             static_cast<std::int64_t>(timeout.count()));
  OwnedMsg reply(raw);
  if (status != NATS_OK) {
    // NATS_NO_RESPONDERS: the node is gone; NATS_TIMEOUT: it did not answer in time.
    spdlog::info("cluster: handover of {} from {} not answered: {}", notice.phone, node,
                 natsStatus_GetText(status));
    return false;
  }
  return true;
}

void DeliveryTransport::answerHandover(const KickNotice& notice) {
  if (notice.replyTo.empty() || !link_.isConnected()) return;
  natsStatus status =
      natsConnection_Publish(link_.connection(), notice.replyTo.c_str(), nullptr, 0);
  if (status != NATS_OK) {
    spdlog::debug("cluster: handover answer for {} not sent: {}", notice.phone,
                  natsStatus_GetText(status));
  }
}

// ---------------------------------------------------------------- presence notices

void DeliveryTransport::publishPresence(const PresenceNotice& notice) {
  if (!link_.isConnected()) return;
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::PresenceNotice>();
  out.setNode(notice.node);
  out.setPhone(notice.phone);
  out.setState(notice.state);
  out.setLastSeen(notice.lastSeen);
  out.setTyping(notice.typing);
  out.setTo(notice.to);
  auto contacts = out.initContacts(static_cast<unsigned>(notice.contacts.size()));
  for (unsigned i = 0; i < notice.contacts.size(); ++i) contacts.set(i, notice.contacts[i]);
  std::string bytes = recordBytes(message);
  std::string subject = "sb.presence." + encodeKeyToken(notice.phone);
  natsStatus status = natsConnection_Publish(link_.connection(), subject.c_str(), bytes.data(),
                                             static_cast<int>(bytes.size()));
  if (status != NATS_OK) {
    spdlog::debug("cluster: presence of {} not sent: {}", notice.phone, natsStatus_GetText(status));
  }
}

void DeliveryTransport::listenPresence(net::NetworkThread& thread,
                                       std::function<void(PresenceNotice)> handler) {
  // Every node publishes and hears sb.presence.>: its own notices are dropped here.
  subscribe<PresenceNotice>(
      "sb.presence.>", thread,
      [](const void* data, std::size_t size) {
        RecordReader reader(data, size);
        auto in = reader.get<proto::cluster::PresenceNotice>();
        PresenceNotice notice;
        notice.node = in.getNode();
        notice.phone = in.getPhone();
        notice.state = in.getState();
        notice.lastSeen = in.getLastSeen();
        notice.typing = in.getTyping();
        notice.to = in.getTo();
        for (auto contact : in.getContacts()) notice.contacts.emplace_back(contact);
        return notice;
      },
      [node = options_.node, handler = std::move(handler)](PresenceNotice notice) {
        if (notice.node != node) handler(std::move(notice));
      });
}

// ---------------------------------------------------------------- the outbox

namespace {
using Clock = std::chrono::steady_clock;

// What this node's answers come back on: sb.node.<node>.answer.n.<batch> for
// a notice batch, .r.<token> for a removal.
std::string answerPrefix(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".answer.";
}
}  // namespace

struct DeliveryTransport::Outbox {
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

  explicit Outbox(DeliveryTransport& transport)
      : transport(transport), link(transport.link_), prefix(answerPrefix(transport.options_.node)) {
    jsOptions options;
    jsOptions_Init(&options);
    options.Wait = link.options().operationTimeout.count();
    options.PublishAsync.AckHandler = &Outbox::onPubAck;
    options.PublishAsync.AckHandlerClosure = this;
    options.PublishAsync.MaxPending = 1 << 20;  // our windows bound it, not libnats
    requireOk(natsConnection_JetStream(&jetStream, link.connection(), &options),
              "JetStream context (outbox)");
    std::string subject = prefix + ">";
    requireOk(natsConnection_Subscribe(&answers, link.connection(), subject.c_str(),
                                       &Outbox::onAnswer, this),
              "subscribing to " + subject);
    natsSubscription_SetPendingLimits(answers, -1, -1);
    thread = std::thread([this] { run(); });
  }

  ~Outbox() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    wake.notify_all();
    if (thread.joinable()) thread.join();
    // No more answers or PubAcks reach this object past these calls.
    if (link.isConnected()) {
      jsPubOptions options;
      jsPubOptions_Init(&options);
      options.MaxWait = 1000;
      js_PublishAsyncComplete(jetStream, &options);
    }
    natsSubscription_Unsubscribe(answers);
    natsSubscription_Destroy(answers);
    jsCtx_Destroy(jetStream);
    std::deque<OwnedItem> left;
    {
      std::lock_guard lock(mutex);
      for (auto& item : queue) left.push_back(std::move(item));
      for (auto& [msg, item] : published) left.push_back(std::move(item));
      for (auto& item : acked) left.push_back(std::move(item));
      for (auto& [recipient, waiting] : parked) {
        for (auto& item : waiting) left.push_back(std::move(item));
      }
      queue.clear();
      published.clear();
      acked.clear();
      parked.clear();
    }
    for (auto& item : left) {
      if (!item->outcome.published) item->outcome.error = "the node is shutting down";
      finish(*item);
    }
  }

  void send(Envelope envelope, std::function<void(SendOutcome)> done) {
    auto item = std::make_unique<Item>();
    item->envelope = std::move(envelope);
    item->done = std::move(done);
    {
      std::lock_guard lock(mutex);
      item->order = nextOrder++;
      queue.push_back(std::move(item));
    }
    wake.notify_all();
  }

  void later(std::function<void()> job) {
    {
      std::lock_guard lock(mutex);
      jobs.push_back(std::move(job));
    }
    wake.notify_all();
  }

  std::size_t length() const {
    std::lock_guard lock(mutex);
    std::size_t waiting = 0;
    for (const auto& [recipient, items] : parked) waiting += items.size();
    return queue.size() + published.size() + acked.size() + waiting;
  }

  // ---- on libnats threads

  static void onPubAck(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error, void* closure) {
    auto& self = *static_cast<Outbox*>(closure);
    {
      std::lock_guard lock(self.mutex);
      auto it = self.published.find(msg);
      if (it != self.published.end()) {
        OwnedItem item = std::move(it->second);
        self.published.erase(it);
        if (ack != nullptr) {
          item->outcome.published = PublishResult{ack->Sequence, ack->Duplicate};
          self.acked.push_back(std::move(item));
        } else {
          item->outcome.error =
              std::string("publishing to ") + natsMsg_GetSubject(msg) + ": " +
              (error != nullptr && error->ErrText != nullptr
                   ? error->ErrText
                   : natsStatus_GetText(error != nullptr ? error->Err : NATS_ERR));
          self.failRun(std::move(item));
        }
      }  // else: given up on already (timed out here)
    }
    natsMsg_Destroy(msg);
    self.wake.notify_all();
  }

  static void onAnswer(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
    OwnedMsg msg(raw);
    auto& self = *static_cast<Outbox*>(closure);
    std::string_view subject = natsMsg_GetSubject(msg.get());
    subject.remove_prefix(std::min(subject.size(), self.prefix.size()));
    if (subject.size() < 3) return;
    char kind = subject[0];
    std::uint64_t token = std::strtoull(std::string(subject.substr(2)).c_str(), nullptr, 10);
    DeliveryTransport::RemovalDone done;
    {
      std::lock_guard lock(self.mutex);
      if (kind == 'n') {
        // Answered, or "no responders" (the node is gone): either way done.
        auto it = self.batches.find(token);
        if (it == self.batches.end()) return;
        self.release(it->second);
        self.batches.erase(it);
      } else if (kind == 'r') {
        auto it = self.removals.find(token);
        if (it == self.removals.end()) return;
        done = std::move(it->second.done);
        self.removals.erase(it);
      }
    }
    self.wake.notify_all();
    if (done) done(reportsSuccess(msg.get()));
  }

  // JetStream's answer to a delete or purge: {"success":true,...} when done,
  // {"error":{...}} (or an empty "no responders" status) when not.
  static bool reportsSuccess(natsMsg* answer) {
    std::string_view data(natsMsg_GetData(answer),
                          static_cast<std::size_t>(natsMsg_GetDataLength(answer)));
    return data.find("\"success\":true") != std::string_view::npos;
  }

  // ---- the outbox thread

  void run() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      bool worked = false;
      if (!acked.empty() || !jobs.empty()) {
        std::deque<OwnedItem> in;
        in.swap(acked);
        std::deque<std::function<void()>> todo;
        todo.swap(jobs);
        lock.unlock();
        // Notices before removals and answers: nats-server handles one
        // connection's messages in order, and stores (a removal is a
        // JetStream API call) inline, so a notice written after them waits
        // for them there, and the message waits with it.
        if (!in.empty()) notice(in);
        for (auto& job : todo) runJob(job);
        lock.lock();
        worked = true;
      }
      expire(lock);
      worked |= sendRechecks(lock);
      worked |= lookAgainAtParked(lock);
      // Publish from the head while the window towards its node has room.
      for (int n = 0; n < 512 && !queue.empty() && !stopping; ++n) {
        giveUpPublished(!link.isConnected());
        Item& head = *queue.front();
        const std::string recipient = head.envelope.recipient;
        auto waitingFor = parked.find(recipient);
        DeliveryTransport::Hold held =
            waitingFor != parked.end() ? DeliveryTransport::Hold::wait : isHeld(recipient, lock);
        if (held != DeliveryTransport::Hold::publish) {
          OwnedItem item = std::move(queue.front());
          queue.pop_front();
          worked = true;
          if (held == DeliveryTransport::Hold::wait) {
            // Behind the recipient's kept rows, which are moving into the
            // stream: it waits here, in order, and is published after them.
            ++waited;
            parked[recipient].push_back(std::move(item));
            continue;
          }
          // Earlier envelopes for the recipient were not published: this one
          // must not overtake them through the stream.
          keepBehind(std::move(item));
          continue;
        }
        if (!head.charged) {
          lock.unlock();
          auto node = cachedLocation(head.envelope.recipient);
          lock.lock();
          head.charged = node.value_or(std::string());
        }
        if (!head.charged->empty() && inWindow[*head.charged] >= transport.options_.windowPerNode) {
          break;  // the head waits for that node's answers, and everything behind it
        }
        OwnedItem item = std::move(queue.front());
        queue.pop_front();
        if (!item->charged->empty()) ++inWindow[*item->charged];
        lock.unlock();
        publish(std::move(item));
        lock.lock();
        worked = true;
      }
      if (!worked && acked.empty() && jobs.empty() && !lookAgain && !stopping) {
        wake.wait_for(lock, std::chrono::milliseconds(100));
      }
    }
  }

  static void runJob(const std::function<void()>& job) {
    try {
      job();
    } catch (const std::exception& e) {
      spdlog::warn("cluster: outbox: {}", e.what());
    }
  }

  // Mutex held (released while asking `hold`): what to do with envelopes
  // for `recipient` now.
  DeliveryTransport::Hold isHeld(const std::string& recipient, std::unique_lock<std::mutex>& lock) {
    auto it = failing.find(recipient);
    if (it != failing.end() && it->second > 0) return DeliveryTransport::Hold::keep;
    if (!hold) return DeliveryTransport::Hold::publish;
    auto ask = hold;
    lock.unlock();
    DeliveryTransport::Hold held = ask(recipient);
    lock.lock();
    return held;
  }

  // Mutex held. Not in the stream, behind envelopes for its recipient that
  // are not either: it fails, and the sender's node keeps it behind them.
  // (None of the recipient's awaits a PubAck: the first failure failed them
  // all, and nothing was published for it since.)
  void keepBehind(OwnedItem item) {
    item->outcome.error = "kept behind earlier envelopes for " + item->envelope.recipient +
                          " that are not in the stream";
    ++failing[item->envelope.recipient];
    acked.push_back(std::move(item));
  }

  // Mutex held (released while asking `hold`). Envelopes that wait for their
  // recipient's kept rows: once those are in the stream they go back to the
  // head of the queue, in order (nothing for the recipient was published
  // meanwhile, and what was sent later is behind them); if the rows stay
  // kept (the move failed, NATS went away) they are kept too, behind them.
  bool lookAgainAtParked(std::unique_lock<std::mutex>& lock) {
    lookAgain = false;
    if (parked.empty()) return false;
    std::vector<std::string> recipients;
    for (const auto& [recipient, items] : parked) recipients.push_back(recipient);
    bool moved = false;
    for (const std::string& recipient : recipients) {
      DeliveryTransport::Hold held = isHeld(recipient, lock);
      if (held == DeliveryTransport::Hold::wait) continue;
      auto it = parked.find(recipient);
      if (it == parked.end()) continue;
      std::deque<OwnedItem> waiting = std::move(it->second);
      parked.erase(it);
      moved = true;
      if (held == DeliveryTransport::Hold::keep) {
        for (auto& item : waiting) keepBehind(std::move(item));
        continue;
      }
      for (auto item = waiting.rbegin(); item != waiting.rend(); ++item) {
        (*item)->charged.reset();  // where the recipient is: asked again
        queue.push_front(std::move(*item));
      }
    }
    return moved;
  }

  // Mutex held. PubAcks that can no longer come (the link was lost since the
  // publish; `all`: it is away now) are given up at once, in the order of the
  // sends, before any envelope sent after them fails or is published: an
  // envelope that failed at once (or went into the stream after the return)
  // while an earlier one waited out its PubAck time-out would otherwise be
  // ahead of it once the sender's node moves what it kept into the stream.
  // One that JetStream had stored after all is then in the stream twice, with
  // one message id: the phone drops the repeat.
  void giveUpPublished(bool all) {
    if (published.empty()) return;
    std::uint64_t epoch = link.disconnects();
    if (!all && epoch == epochSeen) return;
    epochSeen = epoch;
    std::vector<OwnedItem> waiting;
    for (auto it = published.begin(); it != published.end();) {
      if (!all && it->second->epoch == epoch) {
        ++it;
        continue;
      }
      waiting.push_back(std::move(it->second));
      it = published.erase(it);  // libnats still owns the message; its PubAck finds nothing
    }
    std::sort(waiting.begin(), waiting.end(),
              [](const OwnedItem& x, const OwnedItem& y) { return x->order < y->order; });
    for (auto& item : waiting) {
      item->outcome.error =
          "NATS was lost before the PubAck for an envelope to " + item->envelope.recipient;
      ++failing[item->envelope.recipient];
      acked.push_back(std::move(item));
    }
  }

  // Mutex held. `failed` is not in the stream. With it fail every envelope
  // for its recipient that still awaits its PubAck, earlier or later, in send
  // order: the sender's node keeps them as one run, in order, and moves them
  // into the stream in that order. (Left alone, a later one could land in the
  // stream ahead of the kept ones, and an earlier one fail after them: a
  // publish can fail at once while the link still counts as connected, before
  // its earlier neighbours' PubAcks time out.) One that JetStream stores after
  // all is in the stream twice with one message id: the phone drops the repeat.
  void failRun(OwnedItem failed) {
    const std::string recipient = failed->envelope.recipient;
    std::vector<OwnedItem> run;
    run.push_back(std::move(failed));
    for (auto it = published.begin(); it != published.end();) {
      if (it->second->envelope.recipient != recipient) {
        ++it;
        continue;
      }
      it->second->outcome.error = "an envelope sent with it to " + recipient + " failed";
      run.push_back(std::move(it->second));
      it = published.erase(it);  // libnats still owns the message; its PubAck finds nothing
    }
    std::sort(run.begin(), run.end(),
              [](const OwnedItem& x, const OwnedItem& y) { return x->order < y->order; });
    for (auto& item : run) {
      ++failing[recipient];
      acked.push_back(std::move(item));
    }
  }

  void publish(OwnedItem item) {
    try {
      transport.ensureStream();  // fails at once while degraded
      OwnedMsg msg = streamMessage(item->envelope);
      natsMsg* raw = msg.get();
      item->publishedAt = Clock::now();
      item->epoch = link.disconnects();
      {
        std::lock_guard lock(mutex);
        published[raw] = std::move(item);  // before the PubAck can come in
      }
      jsPubOptions options;
      jsPubOptions_Init(&options);
      options.MaxWait = link.options().operationTimeout.count();
      natsMsg* handed = msg.release();
      // Only on a connection that is up: while libnats reconnects it keeps
      // publishes in a buffer and sends them once it is back, so one given up
      // here (and kept by the sender's node) would land in the stream after
      // the return, ahead of earlier sends still kept, and a phone importing
      // then would take it first. A publish just before libnats notices a
      // dead socket is written to that socket: stored before the loss, or
      // not at all.
      natsStatus status = natsConnection_Status(link.connection()) == NATS_CONN_STATUS_CONNECTED
                              ? js_PublishMsgAsync(jetStream, &handed, &options)
                              : NATS_CONNECTION_DISCONNECTED;
      if (status == NATS_OK) return;  // libnats owns the message now
      OwnedMsg back(handed);
      std::lock_guard lock(mutex);
      auto it = published.find(raw);
      if (it == published.end()) return;
      item = std::move(it->second);
      published.erase(it);
      item->outcome.error = "publishing to " + inboxSubject(item->envelope.recipient) + ": " +
                            natsStatus_GetText(status);
    } catch (const std::exception& e) {
      if (!item) return;
      item->outcome.error = e.what();
    }
    std::lock_guard lock(mutex);
    giveUpPublished(!link.isConnected());
    failRun(std::move(item));
  }

  // PubAcks are in: tell the nodes holding the recipients (one batch per node,
  // flushed), then let each sender know, in order.
  void notice(std::deque<OwnedItem>& items) {
    for (auto& item : items) {
      if (item->outcome.published && item->outcome.published->duplicate &&
          item->envelope.kind == Envelope::Kind::message) {
        readBackStored(*item);
      }
    }
    struct ToNode {
      std::vector<QueuedEnvelope> envelopes;
      std::vector<std::string> charged;  // per envelope: the node whose window counts it, or ""
    };
    std::unordered_map<std::string, ToNode> byNode;
    std::vector<std::string> uncharge;
    for (auto& item : items) {
      bool counted = item->charged && !item->charged->empty();
      if (item->outcome.published && item->noticed) {
        const PublishResult& result = *item->outcome.published;
        // A duplicate is an old envelope noticed again: not in the chain.
        std::uint64_t prev =
            result.duplicate ? 0 : chainOne(item->envelope.recipient, result.serverId);
        if (auto node = cachedLocation(item->envelope.recipient)) {
          ToNode& to = byNode[*node];
          to.envelopes.push_back({result.serverId, item->envelope, prev});
          to.charged.push_back(counted ? *item->charged : std::string());
          continue;
        }
      }
      if (counted) uncharge.push_back(*item->charged);
    }
    bool sent = false;
    std::size_t limit = noticeBatchLimit(link.connection());
    for (auto& [node, to] : byNode) {
      std::size_t begin = 0;
      for (std::size_t end : noticeRuns(to.envelopes, limit)) {
        sent |=
            sendBatch(node, to.envelopes.data() + begin, to.charged.data() + begin, end - begin);
        begin = end;
      }
    }
    // After the notices (nats-server stores each entry before it reads on),
    // before the flush and the senders' acks.
    rememberSent(items);
    if (sent) {
      // Out of this process before the senders are acknowledged: a node killed
      // right after an ack must not take the notice down with it.
      natsConnection_FlushTimeout(
          link.connection(), static_cast<std::int64_t>(link.options().operationTimeout.count()));
    }
    {
      std::lock_guard lock(mutex);
      for (const std::string& node : uncharge) releaseOne(node, 1);
    }
    wake.notify_all();
    for (auto& item : items) {
      if (item->outcome.published) ++publishedCount;
      finish(*item);
      if (item->outcome.published) continue;
      // Its `done` has run: the sender's own record of what it keeps (`hold`)
      // covers the recipient from here on.
      std::lock_guard lock(mutex);
      auto it = failing.find(item->envelope.recipient);
      if (it != failing.end() && --it->second == 0) failing.erase(it);
    }
  }

  // Each message put into the stream (not a duplicate) is written to sb_sent
  // (its sender and clientMsgId: the id and time it was given) without
  // waiting: a re-send after the sender moved to another node is answered
  // there with the first id (ClusterDirectory::sentBy). A plain publish to
  // the bucket's subject, with no reply subject: JetStream stores it and
  // sends no PubAck (nothing here would read one). Written after the notices
  // and flushed with them (when there are any) before the senders' acks.
  // Lost with the link: then only the stream's own duplicate window remains
  // for that message.
  void rememberSent(const std::deque<OwnedItem>& items) {
    if (natsConnection_Status(link.connection()) != NATS_CONN_STATUS_CONNECTED) return;
    for (const auto& item : items) {
      const Envelope& e = item->envelope;
      if (!item->outcome.published || item->outcome.published->duplicate ||
          e.kind != Envelope::Kind::message || e.clientMsgId.empty()) {
        continue;
      }
      std::string subject =
          std::string("$KV.") + kSentBucket + "." + sentKey(e.sender, e.clientMsgId);
      std::string value = sentValue(e.messageId, e.sentAtMs);
      natsStatus status = natsConnection_Publish(link.connection(), subject.c_str(), value.data(),
                                                 static_cast<int>(value.size()));
      if (status != NATS_OK) {
        spdlog::debug("cluster: {} not written: {}", subject, natsStatus_GetText(status));
      }
    }
  }

  // A message whose PubAck says duplicate (sent before with the same
  // clientMsgId, perhaps on another node that died before answering): the
  // copy the stream holds carries the id its sender was first given. It is
  // read back by its sequence (a round trip, for duplicates only); its id and
  // time are reported to the sender, and it is what the recipient's node is
  // noticed of. A copy gone already (taken by the phone) is not noticed again.
  void readBackStored(Item& item) {
    PublishResult& result = *item.outcome.published;
    jsDirectGetMsgOptions options;
    jsDirectGetMsgOptions_Init(&options);
    options.Sequence = result.serverId;
    natsMsg* raw = nullptr;
    natsStatus status = js_DirectGetMsg(&raw, jetStream, kStream, nullptr, &options);
    OwnedMsg msg(raw);
    if (status != NATS_OK) {
      spdlog::debug("cluster: duplicate of {} from {}: the first copy is gone ({})",
                    item.envelope.clientMsgId, item.envelope.sender, natsStatus_GetText(status));
      item.noticed = false;
      return;
    }
    try {
      QueuedEnvelope stored =
          envelopeFrom(natsMsg_GetData(msg.get()),
                       static_cast<std::size_t>(natsMsg_GetDataLength(msg.get())), result.serverId);
      if (stored.envelope.sender != item.envelope.sender ||
          stored.envelope.clientMsgId != item.envelope.clientMsgId) {
        return;  // not the same message (cannot happen with its key): leave it alone
      }
      result.storedMessageId = stored.envelope.messageId;
      result.storedSentAtMs = stored.envelope.sentAtMs;
      item.envelope = std::move(stored.envelope);
    } catch (const std::exception& e) {
      spdlog::warn("cluster: reading back envelope {}: {}", result.serverId, e.what());
    }
  }

  // One notice batch to `node`, as a request whose answer releases what it
  // counts against the windows (`charged`, per envelope). True if published.
  bool sendBatch(const std::string& node, const QueuedEnvelope* envelopes,
                 const std::string* charged, std::size_t count) {
    return request(nodeNoticeSubject(node), node, envelopes, charged, count, 0);
  }

  // A notice batch or a recheck (`attempt` > 0; `charged` null) to `node`'s
  // `subject`, as a request answered on this outbox's "n." subjects; one not
  // published is rechecked later (recheckLater). True if published.
  bool request(const std::string& subject, const std::string& node, const QueuedEnvelope* envelopes,
               const std::string* charged, std::size_t count, int attempt) {
    std::uint64_t id = 0;
    {
      std::lock_guard lock(mutex);
      id = nextToken++;
      Batch& batch = batches[id];
      batch.sentAt = Clock::now();
      batch.rechecks = attempt;
      for (std::size_t i = 0; i < count; ++i) {
        if (charged != nullptr && !charged[i].empty()) ++batch.charges[charged[i]];
        batch.noticed.push_back({envelopes[i].envelope.recipient, envelopes[i].serverId});
      }
      if (attempt > 0) ++rechecksSent;
    }
    std::string bytes = noticeBatchBytes(transport.options_.node, envelopes, count);
    std::string reply = prefix + "n." + std::to_string(id);
    natsStatus status = link.isConnected() ? natsConnection_PublishRequest(
                                                 link.connection(), subject.c_str(), reply.c_str(),
                                                 bytes.data(), static_cast<int>(bytes.size()))
                                           : NATS_CONNECTION_DISCONNECTED;
    if (status == NATS_OK) return true;
    spdlog::log(link.isConnected() ? spdlog::level::warn : spdlog::level::debug,
                "cluster: notices to {} not sent ({}); they wait in the stream, rechecked later",
                node, natsStatus_GetText(status));
    std::lock_guard lock(mutex);
    auto it = batches.find(id);
    if (it != batches.end()) {
      release(it->second);
      recheckLater(it->second);
      batches.erase(it);
    }
    return false;
  }

  // Mutex held. A notice batch (or recheck) that got no answer: its
  // envelopes are rechecked once the link is up, unless that was the last try.
  void recheckLater(Batch& batch) {
    if (batch.rechecks >= kRecheckAttempts) {
      spdlog::warn(
          "cluster: {} envelopes noticed without an answer after {} rechecks; they wait in "
          "the stream for their phones' next login",
          batch.noticed.size(), batch.rechecks);
      return;
    }
    toRecheck.push_back({std::move(batch.noticed), batch.rechecks + 1});
  }

  // Outbox thread: one recheck to `node`, as a request like a notice batch
  // (a recheck that gets no answer is rechecked again, up to the last try).
  void sendRecheck(const std::string& node, const QueuedEnvelope* envelopes, std::size_t count,
                   int attempt) {
    spdlog::info("cluster: {} notices to {} not answered; recheck {} sent", count, node, attempt);
    request(nodeRecheckSubject(node), node, envelopes, nullptr, count, attempt);
  }

  // Outbox thread, mutex held (released while sending): the rechecks due, to
  // the nodes holding their phones now, as requests. A recheck names envelopes
  // (recipient and server id) whose notice may be lost; that node looks in the
  // stream for those phones if they are live there and it holds none of them.
  bool sendRechecks(std::unique_lock<std::mutex>& lock) {
    if (toRecheck.empty() || !link.isConnected()) return false;
    std::vector<PendingRecheck> due;
    due.swap(toRecheck);
    lock.unlock();
    for (PendingRecheck& pending : due) {
      std::unordered_map<std::string, std::vector<QueuedEnvelope>> byNode;
      for (Noticed& noticed : pending.noticed) {
        auto node = cachedLocation(noticed.recipient);
        if (!node) continue;  // no session anywhere: its next login imports it
        QueuedEnvelope queued;
        queued.serverId = noticed.serverId;
        queued.envelope.recipient = std::move(noticed.recipient);
        byNode[*node].push_back(std::move(queued));
      }
      std::size_t limit = noticeBatchLimit(link.connection());
      for (auto& [node, envelopes] : byNode) {
        std::size_t begin = 0;
        for (std::size_t end : noticeRuns(envelopes, limit)) {
          sendRecheck(node, envelopes.data() + begin, end - begin, pending.attempt);
          begin = end;
        }
      }
    }
    lock.lock();
    return true;
  }

  static void finish(Item& item) {
    if (auto done = std::exchange(item.done, nullptr)) {
      try {
        done(std::move(item.outcome));
      } catch (const std::exception& e) {
        spdlog::warn("cluster: outbox: {}", e.what());
      }
    }
  }

  // Where `phone` is, as the cache has it (for kLocationCacheTtl) or as
  // `locate` says now. Outbox thread only; nullopt also when NATS is away.
  std::optional<std::string> cachedLocation(const std::string& phone) {
    auto now = Clock::now();
    auto it = locations.find(phone);
    if (it != locations.end() && now - it->second.fetchedAt < kLocationCacheTtl) {
      return it->second.node;
    }
    std::function<std::optional<std::string>(const std::string&)> find;
    {
      std::lock_guard lock(mutex);
      find = locate;
    }
    if (!find) return std::nullopt;
    std::optional<std::string> node;
    try {
      node = find(phone);
    } catch (const std::exception& e) {
      spdlog::debug("cluster: where {} is: {}", phone, e.what());
      return std::nullopt;  // not cached: ask again next time
    }
    if (locations.size() > 100000) locations.clear();
    locations[phone] = {node, Clock::now()};
    return node;
  }

  // The chain of notices (prevServerId): per recipient, the last envelope
  // this node put into the stream and noticed. Forgotten past kChained
  // recipients (their next notice names none: no check, nothing wrong).
  static constexpr std::size_t kChained = 100000;
  std::uint64_t chainOne(const std::string& recipient, std::uint64_t serverId) {
    std::lock_guard lock(mutex);
    if (lastNoticed.size() >= kChained && !lastNoticed.contains(recipient)) lastNoticed.clear();
    return std::exchange(lastNoticed[recipient], serverId);
  }
  void chain(std::vector<QueuedEnvelope>& queued) {
    for (QueuedEnvelope& q : queued) q.prevServerId = chainOne(q.envelope.recipient, q.serverId);
  }

  // Mutex held: a batch's envelopes stop counting against their windows.
  void release(const Batch& batch) {
    for (const auto& [node, count] : batch.charges) releaseOne(node, count);
  }
  void releaseOne(const std::string& node, std::size_t count) {
    auto it = inWindow.find(node);
    if (it == inWindow.end()) return;
    it->second -= std::min(it->second, count);
    if (it->second == 0) inWindow.erase(it);
  }

  // Mutex held (released while calling out): what got no answer in time.
  void expire(std::unique_lock<std::mutex>& lock) {
    auto now = Clock::now();
    auto timeout = transport.options_.noticeTimeout;
    if (now - lastExpiry < std::chrono::milliseconds(250)) return;
    lastExpiry = now;
    for (auto it = batches.begin(); it != batches.end();) {
      if (now - it->second.sentAt < timeout) {
        ++it;
        continue;
      }
      release(it->second);
      recheckLater(it->second);
      it = batches.erase(it);
    }
    std::vector<DeliveryTransport::RemovalDone> removed;
    for (auto it = removals.begin(); it != removals.end();) {
      if (now - it->second.sentAt < timeout) {
        ++it;
        continue;
      }
      removed.push_back(std::move(it->second.done));
      it = removals.erase(it);
    }
    // A PubAck libnats never reported (its own time-out should have): given up.
    std::vector<OwnedItem> late;
    for (auto it = published.begin(); it != published.end();) {
      if (now - it->second->publishedAt < 2 * link.options().operationTimeout) {
        ++it;
        continue;
      }
      it->second->outcome.error = "no PubAck for an envelope to " + it->second->envelope.recipient;
      late.push_back(std::move(it->second));
      it = published.erase(it);
    }
    std::sort(late.begin(), late.end(),
              [](const OwnedItem& x, const OwnedItem& y) { return x->order < y->order; });
    for (auto& item : late) {
      if (item) failRun(std::move(item));
    }
    if (removed.empty()) return;
    lock.unlock();
    for (auto& done : removed) done(false);
    lock.lock();
  }

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

DeliveryTransport::DeliveryTransport(NatsLink& link, DeliveryTransportOptions options)
    : link_(link),
      options_(std::move(options)),
      outbox_(std::make_unique<Outbox>(*this)),
      liveness_(std::make_shared<Liveness>()) {
  liveness_->transport = this;
}

DeliveryTransport::~DeliveryTransport() {
  {
    std::lock_guard lock(liveness_->mutex);
    liveness_->transport = nullptr;
  }
  outbox_.reset();  // fails what it still holds, then lets go of its libnats handles
  for (auto& listener : listeners_) {
    natsSubscription_Unsubscribe(listener->subscription);
    natsSubscription_Destroy(listener->subscription);
  }
}

void DeliveryTransport::setLocator(
    std::function<std::optional<std::string>(const std::string& phone)> locate) {
  std::lock_guard lock(outbox_->mutex);
  outbox_->locate = std::move(locate);
}

void DeliveryTransport::setHold(std::function<Hold(const std::string& recipient)> hold) {
  std::lock_guard lock(outbox_->mutex);
  outbox_->hold = std::move(hold);
}

void DeliveryTransport::holdChanged() {
  {
    std::lock_guard lock(outbox_->mutex);
    outbox_->lookAgain = true;
  }
  outbox_->wake.notify_all();
}

DeliveryTransport::Counts DeliveryTransport::counts() const {
  Counts counts;
  counts.published = outbox_->publishedCount.load();
  std::lock_guard lock(outbox_->mutex);
  counts.waited = outbox_->waited;
  counts.rechecks = outbox_->rechecksSent;
  return counts;
}

void DeliveryTransport::send(Envelope envelope, std::function<void(SendOutcome)> done) {
  outbox_->send(std::move(envelope), std::move(done));
}

std::size_t DeliveryTransport::outboxLength() const {
  return outbox_->length();
}

void DeliveryTransport::notify(const std::string& node, std::vector<QueuedEnvelope> queued) {
  outbox_->chain(queued);
  // As requests, like the outbox's notice batches (counted against no
  // window): one that gets no answer, or is not sent, is rechecked.
  bool sent = false;
  std::size_t begin = 0;
  for (std::size_t end : noticeRuns(queued, noticeBatchLimit(link_.connection()))) {
    sent |= outbox_->request(nodeNoticeSubject(node), node, queued.data() + begin, nullptr,
                             end - begin, 0);
    begin = end;
  }
  if (!sent) return;
  // Out of this process before the caller acknowledges anything: a node
  // killed right after its ack must not take the notice down with it.
  natsStatus status = natsConnection_FlushTimeout(
      link_.connection(), static_cast<std::int64_t>(link_.options().operationTimeout.count()));
  if (status != NATS_OK) {
    spdlog::debug("cluster: notice to {} not flushed ({}); rechecked if not answered", node,
                  natsStatus_GetText(status));
  }
}

void DeliveryTransport::removeLater(std::uint64_t serverId, RemovalDone done) {
  streamRequestLater(std::string("$JS.API.STREAM.MSG.DELETE.") + kStream,
                     "{\"seq\":" + std::to_string(serverId) + ",\"no_erase\":true}",
                     std::move(done));
}

void DeliveryTransport::streamRequestLater(std::string subject, std::string request,
                                           RemovalDone done) {
  outbox_->later([this, subject = std::move(subject), request = std::move(request),
                  done = std::move(done)]() mutable {
    Outbox& outbox = *outbox_;
    if (!link_.isConnected()) {
      done(false);  // the copies stay; the next import skips or repeats them (the phone drops
                    // repeats)
      return;
    }
    std::uint64_t token = 0;
    {
      std::lock_guard lock(outbox.mutex);
      token = outbox.nextToken++;
      outbox.removals[token] = {Clock::now(), std::move(done)};
    }
    std::string reply = outbox.prefix + "r." + std::to_string(token);
    natsStatus status =
        natsConnection_PublishRequest(link_.connection(), subject.c_str(), reply.c_str(),
                                      request.data(), static_cast<int>(request.size()));
    if (status == NATS_OK) return;
    RemovalDone failed;
    {
      std::lock_guard lock(outbox.mutex);
      auto it = outbox.removals.find(token);
      if (it == outbox.removals.end()) return;
      failed = std::move(it->second.done);
      outbox.removals.erase(it);
    }
    failed(false);
  });
}

std::function<void(const std::string&)> DeliveryTransport::noticeAnswerer() {
  return [liveness = liveness_](const std::string& replyTo) {
    std::lock_guard lock(liveness->mutex);
    if (liveness->transport != nullptr) liveness->transport->answerNotices(replyTo);
  };
}

void DeliveryTransport::answerNotices(const std::string& replyTo) {
  if (replyTo.empty()) return;
  outbox_->later([this, replyTo]() {
    if (!link_.isConnected()) return;
    natsStatus status = natsConnection_Publish(link_.connection(), replyTo.c_str(), nullptr, 0);
    if (status != NATS_OK) {
      spdlog::debug("cluster: notice answer not sent: {}", natsStatus_GetText(status));
    }
  });
}

}  // namespace switchboard::cluster
