// A phone across the cluster (docs/cluster.md): its user record (sb_users),
// where its session is (sb_sessions claims and handovers), its contacts
// (sb_contacts), kicks that cannot be lost, and presence notices.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <optional>

#include "cluster/cluster_node.h"
#include "messaging/cluster_parts.h"
#include "messaging/durable_write.h"
#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
#include "store/store.h"

namespace switchboard::messaging {

using session::LiveSession;

namespace {

// How long a login waits for the node that held the phone to hand it over.
constexpr auto kHandoverTimeout = std::chrono::milliseconds(2000);

// After a login here, how long the phone imports before it may take notices
// in memory: other nodes' location caches may name its old node for
// kLocationCacheTtl, plus a margin for a KV answer and a scheduler late.
constexpr auto kImportAfterLogin = cluster::kLocationCacheTtl + std::chrono::seconds(1);

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

}  // namespace switchboard::messaging
