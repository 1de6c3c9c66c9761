// AdminServer's cluster call: this node's link to NATS and the node registry.
#include "admin/admin_server.h"
#include "admin/admin_wire.h"
#include "cluster/cluster_node.h"
#include "cluster/cluster_records.h"
#include "net/cross_thread_completion.h"

namespace switchboard::admin {

std::string clusterState(const HostView& host) {
  return host.cluster == nullptr ? "single-node" : host.cluster->status().state;
}

namespace {
struct NodeListing {
  std::vector<cluster::NodeInfo> nodes;
  std::string error;
};
}  // namespace

kj::Promise<void> AdminServer::cluster(ClusterContext context) {
  auto out = context.getResults().initCluster();
  out.setState(text(clusterState(host_)));
  if (host_.cluster == nullptr) return kj::READY_NOW;
  auto status = host_.cluster->status();
  out.setUrl(text(status.url));
  out.setNode(text(host_.facts.node));
  out.setDisconnects(status.disconnects);
  out.setReconnects(status.reconnects);
  // Reading the registry blocks on NATS: it runs on the link's worker thread
  // and comes back here as a promise.
  auto pending = net::makeCompletion<NodeListing>();
  host_.cluster->listNodes(
      [completion = pending.completion](std::vector<cluster::NodeInfo> nodes, std::string error) {
        completion.complete(NodeListing{std::move(nodes), std::move(error)});
      });
  return pending.promise.then([context](NodeListing listing) mutable {
    auto out = context.getResults().getCluster();
    out.setError(text(listing.error));
    auto nodes = out.initNodes(static_cast<unsigned>(listing.nodes.size()));
    std::int64_t now = cluster::wallClockMs();
    for (unsigned i = 0; i < listing.nodes.size(); ++i) {
      const auto& node = listing.nodes[i];
      nodes[i].setName(text(node.name));
      nodes[i].setAddress(text(node.address));
      nodes[i].setSessions(node.sessions);
      nodes[i].setPluginVersions(text(node.pluginVersions));
      nodes[i].setHeardAtMs(node.heardAtMs);
      nodes[i].setLastHeardMsAgo(std::max<std::int64_t>(0, now - node.heardAtMs));
      nodes[i].setVersion(text(node.version));
      nodes[i].setStartedAtMs(node.startedAtMs);
    }
  });
}

}  // namespace switchboard::admin
