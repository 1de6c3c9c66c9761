#include "messaging/messaging_service.h"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "messaging/stream_intake.h"
#include "net/network_thread.h"
#include "store/multi_row.h"
#include "store/store.h"

namespace switchboard::messaging {

using session::Durability;
using session::LiveSession;
using session::OutboundMessage;
using session::OutboundReceipt;
using session::PresenceState;
using session::ReceiptKind;

MessagingService::MessagingService(MessagingOptions options, store::Store& store,
                                   plugin::PluginManager& plugins, session::SessionTable& sessions,
                                   std::vector<net::NetworkThread*> threads, notify::SmsSink& sms,
                                   notify::PushSink& push, CloseConnection closeConnection)
    : options_(std::move(options)),
      store_(store),
      plugins_(plugins),
      sessions_(sessions),
      threads_(std::move(threads)),
      sms_(sms),
      push_(push),
      closeConnection_(std::move(closeConnection)),
      ids_(store),
      dedup_(options_.dedupEntries) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  loadDedupRows();
  loadLoginFacts();
}

void MessagingService::loadDedupRows() {
  std::vector<DedupCache::StoredRow> rows;
  store_.read([&](store::Connection& db) {
    auto newest = db.prepare(
        "SELECT sender, client_msg_id, server_id, sent_ms FROM "
        "(SELECT rowid AS written, * FROM dedup ORDER BY rowid DESC LIMIT ?) ORDER BY written");
    newest.bind(1, static_cast<std::int64_t>(options_.dedupEntries + 1));
    while (newest.step()) {
      rows.push_back(
          {newest.columnText(0), newest.columnText(1),
           SentMessage{static_cast<std::uint64_t>(newest.columnInt(2)), newest.columnInt(3)}});
    }
  });
  bool complete = rows.size() <= options_.dedupEntries;
  if (!complete) rows.erase(rows.begin());  // the oldest: one past what fits
  dedup_.load(rows, complete);
}

void MessagingService::loadLoginFacts() {
  std::vector<std::string> watched;
  store_.read([&](store::Connection& db) {
    // Both queues' counts, one phone at a time in the order of their indexes.
    std::unordered_map<std::string, std::uint64_t> rows;
    for (const char* sql : {"SELECT recipient, count(*) FROM queue GROUP BY recipient",
                            "SELECT recipient, count(*) FROM receipts_queue GROUP BY recipient"}) {
      auto counts = db.prepare(sql);
      while (counts.step()) {
        rows[counts.columnText(0)] += static_cast<std::uint64_t>(counts.columnInt(1));
      }
    }
    for (const auto& [phone, count] : rows) storedRows_.set(phone, count);
    auto contacts = db.prepare("SELECT DISTINCT contact FROM contacts");
    while (contacts.step()) watched.push_back(contacts.columnText(0));
  });
  watched_.add(watched);
}

MessagingService::~MessagingService() = default;

std::int64_t MessagingService::nowMs() const {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void MessagingService::postTo(std::size_t threadIndex, std::function<void()> fn) {
  net::NetworkThread& thread = *threads_.at(threadIndex);
  if (thread.isCurrent()) {
    fn();
  } else {
    thread.post(std::move(fn));
  }
}

// ---------------------------------------------------------------- paging

std::vector<OutboundMessage> MessagingService::queuedMessages(const std::string& phone,
                                                              std::uint64_t afterSeq,
                                                              std::size_t limit,
                                                              std::uint64_t holder) {
  std::vector<OutboundMessage> out;
  std::int64_t now = nowMs();
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(
                      "SELECT seq, id, sender, group_id, client_msg_id, body, sent_ms, expires_ms "
                      "FROM queue WHERE recipient = ? AND seq > ? AND expires_ms > ? "
                      "AND (holder IS NULL OR holder <> ?) ORDER BY seq LIMIT ?")
                    .bind(1, phone)
                    .bind(2, static_cast<std::int64_t>(afterSeq))
                    .bind(3, now)
                    .bind(4, static_cast<std::int64_t>(holder))
                    .bind(5, static_cast<std::int64_t>(limit));
    while (rows.step()) {
      OutboundMessage m;
      m.durability.seq = static_cast<std::uint64_t>(rows.columnInt(0));
      m.id = static_cast<std::uint64_t>(rows.columnInt(1));
      m.from = rows.columnText(2);
      m.group = static_cast<std::uint64_t>(rows.columnInt(3));
      m.clientMsgId = rows.columnText(4);
      m.body = rows.columnBlob(5);
      m.timestamp = rows.columnInt(6);
      m.expiresAt = rows.columnInt(7);
      out.push_back(std::move(m));
    }
  });
  return out;
}

std::vector<OutboundReceipt> MessagingService::queuedReceipts(const std::string& phone,
                                                              std::uint64_t afterSeq,
                                                              std::size_t limit,
                                                              std::uint64_t holder) {
  std::vector<OutboundReceipt> out;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(
                      "SELECT id, server_id, reader, kind, at_ms FROM receipts_queue "
                      "WHERE recipient = ? AND id > ? AND (holder IS NULL OR holder <> ?) "
                      "ORDER BY id LIMIT ?")
                    .bind(1, phone)
                    .bind(2, static_cast<std::int64_t>(afterSeq))
                    .bind(3, static_cast<std::int64_t>(holder))
                    .bind(4, static_cast<std::int64_t>(limit));
    while (rows.step()) {
      OutboundReceipt r;
      r.durability.seq = static_cast<std::uint64_t>(rows.columnInt(0));
      r.messageId = static_cast<std::uint64_t>(rows.columnInt(1));
      r.by = rows.columnText(2);
      r.kind = static_cast<ReceiptKind>(rows.columnInt(3));
      r.timestamp = rows.columnInt(4);
      out.push_back(std::move(r));
    }
  });
  return out;
}

// ---------------------------------------------------------------- spills

namespace {
// Cluster mode: an item from the stream that a session ends with is let go
// rather than stored here (its ack, dropped, tells the stream side): the
// stream still has it for the phone's next login, on any node.
template <class Item>
void letGoOfStreamItems(const LiveSession& session, std::vector<Item>& items) {
  if (!session.ended()) return;
  std::erase_if(items, [](const Item& item) { return item.streamId != 0; });
}
}  // namespace

void MessagingService::spillMessages(LiveSession& session, session::SpillKind kind,
                                     std::vector<OutboundMessage> items) {
  letGoOfStreamItems(session, items);
  if (cluster_) copiesSpilled(session.phone(), items);
  std::vector<AddressedMessage> addressed;
  addressed.reserve(items.size());
  for (OutboundMessage& m : items) addressed.push_back({session.phone(), std::move(m)});
  WriteOrigin origin{session.weak_from_this(), kind,
                     kind == session::SpillKind::keep ? session.id() : 0,
                     session::SpillFeed::messages};
  storeMessages(std::move(addressed), std::move(origin));
}

void MessagingService::spillReceipts(LiveSession& session, session::SpillKind kind,
                                     std::vector<OutboundReceipt> items) {
  letGoOfStreamItems(session, items);
  if (cluster_) copiesSpilled(session.phone(), items);
  std::vector<AddressedReceipt> addressed;
  addressed.reserve(items.size());
  for (OutboundReceipt& r : items) addressed.push_back({session.phone(), std::move(r)});
  WriteOrigin origin{session.weak_from_this(), kind,
                     kind == session::SpillKind::keep ? session.id() : 0,
                     session::SpillFeed::receipts};
  storeReceipts(std::move(addressed), std::move(origin));
}

void MessagingService::rowsCommitted(const std::string& phone, const WriteOrigin& origin) {
  if (origin.kind == session::SpillKind::keep) return;  // the holder delivers them itself
  auto address = sessions_.locate(phone);
  auto spiller = origin.session.lock();
  if (spiller) {
    // The spilling session learns first, on its own thread (it may have ended).
    postTo(spiller->ref().threadIndex, [weak = origin.session, feed = origin.feed]() {
      if (auto s = weak.lock()) s->spillDone(session::SpillKind::handOver, feed);
    });
  }
  if (!address) return;
  if (spiller && address->session.lock() == spiller) return;
  postTo(address->threadIndex, [weak = address->session]() {
    if (auto s = weak.lock()) s->storeChanged();
  });
}

// ---------------------------------------------------------------- taken by the phone

bool MessagingService::deletesInFlight(const std::string& phone) {
  std::lock_guard lock(deletesMutex_);
  return deletesInFlight_.contains(phone);
}

void MessagingService::messagesDelivered(const LiveSession& session,
                                         std::vector<OutboundMessage> items) {
  counters_.messagesOut += items.size();
  std::int64_t now = nowMs();
  std::vector<Durability> stored;
  for (OutboundMessage& m : items) {
    auto ack = std::exchange(m.ack, nullptr);
    // False: the session wrote this copy and the write committed first, so the
    // ack settles (or settled) as durable. (Asked before the durability moves
    // out below: a moved-from one has no spilledRow and would always answer
    // true, settling an ack settled already and losing the tick.)
    bool settles = ack && m.durability.claimAck();
    if (m.durability.stored()) stored.push_back(std::move(m.durability));
    if (m.from != MessageIds::kSystemName) {
      OutboundReceipt tick;
      tick.messageId = m.id;
      tick.by = session.phone();
      tick.kind = ReceiptKind::delivered;
      tick.timestamp = now;
      // The tick rides in the sender's reply, or goes out after it.
      if (settles) {
        ack->settleDelivered(now, *this, std::move(m.from), std::move(tick));
      } else if (ack) {
        ack->afterReply([this, to = std::move(m.from), tick = std::move(tick)]() mutable {
          routeReceipt(to, std::move(tick));
        });
      } else {
        routeReceipt(m.from, std::move(tick));
      }
      continue;
    }
    if (settles) ack->settle();
  }
  forgetRows(session.phone(), "queue", std::move(stored));
}

void MessagingService::sendTick(const std::string& to, OutboundReceipt tick) {
  routeReceipt(to, std::move(tick));
}

void MessagingService::receiptsShown(const LiveSession& session,
                                     std::vector<OutboundReceipt> items) {
  std::vector<Durability> stored;
  for (OutboundReceipt& r : items) {
    if (r.durability.stored()) stored.push_back(std::move(r.durability));
  }
  forgetRows(session.phone(), "receipts_queue", std::move(stored));
}

// ---------------------------------------------------------------- sessions

void MessagingService::sessionEnded(const LiveSession& session) {
  if (!sessions_.detach(session.phone(), session.id())) return;  // a newer login took over
  if (cluster_) releaseLocation(session);
  std::int64_t now = nowMs();
  store_.write(
      [phone = session.phone(), now](store::Connection& db) {
        db.prepare("UPDATE users SET last_seen_ms = ? WHERE phone = ?")
            .bind(1, now)
            .bind(2, phone)
            .run();
      },
      [](std::optional<std::string> error) {
        if (error) spdlog::warn("recording last seen failed: {}", *error);
      });
  fanOutPresence(session.phone(), PresenceState::offline, now);
}

void MessagingService::queueAlert(const LiveSession& session, std::size_t length) {
  ++counters_.queueAlerts;
  spdlog::warn("queue alert: session {} of {} has {} items waiting (threshold {})", session.id(),
               session.phone(), length, options_.limits.alertQueue);
}

void MessagingService::slowConsumer(const LiveSession& session, std::size_t length) {
  ++counters_.slowConsumerKicks;
  spdlog::warn("slow consumer: session {} of {} has {} items waiting (limit {}); disconnecting",
               session.id(), session.phone(), length, options_.limits.maxQueue);
}

bool MessagingService::kick(const std::string& phone, const std::string& reason) {
  auto ref = sessions_.find(phone);
  if (!ref) return false;
  kick(*ref, reason);
  return true;
}

void MessagingService::kick(const session::SessionRef& ref, const std::string& reason) {
  postTo(ref.threadIndex, [weak = ref.session, reason]() {
    if (auto session = weak.lock()) session->kick(reason);
  });
}

void MessagingService::kickAll(const std::string& reason) {
  for (const session::SessionRef& ref : sessions_.all()) kick(ref, reason);
}

void MessagingService::sweepExpired() {
  std::int64_t now = nowMs();
  std::int64_t horizon = now - options_.fallbackExpirySeconds * 1000;
  store_.write(
      [now, horizon](store::Connection& db) {
        // Expired rows leave their recipients' counts first, then the queue.
        db.prepare(
              "UPDATE users SET queued = max(queued - (SELECT count(*) FROM queue q "
              "WHERE q.recipient = users.phone AND q.expires_ms <= ?1), 0) "
              "WHERE phone IN (SELECT recipient FROM queue WHERE expires_ms <= ?1)")
            .bind(1, now)
            .run();
        db.prepare("DELETE FROM queue WHERE expires_ms <= ?").bind(1, now).run();
        int messages = db.changes();
        // These two go in write order (no index by time: migration 4).
        store::deleteOldestRows(db, "dedup", "rowid", "sent_ms", horizon);
        store::deleteOldestRows(db, "receipts_queue", "id", "at_ms", horizon);
        if (messages > 0) spdlog::info("expired {} queued messages", messages);
      },
      [](std::optional<std::string> error) {
        if (error) spdlog::warn("sweeping expired messages failed: {}", *error);
      });
}

}  // namespace switchboard::messaging
