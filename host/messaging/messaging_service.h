// The messaging mechanism behind the phone protocol: registration, login,
// sending, receipts, presence, contacts and groups. Policy is asked of the
// plugins (auth decides codes, routing decides destinations, presence decides
// visibility, offline decides expiry and pushes); storage, sessions and the
// SMS and push sinks are the host's and are driven from here.
//
// The service is one class whose parts live in files named for them:
// registration.cpp (codes, keys, login), delivery.cpp (send, group send,
// broadcast, and where a message goes), queue_writes.cpp (writing what
// waits to the store), receipts.cpp, presence.cpp,
// directory.cpp (contacts, groups, users) and messaging_service.cpp (the
// durable side of sessions: spills, paging, what was delivered).
//
// Guarantees (docs/architecture.md, "Sessions and delivery"):
//   * A send is acknowledged only once every copy is delivered to its phone
//     (Inbox.deliver returned) or durable in the store. A message to an online
//     phone goes from the sender's thread to the recipient's session in memory
//     and touches no disk unless it is not taken within durableAfter; a message
//     to an offline phone is written (group commit) and then acknowledged. So
//     an acknowledged message is never lost, across disconnects, plugin swaps,
//     restarts and kill -9. (In a cluster, a row written with the link up is
//     also copied into the stream before the ack, so it survives the node:
//     StreamCopy, docs/cluster.md "Stream copies".)
//   * Per (sender, recipient), messages arrive in the order they were sent:
//     while any of a sender's messages to a recipient is unacknowledged, the
//     next one takes the same way (see LiveSession and SenderRoute).
//   * Re-sending an acknowledged clientMsgId returns the first send's id and
//     delivers nothing twice (DedupCache, and dedup rows for stored messages).
//   * A message the phone returned is never delivered to it again: its stored
//     row (if any) is deleted, and a new session of the phone pages only after
//     such deletes are durable.
//   * The sender is always the session's phone.
//
// Threads: the public methods run on network threads (the caller's loop);
// promises resolve there. Work that follows a store commit is posted from the
// writer thread straight to the threads owning the sessions concerned.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <kj/async.h>

#include "messaging/dedup_cache.h"
#include "messaging/known_users.h"
#include "messaging/message_ids.h"
#include "messaging/stored_rows.h"
#include "messaging/watched_phones.h"
#include "session/live_session.h"
#include "session/session_table.h"

namespace switchboard::net {
class NetworkThread;
}
namespace switchboard::store {
class Store;
class Connection;
}  // namespace switchboard::store
namespace switchboard::plugin {
class PluginManager;
}
namespace switchboard::notify {
class SmsSink;
class PushSink;
}  // namespace switchboard::notify
namespace switchboard::cluster {
class ClusterNode;
struct UserEntry;
struct GroupEntry;
struct Envelope;
struct QueuedEnvelope;
struct NoticeBatch;
struct PresenceNotice;
struct SessionLocation;
}  // namespace switchboard::cluster

namespace switchboard::messaging {

class StreamIntake;
class StreamCopies;
struct StreamCopy;

struct MessagingOptions {
  std::string version;   // reported by Gateway.serverInfo
  std::string nodeName;  // this node's name in a cluster
  session::SessionLimits limits;
  // Used when the offline plugin cannot be asked (no plugin loaded, or it failed).
  std::int64_t fallbackExpirySeconds = 30 * 24 * 3600;
  // Acknowledged sends remembered in memory for dedup.
  std::size_t dedupEntries = 262144;
};

// Traffic counters, read by the metrics endpoint and the activity report.
struct MessagingCounters {
  std::atomic<std::uint64_t> messagesIn{0};      // accepted sends (per recipient copy)
  std::atomic<std::uint64_t> messagesOut{0};     // copies delivered to phones
  std::atomic<std::uint64_t> messagesStored{0};  // copies written to the store
  std::atomic<std::uint64_t> duplicates{0};      // re-sent clientMsgIds
  std::atomic<std::uint64_t> logins{0};
  std::atomic<std::uint64_t> failedLogins{0};
  std::atomic<std::uint64_t> codesRequested{0};
  std::atomic<std::uint64_t> registrations{0};
  std::atomic<std::uint64_t> pushes{0};
  std::atomic<std::uint64_t> queueAlerts{0};
  std::atomic<std::uint64_t> slowConsumerKicks{0};
  // Cluster mode: items for phones elsewhere kept in this node's store (NATS
  // away, or behind such items), to be moved into the stream later.
  std::atomic<std::uint64_t> clusterKept{0};
  // Cluster mode: items of this node's own written to its store and copied
  // into the stream (at once, or later as owed copies): docs/cluster.md.
  std::atomic<std::uint64_t> clusterCopied{0};
};

// Where a connection is, so a session made on it can be found and closed.
struct ConnectionContext {
  std::size_t threadIndex = 0;
  std::uint64_t connectionId = 0;
  std::string peer;
};

struct ContactView {
  std::string phone;
  bool registered = false;
  session::PresenceState state = session::PresenceState::offline;
  std::int64_t lastSeen = 0;
};

struct GroupView {
  std::uint64_t id = 0;
  std::string name;
  std::string owner;
  std::vector<std::string> members;
};

class MessagingService final : public session::SessionBackend, public session::TickSender {
 public:
  // `closeConnection(threadIndex, connectionId)` drops a connection; it is
  // called on that connection's thread.
  using CloseConnection = std::function<void(std::size_t, std::uint64_t)>;

  MessagingService(MessagingOptions options, store::Store& store, plugin::PluginManager& plugins,
                   session::SessionTable& sessions, std::vector<net::NetworkThread*> threads,
                   notify::SmsSink& sms, notify::PushSink& push, CloseConnection closeConnection);
  ~MessagingService();

  const MessagingOptions& options() const { return options_; }
  const MessagingCounters& counters() const { return counters_; }
  // Cluster mode: rows of this node's own with no copy in the stream yet (owed
  // a copy): what only this node's store holds. 0 on a single node.
  std::size_t clusterCopiesOwed() const;
  session::SessionTable& sessions() { return sessions_; }
  // Operators' writes to a phone's device bracket themselves with its key changes.
  KnownUsers& knownUsers() { return knownUsers_; }
  std::size_t dedupEntries() const { return dedup_.size(); }

  // ---- Gateway (registration.cpp)
  kj::Promise<std::uint32_t> requestCode(std::string phone, std::string peer);
  kj::Promise<std::string> verify(std::string phone, std::string code, std::string deviceName);
  // Checks the key and opens a session on the calling thread. Throws on a bad key.
  std::shared_ptr<session::LiveSession> login(std::string phone, std::string key,
                                              proto::Inbox::Client inbox,
                                              const ConnectionContext& connection);

  // ---- Cluster mode (cluster_*.cpp, docs/cluster.md)
  // From now on users, phones' locations and deliveries to phones that are not
  // here go through `node`, which must outlive every network thread's work and
  // the service's (the host destroys it after stopping the threads). Call once,
  // before phones log in. Without it the service is a single node and touches
  // nothing of NATS (one null check on the paths below).
  void attachCluster(cluster::ClusterNode& node);
  bool clustered() const { return cluster_ != nullptr; }
  // login() for cluster mode: reads the phone's user from the cluster first
  // (a phone registered on another node, or a device replaced there) and keeps
  // a copy in the store; with NATS away, the store's copy decides.
  kj::Promise<std::shared_ptr<session::LiveSession>> loginClustered(std::string phone,
                                                                    std::string key,
                                                                    proto::Inbox::Client inbox,
                                                                    ConnectionContext connection);

  // ---- Session (delivery.cpp, receipts.cpp; `sender` is the calling session)
  kj::Promise<SentMessage> send(session::LiveSession& sender, std::string to,
                                std::string clientMsgId, std::string body);
  kj::Promise<SentMessage> sendGroup(session::LiveSession& sender, std::uint64_t group,
                                     std::string clientMsgId, std::string body);
  // Resolves once every receipt is shown to its sender or durable.
  kj::Promise<void> receipt(const session::LiveSession& reader, std::vector<std::uint64_t> ids,
                            session::ReceiptKind kind);

  // ---- Presence (presence.cpp)
  void setPresence(const session::LiveSession& session, session::PresenceState state);
  void typing(const session::LiveSession& session, const std::string& to, bool active);

  // ---- Directory (directory.cpp)
  kj::Promise<void> addContacts(const std::string& owner, std::vector<std::string> phones);
  kj::Promise<void> removeContacts(const std::string& owner, std::vector<std::string> phones);
  std::vector<ContactView> contacts(const std::string& owner);
  kj::Promise<std::uint64_t> createGroup(const std::string& owner, std::string name,
                                         std::vector<std::string> members);
  kj::Promise<void> addMembers(const std::string& caller, std::uint64_t group,
                               std::vector<std::string> members);
  kj::Promise<void> removeMembers(const std::string& caller, std::uint64_t group,
                                  std::vector<std::string> members);
  kj::Promise<void> leaveGroup(const std::string& caller, std::uint64_t group);
  kj::Promise<std::vector<GroupView>> groups(const std::string& member);

  // ---- Operators (any thread)
  // Kicks the phone's live session; false if it has none.
  bool kick(const std::string& phone, const std::string& reason);
  // Tells every live session why and closes it (shutdown).
  void kickAll(const std::string& reason);
  // After an operator deleted `phone` from the store: nothing cached says it
  // exists any more.
  void forgetUser(const std::string& phone);
  // Forgets what has expired: queued messages past their expiry (never
  // delivered, by policy), and dedup and receipt rows older than the fallback
  // expiry. Any thread; the deletes are queued.
  void sweepExpired();
  // Queues a message from "system" to `phone`, or to every registered user
  // when `phone` is empty. Resolves with the number of recipients once
  // durable. Call on a network thread.
  kj::Promise<std::uint32_t> broadcast(std::string phone, std::string body);

  // ---- session::SessionBackend (messaging_service.cpp)
  std::vector<session::OutboundMessage> queuedMessages(const std::string& phone,
                                                       std::uint64_t afterSeq, std::size_t limit,
                                                       std::uint64_t holder) override;
  std::vector<session::OutboundReceipt> queuedReceipts(const std::string& phone,
                                                       std::uint64_t afterSeq, std::size_t limit,
                                                       std::uint64_t holder) override;
  void spillMessages(session::LiveSession& session, session::SpillKind kind,
                     std::vector<session::OutboundMessage> items) override;
  void spillReceipts(session::LiveSession& session, session::SpillKind kind,
                     std::vector<session::OutboundReceipt> items) override;
  void messagesDelivered(const session::LiveSession& session,
                         std::vector<session::OutboundMessage> items) override;
  void receiptsShown(const session::LiveSession& session,
                     std::vector<session::OutboundReceipt> items) override;
  void sessionEnded(const session::LiveSession& session) override;
  void queueAlert(const session::LiveSession& session, std::size_t length) override;
  void slowConsumer(const session::LiveSession& session, std::size_t length) override;

  // session::TickSender: a "delivered" tick that did not ride in its send's reply.
  void sendTick(const std::string& to, session::OutboundReceipt tick) override;

 private:
  // A copy of a message or receipt and the phone it is for.
  template <class Item>
  struct Addressed {
    std::string recipient;
    Item item;
  };
  using AddressedMessage = Addressed<session::OutboundMessage>;
  using AddressedReceipt = Addressed<session::OutboundReceipt>;

  // How a write of queued items came about: who holds the rows, who to tell.
  struct WriteOrigin {
    std::weak_ptr<session::LiveSession> session;  // the spilling session, if any
    session::SpillKind kind = session::SpillKind::handOver;
    std::uint64_t holder = 0;  // 0: nobody holds the rows, the phone pages them
    session::SpillFeed feed = session::SpillFeed::both;  // which of its feeds wrote
    // Cluster mode: items kept here because the outbox did not publish them
    // (keepForExport): their rows are moved into the stream later, in order,
    // and get no stream copy now (see StreamCopy).
    bool keptForStream = false;
  };

  // ---- delivery.cpp
  // A group send's copies for sessions on other threads, posted once per
  // thread when the fan-out is done rather than once per member (delivery.cpp).
  struct FanOut;
  // Hands `message` to `to` the way the sender's earlier unacknowledged items
  // to `to` went, or else to `located` (`to`'s session as the send found it in
  // the table, std::nullopt: the store). A session that ended since takes
  // nothing: the item is stored, as a session that ends later writes what it
  // holds. With `fanOut`, a copy for a session on another thread waits in it
  // (FanOut::post sends it).
  void route(session::LiveSession& sender, std::string to, session::OutboundMessage message,
             std::optional<session::SessionAddress> located, FanOut* fanOut = nullptr);
  // On the thread of `address`: offers the item to that session, or stores it
  // when the session is gone.
  template <class Item>
  void offerOrStore(const session::SessionAddress& address, std::string recipient, Item item);
  template <class Item>
  void offerOrStoreHere(const std::weak_ptr<session::LiveSession>& session, std::string recipient,
                        Item item);

  // ---- queue_writes.cpp
  // Writes items to the store (group commit), then tells the sessions
  // concerned, settles or fails each item's ack ("the message could not be
  // stored: ..."), and pushes to phones that are away.
  void storeMessages(std::vector<AddressedMessage> items, WriteOrigin origin);
  void storeReceipts(std::vector<AddressedReceipt> items, WriteOrigin origin);
  // Deletes stored rows the phones have taken; the phone's next session pages
  // only after this is durable.
  void forgetRows(const std::string& phone, const char* table,
                  std::vector<session::Durability> rows);
  // Calls made while an earlier write of rows still waits last in the store's
  // queue share it: a RowsWrite holds a QueueWrite of messages, one of
  // receipts, and a ForgetWrite of rows to delete.
  template <class Item>
  struct QueueWrite;
  struct ForgetWrite;
  struct RowsWrite;
  template <class Item>
  void queueForWrite(std::vector<Addressed<Item>> items, WriteOrigin origin);
  // Adds `count` items to the last queued RowsWrite (`add`), or to a new one.
  void joinOrWrite(std::size_t count, const std::function<void(RowsWrite&)>& add);
  // On the writer thread: the rows of a write, then what follows its commit
  // (or failure, `error`).
  void writeRows(store::Connection& db, RowsWrite& write);
  void writeRows(store::Connection& db, QueueWrite<session::OutboundMessage>& write);
  void writeRows(store::Connection& db, QueueWrite<session::OutboundReceipt>& write);
  void eraseRows(store::Connection& db, ForgetWrite& write);
  void written(RowsWrite& write, const std::optional<std::string>& error);
  template <class Item>
  void written(QueueWrite<Item>& write, const std::optional<std::string>& error);
  void forgotten(ForgetWrite& write, const std::optional<std::string>& error);

  // ---- messaging_service.cpp
  // After a commit: the session that wrote (spillDone) or the phone's current
  // session (storeChanged) learns that rows for it are visible.
  void rowsCommitted(const std::string& phone, const WriteOrigin& origin);

  // ---- delivery.cpp
  // Once `ack` settles: remembers the send under `key` (its sender, clientMsgId) and answers it.
  kj::Promise<SentMessage> acknowledged(kj::Promise<std::int64_t> ack, DedupCache::Key key,
                                        SentMessage sent);
  std::optional<SentMessage> findDuplicate(DedupCache::Key key, const std::string& from,
                                           const std::string& clientMsgId);

  // ---- receipts.cpp
  void routeReceipt(const std::string& to, session::OutboundReceipt receipt);

  // ---- presence.cpp
  void fanOutPresence(const std::string& phone, session::PresenceState state,
                      std::int64_t lastSeen);
  // Whether `watcher` may see `user`: reads the contact relation both ways,
  // then asks the presence plugin.
  bool presenceVisible(const std::string& user, const std::string& watcher);
  // The presence plugin's answer when the contact relation is already known.
  bool presencePolicy(const std::string& user, const std::string& watcher, bool watcherHasUser,
                      bool userHasWatcher);
  void pushPresence(const session::SessionAddress& address, session::OutboundPresence update);

  // ---- delivery.cpp
  // sendGroup once the group's members are known here.
  kj::Promise<SentMessage> sendToGroup(session::LiveSession& sender, std::uint64_t group,
                                       std::string clientMsgId, std::string body);

  // ---- directory.cpp
  bool isRegistered(const std::string& phone);
  std::optional<std::string> phoneOfNumber(std::uint64_t number);
  void requireRegistered(const std::vector<std::string>& phones);
  void requireMember(const std::string& phone, std::uint64_t group);
  std::vector<std::string> membersOf(std::uint64_t group);

  // ---- cluster_*.cpp (cluster_messaging.cpp lists the parts)
  // Runs `job` on the cluster link's worker (where NATS calls may block); the
  // promise resolves on the calling network thread, or rejects with the job's error.
  template <class T>
  kj::Promise<T> onClusterWorker(std::function<T()> job);
  kj::Promise<std::string> verifyClustered(std::string phone, std::string keyHash,
                                           std::string deviceName, std::string key);
  // Makes the store's copy of `user` match the cluster's (a durable write, only
  // when they differ).
  kj::Promise<void> cacheUser(const cluster::UserEntry& user);
  // Cluster mode, `phone` unknown here: learns it from the cluster, or refuses
  // with "unknown recipient PHONE".
  kj::Promise<void> learnUser(std::string phone);
  // The message goes into the cluster's stream (SB_INBOX); its ack settles on
  // JetStream's PubAck; the node holding the phone is told.
  void publishRemote(std::string to, session::OutboundMessage message);
  void publishReceipt(std::string to, session::OutboundReceipt receipt);
  // Hands the envelope to the transport's outbox, which publishes it, tells
  // the recipient's node, then settles the item's ack here; if the publish
  // fails the item is stored here instead.
  template <class Item>
  void publishOrKeep(cluster::Envelope envelope, Item item);
  // Outbox thread: counts one more item kept here for `phone` (the outbox did
  // not publish it, `why`), to be moved into the stream by exportStranded,
  // and posts `keep` (keepForExport) to the first network thread under the
  // same lock, so kept items are stored in the order the outbox failed them
  // (the order of the sends).
  void countKept(const std::string& phone, const std::string& why, std::function<void()> keep);
  // Stores the item here (the first network thread), then uncounts it.
  template <class Item>
  void keepForExport(std::string to, Item item);
  // Whether the store holds queued rows for `phone`.
  bool rowsFor(const std::string& phone);
  // Live notices from other nodes (listener thread): envelopes for phones
  // live here are offered to their sessions in memory, the others wait for an
  // import (see StreamIntake).
  void noticesArrived(cluster::NoticeBatch batch);
  // A recheck from a sender whose notices got no answer (listener thread):
  // phones here that may have missed them import (StreamIntake::recheck).
  void recheckArrived(cluster::NoticeBatch batch);
  // A node left the cluster (cluster_delivery.cpp): worker thread.
  void recheckLivePhones(const std::string& why);
  // Listener thread: the phone imports if one of `stored` is still unaccounted for.
  void importIfUnaccounted(const std::string& phone, const std::vector<std::uint64_t>& stored,
                           const std::string& why);
  // Listener thread: offers one envelope from the stream to the phone's
  // session; once the phone or the store has it, it leaves the stream.
  void offerFromStream(const session::SessionAddress& address, cluster::QueuedEnvelope queued,
                       std::shared_ptr<void> batchToken);
  // Listener thread, after an import of `phone` began at `startedAt` in
  // link epoch `epoch`: the phone may go live (StreamIntake::goLive).
  void goLive(const std::string& phone, std::chrono::steady_clock::time_point startedAt,
              std::uint64_t epoch);
  // On the worker: notifies the node holding `phone` (if any) of `moved`.
  void tellHolder(const std::string& phone, const std::vector<cluster::QueuedEnvelope>& moved);
  // After a login here: claim the phone in sb_sessions, close its session on
  // the node that held it, import what waits for it in the stream, then let
  // the session page (it was started awaiting the store).
  void claimAndImport(const std::shared_ptr<session::LiveSession>& live);
  void rememberSendsElsewhere(const std::string& phone, const std::string& node);
  // On the worker: moves what waits for `phone` in the stream into the store
  // (it stays in the stream until the phone took the row: StreamCopies), oldest first.
  void importFromStream(const std::string& phone);
  // Its passes; `readUpTo` is the last server id read by a pass written here.
  void importPasses(const std::string& phone, std::optional<std::uint64_t>& readUpTo);
  void releaseLocation(const session::LiveSession& session);
  // On the worker, after NATS came back and every few seconds: claims again
  // the phones whose sessions are here (closing those a newer login elsewhere
  // took) and imports what waits for them (notices sent meanwhile were lost),
  // then moves what this node's store holds for phones with no session
  // here into the stream (kept while degraded, or left by a session that
  // ended before taking it), so it reaches the phone on any node, and copies
  // into it the rows owed a copy (copyOwed).
  void catchUp(bool reclaim);
  // Presence across nodes: every node hears every phone's changes and tells
  // its own sessions that may see them (the contact relation both ways: the
  // watcher's from this node's store, the phone's from the notice).
  void publishPresence(const std::string& phone, session::PresenceState state,
                       std::int64_t lastSeen, bool typing, const std::string& to);
  void presenceFromElsewhere(const cluster::PresenceNotice& notice);
  void exportStranded(const std::string& phone);
  // Contacts in a cluster: sb_contacts is the list. A change is written there
  // first (refused while NATS is away), then to this node's store; every node
  // watches sb_contacts and makes its store's copy of each owner's list match
  // (copyContacts), and a login copies the phone's list once more.
  kj::Promise<void> writeContactsThrough(const std::string& owner, std::vector<std::string> phones,
                                         bool add);
  // One round of exportStranded: moves the rows the store holds for `phone` now.
  void exportRows(const std::string& phone);
  // The phone's stream copies whose rows the phone took (StreamCopies),
  // forgotten: the caller removes them from the stream.
  std::vector<std::uint64_t> copiesTaken(const std::string& phone);
  // Stream copies of rows written here from memory (a session's spill).
  template <class Item>
  void copiesSpilled(const std::string& phone, const std::vector<Item>& items);
  // Store writer thread, after the rows of `copies` committed: the worker
  // copies the rows owed a copy first (copyOwed), then publishes each into
  // the stream (in order, one PubAck each), records it in StreamCopies and
  // settles its ack. Once one publish fails (or rows owed are left), the rest
  // are settled without a copy (durable here; owed a copy, logged).
  void copyToStream(std::vector<StreamCopy> copies);
  // On the worker, with the link up: publishes the copy of each row owed one
  // (StreamCopies::owed) that the store still holds, in commit order, and
  // records it. No store read when nothing is owed; else one per 256 rows
  // owed. False when rows are still owed (the link is away, or a publish or
  // the read failed: logged): the next sweep, or write, tries again.
  bool copyOwed();
  // What an item of a committed write becomes in the stream: the envelope
  // its row would be moved into the stream as (exportRows), same key.
  static cluster::Envelope copyOf(const std::string& recipient, session::OutboundMessage& message,
                                  std::int64_t row);
  static cluster::Envelope copyOf(const std::string& recipient, session::OutboundReceipt& receipt,
                                  std::int64_t row);
  void importContacts(const std::string& phone);
  // Not on a network thread: this node's rows for `owner` become `contacts`
  // (a durable write, only when they differ).
  void copyContacts(const std::string& owner, const std::vector<std::string>& contacts);
  // The sb_sessions watch: a phone whose record now names a newer login on
  // another node has its session here closed ("logged in elsewhere"), kick
  // notice or not. Thread-safe.
  void locationChanged(const std::string& phone,
                       const std::optional<cluster::SessionLocation>& where);
  // Watch thread: whether the cluster's key for `phone` is no longer the one
  // this node's copy holds (a new device was verified on another node).
  bool deviceReplacedElsewhere(const std::string& phone);

  // ---- cluster_groups.cpp: groups in cluster mode. The directory.cpp and
  // delivery.cpp entry points validate their arguments as on one node, then
  // hand over to these; the refusals are the same words.
  kj::Promise<std::uint64_t> createGroupClustered(std::string owner, std::string name,
                                                  std::vector<std::string> members);
  kj::Promise<void> addMembersClustered(std::string caller, std::uint64_t id,
                                        std::vector<std::string> members);
  kj::Promise<void> removeMembersClustered(std::string caller, std::uint64_t id,
                                           std::vector<std::string> members);
  kj::Promise<void> leaveGroupClustered(std::string caller, std::uint64_t id);
  // Brings the store's copy of group `id` (or of every group `member` is or
  // was in) up to date with the cluster's record.
  kj::Promise<void> syncGroup(std::uint64_t id);
  kj::Promise<void> syncGroupsOf(std::string member);
  // On the worker: the record changed by `change` (which refuses, or leaves
  // the record to write), written over the revision read; the member index
  // and the store's copy follow.
  kj::Promise<void> changeGroupClustered(
      std::uint64_t id, std::function<void(std::optional<cluster::GroupEntry>&)> change);
  cluster::GroupEntry changeGroupRecord(
      std::uint64_t id, const std::function<void(std::optional<cluster::GroupEntry>&)>& change);
  // On the worker: the record of group `id` (nullopt: none), after making the
  // store's copy match it (a durable write only when its revision moved).
  std::optional<cluster::GroupEntry> syncGroupCopy(std::uint64_t id);
  // On the worker: refuses "unknown user PHONE" for a phone neither this
  // node nor the cluster knows.
  void requireRegisteredInCluster(const std::vector<std::string>& phones);

  // ---- messaging_service.cpp
  void kick(const session::SessionRef& ref, const std::string& reason);
  // Runs `fn` on network thread `threadIndex`: now if that is this thread.
  void postTo(std::size_t threadIndex, std::function<void()> fn);
  bool deletesInFlight(const std::string& phone);
  std::int64_t nowMs() const;
  // At start: the store's newest dedup rows into dedup_ (see DedupCache).
  void loadDedupRows();
  // At start: each phone's rows waiting in the store into storedRows_, and the
  // phones someone has as a contact into watched_.
  void loadLoginFacts();

  const MessagingOptions options_;
  store::Store& store_;
  plugin::PluginManager& plugins_;
  session::SessionTable& sessions_;
  const std::vector<net::NetworkThread*> threads_;
  notify::SmsSink& sms_;
  notify::PushSink& push_;
  CloseConnection closeConnection_;
  MessagingCounters counters_;
  MessageIds ids_;
  DedupCache dedup_;
  KnownUsers knownUsers_;
  // Single node: what a login needs not read (stored_rows.h, watched_phones.h).
  StoredRows storedRows_;
  WatchedPhones watched_;
  // Deletes of delivered rows not yet durable, per phone (see login).
  std::mutex deletesMutex_;
  std::unordered_map<std::string, std::uint32_t> deletesInFlight_;
  cluster::ClusterNode* cluster_ = nullptr;  // cluster mode only
  std::unique_ptr<StreamIntake> intake_;     // cluster mode only
  std::unique_ptr<StreamCopies> copies_;     // cluster mode only
  // Phones this node keeps rows for, for the stream (NATS was away), with the
  // count of such writes not yet committed: later items for them are kept
  // too, so none overtakes another, until exportStranded moves them. While it
  // does (`moving`), later items wait in the outbox instead (Hold::wait), and
  // are published once the rows are all in the stream.
  struct Kept {
    std::size_t writing = 0;  // kept items not yet committed
    bool moving = false;      // exportStranded is moving the rows into the stream
  };
  // Cluster mode: sends whose message the stream held already (a repeated
  // clientMsgId, first sent on a node that died before answering): the id
  // and time of that copy, which the sender is answered with instead of the
  // ones chosen here. Written by the outbox before the ack settles, taken by
  // acknowledged() (answeredWith).
  std::mutex storedInsteadMutex_;
  std::unordered_map<std::uint64_t, SentMessage> storedInstead_;
  void rememberStoredInstead(std::uint64_t chosenId, SentMessage stored);
  SentMessage answeredWith(SentMessage sent);
  std::mutex keptMutex_;
  std::unordered_map<std::string, Kept> keptFor_;
  // Cluster mode: phone -> the node holding it, or that held it last, when
  // that is another node (the sb_sessions watch keeps it; a login reads it).
  std::mutex holdersMutex_;
  std::unordered_map<std::string, std::string> heldElsewhere_;
  // Group id -> the record revision the store's copy matches (worker only).
  std::unordered_map<std::uint64_t, std::uint64_t> syncedGroups_;
};

}  // namespace switchboard::messaging
