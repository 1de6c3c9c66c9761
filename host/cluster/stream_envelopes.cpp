#include "cluster/stream_envelopes.h"

#include <algorithm>

#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "switchboard/proto/cluster.capnp.h"

namespace switchboard::cluster {

namespace {

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

}  // namespace

std::string envelopeBytes(const Envelope& envelope, std::uint64_t serverId) {
  capnp::MallocMessageBuilder message;
  fillEnvelope(message.initRoot<Wire>(), envelope, serverId);
  return recordBytes(message);
}

QueuedEnvelope envelopeFrom(const void* data, std::size_t size, std::uint64_t serverId) {
  RecordReader reader(data, size);
  return envelopeFrom(reader.get<Wire>(), serverId);
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

NoticeBatch noticeBatchFrom(const void* data, std::size_t size) {
  RecordReader reader(data, size);
  NoticeBatch batch;
  auto in = reader.get<proto::cluster::NoticeBatch>();
  batch.node = in.getNode();
  for (auto envelope : in.getEnvelopes()) batch.items.push_back(envelopeFrom(envelope, 0));
  return batch;
}
std::size_t noticeBatchLimit(natsConnection* connection) {
  constexpr std::size_t kMost = 256 * 1024;
  std::int64_t max = connection != nullptr ? natsConnection_GetMaxPayload(connection) : 0;
  if (max <= 0) return kMost;
  return std::min(kMost, static_cast<std::size_t>(max) / 2);
}

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

}  // namespace switchboard::cluster
