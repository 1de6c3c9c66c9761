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
//   the SB_INBOX stream through the transport's outbox (many in flight); the
//   sender's ack settles on JetStream's PubAck (the "durable" of "delivered or
//   durable"), once the node holding the phone has been sent a live notice.
//   That node offers a phone that is *live* there (StreamIntake) the envelope
//   in memory, as it would a message sent on it, and removes it from the
//   stream once the phone has it. For a phone that is not live (just logged
//   in, or the link was away) it *imports*: copies what waits from the stream
//   into its own store (in sending order), and the phone's session pages it
//   as any stored row. What the store holds this way stays in the stream
//   until the phone took the row (StreamCopies), so a node that dies for
//   good strands none of it.
//   While NATS is away, such items are stored here instead (durable, acked);
//   once it is back (and every few seconds), what the store holds for phones
//   that are not here moves into the stream (catchUp).
// - Items of this node's own: what a session here writes to the store (a
//   message from a phone here, a tick for a sender here, not taken from
//   memory in time) is copied into the stream once committed, before its
//   sender's ack, while the link is up (StreamCopy, copyToStream): a node
//   that dies for good strands none of what it acknowledged then.
// - Presence and typing: core NATS notices every node hears; each tells its
//   own sessions that may see them. Contacts are written to sb_contacts first,
//   and every node watches it and keeps its store's copy of every list.
// - Kicks: besides the kick notice, every node watches sb_sessions and closes
//   a session here whose phone's record names a newer login elsewhere.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <memory>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "cluster/cluster_node.h"
#include "messaging/durable_write.h"
#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
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
// After a login here, how long the phone imports before it may take notices
// in memory: other nodes' location caches may name its old node for
// kLocationCacheTtl, plus a margin for a KV answer and a scheduler late.
constexpr auto kImportAfterLogin = cluster::kLocationCacheTtl + std::chrono::seconds(1);
// How often importing phones whose time has come are imported (to go live).
constexpr auto kGoLiveCheck = std::chrono::milliseconds(250);
// How often a node looks for nodes that left the registry (their notices may
// be lost with them, and no one rechecks those).
constexpr auto kDepartureCheck = std::chrono::seconds(2);
// Envelopes a live phone holds that a look for lost notices steps over at
// most (past them, a lost one waits for the phone's next login).
constexpr std::size_t kLostNoticeLook = 1024;

// Answers a notice batch's sender (its window) once nothing here holds it.
// (It may be the last thing to go at shutdown, after the transport.)
class NoticeAnswer {
 public:
  NoticeAnswer(std::function<void(const std::string&)> answer, std::string replyTo)
      : answer_(std::move(answer)), replyTo_(std::move(replyTo)) {}
  ~NoticeAnswer() { answer_(replyTo_); }
  NoticeAnswer(const NoticeAnswer&) = delete;
  NoticeAnswer& operator=(const NoticeAnswer&) = delete;

 private:
  std::function<void(const std::string&)> answer_;
  std::string replyTo_;
};

// Node name -> instance, as a listing of sb_nodes found them.
using NodesSeen = std::unordered_map<std::string, std::uint64_t>;

// The nodes (but `self`) in `seen` that are not in `now`, or are there as
// another instance, by name ("" for none); `seen` becomes `now`. A listing
// that differs from the last one is logged (debug).
std::string nodesLeft(NodesSeen& seen, NodesSeen now, const std::string& self) {
  auto names = [](const NodesSeen& nodes) {
    std::vector<std::string> sorted;
    for (const auto& [name, instance] : nodes) sorted.push_back(name);
    std::sort(sorted.begin(), sorted.end());
    std::string out;
    for (const std::string& name : sorted) out += (out.empty() ? "" : ", ") + name;
    return out;
  };
  if (now != seen) spdlog::debug("cluster: nodes in the registry: {}", names(now));
  NodesSeen gone;
  for (const auto& [name, instance] : seen) {
    auto it = now.find(name);
    if (name != self && (it == now.end() || it->second != instance)) gone[name] = instance;
  }
  seen = std::move(now);
  return names(gone);
}

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

// What names the row an envelope becomes (StreamCopies).
std::string copyKey(const cluster::Envelope& e) {
  if (e.kind == cluster::Envelope::Kind::message) return StreamCopies::messageKey(e.messageId);
  ReceiptKind kind =
      e.kind == cluster::Envelope::Kind::read ? ReceiptKind::read : ReceiptKind::delivered;
  return StreamCopies::receiptKey(e.receiptOf, static_cast<int>(kind), e.sender);
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
  storedRows_.stopCounting();  // a node's logins always read the store
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
  intake_ = std::make_unique<StreamIntake>();
  copies_ = std::make_unique<StreamCopies>();
  node.link().every(kStrandedSweep, [this]() {
    catchUp(false);
    // Stream copies of rows the phones took here leave the stream.
    if (!cluster_->link().isConnected()) return;
    for (const std::string& phone : copies_->phones()) {
      for (std::uint64_t id : copiesTaken(phone))
        cluster_->transport().removeLater(id, [](bool) {});
    }
  });
  node.link().every(kGoLiveCheck, [this]() {
    if (!cluster_->link().isConnected()) return;  // the reconnect's catch-up imports
    for (const std::string& phone :
         intake_->due(StreamIntake::Clock::now(), cluster_->link().disconnects())) {
      try {
        importFromStream(phone);
      } catch (const std::exception& e) {
        spdlog::debug("cluster: import for {}: {}", phone, e.what());
      }
    }
  });
  // A node that left (its record gone from sb_nodes: it stopped, or was
  // killed; or it came back as another instance) may have taken notices with
  // it that no one rechecks (its outbox is gone): every phone live here looks
  // in the stream.
  auto seen = std::make_shared<NodesSeen>();
  node.link().every(kDepartureCheck, [this, seen]() {
    if (!cluster_->link().isConnected()) return;  // the reconnect's catch-up imports
    NodesSeen now;
    try {
      for (const cluster::NodeInfo& info : cluster_->registry().list()) {
        now[info.name] = info.instance;
      }
    } catch (const std::exception& e) {
      spdlog::debug("cluster: listing the nodes: {}", e.what());
      return;
    }
    std::string left = nodesLeft(*seen, std::move(now), options_.nodeName);
    if (!left.empty()) recheckLivePhones("node " + left + " left the cluster");
  });
  // Nothing is published for a phone while rows kept for it here wait to be
  // moved into the stream (publishOrKeep): its items are kept behind them, or,
  // while the rows are moving, wait in the outbox for them.
  node.transport().setHold([this](const std::string& phone) {
    using Hold = cluster::DeliveryTransport::Hold;
    std::lock_guard lock(keptMutex_);
    auto it = keptFor_.find(phone);
    if (it == keptFor_.end()) return Hold::publish;
    return it->second.moving ? Hold::wait : Hold::keep;
  });
  node.transport().setLocator([this](const std::string& phone) -> std::optional<std::string> {
    auto where = cluster_->directory().location(phone);
    if (!where) return std::nullopt;
    return where->node;
  });
  net::NetworkThread& listener = *threads_.front();
  node.transport().listen(listener,
                          [this](cluster::NoticeBatch batch) { noticesArrived(std::move(batch)); });
  node.transport().listenRechecks(
      listener, [this](cluster::NoticeBatch batch) { recheckArrived(std::move(batch)); });
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
  return onClusterWorker<std::optional<cluster::UserEntry>>([this, &directory, phone]() {
           auto user = directory.user(phone);
           // Before the session exists, so none of its sends comes first: a
           // re-send of a message sent on the node that held the phone is
           // answered with its first id. Where the phone was comes from the
           // sb_sessions watch (no read here); a claim the watch has not
           // brought yet is caught by the claim, which loads them again.
           std::string holder;
           {
             std::lock_guard lock(holdersMutex_);
             auto it = heldElsewhere_.find(phone);
             if (it != heldElsewhere_.end()) holder = it->second;
           }
           if (user && !holder.empty()) rememberSendsElsewhere(phone, holder);
           return user;
         })
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
    intake_->loggedIn(phone, where.sessionId, StreamIntake::Clock::now() + kImportAfterLogin);
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
        // What it sent there since the login read it (one listing; only the
        // entries not read then are got).
        rememberSendsElsewhere(phone, previous->holder());
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

// The phone sent from another node before: its sends there within the
// stream's duplicate window (sb_sent) go into this node's dedup cache, so a
// re-send of one here (the client library re-sends what it was not answered,
// with the same clientMsgId) is answered with the first id and delivers
// nothing again. Run at the login, before the session exists (its sends
// could not come first), and again at the claim (what was sent there in
// between). Worker thread.
void MessagingService::rememberSendsElsewhere(const std::string& phone, const std::string& node) {
  std::vector<cluster::SentRecord> sent;
  try {
    sent = cluster_->directory().sentBy(phone, [&](const std::string& clientMsgId) {
      return dedup_.find(phone, clientMsgId).has_value();
    });
  } catch (const std::exception& e) {
    spdlog::debug("cluster: reading the recent sends of {}: {}", phone, e.what());
  }
  for (const cluster::SentRecord& record : sent) {
    if (dedup_.find(phone, record.clientMsgId)) continue;
    dedup_.remember(phone, record.clientMsgId, {record.messageId, record.sentAtMs, 0});
  }
  spdlog::debug("cluster: {} recent sends of {} on {} remembered here", sent.size(), phone, node);
}

void MessagingService::releaseLocation(const LiveSession& session) {
  intake_->ended(session.phone(), session.id());
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
  {
    // Where the phone is or was last, for its next login here: only other
    // nodes (the phones held here are not kept).
    std::string holder = where ? where->holder() : std::string();
    std::lock_guard lock(holdersMutex_);
    if (holder.empty() || holder == options_.nodeName) {
      heldElsewhere_.erase(phone);
    } else {
      heldElsewhere_[phone] = std::move(holder);
    }
  }
  // A released record, or this node's own (a login here kicks locally).
  if (!where || where->node.empty() || where->node == options_.nodeName) return;
  auto ref = sessions_.find(phone);
  // Only a newer login than the session here wins, as a claim does: an older
  // record is one this session's own claim is about to replace.
  if (!ref || where->atMs <= ref->since) return;
  // A new device verified elsewhere sends its kick notice ("replaced by a new
  // device") before its login writes this record, but the notice is handled
  // on the listener thread and this watch on a thread of its own, so on a
  // busy node this may come first: then name the reason the notice would.
  std::string reason =
      deviceReplacedElsewhere(phone) ? "replaced by a new device" : "logged in elsewhere";
  spdlog::info("cluster: {} logged in on {}; closing its session {} here ({})", phone, where->node,
               ref->sessionId, reason);
  kick(*ref, reason);
}

bool MessagingService::deviceReplacedElsewhere(const std::string& phone) {
  std::optional<cluster::UserEntry> user;
  try {
    user = cluster_->directory().user(phone);
  } catch (const std::exception& e) {
    spdlog::debug("cluster: reading the user {}: {}", phone, e.what());
  }
  if (!user) return false;
  // This node's copy is the key its session logged in with (a login makes the
  // copy match the cluster's first; a new device here closes the session).
  bool replaced = false;
  store_.read([&](store::Connection& db) {
    auto row = db.prepare("SELECT key_hash FROM devices WHERE phone = ?").bind(1, phone);
    replaced = row.step() && row.columnBlob(0) != user->keyHash;
  });
  return replaced;
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

// Every envelope moved is noticed (a live phone takes each from its notice),
// flushed before the rows are gone from here.
void MessagingService::tellHolder(const std::string& phone,
                                  const std::vector<cluster::QueuedEnvelope>& moved) {
  if (moved.empty()) return;
  if (auto where = cluster_->directory().location(phone)) {
    cluster_->transport().notify(where->node, moved);
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
  std::string to = envelope.recipient;
  auto held = std::make_shared<Item>(std::move(item));
  // Every item goes through the outbox, kept or not: what it does not publish
  // (NATS away, or behind items kept for the phone: its `hold`) comes back
  // failed, on the outbox thread, in the order of the sends, and is counted
  // and kept here in that order. (Keeping some straight from here, behind
  // rows kept for the phone, could store one ahead of earlier sends the
  // outbox still held.)
  cluster_->transport().send(std::move(envelope), [this, held, to](cluster::SendOutcome outcome) {
    if (outcome.published) {
      if constexpr (std::is_same_v<Item, OutboundMessage>) {
        const cluster::PublishResult& result = *outcome.published;
        if (result.storedMessageId != 0 && result.storedMessageId != held->id) {
          rememberStoredInstead(held->id, {result.storedMessageId, result.storedSentAtMs});
        }
      }
      if (held->ack) std::exchange(held->ack, nullptr)->settle();
      return;
    }
    countKept(to, outcome.error, [this, held, to]() { keepForExport(to, std::move(*held)); });
  });
}

void MessagingService::rememberStoredInstead(std::uint64_t chosenId, SentMessage stored) {
  spdlog::info("cluster: message {} was in the stream already as {}; its sender is answered so",
               chosenId, stored.id);
  std::lock_guard lock(storedInsteadMutex_);
  storedInstead_[chosenId] = stored;
}

SentMessage MessagingService::answeredWith(SentMessage sent) {
  std::lock_guard lock(storedInsteadMutex_);
  auto it = storedInstead_.find(sent.id);
  if (it == storedInstead_.end()) return sent;
  SentMessage stored = it->second;
  storedInstead_.erase(it);
  return stored;
}

void MessagingService::countKept(const std::string& phone, const std::string& why,
                                 std::function<void()> keep) {
  std::lock_guard lock(keptMutex_);
  auto it = keptFor_.find(phone);
  if (it == keptFor_.end()) {
    spdlog::warn("cluster: items for {} kept on this node from now on: {}", phone, why);
    it = keptFor_.emplace(phone, Kept{}).first;
  } else {
    spdlog::debug("cluster: an item for {} kept on this node: {}", phone, why);
  }
  ++it->second.writing;
  ++counters_.clusterKept;
  threads_.front()->post(std::move(keep));
}

template <class Item>
void MessagingService::keepForExport(std::string to, Item item) {
  std::vector<Addressed<Item>> items;
  items.push_back({to, std::move(item)});
  WriteOrigin origin;
  origin.keptForStream = true;  // its export moves it, behind what was kept before
  if constexpr (std::is_same_v<Item, OutboundMessage>) {
    storeMessages(std::move(items), std::move(origin));
  } else {
    storeReceipts(std::move(items), std::move(origin));
  }
  // Committed after the row (the writer keeps the order of writes).
  store_.write([](store::Connection&) {},
               [this, to](std::optional<std::string>) {
                 std::lock_guard lock(keptMutex_);
                 auto it = keptFor_.find(to);
                 if (it != keptFor_.end() && it->second.writing > 0) --it->second.writing;
               });
}

// ---------------------------------------------------------------- live notices

void MessagingService::noticesArrived(cluster::NoticeBatch batch) {
  std::shared_ptr<void> token;
  if (!batch.replyTo.empty()) {
    token = std::make_shared<NoticeAnswer>(cluster_->transport().noticeAnswerer(),
                                           std::move(batch.replyTo));
  }
  std::uint64_t epoch = cluster_->link().disconnects();
  std::vector<std::string> imports;
  for (cluster::QueuedEnvelope& queued : batch.items) {
    std::string phone = queued.envelope.recipient;
    switch (intake_->notice(queued, batch.node, epoch, token)) {
      case StreamIntake::Verdict::offer:
        if (auto address = sessions_.locate(phone)) {
          offerFromStream(*address, std::move(queued), token);
        } else {
          intake_->settled(phone, queued.serverId);  // gone meanwhile: it stays in the stream
        }
        break;
      case StreamIntake::Verdict::gap:
        spdlog::info(
            "cluster: notices for {} may be lost (envelope {} from {} came, {} before it did "
            "not); it imports from the stream",
            phone, queued.serverId, batch.node, queued.prevServerId);
        imports.push_back(std::move(phone));
        break;
      case StreamIntake::Verdict::import:
        imports.push_back(std::move(phone));
        break;
      case StreamIntake::Verdict::notHere:
      case StreamIntake::Verdict::skip:
      case StreamIntake::Verdict::kept:
        break;
    }
  }
  for (std::string& phone : imports) {
    cluster_->link().post([this, phone = std::move(phone)]() { importFromStream(phone); });
  }
}

// A sender got no answer for these notices: they may be lost on the way, or
// their batch's answer was only late (it waits for every envelope in it, and
// one phone's may be kept while it imports, for seconds under a flood). A
// phone here that cannot account for one of them (StreamIntake::unaccounted)
// and finds it still in the stream lost its notice, and imports; one taken
// already is gone from the stream. (Sending a live phone back to importing
// for every late answer stalled it, and made more answers late: a cascade of
// rechecks that gave the saturated cross-node run its seconds-long tail.)
// The stream is read on the worker; the decision is made back here, in the
// order of the notices.
void MessagingService::recheckArrived(cluster::NoticeBatch batch) {
  using Doubts = std::vector<std::pair<std::string, std::vector<std::uint64_t>>>;
  std::unordered_map<std::string, std::vector<std::uint64_t>> byPhone;
  for (const cluster::QueuedEnvelope& queued : batch.items) {
    byPhone[queued.envelope.recipient].push_back(queued.serverId);
  }
  Doubts doubts;
  for (auto& [phone, ids] : byPhone) {
    std::vector<std::uint64_t> unaccounted = intake_->unaccounted(phone, ids);
    if (unaccounted.empty()) {
      spdlog::debug("cluster: recheck for {}: nothing lost ({} in memory, kept or imported)", phone,
                    ids.size());
      continue;
    }
    doubts.emplace_back(phone, std::move(unaccounted));
  }
  if (doubts.empty()) {
    cluster_->transport().answerNotices(batch.replyTo);
    return;
  }
  cluster_->link().post([this, doubts = std::move(doubts), replyTo = batch.replyTo]() mutable {
    for (auto& [phone, ids] : doubts) {
      try {
        ids = cluster_->transport().stillStored(phone, std::move(ids));
      } catch (const std::exception& e) {
        // Cannot tell: taken to be lost (an import finds what is there).
        spdlog::debug("cluster: recheck for {}: reading the stream: {}", phone, e.what());
      }
    }
    threads_.front()->post([this, doubts = std::move(doubts), replyTo]() {
      for (auto& [phone, stored] : doubts) {
        if (stored.empty()) {
          spdlog::debug("cluster: recheck for {}: nothing lost (taken already)", phone);
          continue;
        }
        importIfUnaccounted(phone, stored, "");
      }
      cluster_->transport().answerNotices(replyTo);
    });
  });
}

void MessagingService::importIfUnaccounted(const std::string& phone,
                                           const std::vector<std::uint64_t>& stored,
                                           const std::string& why) {
  if (!intake_->recheck(phone, stored, cluster_->link().disconnects())) return;
  spdlog::info("cluster: notices for {} may be lost{}; it imports from the stream", phone,
               why.empty() ? "" : " (" + why + ")");
  cluster_->link().post([this, phone]() {
    try {
      importFromStream(phone);
    } catch (const std::exception& e) {
      spdlog::debug("cluster: import for {}: {}", phone, e.what());
    }
  });
}

// A node left: notices it sent may be lost with it, and no outbox is left to
// recheck them. Each phone live here looks in the stream past what its imports
// read for an envelope it cannot account for (StreamIntake::unaccounted: not
// in memory, not kept), stepping over at most kLostNoticeLook it holds; one
// found sends it to import, as a recheck would. An envelope whose notice
// from a live node is still on its way looks the same: that phone imports for
// nothing (it is skipped in memory, or read by the import). Worker thread.
void MessagingService::recheckLivePhones(const std::string& why) {
  auto live = intake_->liveNow(cluster_->link().disconnects());
  spdlog::info("cluster: {}; {} live phones look in the stream for lost notices", why, live.size());
  for (const auto& [phone, readUpTo] : live) {
    std::optional<std::uint64_t> unaccounted;
    try {
      std::uint64_t after = readUpTo;
      for (std::size_t looked = 0; !unaccounted && looked < kLostNoticeLook;) {
        auto page = cluster_->transport().pending(phone, after, 16);
        if (page.empty()) break;
        for (const cluster::QueuedEnvelope& queued : page) {
          ++looked;
          after = queued.serverId;
          // A copy of a row written here (StreamCopy, or a spill) is accounted for.
          if (copies_->holds(phone, queued.serverId)) continue;
          if (!intake_->unaccounted(phone, {queued.serverId}).empty()) {
            unaccounted = queued.serverId;
            break;
          }
        }
      }
    } catch (const std::exception& e) {
      spdlog::debug("cluster: looking for lost notices of {}: {}", phone, e.what());
      continue;
    }
    if (!unaccounted) continue;
    threads_.front()->post(
        [this, phone = phone, id = *unaccounted, why]() { importIfUnaccounted(phone, {id}, why); });
  }
}

void MessagingService::goLive(const std::string& phone, StreamIntake::Clock::time_point startedAt,
                              std::uint64_t epoch) {
  auto offers = intake_->goLive(phone, startedAt, epoch, cluster_->link().disconnects());
  if (!offers) return;
  spdlog::debug("cluster: {} takes notices in memory ({} kept ones first)", phone, offers->size());
  auto address = sessions_.locate(phone);
  for (StreamIntake::Kept& kept : *offers) {
    if (address) {
      offerFromStream(*address, std::move(kept.queued), kept.token);
    } else {
      intake_->settled(phone, kept.queued.serverId);
    }
  }
}

void MessagingService::offerFromStream(const session::SessionAddress& address,
                                       cluster::QueuedEnvelope queued,
                                       std::shared_ptr<void> batchToken) {
  net::NetworkThread& here = *threads_.front();
  std::string phone = queued.envelope.recipient;
  std::uint64_t serverId = queued.serverId;
  // Settled once the phone returned it or the store has it: then it leaves the
  // stream. Dropped unsettled (the session ended with it): it stays there.
  auto [promise, ack] = session::DeliveryAck::make(here, 1);
  here.addTask(promise.then(
      [this, phone, serverId, batchToken]() {
        if (copies_->holds(phone, serverId)) {
          // Written here (a spill): it leaves the stream once the row is taken.
          intake_->settled(phone, serverId);
          return;
        }
        cluster_->transport().removeLater(
            serverId, [this, phone, serverId](bool) { intake_->settled(phone, serverId); });
      },
      [this, phone, serverId, batchToken](kj::Exception&&) { intake_->settled(phone, serverId); }));
  cluster::Envelope& e = queued.envelope;
  if (e.kind != cluster::Envelope::Kind::message) {
    OutboundReceipt receipt;
    receipt.messageId = e.receiptOf;
    receipt.by = e.sender;
    receipt.kind =
        e.kind == cluster::Envelope::Kind::read ? ReceiptKind::read : ReceiptKind::delivered;
    receipt.timestamp = e.sentAtMs;
    receipt.streamId = serverId;
    receipt.ack = std::move(ack);
    offerOrStore(address, std::move(phone), std::move(receipt));
    return;
  }
  // A read receipt from the phone must find the sender by the number in the
  // id, as after an import: the store learns the sender once.
  std::uint64_t number = MessageIds::senderOf(e.messageId);
  if (e.sender != MessageIds::kSystemName && !knownUsers_.numberOf(e.sender)) {
    store_.write(
        [sender = e.sender, number, at = e.sentAtMs](store::Connection& db) {
          db.prepare("INSERT OR IGNORE INTO users(phone, created_ms, number) VALUES (?, ?, ?)")
              .bind(1, sender)
              .bind(2, at)
              .bind(3, static_cast<std::int64_t>(number))
              .run();
        },
        [this, sender = e.sender, number](std::optional<std::string> error) {
          if (!error) knownUsers_.remember(sender, number);
        });
  }
  OutboundMessage message;
  message.id = e.messageId;
  message.from = std::move(e.sender);
  message.group = e.group.empty() ? 0 : std::stoull(e.group);
  message.clientMsgId = std::move(e.clientMsgId);
  message.body = std::move(e.body);
  message.timestamp = e.sentAtMs;
  message.streamId = serverId;
  message.ack = std::move(ack);
  offerOrStore(address, std::move(phone), std::move(message));
}

}  // namespace switchboard::messaging
