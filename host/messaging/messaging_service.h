// The messaging mechanism behind the phone protocol: registration, login,
// sending, receipts, presence, contacts and groups. Policy is asked of the
// plugins (auth decides codes, routing decides destinations, presence decides
// visibility, offline decides expiry and pushes); storage, sessions and the
// SMS and push sinks are the host's and are driven from here.
//
// Guarantees (docs/architecture.md, "Delivery"):
//   * A send is acknowledged only once its rows are durable in the store; the
//     store is the queue, and a message leaves it only when the recipient's
//     Inbox.deliver returned. So an acknowledged message is never lost, across
//     disconnects, plugin swaps and restarts.
//   * Rows get ids in commit order from one writer thread, and sessions deliver
//     in id order, so messages from one sender to one recipient keep their order.
//   * Re-sending a clientMsgId returns the first send's id and stores nothing.
//   * The sender is always the session's phone.
//
// Threads: the public methods run on network threads (the caller's loop);
// promises resolve there. Work that follows a commit is posted from the
// store's writer thread straight to the threads owning the sessions concerned.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <kj/async.h>

#include "session/live_session.h"
#include "session/session_table.h"

namespace switchboard::net {
class NetworkThread;
}
namespace switchboard::store {
class Store;
}
namespace switchboard::plugin {
class PluginManager;
}
namespace switchboard::notify {
class SmsSink;
class PushSink;
}  // namespace switchboard::notify

namespace switchboard::messaging {

struct MessagingOptions {
  std::string version;   // reported by Gateway.serverInfo
  std::string nodeName;  // this node's name in a cluster
  session::SessionLimits limits;
  // Used when the offline plugin cannot be asked (no plugin loaded, or it failed).
  std::int64_t fallbackExpirySeconds = 30 * 24 * 3600;
};

// Traffic counters, read by the metrics endpoint and the activity report.
struct MessagingCounters {
  std::atomic<std::uint64_t> messagesIn{0};   // acknowledged sends (per recipient row)
  std::atomic<std::uint64_t> messagesOut{0};  // rows delivered to phones
  std::atomic<std::uint64_t> duplicates{0};   // re-sent clientMsgIds
  std::atomic<std::uint64_t> logins{0};
  std::atomic<std::uint64_t> failedLogins{0};
  std::atomic<std::uint64_t> codesRequested{0};
  std::atomic<std::uint64_t> registrations{0};
  std::atomic<std::uint64_t> pushes{0};
  std::atomic<std::uint64_t> queueAlerts{0};
  std::atomic<std::uint64_t> slowConsumerKicks{0};
};

// Where a connection is, so a session made on it can be found and closed.
struct ConnectionContext {
  std::size_t threadIndex = 0;
  std::uint64_t connectionId = 0;
  std::string peer;
};

struct SentMessage {
  std::uint64_t id = 0;
  std::int64_t timestamp = 0;
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

class MessagingService final : public session::SessionBackend {
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
  session::SessionTable& sessions() { return sessions_; }

  // ---- Gateway
  kj::Promise<std::uint32_t> requestCode(std::string phone, std::string peer);
  kj::Promise<std::string> verify(std::string phone, std::string code, std::string deviceName);
  // Checks the key and opens a session on the calling thread. Throws on a bad key.
  std::shared_ptr<session::LiveSession> login(std::string phone, std::string key,
                                              proto::Inbox::Client inbox,
                                              const ConnectionContext& connection);

  // ---- Session (`from` is the session's own phone)
  kj::Promise<SentMessage> send(const std::string& from, std::string to, std::string clientMsgId,
                                std::string body);
  kj::Promise<SentMessage> sendGroup(const std::string& from, std::uint64_t group,
                                     std::string clientMsgId, std::string body);
  kj::Promise<void> receipt(const std::string& from, std::vector<std::uint64_t> ids,
                            session::ReceiptKind kind);
  void setPresence(const session::LiveSession& session, session::PresenceState state);
  void typing(const std::string& from, const std::string& to, bool active);
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
  std::vector<GroupView> groups(const std::string& member);

  // ---- Operators (any thread)
  // Kicks the phone's live session; false if it has none.
  bool kick(const std::string& phone, const std::string& reason);
  // Tells every live session why and closes it (shutdown).
  void kickAll(const std::string& reason);
  // Forgets what has expired: queued messages past their expiry (never
  // delivered, by policy), delivered rows past it, and dedup and receipt rows
  // older than the fallback expiry. Any thread; the deletes are queued.
  void sweepExpired();
  // Queues a message from "system" to `phone`, or to every registered user
  // when `phone` is empty. Resolves with the number of recipients once durable.
  // Call on a network thread.
  kj::Promise<std::uint32_t> broadcast(std::string phone, std::string body);

  // ---- session::SessionBackend
  std::vector<session::OutboundMessage> queuedMessages(const std::string& phone,
                                                       std::uint64_t afterId,
                                                       std::size_t limit) override;
  std::vector<session::OutboundReceipt> queuedReceipts(const std::string& phone,
                                                       std::uint64_t afterRow,
                                                       std::size_t limit) override;
  void messagesDelivered(const session::LiveSession& session,
                         std::vector<std::uint64_t> ids) override;
  void receiptsShown(std::vector<std::uint64_t> rowIds) override;
  void sessionEnded(const session::LiveSession& session) override;
  void queueAlert(const session::LiveSession& session, std::size_t length) override;
  void slowConsumer(const session::LiveSession& session, std::size_t length) override;

 private:
  struct Draft;
  struct Committed;

  kj::Promise<SentMessage> commit(Draft draft);
  void afterCommit(const Committed& committed);
  void postToSession(const std::string& phone, std::function<void(session::LiveSession&)> action);
  void fanOutPresence(const std::string& phone, session::PresenceState state,
                      std::int64_t lastSeen);
  // Whether `watcher` may see `user`: reads the contact relation both ways,
  // then asks the presence plugin.
  bool presenceVisible(const std::string& user, const std::string& watcher);
  // The presence plugin's answer when the contact relation is already known.
  bool presencePolicy(const std::string& user, const std::string& watcher, bool watcherHasUser,
                      bool userHasWatcher);
  void kick(const session::SessionRef& ref, const std::string& reason);
  bool isRegistered(const std::string& phone);
  void requireRegistered(const std::vector<std::string>& phones);
  void requireMember(const std::string& phone, std::uint64_t group);
  std::vector<std::string> membersOf(std::uint64_t group);
  std::int64_t nowMs() const;

  const MessagingOptions options_;
  store::Store& store_;
  plugin::PluginManager& plugins_;
  session::SessionTable& sessions_;
  const std::vector<net::NetworkThread*> threads_;
  notify::SmsSink& sms_;
  notify::PushSink& push_;
  CloseConnection closeConnection_;
  MessagingCounters counters_;
};

}  // namespace switchboard::messaging
