// Moving what this node's store holds into the SB_INBOX stream (docs/cluster.md):
// the catch-up after NATS returns and the sweep for phones that are elsewhere,
// and the stream copies of rows written here (StreamCopies), which leave the
// stream once the phone took the row; rows written while the link was away
// are owed theirs until it is back (copyOwed).

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

namespace {

// The key a row's envelope is published under, whether an export moves the
// row or a copy of it is made (copyOf): the same row is one envelope in the
// stream either way. (JetStream drops a publish whose key it holds.)
std::string rowKey(const cluster::Envelope& e, std::int64_t row) {
  return e.kind == cluster::Envelope::Kind::message
             ? "x/" + std::to_string(row) + "/" + std::to_string(e.messageId)
             : "xr/" + std::to_string(row) + "/" + std::to_string(e.receiptOf);
}

// The envelope a row of `queue` is moved into the stream as, from columns
// seq, id, sender, group_id, client_msg_id, body, sent_ms. The row names the
// copy: an export repeated after a crash is one copy, while a message
// imported, stranded and exported again is not mistaken for the first export
// of it.
cluster::Envelope messageOfRow(store::Statement& rows, const std::string& phone) {
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
  e.exactlyOnceKey = rowKey(e, rows.columnInt(0));
  return e;
}

// The same for a row of `receipts_queue`: id, server_id, reader, kind, at_ms.
cluster::Envelope tickOfRow(store::Statement& ticks, const std::string& phone) {
  cluster::Envelope e;
  e.kind = static_cast<ReceiptKind>(ticks.columnInt(3)) == ReceiptKind::read
               ? cluster::Envelope::Kind::read
               : cluster::Envelope::Kind::delivered;
  e.recipient = phone;
  e.receiptOf = static_cast<std::uint64_t>(ticks.columnInt(1));
  e.sender = ticks.columnText(2);
  e.sentAtMs = ticks.columnInt(4);
  e.exactlyOnceKey = rowKey(e, ticks.columnInt(0));
  return e;
}

}  // namespace

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
    // Rows written here for phones on this node while the link was away get
    // their copy now (before the imports below, which skip them as rows the
    // store holds).
    copyOwed();
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
      while (rows.step()) messages.emplace_back(rows.columnInt(0), messageOfRow(rows, phone));
      auto ticks = db.prepare(
                         "SELECT id, server_id, reader, kind, at_ms FROM receipts_queue "
                         "WHERE recipient = ? ORDER BY id LIMIT ?")
                       .bind(1, phone)
                       .bind(2, static_cast<std::int64_t>(kImportPage));
      while (ticks.step()) receipts.emplace_back(ticks.columnInt(0), tickOfRow(ticks, phone));
    });
    if (messages.empty() && receipts.empty()) break;
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
    for (auto& [row, e] : messages) move(copyKey(e), e);
    for (auto& [row, e] : receipts) move(copyKey(e), e);
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

std::size_t MessagingService::clusterCopiesOwed() const {
  return copies_ ? copies_->owing() : 0;
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
    if (item.streamId != 0) copies_->add(phone, StreamCopies::keyOf(item), item.streamId);
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
  e.exactlyOnceKey = rowKey(e, row);
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
  e.exactlyOnceKey = rowKey(e, row);
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
// Rows owed a copy (written while the link was away, or whose copy's publish
// failed) go first, so a row's copy never enters the stream ahead of an
// earlier row's; while any is left, these are owed too, behind them.
void MessagingService::copyToStream(std::vector<StreamCopy> copies) {
  cluster_->link().post([this, copies = std::move(copies)]() mutable {
    std::optional<std::string> failed;
    if (!copyOwed()) failed = "rows written before them still have no copy";
    std::size_t published = 0;
    std::vector<StreamCopies::Owed> owed;
    for (StreamCopy& copy : copies) {
      if (!failed) {
        try {
          cluster::PublishResult result = cluster_->transport().publish(copy.envelope);
          if (!result.duplicate) {
            copies_->add(copy.envelope.recipient, copyKey(copy.envelope), result.serverId);
          }
          ++published;
          ++counters_.clusterCopied;
        } catch (const std::exception& e) {
          failed = e.what();
        }
      }
      if (failed) {
        owed.push_back({copy.envelope.recipient,
                        copy.envelope.kind == cluster::Envelope::Kind::message, copy.row,
                        copyKey(copy.envelope)});
      }
      // Durable here in any case: with no copy, it is as if NATS were away.
      if (copy.ack) copy.ack->settle();
    }
    if (failed) {
      copies_->owe(std::move(owed));
      spdlog::warn(
          "cluster: {} of {} items written here have no copy in the stream ({}); they wait in "
          "this node's store, owed a copy that the next sweep tries again",
          copies.size() - published, copies.size(), *failed);
    } else {
      spdlog::debug("cluster: {} items written here copied into the stream", published);
    }
  });
}

// A row owed a copy is looked up by its primary key; one gone (the phone
// took it, an export moved it, it expired) or holding another item is owed
// nothing. A copy published here while the phone takes its row is recorded
// all the same: the sweep (or the phone's import, or a handover) removes it,
// as any copy whose row is gone. On the worker, as exports are: an export of
// the row comes wholly before (the row is gone) or after (it notices this
// copy). A duplicate answer is the copy of a publish that failed late (same
// key), and the row is still here: it is recorded too.
bool MessagingService::copyOwed() {
  if (copies_->owing() == 0) return true;
  if (!cluster_->link().isConnected()) return false;
  cluster::DeliveryTransport& transport = cluster_->transport();
  std::size_t copied = 0, gone = 0;
  try {
    for (;;) {
      std::vector<StreamCopies::Owed> owed = copies_->owed(kImportPage);
      if (owed.empty()) break;
      std::vector<std::optional<cluster::Envelope>> envelopes(owed.size());
      std::int64_t now = nowMs();
      store_.read([&](store::Connection& db) {
        auto message = db.prepare(
            "SELECT seq, id, sender, group_id, client_msg_id, body, sent_ms FROM queue "
            "WHERE seq = ? AND recipient = ? AND expires_ms > ?");
        auto tick = db.prepare(
            "SELECT id, server_id, reader, kind, at_ms FROM receipts_queue "
            "WHERE id = ? AND recipient = ?");
        for (std::size_t i = 0; i < owed.size(); ++i) {
          const StreamCopies::Owed& row = owed[i];
          store::Statement& lookup = row.message ? message : tick;
          lookup.reset();
          lookup.bind(1, row.row).bind(2, row.phone);
          if (row.message) lookup.bind(3, now);
          if (!lookup.step()) continue;
          cluster::Envelope e =
              row.message ? messageOfRow(lookup, row.phone) : tickOfRow(lookup, row.phone);
          if (copyKey(e) == row.key) envelopes[i] = std::move(e);
        }
      });
      for (std::size_t i = 0; i < owed.size(); ++i) {
        const StreamCopies::Owed& row = owed[i];
        if (envelopes[i] && !copies_->has(row.phone, row.key)) {
          cluster::PublishResult result = transport.publish(*envelopes[i]);
          if (result.serverId != 0) copies_->add(row.phone, row.key, result.serverId);
          ++copied;
          ++counters_.clusterCopied;
        } else {
          ++gone;
        }
        copies_->paid(row);
      }
    }
  } catch (const std::exception& e) {
    spdlog::warn(
        "cluster: {} items written here are owed a copy in the stream ({} copied now): {}; the "
        "next sweep tries again",
        copies_->owing(), copied, e.what());
    return false;
  }
  spdlog::info(
      "cluster: {} items written here with no copy in the stream are copied into it ({} were "
      "taken or moved meanwhile)",
      copied, gone);
  return true;
}

}  // namespace switchboard::messaging
