// This process as a member of a cluster: everything host/cluster/ offers, owned in one place.
//
// The host makes a ClusterNode only when --cluster is given (single-node mode
// has none and needs no NATS). It owns, in order: the NATS link, the node
// registry, the shared directory, the delivery transport and the admin relay. Once connected
// it opens the directory's buckets (each waited for until it answers). From construction
// on it heartbeats this node's record (name, address, sessions, plugin
// versions) every `heartbeat`; while NATS is away it is degraded, skips the
// heartbeats and serves its own sessions, and on reconnect it rewrites its
// record at once and runs the catch-up jobs (addReconnectJob on the link).
// Destruction removes the node's record (best effort) and closes the link.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cluster/admin_relay.h"
#include "cluster/cluster_directory.h"
#include "cluster/delivery_transport.h"
#include "cluster/nats_link.h"
#include "cluster/node_registry.h"
#include "cluster/watch_thread.h"

namespace switchboard::cluster {

struct ClusterNodeOptions {
  std::string url;       // nats://HOST:PORT
  std::string nodeName;  // unique in the cluster
  std::string address;   // this node's client endpoint
  std::string version;   // the host binary's
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::seconds nodeTtl{10};
};

// What the heartbeat reads from the host; called on the link's worker thread,
// so both must be thread-safe.
struct NodeFacts {
  std::function<std::uint32_t()> sessions;
  std::function<std::string()> pluginVersions;
};

struct ClusterStatus {
  std::string state;  // "connected" or "degraded"
  std::string url;
  std::uint64_t disconnects = 0;
  std::uint64_t reconnects = 0;
  std::uint64_t heartbeats = 0;       // records written
  std::uint64_t heartbeatErrors = 0;  // attempts that failed while connected
  std::int64_t lastHeartbeatMs = 0;   // wall clock of the last record written; 0: none yet
};

class ClusterNode {
 public:
  // Returns at once, even with NATS down (degraded from the start). Throws
  // ClusterError for a malformed URL. `owner` is the network thread that
  // hears state changes; it must outlive the node.
  ClusterNode(ClusterNodeOptions options, NodeFacts facts, net::NetworkThread& owner);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Removes this node's record from the registry now (best effort; blocks on
  // NATS, for the host's shutdown). Idempotent; the destructor calls it.
  void leave();

  ClusterStatus status() const;  // thread-safe
  const ClusterNodeOptions& options() const { return options_; }

  // Every node in the registry; `done(nodes, error)` runs on the link's worker
  // thread (error empty on success). Post from there to where you need it.
  void listNodes(std::function<void(std::vector<NodeInfo>, std::string)> done);

  // Keeps `watch` (one of the directory's watches) running on a thread of its
  // own until this node is destroyed (WatchThread). Its callbacks must stay
  // valid until then. Call from one thread at start.
  void keepWatching(std::string what, DirectoryWatchFn watch);

  NatsLink& link() { return *link_; }
  NodeRegistry& registry() { return *registry_; }
  ClusterDirectory& directory() { return *directory_; }
  DeliveryTransport& transport() { return *transport_; }
  AdminRelay& adminRelay() { return *adminRelay_; }

 private:
  void heartbeat();
  void openDirectory();

  const ClusterNodeOptions options_;
  const NodeFacts facts_;
  const std::uint64_t instance_;
  const std::int64_t startedAtMs_;
  std::unique_ptr<NatsLink> link_;
  std::unique_ptr<NodeRegistry> registry_;
  std::unique_ptr<ClusterDirectory> directory_;
  std::unique_ptr<DeliveryTransport> transport_;
  std::unique_ptr<AdminRelay> adminRelay_;
  std::vector<std::unique_ptr<WatchThread>> watches_;
  std::atomic<std::uint64_t> heartbeats_{0};
  std::atomic<std::uint64_t> heartbeatErrors_{0};
  std::atomic<std::int64_t> lastHeartbeatMs_{0};
  std::atomic<bool> left_{false};
};

}  // namespace switchboard::cluster
