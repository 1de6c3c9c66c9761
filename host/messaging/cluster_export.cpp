// Moving what this node's store holds into the SB_INBOX stream (docs/cluster.md):
// the catch-up after NATS returns and the sweep for phones that are elsewhere,
// and the stream copies of rows written here (StreamCopies), which leave the
// stream once the phone took the row.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <unordered_set>

#include "cluster/cluster_node.h"
#include "messaging/cluster_parts.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
#include "store/store.h"

namespace switchboard::messaging {

using session::OutboundMessage;
using session::OutboundReceipt;
using session::ReceiptKind;

// ---------------------------------------------------------------- catching up

void MessagingService::catchUp(bool reclaim) {
  if (!cluster_->link().isConnected()) return;
  try {
    // What was kept here for phones elsewhere goes first: sends to them wait
    // behind it (keptFor_), and the nodes holding them import it in order.
    std::vector<std::string> phones;
    store_.read([&](store::Connection& db) {
      auto rows = db.prepare(
                        "SELECT recipient FROM queue WHERE expires_ms > ? "
                        "UNION SELECT recipient FROM receipts_queue")
                      .bind(1, nowMs());
      while (rows.step()) phones.push_back(rows.columnText(0));
    });
    {
      std::lock_guard lock(keptMutex_);
      for (const auto& [phone, count] : keptFor_) phones.push_back(phone);
    }
    std::sort(phones.begin(), phones.end());
    phones.erase(std::unique(phones.begin(), phones.end()), phones.end());
    for (const std::string& phone : phones) {
      if (phone == MessageIds::kSystemName || sessions_.isOnline(phone)) continue;
      exportStranded(phone);
    }
    if (reclaim) {
      for (const session::SessionRef& ref : sessions_.all()) {
        // One phone's failure (an import timing out while JetStream comes
        // back) must not skip the others.
        try {
          cluster::SessionLocation where{options_.nodeName, ref.sessionId, ref.since, 0};
          std::optional<cluster::SessionLocation> previous;
          if (!cluster_->directory().claim(ref.phone, where, &previous)) {
            kick(ref, "logged in elsewhere");  // logged in elsewhere while we were away
            continue;
          }
          if (previous && !previous->node.empty() && previous->node != where.node) {
            cluster_->transport().sendKick(previous->node,
                                           {ref.phone, previous->sessionId, "logged in elsewhere"});
          }
          // Notices sent while this node was cut off are lost: look for yourself.
          importFromStream(ref.phone);
        } catch (const std::exception& e) {
          spdlog::warn("cluster: catching up {}: {} (its import is asked again)", ref.phone,
                       e.what());
        }
      }
    }
  } catch (const std::exception& e) {
    spdlog::warn("cluster: catching up: {}", e.what());
  }
}

void MessagingService::exportStranded(const std::string& phone) {
  // Sends to the phone were kept here behind its rows (keptFor_). From now
  // until the rows are in the stream, later ones wait in the outbox instead
  // (`moving`, Hold::wait): what is still on its way to the store is written,
  // the rows move, and then the outbox publishes what waited, in order, so
  // the phone's traffic is back on the stream however steady it is. If the
  // move stops short (NATS went away, a publish failed), what waited is kept
  // behind the rows, as before, and the next sweep tries again.
  struct Moving {
    MessagingService& service;
    const std::string& phone;
    bool marked = false;
    ~Moving() {
      if (!marked) return;
      {
        std::lock_guard lock(service.keptMutex_);
        auto it = service.keptFor_.find(phone);
        if (it != service.keptFor_.end()) it->second.moving = false;
      }
      service.cluster_->transport().holdChanged();
    }
  } moving{*this, phone};
  {
    std::lock_guard lock(keptMutex_);
    auto it = keptFor_.find(phone);
    if (it != keptFor_.end()) {
      it->second.moving = true;
      moving.marked = true;
    }
  }
  // Copies of rows the phone took here leave the stream first: the node the
  // phone is on imports once this returns.
  for (std::uint64_t id : copiesTaken(phone)) cluster_->transport().remove(id);
  for (int round = 0; round < 20; ++round) {
    exportRows(phone);
    {
      std::lock_guard lock(keptMutex_);
      auto it = keptFor_.find(phone);
      if (it == keptFor_.end()) return;
      if (it->second.writing == 0 && !rowsFor(phone)) {
        keptFor_.erase(it);
        spdlog::info("cluster: kept rows for {} are in the stream; its items take the stream again",
                     phone);
        return;  // ~Moving tells the outbox
      }
    }
    store_.writeAndWait([](store::Connection&) {});  // what was kept meanwhile is written
  }
}

bool MessagingService::rowsFor(const std::string& phone) {
  bool any = false;
  store_.read([&](store::Connection& db) {
    any = db.prepare(
                "SELECT 1 FROM queue WHERE recipient = ?1 AND expires_ms > ?2 "
                "UNION ALL SELECT 1 FROM receipts_queue WHERE recipient = ?1 LIMIT 1")
              .bind(1, phone)
              .bind(2, nowMs())
              .step();
  });
  return any;
}

void MessagingService::exportRows(const std::string& phone) {
  cluster::DeliveryTransport& transport = cluster_->transport();
  std::vector<cluster::QueuedEnvelope> moved;  // in stream order, for the holder's notice
  for (;;) {
    std::vector<std::pair<std::int64_t, cluster::Envelope>> messages, receipts;
    store_.read([&](store::Connection& db) {
      auto rows = db.prepare(
                        "SELECT seq, id, sender, group_id, client_msg_id, body, sent_ms FROM queue "
                        "WHERE recipient = ? AND expires_ms > ? ORDER BY seq LIMIT ?")
                      .bind(1, phone)
                      .bind(2, nowMs())
                      .bind(3, static_cast<std::int64_t>(kImportPage));
      while (rows.step()) {
        cluster::Envelope e;
        e.kind = cluster::Envelope::Kind::message;
        e.recipient = phone;
        e.messageId = static_cast<std::uint64_t>(rows.columnInt(1));
        e.sender = rows.columnText(2);
        std::int64_t group = rows.columnInt(3);
        e.group = group == 0 ? std::string() : std::to_string(group);
        e.clientMsgId = rows.columnText(4);
        e.body = rows.columnBlob(5);
        e.sentAtMs = rows.columnInt(6);
        messages.emplace_back(rows.columnInt(0), std::move(e));
      }
      auto ticks = db.prepare(
                         "SELECT id, server_id, reader, kind, at_ms FROM receipts_queue "
                         "WHERE recipient = ? ORDER BY id LIMIT ?")
                       .bind(1, phone)
                       .bind(2, static_cast<std::int64_t>(kImportPage));
      while (ticks.step()) {
        cluster::Envelope e;
        e.kind = static_cast<ReceiptKind>(ticks.columnInt(3)) == ReceiptKind::read
                     ? cluster::Envelope::Kind::read
                     : cluster::Envelope::Kind::delivered;
        e.recipient = phone;
        e.receiptOf = static_cast<std::uint64_t>(ticks.columnInt(1));
        e.sender = ticks.columnText(2);
        e.sentAtMs = ticks.columnInt(4);
        receipts.emplace_back(ticks.columnInt(0), std::move(e));
      }
    });
    if (messages.empty() && receipts.empty()) break;
    // The row names the copy: an export repeated after a crash is one copy,
    // while a message imported, stranded and exported again is not mistaken
    // for the first export of it.
    // A row taken from the stream has its copy there still, in its place:
    // that copy is noticed, not a new one published (StreamCopies).
    auto move = [&](const std::string& key, cluster::Envelope& e) {
      std::vector<std::uint64_t> copies = copies_->take(phone, key);
      if (copies.empty()) {
        moved.push_back({transport.publish(e).serverId, e});
        return;
      }
      moved.push_back({copies.front(), e});
      for (std::size_t i = 1; i < copies.size(); ++i) transport.remove(copies[i]);
    };
    for (auto& [row, e] : messages) {
      e.exactlyOnceKey = "x/" + std::to_string(row) + "/" + std::to_string(e.messageId);
      move(StreamCopies::messageKey(e.messageId), e);
    }
    for (auto& [row, e] : receipts) {
      e.exactlyOnceKey = "xr/" + std::to_string(row) + "/" + std::to_string(e.receiptOf);
      int kind = static_cast<int>(e.kind == cluster::Envelope::Kind::read ? ReceiptKind::read
                                                                          : ReceiptKind::delivered);
      move(StreamCopies::receiptKey(e.receiptOf, kind, e.sender), e);
    }
    // In the stream first, then gone from here.
    store_.writeAndWait([&](store::Connection& db) {
      auto erase = db.prepare("DELETE FROM queue WHERE seq = ?");
      std::int64_t erased = 0;
      for (const auto& entry : messages) {
        erase.reset();
        erase.bind(1, entry.first).run();
        erased += db.changes();
      }
      if (erased > 0) {
        db.prepare("UPDATE users SET queued = max(queued - ?, 0) WHERE phone = ?")
            .bind(1, erased)
            .bind(2, phone)
            .run();
      }
      auto eraseTick = db.prepare("DELETE FROM receipts_queue WHERE id = ?");
      for (const auto& entry : receipts) {
        eraseTick.reset();
        eraseTick.bind(1, entry.first).run();
      }
    });
    spdlog::info("cluster: moved {} messages and {} receipts for {} into the stream",
                 messages.size(), receipts.size(), phone);
    if (messages.size() < kImportPage && receipts.size() < kImportPage) break;
  }
  tellHolder(phone, moved);
}

std::vector<std::uint64_t> MessagingService::copiesTaken(const std::string& phone) {
  std::unordered_set<std::string> stored;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare("SELECT id FROM queue WHERE recipient = ?").bind(1, phone);
    while (rows.step()) {
      stored.insert(StreamCopies::messageKey(static_cast<std::uint64_t>(rows.columnInt(0))));
    }
    auto ticks =
        db.prepare("SELECT server_id, kind, reader FROM receipts_queue WHERE recipient = ?")
            .bind(1, phone);
    while (ticks.step()) {
      stored.insert(StreamCopies::receiptKey(static_cast<std::uint64_t>(ticks.columnInt(0)),
                                             static_cast<int>(ticks.columnInt(1)),
                                             ticks.columnText(2)));
    }
  });
  return copies_->taken(phone, stored);
}

template <class Item>
void MessagingService::copiesSpilled(const std::string& phone, const std::vector<Item>& items) {
  for (const Item& item : items) {
    if (item.streamId == 0) continue;
    if constexpr (std::is_same_v<Item, OutboundMessage>) {
      copies_->add(phone, StreamCopies::messageKey(item.id), item.streamId);
    } else {
      copies_->add(phone,
                   StreamCopies::receiptKey(item.messageId, static_cast<int>(item.kind), item.by),
                   item.streamId);
    }
  }
}
template void MessagingService::copiesSpilled(const std::string&,
                                              const std::vector<OutboundMessage>&);
template void MessagingService::copiesSpilled(const std::string&,
                                              const std::vector<OutboundReceipt>&);

cluster::Envelope MessagingService::copyOf(const std::string& recipient, OutboundMessage& message,
                                           std::int64_t row) {
  cluster::Envelope e;
  e.kind = cluster::Envelope::Kind::message;
  e.sender = message.from;
  e.recipient = recipient;
  e.clientMsgId = std::move(message.clientMsgId);
  e.body = std::move(message.body);
  e.sentAtMs = message.timestamp;
  e.group = message.group == 0 ? std::string() : std::to_string(message.group);
  e.messageId = message.id;
  // The key its row's export would publish it under (exportRows).
  e.exactlyOnceKey = "x/" + std::to_string(row) + "/" + std::to_string(e.messageId);
  return e;
}

cluster::Envelope MessagingService::copyOf(const std::string& recipient, OutboundReceipt& receipt,
                                           std::int64_t row) {
  cluster::Envelope e;
  e.kind = receipt.kind == ReceiptKind::read ? cluster::Envelope::Kind::read
                                             : cluster::Envelope::Kind::delivered;
  e.sender = receipt.by;
  e.recipient = recipient;
  e.sentAtMs = receipt.timestamp;
  e.receiptOf = receipt.messageId;
  e.exactlyOnceKey = "xr/" + std::to_string(row) + "/" + std::to_string(e.receiptOf);
  return e;
}

// On the worker, so a copy and an export of its row (exportRows: the sweep, a
// handover) never interleave: a row exported first is in the stream under the
// same key already, and its export noticed it and deleted the row, so the
// copy's publish is a duplicate and recorded nowhere; a copy published first
// is recorded before any export looks (StreamCopies::take), and the export
// notices it instead of publishing it again. A copy whose row the phone took
// meanwhile is removed by the next sweep (or the phone's import or handover).
// One blocking publish per item, in the order of the rows; each ack settles
// after its PubAck, so a sender's route to the recipient stays on this node
// (LiveSession's SenderRoute) until its copies are in, and what it sends
// after goes into the stream behind them.
void MessagingService::copyToStream(std::vector<StreamCopy> copies) {
  cluster_->link().post([this, copies = std::move(copies)]() mutable {
    std::optional<std::string> failed;
    std::size_t published = 0;
    for (StreamCopy& copy : copies) {
      if (!failed) {
        try {
          cluster::PublishResult result = cluster_->transport().publish(copy.envelope);
          if (!result.duplicate) {
            copies_->add(copy.envelope.recipient, copyKey(copy.envelope), result.serverId);
          }
          ++published;
        } catch (const std::exception& e) {
          failed = e.what();
        }
      }
      // Durable here in any case: with no copy, it is as if NATS were away.
      if (copy.ack) copy.ack->settle();
    }
    if (failed) {
      spdlog::warn(
          "cluster: {} of {} items written here have no copy in the stream ({}); they wait in "
          "this node's store",
          copies.size() - published, copies.size(), *failed);
    } else {
      spdlog::debug("cluster: {} items written here copied into the stream", published);
    }
  });
}

}  // namespace switchboard::messaging
