#include "rolling_upgrade.h"

#include <algorithm>
#include <sstream>

namespace switchboard::ctl {

std::string versionOf(const std::string& pluginVersions, const std::string& kind) {
  std::istringstream words(pluginVersions);
  std::string word;
  while (words >> word) {
    if (word.size() > kind.size() && word.compare(0, kind.size(), kind) == 0 &&
        word[kind.size()] == '=') {
      return word.substr(kind.size() + 1);
    }
  }
  return {};
}

namespace {

ClusterStatus connectedCluster(AdminClient& admin) {
  ClusterStatus cluster = admin.cluster();
  if (cluster.state != "connected") {
    throw AdminError(
        "a rolling upgrade needs a host that is a connected cluster node (this one is " +
        cluster.state + ")");
  }
  if (!cluster.error.empty()) throw AdminError("nodes unknown: " + cluster.error);
  return cluster;
}

const NodeInfo* findNode(const ClusterStatus& cluster, const std::string& name) {
  auto it = std::find_if(cluster.nodes.begin(), cluster.nodes.end(),
                         [&](const NodeInfo& node) { return node.name == name; });
  return it == cluster.nodes.end() ? nullptr : &*it;
}

}  // namespace

RollingUpgradeReport rollingUpgrade(AdminClient& admin, const RollingUpgradeOptions& options,
                                    const std::function<void(const RollingUpgradeStep&)>& onStep) {
  ClusterStatus cluster = connectedCluster(admin);
  std::vector<std::string> order = options.nodes;
  if (order.empty()) {
    for (const auto& node : cluster.nodes) order.push_back(node.name);
  }
  if (order.empty()) throw AdminError("no node in the cluster");
  for (const auto& name : order) {
    if (findNode(cluster, name) == nullptr) {
      throw AdminError("no node '" + name + "' in the cluster");
    }
  }

  RollingUpgradeReport report;
  for (std::size_t i = 0; i < order.size(); ++i) {
    RollingUpgradeStep step;
    step.node = order[i];
    step.before = versionOf(findNode(cluster, step.node)->pluginVersions, options.kind);
    auto results =
        admin.loadPluginOnNodes(step.node, options.kind, options.path, true, options.nodeTimeout);
    if (results.size() != 1) {
      throw AdminError("node " + step.node + ": expected one result, got " +
                       std::to_string(results.size()));
    }
    step.load = results.front();
    bool passed = step.load.answered && step.load.result.ok;
    if (!step.load.answered) {
      // It may have loaded and then gone quiet: if the registry shows it on
      // another version than before, put it back.
      ClusterStatus now = admin.cluster();
      const NodeInfo* node = findNode(now, step.node);
      if (node != nullptr && !step.before.empty() &&
          versionOf(node->pluginVersions, options.kind) != step.before) {
        auto back =
            admin.rollbackPluginOnNodes(step.node, options.kind, step.before, options.nodeTimeout);
        if (!back.empty()) step.rollback = back.front();
      }
    }
    report.steps.push_back(step);
    if (onStep) onStep(report.steps.back());
    if (!passed) {
      report.notReached.assign(order.begin() + static_cast<std::ptrdiff_t>(i) + 1, order.end());
      return report;
    }
  }
  report.ok = true;
  return report;
}

}  // namespace switchboard::ctl
