// What the server pushes to a phone, as plain data: these cross threads (from
// the sender's thread to the thread that owns the recipient's session, or from
// the store's writer) and are turned into Cap'n Proto only there.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace switchboard::session {

class DeliveryAck;  // session/delivery_ack.h

// An item the session itself wrote to the store while it still held it (a
// deadline passed, the queue was full, the session ended), shared by the
// session's copy and the write's.
//   * `row`: filled by the store's writer thread; read only there, by the write
//     that deletes the row (0: not written, or the write failed).
//   * `ackTaken`: both copies hold the item's ack, and the first of the two
//     events, the write committing or the phone's deliver returning, settles
//     it: a copy delivered before its write commits is acknowledged as
//     delivered (its tick may ride in the reply), one written first as durable.
struct SpilledRow {
  std::int64_t row = 0;
  std::atomic<bool> ackTaken{false};
};

// Where an item waiting for a phone is durable, if it is.
//   * `seq`: its row in the store, when it was paged in from there;
//   * `spilledRow`: set when the session itself wrote the item (above).
// Neither: the item is held in memory only, and its `ack` is still open.
struct Durability {
  std::uint64_t seq = 0;
  std::shared_ptr<SpilledRow> spilledRow;
  bool stored() const { return seq != 0 || spilledRow != nullptr; }
  // Whether the caller, holding the item's ack, settles it: always for an item
  // the session did not write; for one it wrote, only the first to ask.
  bool claimAck() const { return !spilledRow || !spilledRow->ackTaken.exchange(true); }
};

// One message on its way to a phone. `id` is the message's server id, the one
// its sender was given (every recipient of a group send sees the same id).
struct OutboundMessage {
  std::uint64_t id = 0;
  std::string from;
  std::uint64_t group = 0;
  std::string clientMsgId;
  std::string body;
  std::int64_t timestamp = 0;  // server time of the send, ms since the epoch
  std::int64_t expiresAt = 0;  // ms since the epoch; a stored row is dropped after it
  Durability durability;
  // Settled once this copy is delivered or durable; null once settled. A copy
  // the session wrote shares it with its write (Durability::claimAck).
  std::shared_ptr<DeliveryAck> ack;
  std::chrono::steady_clock::time_point heldSince{};  // when the session took it in memory
  // Cluster mode: its sequence in the cluster's stream when it came from there
  // in memory (it stays in the stream until the phone or the store has it).
  std::uint64_t streamId = 0;
};

enum class ReceiptKind : std::uint8_t { delivered = 0, read = 1 };

// One tick for a message the phone sent.
struct OutboundReceipt {
  std::uint64_t messageId = 0;  // the id the sender was given by send()
  std::string by;
  ReceiptKind kind = ReceiptKind::delivered;
  std::int64_t timestamp = 0;
  Durability durability;  // `seq` is the row in receipts_queue
  std::shared_ptr<DeliveryAck> ack;
  std::chrono::steady_clock::time_point heldSince{};
  std::uint64_t streamId = 0;  // as OutboundMessage::streamId
};

enum class PresenceState : std::uint8_t { online = 0, away = 1, offline = 2 };

// Presence or typing of a contact: never queued durably, dropped if the phone
// is gone.
struct OutboundPresence {
  std::string phone;
  PresenceState state = PresenceState::online;
  std::int64_t lastSeen = 0;
  bool typing = false;
};

}  // namespace switchboard::session
