// The messaging service as one node of a cluster (docs/cluster.md): what
// changes when the host runs with --cluster. Nothing here runs in single-node
// mode; the paths elsewhere reach it behind one `cluster_` null check.
//
// - Users: registration writes the phone's user (key hash, number) to sb_users
//   first, then the store; a login reads sb_users and keeps a copy in the store,
//   so a phone registered on any node logs in on any node, and a device
//   replaced on one node no longer logs in on another. User numbers come from
//   the cluster's counter, message-id blocks too (MessageIds), so ids stay
//   unique whichever node a sender uses.
// - Where a phone is: a login claims sb_sessions/<phone>; the node that held
//   the phone before (open or released) is asked to hand it over: it closes
//   that session and moves what its store holds for the phone into the stream,
//   and only then does the new node import, so order survives the move. The
//   end of a session releases the claim.
// - Delivery: a message or receipt for a phone with no session here goes into
//   the SB_INBOX stream; the sender's ack settles on JetStream's PubAck (the
//   "durable" of "delivered or durable"), and the node holding the phone is
//   notified. That node moves what waits for the phone from the stream into its
//   own store (written, then removed from the stream, oldest first) and the
//   phone's session pages it as any stored row: in order, and once (the phone
//   drops a repeat by id, and an import skips ids the store already has).
//   While NATS is away, such items are stored here instead (durable, acked);
//   once it is back (and every few seconds), what the store holds for phones
//   that are not here moves into the stream (catchUp).
// - Presence and typing: core NATS notices every node hears; each tells its
//   own sessions that may see them. Contacts are written to sb_contacts first,
//   and every node watches it and keeps its store's copy of every list.
// - Kicks: besides the kick notice, every node watches sb_sessions and closes
//   a session here whose phone's record names a newer login elsewhere.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <tuple>

#include "cluster/cluster_node.h"
#include "messaging/durable_write.h"
#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "net/cross_thread_completion.h"
#include "net/network_thread.h"
#include "store/store.h"

namespace switchboard::messaging {

using session::LiveSession;
using session::OutboundMessage;
using session::OutboundReceipt;
using session::ReceiptKind;

namespace {

// Stream envelopes read per request (and rows moved out of the store per export).
constexpr std::size_t kImportPage = 256;
// Envelopes one import puts in order and writes at once.
constexpr std::size_t kImportPass = 10000;
// How long a login waits for the node that held the phone to hand it over.
constexpr auto kHandoverTimeout = std::chrono::milliseconds(2000);
// How often a node looks for rows in its store for phones that are not here.
constexpr auto kStrandedSweep = std::chrono::seconds(3);

// Inserts or refreshes the phone's user and device rows (the store's copy of
// what the cluster holds).
void writeUserRow(store::Connection& db, const cluster::UserEntry& user) {
  db.prepare(
        "INSERT INTO users(phone, created_ms, number) VALUES (?, ?, ?) "
        "ON CONFLICT(phone) DO UPDATE SET number = excluded.number")
      .bind(1, user.phone)
      .bind(2, user.registeredAtMs)
      .bind(3, static_cast<std::int64_t>(user.number))
      .run();
  db.prepare(
        "INSERT OR REPLACE INTO devices(phone, key_hash, device_name, created_ms) "
        "VALUES (?, ?, ?, ?)")
      .bind(1, user.phone)
      .bindBlob(2, user.keyHash)
      .bind(3, user.deviceName)
      .bind(4, user.registeredAtMs)
      .run();
}

}  // namespace

template <class T>
kj::Promise<T> MessagingService::onClusterWorker(std::function<T()> job) {
  auto pending = net::makeCompletion<T>();
  cluster_->link().post([job = std::move(job), completion = pending.completion]() {
    try {
      completion.complete(job());
    } catch (const std::exception& e) {
      completion.fail(e.what());
    }
  });
  return kj::mv(pending.promise);
}
// The instances cluster_groups.cpp uses (the definition lives here only).
template kj::Promise<bool> MessagingService::onClusterWorker(std::function<bool()>);
template kj::Promise<std::uint64_t> MessagingService::onClusterWorker(
    std::function<std::uint64_t()>);

// ---------------------------------------------------------------- joining

void MessagingService::attachCluster(cluster::ClusterNode& node) {
  cluster_ = &node;
  ids_.useClusterBlocks([this](std::function<void(std::optional<std::uint64_t>)> done) {
    cluster_->link().post([this, done = std::move(done)]() {
      try {
        done(cluster_->directory().allocate("message_sequence", MessageIds::kBlock, 1));
      } catch (const std::exception& e) {
        spdlog::warn("cluster: reserving message ids: {}", e.what());
        done(std::nullopt);
      }
    });
  });
  node.link().addReconnectJob([this]() {
    ids_.reserveClusterBlock();
    catchUp(true);
  });
  node.link().every(kStrandedSweep, [this]() { catchUp(false); });
  net::NetworkThread& listener = *threads_.front();
  node.transport().listen(listener, [this](cluster::QueuedEnvelope queued) {
    // Only a phone with a session here imports now; otherwise it waits in the
    // stream for the phone's next login, wherever that is.
    std::string phone = queued.envelope.recipient;
    if (!sessions_.isOnline(phone)) return;
    cluster_->link().post([this, phone]() { importFromStream(phone); });
  });
  node.transport().listenPresence(
      listener, [this](cluster::PresenceNotice notice) { presenceFromElsewhere(notice); });
  // Watches of every node on the directory: a lost kick notice cannot leave a
  // session open, and a contact list changed on any node is copied here.
  node.keepWatching("sb_sessions", [this](const std::function<bool()>& keepGoing) {
    cluster_->directory().watchLocations(
        [this](const std::string& phone, const std::optional<cluster::SessionLocation>& where) {
          locationChanged(phone, where);
        },
        keepGoing);
  });
  node.keepWatching("sb_contacts", [this](const std::function<bool()>& keepGoing) {
    cluster_->directory().watchContacts(
        [this](const std::string& owner, const std::vector<std::string>& contacts) {
          copyContacts(owner, contacts);
        },
        keepGoing);
  });
  node.transport().listenKicks(listener, [this](cluster::KickNotice notice) {
    auto ref = sessions_.find(notice.phone);
    if (ref && notice.sessionId != 0 && ref->sessionId == notice.sessionId) {
      kick(*ref, notice.reason);
    }
    if (notice.replyTo.empty()) return;
    // A handover: what the store holds for the phone goes into the stream,
    // then the asking node may import.
    cluster_->link().post([this, notice = std::move(notice)]() {
      try {
        exportStranded(notice.phone);
        spdlog::info("cluster: handed {} over ({})", notice.phone, notice.reason);
      } catch (const std::exception& e) {
        spdlog::warn("cluster: handing {} over: {}", notice.phone, e.what());
      }
      cluster_->transport().answerHandover(notice);
    });
  });
}

// ---------------------------------------------------------------- users

kj::Promise<std::string> MessagingService::verifyClustered(std::string phone, std::string keyHash,
                                                           std::string deviceName,
                                                           std::string key) {
  cluster::UserEntry fresh;
  fresh.phone = phone;
  fresh.keyHash = std::move(keyHash);
  fresh.deviceName = std::move(deviceName);
  fresh.registeredAtMs = nowMs();
  struct Registered {
    cluster::UserEntry user;
    std::optional<cluster::SessionLocation> where;  // the phone's session before
  };
  cluster::ClusterDirectory& directory = cluster_->directory();
  return onClusterWorker<Registered>([&directory, fresh]() {
           for (int attempt = 0; attempt < 8; ++attempt) {
             cluster::UserEntry user = fresh;
             if (auto existing = directory.user(fresh.phone)) {
               user.number = existing->number;
               user.revision = existing->revision;
             } else {
               user.number = directory.allocate("user_number", 1, MessageIds::kSystemSender + 1);
               directory.bindNumber(user.number, user.phone);
             }
             // Over the revision read: a device verified meanwhile elsewhere
             // makes this a conflict, and the loop decides again.
             if (directory.writeUser(user)) {
               return Registered{user, directory.location(user.phone)};
             }
           }
           throw cluster::ClusterError("registering " + fresh.phone +
                                       " kept racing with other nodes");
         })
      .then([this](Registered registered) {
        return writeDurably(store_, [user = registered.user](
                                        store::Connection& db) { writeUserRow(db, user); })
            .then([this, registered]() {
              ++counters_.registrations;
              const std::string& phone = registered.user.phone;
              kick(phone, "replaced by a new device");
              if (registered.where && registered.where->node != options_.nodeName) {
                cluster_->transport().sendKick(
                    registered.where->node,
                    {phone, registered.where->sessionId, "replaced by a new device"});
              }
            });
      })
      .then([key = std::move(key)]() { return key; });
}

kj::Promise<void> MessagingService::cacheUser(const cluster::UserEntry& user) {
  bool same = false;
  store_.read([&](store::Connection& db) {
    auto row = db.prepare(
                     "SELECT d.key_hash, u.number FROM users u JOIN devices d ON d.phone = u.phone "
                     "WHERE u.phone = ?")
                   .bind(1, user.phone);
    if (row.step()) {
      same = row.columnBlob(0) == user.keyHash &&
             static_cast<std::uint64_t>(row.columnInt(1)) == user.number;
    }
  });
  if (same) return kj::READY_NOW;
  return writeDurably(store_, [user](store::Connection& db) { writeUserRow(db, user); });
}

kj::Promise<void> MessagingService::learnUser(std::string phone) {
  cluster::ClusterDirectory& directory = cluster_->directory();
  return onClusterWorker<std::optional<cluster::UserEntry>>(
             [&directory, phone]() { return directory.user(phone); })
      .then([this, phone](std::optional<cluster::UserEntry> user) {
        if (!user) refuse("unknown recipient " + phone);
        return cacheUser(*user);
      });
}

kj::Promise<std::shared_ptr<LiveSession>> MessagingService::loginClustered(
    std::string phone, std::string key, proto::Inbox::Client inbox, ConnectionContext connection) {
  requirePhone(phone, "phone");
  cluster::ClusterDirectory& directory = cluster_->directory();
  return onClusterWorker<std::optional<cluster::UserEntry>>(
             [&directory, phone]() { return directory.user(phone); })
      .then(
          [this](std::optional<cluster::UserEntry> user) -> kj::Promise<void> {
            if (!user) return kj::READY_NOW;  // not in the cluster: the store decides
            return cacheUser(*user);
          },
          [phone](kj::Exception&& e) -> kj::Promise<void> {
            // NATS away: the store's copy decides, as on a single node.
            spdlog::warn("cluster: login of {} checked locally only: {}", phone,
                         e.getDescription().cStr());
            return kj::READY_NOW;
          })
      .then([this, phone, key = std::move(key), inbox = kj::mv(inbox), connection]() mutable {
        return login(std::move(phone), std::move(key), kj::mv(inbox), connection);
      });
}

// ---------------------------------------------------------------- where a phone is

void MessagingService::claimAndImport(const std::shared_ptr<LiveSession>& live) {
  cluster::SessionLocation where{options_.nodeName, live->id(), live->ref().since, 0};
  std::weak_ptr<LiveSession> weak = live;
  std::size_t threadIndex = live->ref().threadIndex;
  cluster_->link().post([this, weak, where, threadIndex, phone = live->phone()]() {
    bool won = true;
    try {
      std::optional<cluster::SessionLocation> previous;
      won = cluster_->directory().claim(phone, where, &previous);
      if (won && previous && previous->holder() != where.node) {
        // What that node still holds for the phone goes into the stream before
        // this node imports (or, when it does not answer, a sweep later).
        std::uint64_t open = previous->node.empty() ? 0 : previous->sessionId;
        cluster_->transport().handOver(previous->holder(), {phone, open, "logged in elsewhere", {}},
                                       kHandoverTimeout);
      }
      if (won) {
        importContacts(phone);
        importFromStream(phone);
      }
    } catch (const std::exception& e) {
      spdlog::warn("cluster: login of {} not claimed in the cluster: {}", phone, e.what());
    }
    postTo(threadIndex, [weak, won]() {
      auto session = weak.lock();
      if (!session) return;
      if (!won) {
        session->kick("logged in elsewhere");  // a newer login elsewhere holds the phone
        return;
      }
      session->spillDone(session::SpillKind::handOver);  // start paging
    });
  });
}

void MessagingService::releaseLocation(const LiveSession& session) {
  cluster_->link().post([this, phone = session.phone(), id = session.id()]() {
    try {
      cluster_->directory().release(phone, id, options_.nodeName);
    } catch (const std::exception& e) {
      spdlog::debug("cluster: release of {}: {}", phone, e.what());
    }
  });
}

// ---------------------------------------------------------------- contacts

kj::Promise<void> MessagingService::writeContactsThrough(const std::string& owner,
                                                         std::vector<std::string> phones,
                                                         bool add) {
  cluster::ClusterDirectory& directory = cluster_->directory();
  return onClusterWorker<bool>([&directory, owner, phones = std::move(phones), add]() {
           for (const std::string& phone : phones) {
             if (add) {
               directory.addContact(owner, phone);
             } else {
               directory.removeContact(owner, phone);
             }
           }
           return true;
         })
      .ignoreResult();
}

// At login, on the worker: the watch keeps the copy, this catches a change
// the watch has not brought yet.
void MessagingService::importContacts(const std::string& phone) {
  copyContacts(phone, cluster_->directory().contacts(phone));
}

void MessagingService::copyContacts(const std::string& owner,
                                    const std::vector<std::string>& contacts) {
  std::vector<std::string> here;
  store_.read([&](store::Connection& db) {
    auto rows =
        db.prepare("SELECT contact FROM contacts WHERE owner = ? ORDER BY contact").bind(1, owner);
    while (rows.step()) here.push_back(rows.columnText(0));
  });
  if (here == contacts) return;  // both sorted
  std::vector<std::string> gone;
  std::set_difference(here.begin(), here.end(), contacts.begin(), contacts.end(),
                      std::back_inserter(gone));
  std::int64_t now = nowMs();
  store_.writeAndWait([&](store::Connection& db) {
    runForEach(db, "DELETE FROM contacts WHERE owner = ? AND contact = ?", owner, gone);
    auto insert =
        db.prepare("INSERT OR IGNORE INTO contacts(owner, contact, added_ms) VALUES (?, ?, ?)");
    for (const std::string& contact : contacts) {
      insert.reset();
      insert.bind(1, owner).bind(2, contact).bind(3, now).run();
    }
  });
  spdlog::debug("cluster: contacts of {} copied from the cluster ({} removed)", owner, gone.size());
}

// ---------------------------------------------------------------- kicks that cannot be lost

void MessagingService::locationChanged(const std::string& phone,
                                       const std::optional<cluster::SessionLocation>& where) {
  // A released record, or this node's own (a login here kicks locally).
  if (!where || where->node == options_.nodeName) return;
  auto ref = sessions_.find(phone);
  // Only a newer login than the session here wins, as a claim does: an older
  // record is one this session's own claim is about to replace.
  if (!ref || where->atMs <= ref->since) return;
  spdlog::info("cluster: {} logged in on {}; closing its session {} here", phone, where->node,
               ref->sessionId);
  kick(*ref, "logged in elsewhere");
}

// ---------------------------------------------------------------- presence

void MessagingService::publishPresence(const std::string& phone, session::PresenceState state,
                                       std::int64_t lastSeen, bool typing, const std::string& to) {
  cluster::PresenceNotice notice;
  notice.node = options_.nodeName;
  notice.phone = phone;
  notice.state = static_cast<std::uint8_t>(state);
  notice.lastSeen = lastSeen;
  notice.typing = typing;
  notice.to = to;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare("SELECT contact FROM contacts WHERE owner = ?").bind(1, phone);
    while (rows.step()) notice.contacts.push_back(rows.columnText(0));
  });
  // A publish may wait on libnats' buffer: not on a network thread.
  cluster_->link().post(
      [this, notice = std::move(notice)]() { cluster_->transport().publishPresence(notice); });
}

void MessagingService::presenceFromElsewhere(const cluster::PresenceNotice& notice) {
  auto has = [&](const std::string& phone) {
    return std::find(notice.contacts.begin(), notice.contacts.end(), phone) !=
           notice.contacts.end();
  };
  session::OutboundPresence update{notice.phone, static_cast<session::PresenceState>(notice.state),
                                   notice.lastSeen, notice.typing};
  if (!notice.to.empty()) {  // typing, to one phone
    auto address = sessions_.locate(notice.to);
    if (!address) return;
    bool watcherHasUser = false;
    store_.read([&](store::Connection& db) {
      watcherHasUser = db.prepare("SELECT 1 FROM contacts WHERE owner = ? AND contact = ?")
                           .bind(1, notice.to)
                           .bind(2, notice.phone)
                           .step();
    });
    if (presencePolicy(notice.phone, notice.to, watcherHasUser, has(notice.to))) {
      pushPresence(*address, std::move(update));
    }
    return;
  }
  std::vector<std::string> watchers;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare("SELECT owner FROM contacts WHERE contact = ?").bind(1, notice.phone);
    while (rows.step()) watchers.push_back(rows.columnText(0));
  });
  for (const std::string& watcher : watchers) {
    auto address = sessions_.locate(watcher);
    if (!address || !presencePolicy(notice.phone, watcher, true, has(watcher))) continue;
    pushPresence(*address, update);
  }
}

// ---------------------------------------------------------------- catching up

void MessagingService::catchUp(bool reclaim) {
  if (!cluster_->link().isConnected()) return;
  try {
    if (reclaim) {
      for (const session::SessionRef& ref : sessions_.all()) {
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
      }
    }
    std::vector<std::string> phones;
    store_.read([&](store::Connection& db) {
      auto rows = db.prepare(
                        "SELECT recipient FROM queue WHERE expires_ms > ? "
                        "UNION SELECT recipient FROM receipts_queue")
                      .bind(1, nowMs());
      while (rows.step()) phones.push_back(rows.columnText(0));
    });
    for (const std::string& phone : phones) {
      if (phone == MessageIds::kSystemName || sessions_.isOnline(phone)) continue;
      exportStranded(phone);
    }
  } catch (const std::exception& e) {
    spdlog::warn("cluster: catching up: {}", e.what());
  }
}

void MessagingService::exportStranded(const std::string& phone) {
  cluster::DeliveryTransport& transport = cluster_->transport();
  std::optional<std::uint64_t> lastServerId;
  cluster::Envelope last;
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
    for (auto& [row, e] : messages) {
      e.exactlyOnceKey = "x/" + std::to_string(row) + "/" + std::to_string(e.messageId);
      lastServerId = transport.publish(e).serverId;
      last = e;
    }
    for (auto& [row, e] : receipts) {
      e.exactlyOnceKey = "xr/" + std::to_string(row) + "/" + std::to_string(e.receiptOf);
      lastServerId = transport.publish(e).serverId;
      last = e;
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
  if (lastServerId) tellHolder(last, *lastServerId);
}

// ---------------------------------------------------------------- the stream

void MessagingService::importFromStream(const std::string& phone) {
  cluster::DeliveryTransport& transport = cluster_->transport();
  std::size_t imported = 0;
  std::size_t importedMessages = 0;
  for (;;) {
    // One pass reads what waits (up to kImportPass), then writes it in order.
    std::vector<cluster::QueuedEnvelope> items;
    for (std::uint64_t after = 0; items.size() < kImportPass;) {
      auto page = transport.pending(phone, after, kImportPage);
      if (page.empty()) break;
      after = page.back().serverId;
      std::move(page.begin(), page.end(), std::back_inserter(items));
      if (page.size() < kImportPage) break;
    }
    if (items.empty()) break;
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
          "expires_ms) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 "
          "WHERE NOT EXISTS (SELECT 1 FROM queue WHERE recipient = ?1 AND id = ?2)");
      auto count = db.prepare("UPDATE users SET queued = queued + 1 WHERE phone = ?");
      auto receipt = db.prepare(
          "INSERT INTO receipts_queue(recipient, server_id, reader, kind, at_ms) "
          "SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM receipts_queue "
          "WHERE recipient = ?1 AND server_id = ?2 AND reader = ?3 AND kind = ?4)");
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
          if (db.changes() > 0) {
            count.reset();
            count.bind(1, phone).run();
          }
        } else {
          auto kind =
              e.kind == cluster::Envelope::Kind::read ? ReceiptKind::read : ReceiptKind::delivered;
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
    // Durable here first, then gone from the stream: a crash in between
    // leaves a copy the next import skips.
    for (const cluster::QueuedEnvelope& queued : items) transport.remove(queued.serverId);
    imported += items.size();
    for (const cluster::QueuedEnvelope& queued : items) {
      if (queued.envelope.kind == cluster::Envelope::Kind::message) ++importedMessages;
    }
    if (items.size() < kImportPass) break;
  }
  if (imported == 0) return;
  spdlog::debug("cluster: imported {} messages and {} receipts for {} from the stream",
                importedMessages, imported - importedMessages, phone);
  if (auto address = sessions_.locate(phone)) {
    postTo(address->threadIndex, [weak = address->session]() {
      if (auto s = weak.lock()) s->storeChanged();
    });
  }
}

// The notice goes out (flushed) before the sender's ack: a node killed right
// after acknowledging cannot leave an online recipient waiting for its next login.
void MessagingService::tellHolder(const cluster::Envelope& envelope, std::uint64_t serverId) {
  if (auto where = cluster_->directory().location(envelope.recipient)) {
    cluster_->transport().notify(where->node, {serverId, envelope});
  }
}

void MessagingService::publishRemote(std::string to, OutboundMessage message) {
  cluster::Envelope envelope;
  envelope.kind = cluster::Envelope::Kind::message;
  envelope.sender = message.from;
  envelope.recipient = std::move(to);
  envelope.clientMsgId = message.clientMsgId;
  envelope.body = message.body;
  envelope.sentAtMs = message.timestamp;
  envelope.group = message.group == 0 ? std::string() : std::to_string(message.group);
  envelope.messageId = message.id;
  publishOrKeep(std::move(envelope), std::move(message));
}

void MessagingService::publishReceipt(std::string to, OutboundReceipt receipt) {
  cluster::Envelope envelope;
  envelope.kind = receipt.kind == ReceiptKind::read ? cluster::Envelope::Kind::read
                                                    : cluster::Envelope::Kind::delivered;
  envelope.sender = receipt.by;
  envelope.recipient = std::move(to);
  envelope.sentAtMs = receipt.timestamp;
  envelope.receiptOf = receipt.messageId;
  publishOrKeep(std::move(envelope), std::move(receipt));
}

template <class Item>
void MessagingService::publishOrKeep(cluster::Envelope envelope, Item item) {
  auto held = std::make_shared<Item>(std::move(item));
  cluster_->link().post([this, envelope = std::move(envelope), held]() {
    bool inStream = false;
    try {
      auto published = cluster_->transport().publish(envelope);
      inStream = true;
      tellHolder(envelope, published.serverId);
      if (held->ack) std::exchange(held->ack, nullptr)->settle();
    } catch (const std::exception& e) {
      if (inStream) {
        // In the stream already; only the notice was lost. The phone's next
        // login (or the next notice for it) imports it.
        spdlog::debug("cluster: notice for {} not sent: {}", envelope.recipient, e.what());
        if (held->ack) std::exchange(held->ack, nullptr)->settle();
        return;
      }
      spdlog::warn("cluster: an item for {} kept on this node: {}", envelope.recipient, e.what());
      threads_.front()->post([this, held, to = envelope.recipient]() {
        std::vector<Addressed<Item>> items;
        items.push_back({to, std::move(*held)});
        if constexpr (std::is_same_v<Item, OutboundMessage>) {
          storeMessages(std::move(items), WriteOrigin{});
        } else {
          storeReceipts(std::move(items), WriteOrigin{});
        }
      });
    }
  });
}

}  // namespace switchboard::messaging
