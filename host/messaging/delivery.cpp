// Sending: where a message goes, and how it gets there.
//
// The online path touches no disk: the sender's thread checks the message,
// gives it an id from memory and hands it to the recipient's session (directly
// when that session lives on the same thread, by one post otherwise); the
// session holds it and sends it in its next Inbox.deliver; the return settles
// the sender's ack. The offline path writes the message with group commit and
// acknowledges once it is durable. A session that cannot take a message
// promptly writes it itself (LiveSession: "spills"). Writing to the store is
// queue_writes.cpp.

#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "net/network_thread.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::messaging {

using plugin::RoutingPlugin;
using session::DeliveryAck;
using session::LiveSession;
using session::OutboundMessage;
using session::OutboundReceipt;

namespace {

// Asks the routing plugin about one recipient; a refusal throws.
RoutingPlugin::Destination askRouting(plugin::PluginManager& plugins,
                                      const RoutingPlugin::Envelope& envelope) {
  auto decision =
      plugins.call<RoutingPlugin>([&](RoutingPlugin& routing) { return routing.route(envelope); });
  if (!decision.ok()) refuse("routing plugin failed: " + decision.error);
  switch (decision.value->destination) {
    case RoutingPlugin::Destination::reject:
      refuse(decision.value->error);
    case RoutingPlugin::Destination::drop:
    case RoutingPlugin::Destination::localSession:
    case RoutingPlugin::Destination::remoteNode:  // single node: the store keeps it (see send)
    case RoutingPlugin::Destination::offlineQueue:
      break;
  }
  return decision.value->destination;
}

}  // namespace

// A group send's copies for sessions on other network threads, by thread. A
// copy goes to its thread in the same order it would have had posted alone:
// everything one fan-out posts leaves before the sender's next send.
struct MessagingService::FanOut {
  struct Offer {
    std::weak_ptr<LiveSession> session;
    std::string recipient;
    OutboundMessage message;
  };
  explicit FanOut(std::size_t threads) : byThread(threads) {}
  std::vector<std::vector<Offer>> byThread;

  void post(MessagingService& service) {
    for (std::size_t t = 0; t < byThread.size(); ++t) {
      if (byThread[t].empty()) continue;
      auto offers = std::make_shared<std::vector<Offer>>(std::move(byThread[t]));
      service.threads_[t]->post([&service, offers]() {
        for (Offer& offer : *offers) {
          service.offerOrStoreHere(offer.session, std::move(offer.recipient),
                                   std::move(offer.message));
        }
      });
    }
  }
};

// ---------------------------------------------------------------- send

std::optional<SentMessage> MessagingService::findDuplicate(DedupCache::Key key,
                                                           const std::string& from,
                                                           const std::string& clientMsgId) {
  auto known = dedup_.lookup(key);
  if (!known.askStore) return known.sent;  // remembered, or the store has no row either
  std::optional<SentMessage> stored;
  store_.read([&](store::Connection& db) {
    auto row =
        db.prepare("SELECT server_id, sent_ms FROM dedup WHERE sender = ? AND client_msg_id = ?")
            .bind(1, from)
            .bind(2, clientMsgId);
    if (row.step()) {
      stored = SentMessage{static_cast<std::uint64_t>(row.columnInt(0)), row.columnInt(1)};
    }
  });
  return stored;
}

kj::Promise<SentMessage> MessagingService::acknowledged(kj::Promise<std::int64_t> ack,
                                                        DedupCache::Key key, SentMessage sent) {
  return ack.then([this, key, sent](std::int64_t deliveredAt) mutable {
    sent.deliveredAt = deliveredAt;
    // In a cluster the stream may have held this message already, sent first
    // on another node: the sender is answered with that copy's id.
    SentMessage answer = cluster_ ? answeredWith(sent) : sent;
    dedup_.remember(key, answer);
    return answer;
  });
}

kj::Promise<SentMessage> MessagingService::send(LiveSession& sender, std::string to,
                                                std::string clientMsgId, std::string body) {
  const std::string& from = sender.phone();
  requirePhone(to, "recipient");
  requireClientMsgId(clientMsgId);
  requireBody(body.size());
  auto gate = sender.sendGates().find(to);
  if (gate == sender.sendGates().end() && !isRegistered(to)) {
    if (!cluster_) refuse("unknown recipient " + to);
    // Registered on another node, perhaps: learn it, then send. Sends to `to`
    // made meanwhile wait behind the same step (the gate), in order.
    gate = sender.sendGates().emplace(to, learnUser(to).fork()).first;
  }
  if (gate != sender.sendGates().end()) {
    // Branches run in the order they were added: the first send through the
    // gate removes it, the others follow it in their order.
    auto done = [weak = sender.weak_from_this(), to]() {
      auto live = weak.lock();
      if (!live || live->ended()) refuse("the session has ended; log in again");
      live->sendGates().erase(to);
      return live;
    };
    return gate->second.addBranch().then(
        [this, done, to, clientMsgId, body = std::move(body)]() mutable {
          auto live = done();
          return send(*live, std::move(to), std::move(clientMsgId), std::move(body));
        },
        [done](kj::Exception&& e) -> kj::Promise<SentMessage> {
          done();
          kj::throwFatalException(kj::mv(e));
        });
  }
  // One look at the table serves the envelope and, if this send opens a
  // route, the route (see route()).
  std::optional<session::SessionAddress> located = sessions_.locate(to);
  RoutingPlugin::Envelope envelope;
  envelope.from = from;
  envelope.to = to;
  envelope.bodyBytes = body.size();
  envelope.recipientOnline = located.has_value();
  auto destination = askRouting(plugins_, envelope);
  if (destination == RoutingPlugin::Destination::drop) {
    refuse("the routing policy dropped the message");
  }
  DedupCache::Key key = dedup_.key(from, clientMsgId);
  if (auto first = findDuplicate(key, from, clientMsgId)) {
    ++counters_.duplicates;
    return *first;
  }

  SentMessage sent{ids_.next(sender.ref().number), nowMs()};
  auto [promise, ack] = DeliveryAck::makeForSend(sender.thread(), 1);
  ack->listen(sender.weak_from_this(), to);
  OutboundMessage message;
  message.id = sent.id;
  message.from = from;
  message.clientMsgId = std::move(clientMsgId);
  message.body = std::move(body);
  message.timestamp = sent.timestamp;
  message.ack = std::move(ack);
  ++counters_.messagesIn;
  // Queue it rather than hand it to a session: the store, or in a cluster the
  // stream (where "another node" also leads).
  bool queued = destination == RoutingPlugin::Destination::offlineQueue ||
                (cluster_ && destination == RoutingPlugin::Destination::remoteNode);
  if (queued) {
    if (auto route = sender.routeTo(to); route.fresh) {
      route.way = session::SenderRoute{std::nullopt, 0, cluster_ != nullptr};
    }
  }
  route(sender, std::move(to), std::move(message), std::move(located));
  return acknowledged(kj::mv(promise), key, sent);
}

kj::Promise<SentMessage> MessagingService::sendGroup(LiveSession& sender, std::uint64_t group,
                                                     std::string clientMsgId, std::string body) {
  if (!cluster_) return sendToGroup(sender, group, std::move(clientMsgId), std::move(body));
  // The members are the cluster record's: the store's copy catches up first.
  // Sends of one session stay in order (the worker runs the catch-ups in
  // order, and each resolves on the sender's thread in that order).
  requireClientMsgId(clientMsgId);
  requireBody(body.size());
  return syncGroup(group).then([this, weak = sender.weak_from_this(), group,
                                clientMsgId = std::move(clientMsgId),
                                body = std::move(body)]() mutable {
    auto session = weak.lock();
    if (!session) refuse("the session ended");
    return sendToGroup(*session, group, std::move(clientMsgId), std::move(body));
  });
}

kj::Promise<SentMessage> MessagingService::sendToGroup(LiveSession& sender, std::uint64_t group,
                                                       std::string clientMsgId, std::string body) {
  const std::string& from = sender.phone();
  requireClientMsgId(clientMsgId);
  requireBody(body.size());
  requireMember(from, group);
  std::vector<std::string> recipients;
  std::vector<std::optional<session::SessionAddress>> located;  // recipients[i]'s session
  for (std::string& member : membersOf(group)) {
    auto address = sessions_.locate(member);
    RoutingPlugin::Envelope envelope;
    envelope.from = from;
    envelope.to = member;
    envelope.group = group;
    envelope.bodyBytes = body.size();
    envelope.recipientOnline = address.has_value();
    if (askRouting(plugins_, envelope) == RoutingPlugin::Destination::drop) continue;
    recipients.push_back(std::move(member));
    located.push_back(std::move(address));
  }
  if (recipients.empty()) refuse("the group has no other members");
  DedupCache::Key key = dedup_.key(from, clientMsgId);
  if (auto first = findDuplicate(key, from, clientMsgId)) {
    ++counters_.duplicates;
    return *first;
  }

  SentMessage sent{ids_.next(sender.ref().number), nowMs()};
  auto [promise, ack] =
      DeliveryAck::makeForSend(sender.thread(), static_cast<std::uint32_t>(recipients.size()));
  ack->listen(sender.weak_from_this(), recipients);
  FanOut fanOut(threads_.size());
  for (std::size_t i = 0; i < recipients.size(); ++i) {
    OutboundMessage message;
    message.id = sent.id;
    message.from = from;
    message.group = group;
    message.clientMsgId = clientMsgId;
    message.body = body;
    message.timestamp = sent.timestamp;
    message.ack = ack;
    ++counters_.messagesIn;
    route(sender, std::move(recipients[i]), std::move(message), std::move(located[i]), &fanOut);
  }
  fanOut.post(*this);
  return acknowledged(kj::mv(promise), key, sent);
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
  net::NetworkThread* here = nullptr;
  for (net::NetworkThread* thread : threads_) {
    if (thread->isCurrent()) here = thread;
  }
  if (here == nullptr) throw std::logic_error("broadcast() must run on a network thread");
  SentMessage sent{ids_.next(MessageIds::kSystemSender), nowMs()};
  auto [promise, ack] = DeliveryAck::make(*here, count);
  std::vector<AddressedMessage> items;
  items.reserve(recipients.size());
  for (std::string& recipient : recipients) {
    OutboundMessage message;
    message.id = sent.id;
    message.from = MessageIds::kSystemName;
    message.clientMsgId = "broadcast-" + std::to_string(sent.id);
    message.body = body;
    message.timestamp = sent.timestamp;
    message.ack = ack;
    items.push_back({std::move(recipient), std::move(message)});
  }
  counters_.messagesIn += count;
  storeMessages(std::move(items), WriteOrigin{});
  return promise.then([count]() { return count; });
}

// ---------------------------------------------------------------- the way there

void MessagingService::route(LiveSession& sender, std::string to, OutboundMessage message,
                             std::optional<session::SessionAddress> located, FanOut* fanOut) {
  auto [way, fresh] = sender.routeTo(to);
  if (fresh) {
    way.session = std::move(located);
    way.remote = !way.session && cluster_;
  }
  ++way.outstanding;
  if (way.remote) {
    publishRemote(std::move(to), std::move(message));
    return;
  }
  if (!way.session) {
    std::vector<AddressedMessage> items;
    items.push_back({std::move(to), std::move(message)});
    storeMessages(std::move(items), WriteOrigin{});
    return;
  }
  if (fanOut != nullptr && !threads_.at(way.session->threadIndex)->isCurrent()) {
    fanOut->byThread[way.session->threadIndex].push_back(
        {way.session->session, std::move(to), std::move(message)});
    return;
  }
  offerOrStore(*way.session, std::move(to), std::move(message));
}

template <class Item>
void MessagingService::offerOrStore(const session::SessionAddress& address, std::string recipient,
                                    Item item) {
  net::NetworkThread& thread = *threads_.at(address.threadIndex);
  if (thread.isCurrent()) {
    offerOrStoreHere(address.session, std::move(recipient), std::move(item));
    return;
  }
  thread.post([this, weak = address.session, recipient = std::move(recipient),
               item = std::move(item)]() mutable {
    offerOrStoreHere(weak, std::move(recipient), std::move(item));
  });
}

template <class Item>
void MessagingService::offerOrStoreHere(const std::weak_ptr<LiveSession>& session,
                                        std::string recipient, Item item) {
  if (auto live = session.lock(); live && live->offer(item)) return;
  std::vector<Addressed<Item>> items;
  items.push_back({std::move(recipient), std::move(item)});
  if constexpr (std::is_same_v<Item, OutboundMessage>) {
    storeMessages(std::move(items), WriteOrigin{});
  } else {
    storeReceipts(std::move(items), WriteOrigin{});
  }
}

template void MessagingService::offerOrStore(const session::SessionAddress&, std::string,
                                             OutboundReceipt);
template void MessagingService::offerOrStore(const session::SessionAddress&, std::string,
                                             OutboundMessage);

}  // namespace switchboard::messaging
