// Which nodes make up the cluster: each node's record in the sb_nodes bucket.
//
// Every node rewrites its own record on a heartbeat (ClusterNode does it every
// `heartbeat`); the bucket's TTL drops the record of a node that stopped, so a
// node that was kill -9'd leaves the listing within one TTL. A clean shutdown
// removes the record at once. Blocking calls: the link's worker thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "cluster/kv_bucket.h"

namespace switchboard::cluster {

class NatsLink;

struct NodeInfo {
  std::string name;
  std::string address;  // client endpoint HOST:PORT
  std::uint32_t sessions = 0;
  std::string pluginVersions;  // "auth=1.0.0 routing=1.0.0 ..."
  std::int64_t heardAtMs = 0;
  std::int64_t startedAtMs = 0;
  std::uint64_t instance = 0;
  std::string version;
};

class NodeRegistry {
 public:
  // `ttl`: how long a record outlives its last heartbeat.
  NodeRegistry(NatsLink& link, std::chrono::seconds ttl);

  // Writes `node` (heardAtMs is set to now). Refuses with ClusterError when a
  // different live process (another `instance`) holds the name: two nodes
  // with one name would steal each other's phones.
  void publish(NodeInfo node);
  void remove(const std::string& name, std::uint64_t instance);
  // Every node heard within the TTL, by name.
  std::vector<NodeInfo> list();

 private:
  KvBucket bucket_;
};

}  // namespace switchboard::cluster
