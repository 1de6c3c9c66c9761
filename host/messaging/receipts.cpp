// Receipts: the "delivered" tick the server makes when a phone's
// Inbox.deliver returns, and the "read" ticks phones send. Both go to the
// sender's session in memory when it is online, and are stored only when they
// cannot be shown (the sender is away, its queue is spilling, or it did not
// take them within durableAfter). A message id carries its sender's number,
// so a receipt needs no stored row to find where it goes.

#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "net/network_thread.h"

namespace switchboard::messaging {

using session::DeliveryAck;
using session::LiveSession;
using session::OutboundReceipt;
using session::ReceiptKind;

void MessagingService::routeReceipt(const std::string& to, OutboundReceipt receipt) {
  if (auto address = sessions_.locate(to)) {
    offerOrStore(*address, to, std::move(receipt));
    return;
  }
  if (cluster_) {
    publishReceipt(to, std::move(receipt));
    return;
  }
  std::vector<AddressedReceipt> items;
  items.push_back({to, std::move(receipt)});
  storeReceipts(std::move(items), WriteOrigin{});
}

kj::Promise<void> MessagingService::receipt(const LiveSession& reader,
                                            std::vector<std::uint64_t> ids, ReceiptKind kind) {
  requireBatch(ids.size(), "ids");
  // Every id must name a sender before anything is sent: a refused call
  // changes nothing.
  std::vector<std::string> senders;
  senders.reserve(ids.size());
  for (std::uint64_t id : ids) {
    std::uint64_t number = MessageIds::senderOf(id);
    std::optional<std::string> sender;
    if (!ids_.issued(id)) {
      sender = std::nullopt;
    } else if (number == MessageIds::kSystemSender) {
      sender = MessageIds::kSystemName;
    } else if (number > MessageIds::kSystemSender) {
      sender = phoneOfNumber(number);
    }
    // A phone acknowledges messages it received, never its own.
    if (!sender || *sender == reader.phone()) refuse("unknown message id " + std::to_string(id));
    senders.push_back(std::move(*sender));
  }
  // The server made the "delivered" tick when Inbox.deliver returned; one
  // from the phone would show the sender the same tick twice.
  if (kind == ReceiptKind::delivered) return kj::READY_NOW;

  std::uint32_t copies = 0;
  for (const std::string& sender : senders) {
    if (sender != MessageIds::kSystemName && sender != reader.phone()) ++copies;
  }
  if (copies == 0) return kj::READY_NOW;
  auto [promise, ack] = DeliveryAck::make(reader.thread(), copies);
  std::int64_t now = nowMs();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (senders[i] == MessageIds::kSystemName || senders[i] == reader.phone()) continue;
    OutboundReceipt tick;
    tick.messageId = ids[i];
    tick.by = reader.phone();
    tick.kind = kind;
    tick.timestamp = now;
    tick.ack = ack;
    routeReceipt(senders[i], std::move(tick));
  }
  return kj::mv(promise);
}

}  // namespace switchboard::messaging
