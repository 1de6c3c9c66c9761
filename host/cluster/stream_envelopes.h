#pragma once
// Envelopes on NATS: their bytes in the SB_INBOX stream and in live notice batches, the key
// JetStream deduplicates them on, and the stream message that carries one. Shared by the
// delivery transport (delivery_transport.cpp) and its outbox (delivery_outbox.cpp); internal
// to host/cluster.

#include <nats/nats.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cluster/delivery_transport.h"

namespace switchboard::cluster {

// The JetStream stream that queues everything waiting for a phone.
inline constexpr const char* kInboxStream = "SB_INBOX";

// An envelope's bytes (proto/cluster.capnp Envelope), carrying `serverId` (0 in the stream,
// where the sequence is the id).
std::string envelopeBytes(const Envelope& envelope, std::uint64_t serverId);
// What envelopeBytes() wrote; `serverId`, when not 0, overrides the one in the bytes (a stream
// message's sequence). Throws if the bytes are not an Envelope.
QueuedEnvelope envelopeFrom(const void* data, std::size_t size, std::uint64_t serverId);

// A NoticeBatch's bytes: `count` envelopes from `items`, each with its server id and the one
// noticed before it, sent by `node`.
std::string noticeBatchBytes(const std::string& node, const QueuedEnvelope* items,
                             std::size_t count);
// What noticeBatchBytes() wrote (its items and node; no reply subject). Throws if the bytes
// are not a NoticeBatch.
NoticeBatch noticeBatchFrom(const void* data, std::size_t size);

// How many bytes of envelopes one notice batch carries at most: well under the server's
// max_payload (1 MiB by default). A batch over it is refused by libnats ("Maximum Payload
// Exceeded"), and its envelopes, already in the stream, would reach a live phone only at its
// next login: an export after an outage (hundreds of messages and thousands of receipts at
// once) did that. `connection` may be null (then the default bound).
std::size_t noticeBatchLimit(natsConnection* connection);

// Cuts `items` into runs, in order, each of at most about `limit` bytes once encoded (always
// at least one envelope: a single one fits, as the stream took it). Returns the end index of
// each run.
std::vector<std::size_t> noticeRuns(const std::vector<QueuedEnvelope>& items, std::size_t limit);

// The exactly-once key JetStream deduplicates on (Nats-Msg-Id): the envelope's own
// exactlyOnceKey when set, else sender, recipient and clientMsgId for a message, reader,
// sender and message id for a receipt.
std::string messageId(const Envelope& envelope);

struct MsgDeleter {
  void operator()(natsMsg* msg) const { natsMsg_Destroy(msg); }
};
using OwnedMsg = std::unique_ptr<natsMsg, MsgDeleter>;

// The stream message for `envelope`: its bytes on its recipient's inbox subject, with its
// exactly-once key. Throws ClusterError if libnats cannot make it (requireOk).
OwnedMsg streamMessage(const Envelope& envelope);

}  // namespace switchboard::cluster
