#include "messaging/messaging_service.h"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <set>
#include <variant>

#include "messaging/durable_write.h"
#include "messaging/field_rules.h"
#include "net/network_thread.h"
#include "notify/push_sink.h"
#include "notify/sms_sink.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::messaging {

using plugin::AuthPlugin;
using plugin::OfflinePlugin;
using plugin::PresencePlugin;
using plugin::RoutingPlugin;
using session::LiveSession;
using session::OutboundMessage;
using session::OutboundPresence;
using session::OutboundReceipt;
using session::PresenceState;
using session::ReceiptKind;

namespace {

constexpr std::size_t kKeyBytes = 32;
// The sender of operator broadcasts; not a phone number, so no phone can be it.
constexpr const char* kSystemSender = "system";

std::string keyHash(std::string_view key) {
  std::string hash(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(hash.data()), hash.size(),
                     reinterpret_cast<const unsigned char*>(key.data()), key.size(), nullptr, 0);
  return hash;
}

// Unwraps a plugin call, turning "no plugin" or a plugin's throw into a
// refusal that names the kind.
template <class R>
R pluginValue(plugin::CallResult<R> result, std::string_view kind) {
  if (!result.ok()) refuse(std::string(kind) + " plugin failed: " + result.error);
  return std::move(*result.value);
}

std::vector<std::string> distinct(std::vector<std::string> phones) {
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (std::string& p : phones) {
    if (seen.insert(p).second) out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

// A message on its way into the store: one row per recipient.
struct MessagingService::Draft {
  std::string from;
  std::vector<std::string> recipients;
  std::uint64_t group = 0;
  std::string clientMsgId;
  std::string body;
};

// What a committed send produced, handed from the writer thread to the
// sessions and sinks concerned.
struct MessagingService::Committed {
  SentMessage sent;
  bool duplicate = false;
  struct Row {
    OutboundMessage message;
    std::string recipient;
    bool push = false;
    std::string pushText;
    std::uint64_t queued = 0;
  };
  std::vector<Row> rows;
};

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
      closeConnection_(std::move(closeConnection)) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
}

MessagingService::~MessagingService() = default;

std::int64_t MessagingService::nowMs() const {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------- registration

kj::Promise<std::uint32_t> MessagingService::requestCode(std::string phone, std::string peer) {
  requirePhone(phone, "phone");
  auto decision = pluginValue(
      plugins_.call<AuthPlugin>([&](AuthPlugin& auth) { return auth.requestCode(phone, peer); }),
      "auth");
  if (!decision.ok) refuse(decision.error);
  ++counters_.codesRequested;
  sms_.send(phone, decision.code, decision.smsText);
  return decision.expiresInSeconds;
}

kj::Promise<std::string> MessagingService::verify(std::string phone, std::string code,
                                                  std::string deviceName) {
  requirePhone(phone, "phone");
  requireName(deviceName, "deviceName");
  if (code.size() > 16) refuse("code is too long");
  auto decision = pluginValue(
      plugins_.call<AuthPlugin>([&](AuthPlugin& auth) { return auth.verifyCode(phone, code); }),
      "auth");
  if (!decision.ok) refuse(decision.error);

  std::string key(kKeyBytes, '\0');
  randombytes_buf(key.data(), key.size());
  std::int64_t now = nowMs();
  return writeDurably(store_,
                      [phone, hash = keyHash(key), deviceName, now](store::Connection& db) {
                        db.prepare("INSERT OR IGNORE INTO users(phone, created_ms) VALUES (?, ?)")
                            .bind(1, phone)
                            .bind(2, now)
                            .run();
                        db.prepare(
                              "INSERT OR REPLACE INTO devices(phone, key_hash, device_name, "
                              "created_ms) VALUES (?, ?, ?, ?)")
                            .bind(1, phone)
                            .bindBlob(2, hash)
                            .bind(3, deviceName)
                            .bind(4, now)
                            .run();
                      })
      .then([this, phone, key = std::move(key)]() {
        ++counters_.registrations;
        // The old device's key no longer matches; its live session must go too.
        kick(phone, "replaced by a new device");
        return key;
      });
}

std::shared_ptr<LiveSession> MessagingService::login(std::string phone, std::string key,
                                                     proto::Inbox::Client inbox,
                                                     const ConnectionContext& connection) {
  requirePhone(phone, "phone");
  std::optional<std::string> stored;
  store_.read([&](store::Connection& db) {
    auto row = db.prepare("SELECT key_hash FROM devices WHERE phone = ?").bind(1, phone);
    if (row.step()) stored = row.columnBlob(0);
  });
  std::string hash = keyHash(key);
  if (key.size() != kKeyBytes || !stored || stored->size() != hash.size() ||
      sodium_memcmp(stored->data(), hash.data(), hash.size()) != 0) {
    ++counters_.failedLogins;
    refuse("invalid device key for " + phone);
  }

  session::SessionRef ref;
  ref.phone = phone;
  ref.sessionId = sessions_.nextSessionId();
  ref.threadIndex = connection.threadIndex;
  ref.connectionId = connection.connectionId;
  ref.peer = connection.peer;
  ref.since = nowMs();
  ref.gauges = std::make_shared<session::SessionGauges>();
  auto close = [this, thread = connection.threadIndex, id = connection.connectionId]() {
    closeConnection_(thread, id);
  };
  auto live = std::make_shared<LiveSession>(*this, *threads_.at(connection.threadIndex),
                                            options_.limits, ref, kj::mv(inbox), close);
  ref.session = live;
  if (auto replaced = sessions_.attach(ref)) kick(*replaced, "logged in elsewhere");
  ++counters_.logins;
  live->start();
  fanOutPresence(phone, PresenceState::online, 0);
  return live;
}

// ---------------------------------------------------------------- sending

kj::Promise<SentMessage> MessagingService::send(const std::string& from, std::string to,
                                                std::string clientMsgId, std::string body) {
  requirePhone(to, "recipient");
  requireClientMsgId(clientMsgId);
  requireBody(body.size());
  if (!isRegistered(to)) refuse("unknown recipient " + to);
  RoutingPlugin::Envelope envelope;
  envelope.from = from;
  envelope.to = to;
  envelope.bodyBytes = body.size();
  envelope.recipientOnline = sessions_.isOnline(to);
  auto decision = pluginValue(
      plugins_.call<RoutingPlugin>([&](RoutingPlugin& routing) { return routing.route(envelope); }),
      "routing");
  switch (decision.destination) {
    case RoutingPlugin::Destination::reject:
      refuse(decision.error);
    case RoutingPlugin::Destination::drop:
      refuse("the routing policy dropped the message");
    default:
      break;
  }
  return commit(Draft{from, {std::move(to)}, 0, std::move(clientMsgId), std::move(body)});
}

kj::Promise<SentMessage> MessagingService::sendGroup(const std::string& from, std::uint64_t group,
                                                     std::string clientMsgId, std::string body) {
  requireClientMsgId(clientMsgId);
  requireBody(body.size());
  requireMember(from, group);
  Draft draft{from, {}, group, std::move(clientMsgId), std::move(body)};
  for (std::string& member : membersOf(group)) {
    RoutingPlugin::Envelope envelope;
    envelope.from = from;
    envelope.to = member;
    envelope.group = group;
    envelope.bodyBytes = draft.body.size();
    envelope.recipientOnline = sessions_.isOnline(member);
    auto decision = pluginValue(plugins_.call<RoutingPlugin>([&](RoutingPlugin& routing) {
      return routing.route(envelope);
    }),
                                "routing");
    if (decision.destination == RoutingPlugin::Destination::drop) continue;
    if (decision.destination == RoutingPlugin::Destination::reject) refuse(decision.error);
    draft.recipients.push_back(std::move(member));
  }
  if (draft.recipients.empty()) refuse("the group has no other members");
  return commit(std::move(draft));
}

kj::Promise<SentMessage> MessagingService::commit(Draft draft) {
  std::int64_t now = nowMs();
  std::int64_t fallbackExpiry = now + options_.fallbackExpirySeconds * 1000;
  auto work = [this, draft = std::move(draft), now, fallbackExpiry](store::Connection& db) {
    Committed out;
    auto seen =
        db.prepare("SELECT server_id, sent_ms FROM dedup WHERE sender = ? AND client_msg_id = ?")
            .bind(1, draft.from)
            .bind(2, draft.clientMsgId);
    if (seen.step()) {
      out.duplicate = true;
      out.sent = {static_cast<std::uint64_t>(seen.columnInt(0)), seen.columnInt(1)};
      return out;
    }
    auto countQueued =
        db.prepare("SELECT count(*) FROM messages WHERE recipient = ? AND delivered_ms IS NULL");
    auto insert = db.prepare(
        "INSERT INTO messages(sender, recipient, group_id, client_msg_id, body, sent_ms, "
        "expires_ms, origin_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    for (const std::string& recipient : draft.recipients) {
      countQueued.reset();
      countQueued.bind(1, recipient);
      countQueued.step();
      std::uint64_t queued = static_cast<std::uint64_t>(countQueued.columnInt(0)) + 1;
      OfflinePlugin::QueuePolicy policy;
      policy.expiresAtMs = fallbackExpiry;
      auto asked = plugins_.call<OfflinePlugin>(
          [&](OfflinePlugin& offline) { return offline.onQueued(recipient, draft.from, queued); });
      if (asked.ok()) policy = std::move(*asked.value);
      if (policy.expiresAtMs <= now) policy.expiresAtMs = fallbackExpiry;

      insert.reset();
      insert.bind(1, draft.from)
          .bind(2, recipient)
          .bind(3, static_cast<std::int64_t>(draft.group))
          .bind(4, draft.clientMsgId)
          .bindBlob(5, draft.body)
          .bind(6, now)
          .bind(7, policy.expiresAtMs);
      if (out.rows.empty()) {
        insert.bindNull(8);
      } else {
        insert.bind(8, static_cast<std::int64_t>(out.sent.id));
      }
      insert.run();
      auto id = static_cast<std::uint64_t>(db.lastInsertRowid());
      if (out.rows.empty()) out.sent = {id, now};
      Committed::Row row;
      row.message =
          OutboundMessage{id, draft.from, draft.group, draft.clientMsgId, draft.body, now};
      row.recipient = recipient;
      row.push = policy.push;
      row.pushText = std::move(policy.pushText);
      row.queued = queued;
      out.rows.push_back(std::move(row));
    }
    db.prepare("INSERT INTO dedup(sender, client_msg_id, server_id, sent_ms) VALUES (?, ?, ?, ?)")
        .bind(1, draft.from)
        .bind(2, draft.clientMsgId)
        .bind(3, static_cast<std::int64_t>(out.sent.id))
        .bind(4, now)
        .run();
    return out;
  };
  return writeDurably<Committed>(store_, std::move(work),
                                 [this](Committed& committed) { afterCommit(committed); })
      .then([](Committed committed) { return committed.sent; });
}

// Runs on the store's writer thread, right after the commit.
void MessagingService::afterCommit(const Committed& committed) {
  if (committed.duplicate) {
    ++counters_.duplicates;
    return;
  }
  for (const Committed::Row& row : committed.rows) {
    ++counters_.messagesIn;
    if (sessions_.isOnline(row.recipient)) {
      postToSession(row.recipient,
                    [message = row.message](LiveSession& session) { session.push(message); });
    } else if (row.push) {
      ++counters_.pushes;
      push_.notify(row.recipient, row.pushText, row.queued);
    }
  }
}

void MessagingService::postToSession(const std::string& phone,
                                     std::function<void(LiveSession&)> action) {
  auto ref = sessions_.find(phone);
  if (!ref) return;
  threads_.at(ref->threadIndex)->post([weak = ref->session, action = std::move(action)]() {
    if (auto session = weak.lock()) action(*session);
  });
}

// ---------------------------------------------------------------- receipts

kj::Promise<void> MessagingService::receipt(const std::string& from, std::vector<std::uint64_t> ids,
                                            ReceiptKind kind) {
  requireBatch(ids.size(), "ids");
  std::int64_t now = nowMs();
  auto work = [from, ids = std::move(ids), kind, now](store::Connection& db) {
    std::vector<std::pair<std::string, OutboundReceipt>> made;
    auto find = db.prepare(
        "SELECT sender, COALESCE(origin_id, server_id) FROM messages "
        "WHERE server_id = ? AND recipient = ?");
    auto insert = db.prepare(
        "INSERT INTO receipts_queue(recipient, server_id, reader, kind, at_ms) VALUES (?, ?, ?, ?, "
        "?)");
    for (std::uint64_t id : ids) {
      find.reset();
      find.bind(1, static_cast<std::int64_t>(id)).bind(2, from);
      if (!find.step()) throw std::runtime_error("unknown message id " + std::to_string(id));
      std::string sender = find.columnText(0);
      auto origin = static_cast<std::uint64_t>(find.columnInt(1));
      insert.reset();
      insert.bind(1, sender)
          .bind(2, static_cast<std::int64_t>(origin))
          .bind(3, from)
          .bind(4, static_cast<std::int64_t>(kind))
          .bind(5, now)
          .run();
      made.emplace_back(sender, OutboundReceipt{static_cast<std::uint64_t>(db.lastInsertRowid()),
                                                origin, from, kind, now});
    }
    return made;
  };
  using Made = std::vector<std::pair<std::string, OutboundReceipt>>;
  return writeDurably<Made>(store_, std::move(work),
                            [this](Made& made) {
                              for (auto& [sender, r] : made) {
                                postToSession(sender, [r](LiveSession& s) { s.push(r); });
                              }
                            })
      .ignoreResult();
}

void MessagingService::messagesDelivered(const LiveSession& session,
                                         std::vector<std::uint64_t> ids) {
  counters_.messagesOut += ids.size();
  std::int64_t now = nowMs();
  std::string phone = session.phone();
  using Made = std::vector<std::pair<std::string, OutboundReceipt>>;
  auto made = std::make_shared<Made>();
  store_.write(
      [phone, ids = std::move(ids), now, made](store::Connection& db) {
        auto mark = db.prepare(
            "UPDATE messages SET delivered_ms = ?, body = x'' "
            "WHERE server_id = ? AND recipient = ? AND delivered_ms IS NULL "
            "RETURNING sender, COALESCE(origin_id, server_id)");
        auto insert = db.prepare(
            "INSERT INTO receipts_queue(recipient, server_id, reader, kind, at_ms) "
            "VALUES (?, ?, ?, 0, ?)");
        for (std::uint64_t id : ids) {
          mark.reset();
          mark.bind(1, now).bind(2, static_cast<std::int64_t>(id)).bind(3, phone);
          if (!mark.step()) continue;  // delivered before: a redelivery after a lost return
          std::string sender = mark.columnText(0);
          auto origin = static_cast<std::uint64_t>(mark.columnInt(1));
          while (mark.step()) {
          }
          insert.reset();
          insert.bind(1, sender)
              .bind(2, static_cast<std::int64_t>(origin))
              .bind(3, phone)
              .bind(4, now)
              .run();
          made->emplace_back(
              sender, OutboundReceipt{static_cast<std::uint64_t>(db.lastInsertRowid()), origin,
                                      phone, ReceiptKind::delivered, now});
        }
      },
      [this, made](std::optional<std::string> error) {
        if (error) {
          spdlog::error("marking messages delivered failed (they will be delivered again): {}",
                        *error);
          return;
        }
        for (auto& [sender, r] : *made) {
          postToSession(sender, [r](LiveSession& s) { s.push(r); });
        }
      });
}

void MessagingService::receiptsShown(std::vector<std::uint64_t> rowIds) {
  store_.write(
      [rowIds = std::move(rowIds)](store::Connection& db) {
        auto erase = db.prepare("DELETE FROM receipts_queue WHERE id = ?");
        for (std::uint64_t row : rowIds) {
          erase.reset();
          erase.bind(1, static_cast<std::int64_t>(row)).run();
        }
      },
      [](std::optional<std::string> error) {
        if (error) spdlog::error("forgetting shown receipts failed: {}", *error);
      });
}

std::vector<OutboundMessage> MessagingService::queuedMessages(const std::string& phone,
                                                              std::uint64_t afterId,
                                                              std::size_t limit) {
  std::vector<OutboundMessage> out;
  std::int64_t now = nowMs();
  store_.read([&](store::Connection& db) {
    auto rows =
        db.prepare(
              "SELECT server_id, sender, group_id, client_msg_id, body, sent_ms FROM messages "
              "WHERE recipient = ? AND server_id > ? AND delivered_ms IS NULL "
              "AND expires_ms > ? ORDER BY server_id LIMIT ?")
            .bind(1, phone)
            .bind(2, static_cast<std::int64_t>(afterId))
            .bind(3, now)
            .bind(4, static_cast<std::int64_t>(limit));
    while (rows.step()) {
      out.push_back(OutboundMessage{static_cast<std::uint64_t>(rows.columnInt(0)),
                                    rows.columnText(1),
                                    static_cast<std::uint64_t>(rows.columnInt(2)),
                                    rows.columnText(3), rows.columnBlob(4), rows.columnInt(5)});
    }
  });
  return out;
}

std::vector<OutboundReceipt> MessagingService::queuedReceipts(const std::string& phone,
                                                              std::uint64_t afterRow,
                                                              std::size_t limit) {
  std::vector<OutboundReceipt> out;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(
                      "SELECT id, server_id, reader, kind, at_ms FROM receipts_queue "
                      "WHERE recipient = ? AND id > ? ORDER BY id LIMIT ?")
                    .bind(1, phone)
                    .bind(2, static_cast<std::int64_t>(afterRow))
                    .bind(3, static_cast<std::int64_t>(limit));
    while (rows.step()) {
      out.push_back(OutboundReceipt{static_cast<std::uint64_t>(rows.columnInt(0)),
                                    static_cast<std::uint64_t>(rows.columnInt(1)),
                                    rows.columnText(2), static_cast<ReceiptKind>(rows.columnInt(3)),
                                    rows.columnInt(4)});
    }
  });
  return out;
}

// ---------------------------------------------------------------- sessions

void MessagingService::sessionEnded(const LiveSession& session) {
  if (!sessions_.detach(session.phone(), session.id())) return;  // a newer login took over
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

bool MessagingService::kick(const std::string& phone, const std::string& reason) {
  auto ref = sessions_.find(phone);
  if (!ref) return false;
  kick(*ref, reason);
  return true;
}

void MessagingService::kick(const session::SessionRef& ref, const std::string& reason) {
  threads_.at(ref.threadIndex)->post([weak = ref.session, reason]() {
    if (auto session = weak.lock()) session->kick(reason);
  });
}

void MessagingService::slowConsumer(const LiveSession& session, std::size_t length) {
  ++counters_.slowConsumerKicks;
  spdlog::warn("slow consumer: session {} of {} has {} items waiting (limit {}); disconnecting",
               session.id(), session.phone(), length, options_.limits.maxQueue);
}

kj::Promise<std::uint32_t> MessagingService::broadcast(std::string phone, std::string body) {
  requireBody(body.size());
  std::vector<std::string> recipients;
  if (!phone.empty()) {
    requirePhone(phone, "phone");
    if (!isRegistered(phone)) refuse("no user " + phone);
    recipients.push_back(std::move(phone));
  } else {
    store_.read([&](store::Connection& db) {
      auto rows = db.prepare("SELECT phone FROM users ORDER BY phone");
      while (rows.step()) recipients.push_back(rows.columnText(0));
    });
  }
  if (recipients.empty()) refuse("there are no registered users");
  auto count = static_cast<std::uint32_t>(recipients.size());
  std::array<unsigned char, 16> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  std::string clientMsgId = "broadcast-";
  for (unsigned char b : nonce) clientMsgId += "0123456789abcdef"[b & 15];
  return commit(Draft{kSystemSender, std::move(recipients), 0, std::move(clientMsgId),
                      std::move(body)})
      .then([count](SentMessage) { return count; });
}

void MessagingService::sweepExpired() {
  std::int64_t now = nowMs();
  std::int64_t horizon = now - options_.fallbackExpirySeconds * 1000;
  store_.write(
      [now, horizon](store::Connection& db) {
        db.prepare("DELETE FROM messages WHERE expires_ms <= ?").bind(1, now).run();
        int messages = db.changes();
        db.prepare("DELETE FROM dedup WHERE sent_ms <= ?").bind(1, horizon).run();
        db.prepare("DELETE FROM receipts_queue WHERE at_ms <= ?").bind(1, horizon).run();
        if (messages > 0) spdlog::info("expired {} queued or delivered messages", messages);
      },
      [](std::optional<std::string> error) {
        if (error) spdlog::warn("sweeping expired messages failed: {}", *error);
      });
}

void MessagingService::kickAll(const std::string& reason) {
  for (const session::SessionRef& ref : sessions_.all()) kick(ref, reason);
}

// ---------------------------------------------------------------- presence

bool MessagingService::presenceVisible(const std::string& user, const std::string& watcher) {
  bool watcherHasUser = false;
  bool userHasWatcher = false;
  store_.read([&](store::Connection& db) {
    auto has = db.prepare("SELECT 1 FROM contacts WHERE owner = ? AND contact = ?");
    has.bind(1, watcher).bind(2, user);
    watcherHasUser = has.step();
    has.reset();
    has.bind(1, user).bind(2, watcher);
    userHasWatcher = has.step();
  });
  return presencePolicy(user, watcher, watcherHasUser, userHasWatcher);
}

bool MessagingService::presencePolicy(const std::string& user, const std::string& watcher,
                                      bool watcherHasUser, bool userHasWatcher) {
  auto visible = plugins_.call<PresencePlugin>([&](PresencePlugin& presence) {
    return presence.visible(user, watcher, watcherHasUser, userHasWatcher);
  });
  return visible.ok() && *visible.value;
}

void MessagingService::fanOutPresence(const std::string& phone, PresenceState state,
                                      std::int64_t lastSeen) {
  // Watchers have `phone` as a contact; the query also says whether `phone`
  // has each of them, so the policy needs no further reads.
  std::vector<std::pair<std::string, bool>> watchers;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(
                      "SELECT w.owner, EXISTS(SELECT 1 FROM contacts m "
                      "WHERE m.owner = w.contact AND m.contact = w.owner) "
                      "FROM contacts w WHERE w.contact = ?")
                    .bind(1, phone);
    while (rows.step()) watchers.emplace_back(rows.columnText(0), rows.columnInt(1) != 0);
  });
  // Lazy fan-out: only watchers online now hear of it; the others read it
  // from contacts() when they come back.
  for (const auto& [watcher, mutual] : watchers) {
    if (!sessions_.isOnline(watcher) || !presencePolicy(phone, watcher, true, mutual)) continue;
    OutboundPresence update{phone, state, lastSeen, false};
    postToSession(watcher, [update](LiveSession& s) { s.push(update); });
  }
}

void MessagingService::setPresence(const LiveSession& session, PresenceState state) {
  if (state == PresenceState::offline) refuse("offline is set by disconnecting");
  session.ref().gauges->presence = static_cast<std::uint8_t>(state);
  fanOutPresence(session.phone(), state, 0);
}

void MessagingService::typing(const std::string& from, const std::string& to, bool active) {
  requirePhone(to, "to");
  if (!sessions_.isOnline(to) || !presenceVisible(from, to)) return;
  OutboundPresence update{from, PresenceState::online, 0, active};
  postToSession(to, [update](LiveSession& s) { s.push(update); });
}

// ---------------------------------------------------------------- contacts

kj::Promise<void> MessagingService::addContacts(const std::string& owner,
                                                std::vector<std::string> phones) {
  requireBatch(phones.size(), "phones");
  for (const std::string& p : phones) requirePhone(p, "contact");
  phones = distinct(std::move(phones));
  std::erase(phones, owner);
  std::int64_t now = nowMs();
  return writeDurably(store_, [owner, phones, now](store::Connection& db) {
    auto insert =
        db.prepare("INSERT OR IGNORE INTO contacts(owner, contact, added_ms) VALUES (?, ?, ?)");
    for (const std::string& p : phones) {
      insert.reset();
      insert.bind(1, owner).bind(2, p).bind(3, now).run();
    }
  });
}

kj::Promise<void> MessagingService::removeContacts(const std::string& owner,
                                                   std::vector<std::string> phones) {
  requireBatch(phones.size(), "phones");
  for (const std::string& p : phones) requirePhone(p, "contact");
  return writeDurably(store_, [owner, phones](store::Connection& db) {
    runForEach(db, "DELETE FROM contacts WHERE owner = ? AND contact = ?", owner, phones);
  });
}

std::vector<ContactView> MessagingService::contacts(const std::string& owner) {
  std::vector<ContactView> out;
  std::vector<bool> mutual;  // the contact has the owner as a contact too
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(
                      "SELECT c.contact, u.phone IS NOT NULL, COALESCE(u.last_seen_ms, 0), "
                      "EXISTS(SELECT 1 FROM contacts m WHERE m.owner = c.contact "
                      "AND m.contact = c.owner) "
                      "FROM contacts c LEFT JOIN users u ON u.phone = c.contact "
                      "WHERE c.owner = ? ORDER BY c.contact")
                    .bind(1, owner);
    while (rows.step()) {
      out.push_back(ContactView{rows.columnText(0), rows.columnInt(1) != 0, PresenceState::offline,
                                rows.columnInt(2)});
      mutual.push_back(rows.columnInt(3) != 0);
    }
  });
  for (std::size_t i = 0; i < out.size(); ++i) {
    ContactView& contact = out[i];
    // The owner watches the contact, and has it as a contact by construction.
    if (!contact.registered || !presencePolicy(contact.phone, owner, true, mutual[i])) {
      contact.lastSeen = 0;
      continue;
    }
    if (auto ref = sessions_.find(contact.phone)) {
      contact.state = static_cast<PresenceState>(ref->gauges->presence.load());
    }
  }
  return out;
}

// ---------------------------------------------------------------- groups

bool MessagingService::isRegistered(const std::string& phone) {
  bool found = false;
  store_.read([&](store::Connection& db) {
    found = db.prepare("SELECT 1 FROM users WHERE phone = ?").bind(1, phone).step();
  });
  return found;
}

void MessagingService::requireRegistered(const std::vector<std::string>& phones) {
  for (const std::string& p : phones) {
    requirePhone(p, "member");
    if (!isRegistered(p)) refuse("unknown user " + p);
  }
}

std::vector<std::string> MessagingService::membersOf(std::uint64_t group) {
  std::vector<std::string> members;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare("SELECT member FROM group_members WHERE group_id = ? ORDER BY member")
                    .bind(1, static_cast<std::int64_t>(group));
    while (rows.step()) members.push_back(rows.columnText(0));
  });
  return members;
}

void MessagingService::requireMember(const std::string& phone, std::uint64_t group) {
  bool member = false;
  store_.read([&](store::Connection& db) {
    member = db.prepare("SELECT 1 FROM group_members WHERE group_id = ? AND member = ?")
                 .bind(1, static_cast<std::int64_t>(group))
                 .bind(2, phone)
                 .step();
  });
  if (!member) refuse("no group " + std::to_string(group) + " with " + phone + " as a member");
}

kj::Promise<std::uint64_t> MessagingService::createGroup(const std::string& owner, std::string name,
                                                         std::vector<std::string> members) {
  requireName(name, "group name");
  members = distinct(std::move(members));
  std::erase(members, owner);
  if (members.size() + 1 > proto::MAX_GROUP_MEMBERS) {
    refuse("a group has at most " + std::to_string(proto::MAX_GROUP_MEMBERS) + " members");
  }
  requireRegistered(members);
  members.push_back(owner);
  std::int64_t now = nowMs();
  return writeDurably<std::uint64_t>(store_, [owner, name, members, now](store::Connection& db) {
    db.prepare("INSERT INTO groups(name, owner, created_ms) VALUES (?, ?, ?)")
        .bind(1, name)
        .bind(2, owner)
        .bind(3, now)
        .run();
    auto id = db.lastInsertRowid();
    runForEach(db, "INSERT INTO group_members(group_id, member) VALUES (?, ?)", id, members);
    return static_cast<std::uint64_t>(id);
  });
}

kj::Promise<void> MessagingService::addMembers(const std::string& caller, std::uint64_t group,
                                               std::vector<std::string> members) {
  requireBatch(members.size(), "members");
  requireMember(caller, group);
  members = distinct(std::move(members));
  requireRegistered(members);
  auto gid = static_cast<std::int64_t>(group);
  return writeDurably(store_, [gid, members](store::Connection& db) {
    runForEach(db, "INSERT OR IGNORE INTO group_members(group_id, member) VALUES (?, ?)", gid,
               members);
    auto count = db.prepare("SELECT count(*) FROM group_members WHERE group_id = ?").bind(1, gid);
    count.step();
    if (static_cast<std::uint64_t>(count.columnInt(0)) > proto::MAX_GROUP_MEMBERS) {
      throw std::runtime_error("a group has at most " + std::to_string(proto::MAX_GROUP_MEMBERS) +
                               " members");
    }
  });
}

kj::Promise<void> MessagingService::removeMembers(const std::string& caller, std::uint64_t group,
                                                  std::vector<std::string> members) {
  requireBatch(members.size(), "members");
  auto gid = static_cast<std::int64_t>(group);
  std::optional<std::string> owner;
  store_.read([&](store::Connection& db) {
    auto row = db.prepare("SELECT owner FROM groups WHERE id = ?").bind(1, gid);
    if (row.step()) owner = row.columnText(0);
  });
  if (!owner) refuse("no group " + std::to_string(group));
  if (*owner != caller) refuse("only the group's creator may remove members");
  return writeDurably(store_, [gid, members](store::Connection& db) {
    runForEach(db, "DELETE FROM group_members WHERE group_id = ? AND member = ?", gid, members);
  });
}

kj::Promise<void> MessagingService::leaveGroup(const std::string& caller, std::uint64_t group) {
  requireMember(caller, group);
  auto gid = static_cast<std::int64_t>(group);
  return writeDurably(store_, [gid, caller](store::Connection& db) {
    runForEach(db, "DELETE FROM group_members WHERE group_id = ? AND member = ?", gid,
               std::vector<std::string>{caller});
  });
}

std::vector<GroupView> MessagingService::groups(const std::string& member) {
  std::vector<GroupView> out;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(
                      "SELECT g.id, g.name, g.owner FROM groups g JOIN group_members m "
                      "ON m.group_id = g.id WHERE m.member = ? ORDER BY g.id")
                    .bind(1, member);
    while (rows.step()) {
      out.push_back(GroupView{static_cast<std::uint64_t>(rows.columnInt(0)),
                              rows.columnText(1),
                              rows.columnText(2),
                              {}});
    }
  });
  for (GroupView& g : out) g.members = membersOf(g.id);
  return out;
}

}  // namespace switchboard::messaging
