#include "cluster/cluster_node.h"

#include <spdlog/spdlog.h>

#include <random>

#include "cluster/cluster_records.h"

namespace switchboard::cluster {

namespace {
std::uint64_t randomInstance() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}
}  // namespace

ClusterNode::ClusterNode(ClusterNodeOptions options, NodeFacts facts, net::NetworkThread& owner)
    : options_(std::move(options)),
      facts_(std::move(facts)),
      instance_(randomInstance()),
      startedAtMs_(wallClockMs()) {
  NatsLinkOptions linkOptions;
  linkOptions.url = options_.url;
  linkOptions.clientName = "switchboard " + options_.nodeName;
  link_ = std::make_unique<NatsLink>(linkOptions, owner);
  registry_ = std::make_unique<NodeRegistry>(*link_, options_.nodeTtl);
  directory_ = std::make_unique<ClusterDirectory>(*link_);
  transport_ = std::make_unique<DeliveryTransport>(
      *link_, DeliveryTransportOptions{options_.nodeName, std::chrono::seconds(600),
                                       std::chrono::seconds(30 * 24 * 3600)});
  adminRelay_ = std::make_unique<AdminRelay>(*link_, *registry_, options_.nodeName);
  // The buckets answer before the first registration needs them (and again
  // after a start while NATS was away).
  link_->addReconnectJob([this] { openDirectory(); });
  link_->post([this] { openDirectory(); });
  // Back from degraded: be listed again at once, not at the next tick.
  link_->addReconnectJob([this] { heartbeat(); });
  link_->every(options_.heartbeat, [this] { heartbeat(); });
}

void ClusterNode::leave() {
  // Leave the listing at once rather than after the TTL. A blocking call, but
  // the host is shutting down on its main thread.
  if (left_.exchange(true) || !link_->isConnected()) return;
  try {
    registry_->remove(options_.nodeName, instance_);
  } catch (const std::exception& e) {
    spdlog::warn("cluster: could not remove node record: {}", e.what());
  }
}

ClusterNode::~ClusterNode() {
  leave();
  // The watches and the worker's jobs use the parts: stop them first; the
  // connection closes last.
  watches_.clear();
  link_->stopWorker();
  adminRelay_.reset();
  transport_.reset();
  directory_.reset();
  registry_.reset();
  link_.reset();
}

void ClusterNode::keepWatching(std::string what, DirectoryWatchFn watch) {
  watches_.push_back(std::make_unique<WatchThread>(*link_, std::move(what), std::move(watch)));
}

void ClusterNode::openDirectory() {
  if (!link_->isConnected()) return;
  try {
    directory_->open();
  } catch (const std::exception& e) {
    spdlog::warn("cluster: opening the directory's buckets: {}", e.what());
  }
}

void ClusterNode::heartbeat() {
  if (!link_->isConnected() || left_) return;  // degraded, or leaving
  NodeInfo node;
  node.name = options_.nodeName;
  node.address = options_.address;
  node.sessions = facts_.sessions ? facts_.sessions() : 0;
  node.pluginVersions = facts_.pluginVersions ? facts_.pluginVersions() : std::string();
  node.startedAtMs = startedAtMs_;
  node.instance = instance_;
  node.version = options_.version;
  try {
    registry_->publish(node);
    ++heartbeats_;
    lastHeartbeatMs_ = wallClockMs();
  } catch (const std::exception& e) {
    ++heartbeatErrors_;
    spdlog::warn("cluster: heartbeat: {}", e.what());
  }
}

ClusterStatus ClusterNode::status() const {
  ClusterStatus status;
  status.state = linkStateName(link_->state());
  status.url = options_.url;
  status.disconnects = link_->disconnects();
  status.reconnects = link_->reconnects();
  status.heartbeats = heartbeats_;
  status.heartbeatErrors = heartbeatErrors_;
  status.lastHeartbeatMs = lastHeartbeatMs_;
  return status;
}

void ClusterNode::listNodes(std::function<void(std::vector<NodeInfo>, std::string)> done) {
  link_->post([this, done = std::move(done)] {
    try {
      done(registry_->list(), std::string());
    } catch (const std::exception& e) {
      done({}, e.what());
    }
  });
}

}  // namespace switchboard::cluster
