// What the server pushes to a phone, as plain data: these cross threads (from
// the thread that made a message durable to the thread that owns the
// recipient's session) and are turned into Cap'n Proto only there.
#pragma once

#include <cstdint>
#include <string>

namespace switchboard::session {

// One message waiting for a phone. `id` is the recipient's row in the durable
// queue: per recipient, ids grow in the order sends were acknowledged.
struct OutboundMessage {
  std::uint64_t id = 0;
  std::string from;
  std::uint64_t group = 0;
  std::string clientMsgId;
  std::string body;
  std::int64_t timestamp = 0;
};

enum class ReceiptKind : std::uint8_t { delivered = 0, read = 1 };

// One tick for a message the phone sent. `rowId` is its row in the durable
// receipts queue, deleted once the phone has it.
struct OutboundReceipt {
  std::uint64_t rowId = 0;
  std::uint64_t messageId = 0;  // the id the sender was given by send()
  std::string by;
  ReceiptKind kind = ReceiptKind::delivered;
  std::int64_t timestamp = 0;
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
