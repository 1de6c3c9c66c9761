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
//   that dies for good strands none of what it acknowledged then. What it
//   wrote so while the link was away is copied once it is back (owed copies,
//   copyOwed, in the catch-up).
// - Presence and typing: core NATS notices every node hears; each tells its
//   own sessions that may see them. Contacts are written to sb_contacts first,
//   and every node watches it and keeps its store's copy of every list.
// - Kicks: besides the kick notice, every node watches sb_sessions and closes
//   a session here whose phone's record names a newer login elsewhere.
//
// The parts: joining (here); cluster_phones.cpp (users, where a phone is,
// contacts, kicks, presence); cluster_delivery.cpp (publishing to the stream,
// live notices from other nodes); cluster_import.cpp (importing from the
// stream); cluster_export.cpp (moving rows into the stream, stream copies).
// cluster_parts.h holds what they share.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <unordered_map>

#include "cluster/cluster_node.h"
#include "messaging/cluster_parts.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
#include "net/network_thread.h"

namespace switchboard::messaging {

namespace {

// How often a node looks for rows in its store for phones that are not here.
constexpr auto kStrandedSweep = std::chrono::seconds(3);

// How often importing phones whose time has come are imported (to go live).
constexpr auto kGoLiveCheck = std::chrono::milliseconds(250);

// How often a node looks for nodes that left the registry (their notices may
// be lost with them, and no one rechecks those).
constexpr auto kDepartureCheck = std::chrono::seconds(2);

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

}  // namespace

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

}  // namespace switchboard::messaging
