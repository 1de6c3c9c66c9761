// Importing from the SB_INBOX stream (docs/cluster.md, "Receiving, importing"):
// what waits for a phone that is not live here is copied into this node's
// store in sending order, and stays in the stream until the phone took it.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <optional>
#include <tuple>
#include <unordered_set>

#include "cluster/cluster_node.h"
#include "messaging/cluster_parts.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
#include "net/network_thread.h"
#include "store/store.h"

namespace switchboard::messaging {

using session::ReceiptKind;

namespace {

// Envelopes one import puts in order and writes at once.
constexpr std::size_t kImportPass = 10000;

}  // namespace

// ---------------------------------------------------------------- the stream

void MessagingService::importFromStream(const std::string& phone) {
  std::uint64_t epoch = cluster_->link().disconnects();
  auto startedAt = StreamIntake::Clock::now();
  // A live phone takes what comes from notices: an import now could overtake
  // or repeat what memory delivers.
  if (!intake_->beginImport(phone, epoch, startedAt)) return;
  std::optional<std::uint64_t> readUpTo;
  struct Ending {
    StreamIntake& intake;
    const std::string& phone;
    std::optional<std::uint64_t>& readUpTo;
    ~Ending() { intake.endImport(phone, readUpTo); }
  };
  {
    Ending ending{*intake_, phone, readUpTo};
    importPasses(phone, readUpTo);
  }
  threads_.front()->post([this, phone, startedAt, epoch]() { goLive(phone, startedAt, epoch); });
}

void MessagingService::importPasses(const std::string& phone,
                                    std::optional<std::uint64_t>& readUpTo) {
  cluster::DeliveryTransport& transport = cluster_->transport();
  std::size_t messages = 0, receipts = 0;
  // Copies of rows the phone took here already leave the stream, and are not
  // read again (their removals may still be on their way).
  std::unordered_set<std::uint64_t> taken;
  for (std::uint64_t id : copiesTaken(phone)) {
    taken.insert(id);
    transport.removeLater(id, [](bool) {});
  }
  // What earlier imports of this session read is in the store or taken (a
  // copy whose removal is still on its way must not be read again).
  std::uint64_t cursor = intake_->readUpTo(phone);
  // What was stored after this import began has its notice kept here (the
  // phone is importing): reading up to the stream's end at the start is
  // enough to go live, however fast envelopes keep coming.
  std::uint64_t end = transport.lastSequence();
  while (cursor < end) {
    // One pass reads what waits (up to kImportPass), then writes it in order.
    std::vector<cluster::QueuedEnvelope> items;
    for (std::uint64_t after = cursor; items.size() < kImportPass && after < end;) {
      auto page = transport.pending(phone, after, kImportPage);
      if (page.empty()) break;
      after = page.back().serverId;
      std::move(page.begin(), page.end(), std::back_inserter(items));
      if (page.size() < kImportPage) break;
    }
    if (items.empty()) break;
    std::size_t read = items.size();
    std::uint64_t lastRead = items.back().serverId;
    cursor = lastRead;
    // What a session here holds in memory is not imported (nor removed): the
    // phone or the store takes it from there.
    std::erase_if(items, [&](const cluster::QueuedEnvelope& queued) {
      return taken.contains(queued.serverId) || intake_->inMemory(phone, queued.serverId);
    });
    // Stream order is arrival order, and rows a node hands back (a phone that
    // moved, NATS that was away) arrive after messages sent later. The order
    // a sender's node accepted them in is the order of their timestamps, then
    // of their ids (one node's ids for a sender grow).
    std::stable_sort(items.begin(), items.end(), [](const auto& x, const auto& y) {
      const cluster::Envelope& a = x.envelope;
      const cluster::Envelope& b = y.envelope;
      bool aMessage = a.kind == cluster::Envelope::Kind::message;
      bool bMessage = b.kind == cluster::Envelope::Kind::message;
      if (!aMessage || !bMessage) return aMessage && !bMessage;  // receipts after, in order
      return std::tie(a.sentAtMs, a.messageId) < std::tie(b.sentAtMs, b.messageId);
    });
    std::int64_t expires = nowMs() + options_.fallbackExpirySeconds * 1000;
    store_.writeAndWait([&](store::Connection& db) {
      // The sender's number is in the message id: a receipt the phone sends
      // for it finds the sender's phone without asking the cluster.
      auto learn =
          db.prepare("INSERT OR IGNORE INTO users(phone, created_ms, number) VALUES (?, ?, ?)");
      auto message = db.prepare(
          "INSERT INTO queue(recipient, id, sender, group_id, client_msg_id, body, sent_ms, "
          "expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      auto count = db.prepare("UPDATE users SET queued = queued + 1 WHERE phone = ?");
      auto receipt = db.prepare(
          "INSERT INTO receipts_queue(recipient, server_id, reader, kind, at_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5)");
      // What the queues hold for the phone already (a copy a crash left in the
      // stream, or one imported twice), read once: the tables are indexed by
      // recipient and row, and a lookup per envelope would scan the phone's rows.
      std::unordered_set<std::int64_t> haveMessages;
      std::unordered_set<std::string> haveReceipts;
      auto receiptKey = [](std::int64_t serverId, const std::string& reader, std::int64_t kind) {
        return std::to_string(serverId) + "/" + std::to_string(kind) + "/" + reader;
      };
      {
        auto rows = db.prepare("SELECT id FROM queue WHERE recipient = ?").bind(1, phone);
        while (rows.step()) haveMessages.insert(rows.columnInt(0));
        auto ticks = db.prepare(
                           "SELECT server_id, reader, kind FROM receipts_queue "
                           "WHERE recipient = ?")
                         .bind(1, phone);
        while (ticks.step()) {
          haveReceipts.insert(
              receiptKey(ticks.columnInt(0), ticks.columnText(1), ticks.columnInt(2)));
        }
      }
      for (const cluster::QueuedEnvelope& queued : items) {
        const cluster::Envelope& e = queued.envelope;
        if (e.kind == cluster::Envelope::Kind::message && e.sender != MessageIds::kSystemName) {
          learn.reset();
          learn.bind(1, e.sender)
              .bind(2, e.sentAtMs)
              .bind(3, static_cast<std::int64_t>(MessageIds::senderOf(e.messageId)))
              .run();
        }
        if (e.kind == cluster::Envelope::Kind::message) {
          if (!haveMessages.insert(static_cast<std::int64_t>(e.messageId)).second) continue;
          message.reset();
          message.bind(1, phone)
              .bind(2, static_cast<std::int64_t>(e.messageId))
              .bind(3, e.sender)
              .bind(4, e.group.empty() ? std::int64_t{0} : std::stoll(e.group))
              .bind(5, e.clientMsgId)
              .bindBlob(6, e.body)
              .bind(7, e.sentAtMs)
              .bind(8, expires)
              .run();
          count.reset();
          count.bind(1, phone).run();
        } else {
          auto kind =
              e.kind == cluster::Envelope::Kind::read ? ReceiptKind::read : ReceiptKind::delivered;
          auto key = receiptKey(static_cast<std::int64_t>(e.receiptOf), e.sender,
                                static_cast<std::int64_t>(kind));
          if (!haveReceipts.insert(std::move(key)).second) continue;
          receipt.reset();
          receipt.bind(1, phone)
              .bind(2, static_cast<std::int64_t>(e.receiptOf))
              .bind(3, e.sender)
              .bind(4, static_cast<std::int64_t>(kind))
              .bind(5, e.sentAtMs)
              .run();
        }
      }
    });
    // Durable here, and still in the stream until the phone takes the row
    // (StreamCopies): a node killed for good strands none of them.
    for (const cluster::QueuedEnvelope& queued : items) {
      const cluster::Envelope& e = queued.envelope;
      copies_->add(phone, copyKey(e), queued.serverId);
    }
    readUpTo = lastRead;
    for (const cluster::QueuedEnvelope& queued : items) {
      ++(queued.envelope.kind == cluster::Envelope::Kind::message ? messages : receipts);
    }
    if (read < kImportPass) break;
  }
  if (!readUpTo || *readUpTo < end) readUpTo = end;  // nothing for the phone up to there
  if (messages + receipts == 0) return;
  spdlog::debug("cluster: imported {} messages and {} receipts for {} from the stream", messages,
                receipts, phone);
  if (auto address = sessions_.locate(phone)) {
    postTo(address->threadIndex, [weak = address->session]() {
      if (auto s = weak.lock()) s->storeChanged();
    });
  }
}

}  // namespace switchboard::messaging
