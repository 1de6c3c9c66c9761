#include "cluster/node_registry.h"

#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "switchboard/proto/cluster.capnp.h"

namespace switchboard::cluster {

namespace {
std::string nodeBytes(const NodeInfo& node) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::NodeRecord>();
  out.setName(node.name);
  out.setAddress(node.address);
  out.setSessions(node.sessions);
  out.setPluginVersions(node.pluginVersions);
  out.setHeardAtMs(node.heardAtMs);
  out.setStartedAtMs(node.startedAtMs);
  out.setInstance(node.instance);
  out.setVersion(node.version);
  return recordBytes(message);
}

NodeInfo nodeFrom(const std::string& bytes) {
  RecordReader reader(bytes.data(), bytes.size());
  auto in = reader.get<proto::cluster::NodeRecord>();
  NodeInfo node;
  node.name = in.getName();
  node.address = in.getAddress();
  node.sessions = in.getSessions();
  node.pluginVersions = in.getPluginVersions();
  node.heardAtMs = in.getHeardAtMs();
  node.startedAtMs = in.getStartedAtMs();
  node.instance = in.getInstance();
  node.version = in.getVersion();
  return node;
}
}  // namespace

NodeRegistry::NodeRegistry(NatsLink& link, std::chrono::seconds ttl)
    : bucket_(link, KvBucketOptions{"sb_nodes", ttl, 1, false}) {}

void NodeRegistry::publish(NodeInfo node) {
  node.heardAtMs = wallClockMs();
  std::string key = encodeKeyToken(node.name);
  auto current = bucket_.get(key);
  if (current) {
    NodeInfo holder = nodeFrom(current->bytes);
    if (holder.instance != node.instance) {
      if (holder.startedAtMs > node.startedAtMs) {
        throw ClusterError("node name '" + node.name + "' was taken by a newer process at " +
                           holder.address);
      }
      // An older process with our name: a previous run of this node (its
      // record outlives it by the TTL) or a twin; the newer start wins.
    }
    if (!bucket_.update(key, nodeBytes(node), current->revision)) {
      throw ClusterError("node name '" + node.name + "' is being written by another process");
    }
    return;
  }
  if (!bucket_.create(key, nodeBytes(node))) {
    throw ClusterError("node name '" + node.name + "' was taken by another process");
  }
}

void NodeRegistry::remove(const std::string& name, std::uint64_t instance) {
  std::string key = encodeKeyToken(name);
  auto current = bucket_.get(key);
  if (current && nodeFrom(current->bytes).instance == instance) bucket_.remove(key);
}

std::vector<NodeInfo> NodeRegistry::list() {
  std::vector<NodeInfo> nodes;
  for (const auto& key : bucket_.keys()) {
    auto value = bucket_.get(key);
    if (value) nodes.push_back(nodeFrom(value->bytes));
  }
  return nodes;
}

}  // namespace switchboard::cluster
