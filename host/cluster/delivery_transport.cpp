#include "cluster/delivery_transport.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <optional>

#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "net/network_thread.h"
#include "switchboard/proto/cluster.capnp.h"

namespace switchboard::cluster {

namespace {

constexpr const char* kStream = "SB_INBOX";

using Wire = proto::cluster::Envelope;

std::string envelopeBytes(const Envelope& envelope, std::uint64_t serverId) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<Wire>();
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
  return recordBytes(message);
}

QueuedEnvelope envelopeFrom(const void* data, std::size_t size, std::uint64_t serverId) {
  RecordReader reader(data, size);
  auto in = reader.get<Wire>();
  QueuedEnvelope queued;
  queued.serverId = serverId != 0 ? serverId : in.getServerId();
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

// The exactly-once key JetStream deduplicates on.
std::string messageId(const Envelope& envelope) {
  if (!envelope.exactlyOnceKey.empty()) return envelope.exactlyOnceKey;
  switch (envelope.kind) {
    case Envelope::Kind::message:
      return "m/" + encodeKeyToken(envelope.sender) + "/" + encodeKeyToken(envelope.clientMsgId);
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

std::string nodeKickSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".kick";
}

DeliveryTransport::DeliveryTransport(NatsLink& link, DeliveryTransportOptions options)
    : link_(link), options_(std::move(options)) {}

DeliveryTransport::~DeliveryTransport() {
  for (auto& listener : listeners_) {
    natsSubscription_Unsubscribe(listener->subscription);
    natsSubscription_Destroy(listener->subscription);
  }
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
  streamReady_ = true;
}

PublishResult DeliveryTransport::publish(const Envelope& envelope) {
  ensureStream();
  std::string bytes = envelopeBytes(envelope, 0);
  std::string subject = inboxSubject(envelope.recipient);
  natsMsg* raw = nullptr;
  requireOk(
      natsMsg_Create(&raw, subject.c_str(), nullptr, bytes.data(), static_cast<int>(bytes.size())),
      "envelope");
  OwnedMsg msg(raw);
  std::string id = messageId(envelope);
  requireOk(natsMsgHeader_Set(msg.get(), "Nats-Msg-Id", id.c_str()), "envelope header");
  jsPubAck* ack = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  requireOk(js_PublishMsg(&ack, link_.jetStream(), msg.get(), nullptr, &error),
            "publishing to " + subject);
  PublishResult result{ack->Sequence, ack->Duplicate};
  jsPubAck_Destroy(ack);
  return result;
}

void DeliveryTransport::notify(const std::string& node, const QueuedEnvelope& queued) {
  if (!link_.isConnected()) return;
  std::string bytes = envelopeBytes(queued.envelope, queued.serverId);
  std::string subject = nodeNoticeSubject(node);
  natsStatus status = natsConnection_Publish(link_.connection(), subject.c_str(), bytes.data(),
                                             static_cast<int>(bytes.size()));
  if (status == NATS_OK) {
    // Out of this process before the caller acknowledges anything: a node
    // killed right after its ack must not take the notice down with it.
    status = natsConnection_FlushTimeout(
        link_.connection(), static_cast<std::int64_t>(link_.options().operationTimeout.count()));
  }
  if (status != NATS_OK) {
    spdlog::debug("cluster: notice to {} not sent ({}); it waits in the stream", node,
                  natsStatus_GetText(status));
  }
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
}

// On a libnats thread.
void DeliveryTransport::onMessage(natsConnection*, natsSubscription*, natsMsg* raw,
                                  void* listener) {
  OwnedMsg msg(raw);
  static_cast<Listener*>(listener)->onMessage(msg.get());
}

void DeliveryTransport::listen(net::NetworkThread& thread,
                               std::function<void(QueuedEnvelope)> handler) {
  subscribe<QueuedEnvelope>(
      nodeNoticeSubject(options_.node), thread,
      [](const void* data, std::size_t size) { return envelopeFrom(data, size, 0); },
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

}  // namespace switchboard::cluster
